"""``mpanet-sidecar``: make any ONNX person ReID model (OSNet, fast-reid exports, ...) usable by the
edge runtime: writes ``MODEL.onnx.json`` beside it, runs the model once to check it, prints the engine id.

mpanet-sidecar engines/osnet_x0_25_msmt17.onnx --input-size 256x128 \\
    --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --output-name output

Input size, mean/std and channel order are what the model was trained with (the graph cannot tell);
names, output size, precision, batch profile and whether the output is L2-normalised are read from
the graph and from one run. Then ``embedder.path: engines/osnet_x0_25_msmt17.onnx`` in a node config.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from engines.cli.common import configure_logging


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--input-size must look like HEIGHTxWIDTH (256x128), got {text!r}"
        ) from exc
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"--input-size must be positive, got {text!r}")
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpanet-sidecar", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="the .onnx file (the sidecar is written beside it)")
    parser.add_argument("--input-size", type=_size, required=True, help="HEIGHTxWIDTH, e.g. 256x128")
    parser.add_argument(
        "--mean", type=float, nargs=3, default=None, help="per-channel mean (default ImageNet)"
    )
    parser.add_argument("--std", type=float, nargs=3, default=None, help="per-channel std (default ImageNet)")
    parser.add_argument("--channel-order", choices=("RGB", "BGR"), default="RGB")
    parser.add_argument("--input-name", help="the graph input (needed when it has several)")
    parser.add_argument("--output-name", help="the embedding output (needed when the graph has several)")
    parser.add_argument("--opt-batch", type=int, default=8, help="batch size to tune engines for (default 8)")
    parser.add_argument(
        "--name", default="", help="a model name stored as provenance (e.g. osnet_x0_25_msmt17)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(False)
    from engines.foreign import write_foreign_sidecar
    from engines.sidecar import IMAGENET_MEAN, IMAGENET_STD, SidecarError, sidecar_path

    height, width = args.input_size
    try:
        sidecar = write_foreign_sidecar(
            args.model,
            height,
            width,
            mean=tuple(args.mean) if args.mean else IMAGENET_MEAN,
            std=tuple(args.std) if args.std else IMAGENET_STD,
            channel_order=args.channel_order,
            input_name=args.input_name,
            output_name=args.output_name,
            opt_batch=args.opt_batch,
            source={"model_name": args.name} if args.name else None,
        )
    except (SidecarError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {
        "sidecar": str(sidecar_path(args.model)),
        "engine_id": sidecar.engine_id,
        "input": f"{sidecar.input_name} N x 3 x {height} x {width} {sidecar.preprocessing.channel_order}",
        "output": f"{sidecar.output_name} N x {sidecar.output_dim}",
        "normalized": sidecar.normalized,
        "precision": sidecar.precision,
        "batch": {"min": sidecar.batch.min, "opt": sidecar.batch.opt, "max": sidecar.batch.max},
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
