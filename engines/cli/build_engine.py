"""``mpanet-build-engine``: ONNX -> TensorRT plan (TensorRT 10.x / 11.x, strongly typed).

mpanet-build-engine engines/mpanet.fp16.onnx --max-batch 64 --timing-cache engines/timing.cache
mpanet-build-engine engines/mpanet.onnx --precision fp16        # converts to mpanet.fp16.onnx first
mpanet-build-engine engines/mpanet.int8.onnx                    # Q/DQ graph from mpanet-export --int8

The plan's precision is the ONNX graph's (strong typing); it is read back from the built engine and
asserted. Beside the plan: its sidecar (``.plan.json``), the build log (``.plan.build.log``) and the
engine inspector's per-layer dump (``.plan.layers.json``). Needs a GPU with TensorRT and cuda-python
(``pip install -e .[tensorrt-cu12]`` for drivers >= 525, ``.[tensorrt-cu13]`` for drivers >= 580,
from NVIDIA's index; docs/engines.md lists the supported combinations).

Exit status: 0 built, 1 the build or its checks failed, 3 no TensorRT / cuda-python / driver / GPU
(one line on stderr saying which, no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from engines.cli.common import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpanet-build-engine", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("onnx", help="ONNX artifact with its sidecar (from mpanet-export)")
    parser.add_argument("-o", "--output", help="plan path (default: <onnx stem>.plan)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        help="expected precision (default: the ONNX's); fp16 from an FP32 ONNX converts it first",
    )
    parser.add_argument("--min-batch", type=int, default=1, help="profile minimum batch (default 1)")
    parser.add_argument("--opt-batch", type=int, default=8, help="profile optimum batch (default 8)")
    parser.add_argument("--max-batch", type=int, default=32, help="profile maximum batch (default 32)")
    parser.add_argument("--workspace-mib", type=int, default=4096, help="builder workspace limit (MiB)")
    parser.add_argument("--timing-cache", help="timing cache file to reuse and update")
    parser.add_argument("--opt-level", type=int, help="builder optimization level 0..5 (TensorRT default 3)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 in FP32 layers")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="VERBOSE TensorRT messages in the build log"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(False)
    from engines.precision import PrecisionError, convert_fp16
    from engines.sidecar import SidecarError, load_sidecar
    from engines.tensorrt import TensorRTBuildError, TensorRTRuntimeError, TensorRTUnavailable, build_engine

    onnx_path = Path(args.onnx)
    try:
        sidecar = load_sidecar(onnx_path)
        if args.precision == "fp16" and sidecar.precision == "fp32":
            onnx_path = convert_fp16(onnx_path).artifact
            print(f"converted to {onnx_path} (FP16, MAM instance norms in FP32)")
        result = build_engine(
            onnx_path,
            args.output,
            precision=args.precision,
            min_batch=args.min_batch,
            opt_batch=args.opt_batch,
            max_batch=args.max_batch,
            workspace_mib=args.workspace_mib,
            timing_cache=args.timing_cache,
            builder_optimization_level=args.opt_level,
            allow_tf32=args.tf32,
            device=args.device,
            verbose_log=args.verbose,
        )
    except TensorRTUnavailable as exc:
        print(f"mpanet-build-engine: {exc}", file=sys.stderr)
        return 3
    except (
        TensorRTBuildError,
        TensorRTRuntimeError,
        PrecisionError,
        SidecarError,
        ValueError,
        OSError,
    ) as exc:
        print(f"mpanet-build-engine: {exc}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "plan": str(result.plan),
                "engine_id": result.sidecar.engine_id,
                "precision": result.sidecar.precision,
                "batch": [args.min_batch, args.opt_batch, args.max_batch],
                "io_types": result.io_types,
                "layer_precisions": result.layer_precisions,
                "build_log": str(result.build_log),
                "build_log_errors": len(result.log_errors),
                "seconds": round(result.seconds, 1),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
