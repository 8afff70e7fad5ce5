"""``mpanet-compress``: a compressed-embedding variant of an engine (global part, or PCA).

mpanet-compress engines/mpanet.onnx --kind global                       # -> mpanet.global2048.onnx
mpanet-compress engines/mpanet.onnx --kind pca --dim 256 --dataset sysu --data-root /data/SYSU-MM01
mpanet-compress engines/mpanet.plan --kind pca --dim 256 --images /data/crops --device cuda

The variant is a hard link (or copy) of the artifact with its own sidecar recording the compression
(its engine_id differs: the gallery will not mix it with the original). PCA is fitted on embeddings
of training images computed by the artifact itself. Measure the accuracy cost with
``mpanet-eval --engine <original> --engine <variant> ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from engines.cli.common import DATASETS, configure_logging, dataset_items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpanet-compress", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("artifact", help=".onnx / .plan with its sidecar")
    parser.add_argument("--kind", choices=("global", "pca"), required=True)
    parser.add_argument("--dim", type=int, help="output size (pca: required; global: default C)")
    parser.add_argument("-o", "--output", help="variant path (default <stem>.<kind><dim><suffix>)")
    fit = parser.add_argument_group("PCA fitting images (training data)")
    fit.add_argument("--dataset", choices=DATASETS, help="fit on this dataset's training split")
    fit.add_argument("--data-root", help="dataset folder")
    fit.add_argument("--regdb-trial", type=int, default=1)
    fit.add_argument("--images", nargs="*", default=[], help="or image files/folders")
    fit.add_argument("--max-images", type=int, default=2000, help="fit on at most this many (seeded subset)")
    fit.add_argument("--device", default="cpu", help="device to run the artifact on")
    fit.add_argument("--batch-size", type=int, default=32)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(False)
    from engines.calibration import CalibrationError, find_images, read_crop
    from engines.compression import CompressionError, compress_artifact
    from engines.runtime import EmbedderError, load_embedder
    from engines.sidecar import SidecarError

    try:
        features = None
        fit_info = None
        if args.kind == "pca":
            if args.dim is None:
                raise CompressionError("--kind pca needs --dim")
            paths: list[str] = []
            if args.dataset:
                if not args.data_root:
                    raise CompressionError("--dataset needs --data-root")
                paths += [
                    p for p, _ in dataset_items(args.dataset, args.data_root, regdb_trial=args.regdb_trial)
                ]
            paths += [str(p) for p in find_images(args.images)]
            if not paths:
                raise CompressionError("PCA needs training images: --dataset/--data-root or --images")
            rng = np.random.default_rng(0)
            chosen = sorted(rng.choice(len(paths), size=min(args.max_images, len(paths)), replace=False))
            with load_embedder(args.artifact, device=args.device) as embedder:
                chunks = []
                for start in range(0, len(chosen), args.batch_size):
                    crops = [read_crop(paths[i]) for i in chosen[start : start + args.batch_size]]
                    chunks.append(embedder.embed_crops(crops, input_order="BGR"))
            features = np.concatenate(chunks)
            fit_info = {"dataset": args.dataset, "images": int(features.shape[0])}
        sidecar = compress_artifact(
            args.artifact, args.kind, dim=args.dim, features=features, output=args.output, fit_info=fit_info
        )
    except (CompressionError, CalibrationError, SidecarError, EmbedderError, ValueError, OSError) as exc:
        print(f"mpanet-compress: {exc}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "artifact": sidecar.artifact,
                "engine_id": sidecar.engine_id,
                "compression": sidecar.compression and sidecar.compression.__dict__,
                "fit": sidecar.source.get("compression_fit"),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
