"""``mpanet-export``: checkpoint -> ONNX (FP32, verified), and optionally FP16 and INT8 Q/DQ variants.

mpanet-export runs/sysu/checkpoints/best.pt -o engines/mpanet.onnx
mpanet-export best.pt -o engines/mpanet.onnx --fp16
mpanet-export best.pt -o engines/mpanet.onnx --int8 --calibration-dataset sysu --data-root /data/SYSU-MM01
mpanet-export best.pt -o engines/mpanet.onnx --int8 --calibration /data/crops/visible /data/crops/thermal
mpanet-export best.pt -o engines/mpanet.onnx --int8-cpu --calibration-dataset sysu --data-root /data/SYSU-MM01

Every artifact gets a JSON sidecar beside it (``<artifact>.json``). The FP32 export fails (exit 1,
nothing written) when onnxruntime and torch disagree (worst cosine < --cosine-min at batch 1, 7, 32).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engines.cli.common import DATASETS, calibration_from_args, configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpanet-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="MPANet checkpoint (.pt)")
    parser.add_argument("-o", "--output", required=True, help="FP32 ONNX path (variants go beside it)")
    parser.add_argument("--height", type=int, help="input height in pixels (default: the checkpoint's)")
    parser.add_argument("--width", type=int, help="input width in pixels (default: the checkpoint's)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17; default 18)")
    parser.add_argument("--opt-batch", type=int, default=8, help="typical batch recorded in the sidecar")
    parser.add_argument(
        "--cosine-min",
        type=float,
        default=0.9999,
        help="torch vs onnxruntime parity threshold (default 0.9999)",
    )
    parser.add_argument(
        "--fp16", action="store_true", help="also write <stem>.fp16.onnx (MAM instance norms FP32)"
    )
    parser.add_argument(
        "--int8", action="store_true", help="also write <stem>.int8.onnx (symmetric int8 Q/DQ for TensorRT)"
    )
    parser.add_argument(
        "--int8-cpu",
        action="store_true",
        help="also write <stem>.int8-cpu.onnx (uint8 activations: the fast onnxruntime CPU graph)",
    )
    calib = parser.add_argument_group("INT8 calibration (a few hundred crops of both modalities)")
    calib.add_argument(
        "--calibration", nargs="*", default=[], help="image files or folders (modality guessed)"
    )
    calib.add_argument(
        "--calibration-dataset", choices=DATASETS, help="use the training split of this dataset"
    )
    calib.add_argument("--data-root", help="dataset folder for --calibration-dataset")
    calib.add_argument("--regdb-trial", type=int, default=1, help="RegDB split (default 1)")
    calib.add_argument("--calibration-count", type=int, default=256, help="crops used (default 256)")
    calib.add_argument(
        "--calibration-method",
        choices=("minmax", "percentile", "entropy"),
        default="percentile",
        help="range estimator",
    )
    calib.add_argument("--seed", type=int, default=0, help="calibration sampling seed")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    from engines.export import ExportError, export_onnx
    from engines.precision import PrecisionError, convert_fp16, quantize_int8
    from engines.sidecar import SidecarError
    from trainer.checkpoint import CheckpointError

    summary: list[dict[str, Any]] = []
    try:
        int8_targets = [t for t, wanted in (("tensorrt", args.int8), ("cpu", args.int8_cpu)) if wanted]
        if int8_targets and not (args.calibration or args.calibration_dataset):
            raise ValueError(
                "--int8/--int8-cpu need --calibration PATH... or --calibration-dataset NAME --data-root ROOT"
            )
        exported = export_onnx(
            args.checkpoint,
            args.output,
            height=args.height,
            width=args.width,
            opset=args.opset,
            cosine_min=args.cosine_min,
            opt_batch=args.opt_batch,
        )
        summary.append(
            _row(exported.artifact, exported.sidecar, parity_cosine_min=round(exported.parity.cosine_min, 7))
        )
        if args.fp16:
            fp16 = convert_fp16(exported.artifact)
            summary.append(_row(fp16.artifact, fp16.sidecar, cosine_vs_fp32_min=round(fp16.cosine_min, 6)))
        if int8_targets:
            calibration = calibration_from_args(
                exported.sidecar.preprocessing,
                images=args.calibration,
                dataset=args.calibration_dataset,
                data_root=args.data_root,
                regdb_trial=args.regdb_trial,
                count=args.calibration_count,
                seed=args.seed,
            )
            for target in int8_targets:
                int8 = quantize_int8(
                    exported.artifact, calibration, method=args.calibration_method, target=target
                )
                summary.append(
                    _row(
                        int8.artifact,
                        int8.sidecar,
                        target=target,
                        cosine_vs_fp32_min=round(int8.cosine_min, 6),
                        calibration=calibration.counts(),
                    )
                )
    except (ExportError, PrecisionError, SidecarError, CheckpointError, ValueError, OSError) as exc:
        print(f"mpanet-export: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for row in summary:
            extras = ", ".join(
                f"{k}={v}" for k, v in row.items() if k not in ("artifact", "engine_id", "precision")
            )
            print(f"{row['artifact']}  {row['precision']}  engine_id={row['engine_id']}  {extras}")
    return 0


def _row(path: Path, sidecar: Any, **extra: Any) -> dict[str, Any]:
    return {"artifact": str(path), "precision": sidecar.precision, "engine_id": sidecar.engine_id, **extra}


if __name__ == "__main__":
    sys.exit(main())
