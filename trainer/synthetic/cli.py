"""Command line of the synthetic dataset generator (``python -m trainer.synthetic`` / ``mpanet-synth``).

Examples::

    python -m trainer.synthetic --layout sysu --out data/synth_sysu --ids 120 --images-per-camera 12 \\
        --height 128 --width 64 --seed 0 --workers 2
    python -m trainer.synthetic --layout regdb --out data/synth_regdb --ids 60 --images-per-camera 10
    python -m trainer.synthetic --layout sysu --out data/sysu_replica \\
        --replica-from ../shared/data/sysu_mm01_exp/rand_perm_cam.mat
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from trainer.synthetic.datasets import read_test_ids, write_regdb, write_sysu, write_sysu_replica

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpanet-synth",
        description="Write a synthetic visible-infrared re-id dataset in the real SYSU-MM01 or RegDB layout.",
    )
    parser.add_argument("--layout", choices=("sysu", "regdb"), required=True, help="folder layout to write")
    parser.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--ids", type=int, default=None, help="identities (default: sysu 60, regdb 40)")
    parser.add_argument(
        "--images-per-camera",
        type=int,
        default=None,
        help="images per (id, camera); for regdb per (id, modality) (default: sysu 12, regdb 10)",
    )
    parser.add_argument("--height", type=int, default=128, help="image height in pixels (default 128)")
    parser.add_argument("--width", type=int, default=64, help="image width in pixels (default 64)")
    parser.add_argument(
        "--seed", type=int, default=0, help="everything is a function of the seed (default 0)"
    )
    parser.add_argument("--test-ids", type=int, default=None, help="sysu: held-out test ids (default 20%%)")
    parser.add_argument(
        "--val-ids", type=int, default=None, help="sysu: validation ids (default 10%% of the rest)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="rendering processes (output does not depend on it)",
    )
    parser.add_argument(
        "--replica-from",
        default=None,
        metavar="RAND_PERM_CAM_MAT",
        help="sysu only: write a replica of the real test layout (blank images, official per-camera per-id "
        "counts) from the official rand_perm_cam.mat instead of rendering people",
    )
    parser.add_argument(
        "--test-ids-from",
        default=None,
        metavar="TEST_ID_MAT_OR_TXT",
        help="with --replica-from: the test ids (test_id.mat or a comma-separated .txt); default: test_id.mat "
        "next to the rand_perm_cam.mat",
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        if args.replica_from is not None:
            if args.layout != "sysu":
                raise ValueError("--replica-from only applies to --layout sysu")
            ids = read_test_ids(args.test_ids_from) if args.test_ids_from else None
            summary = write_sysu_replica(
                args.out, args.replica_from, test_ids=ids, overwrite=args.overwrite, progress=not args.quiet
            )
        elif args.layout == "sysu":
            summary = write_sysu(
                args.out,
                num_ids=args.ids or 60,
                images_per_camera=args.images_per_camera or 12,
                height=args.height,
                width=args.width,
                seed=args.seed,
                num_test_ids=args.test_ids,
                num_val_ids=args.val_ids,
                workers=args.workers,
                progress=not args.quiet,
                overwrite=args.overwrite,
            )
        else:
            summary = write_regdb(
                args.out,
                num_ids=args.ids or 40,
                images_per_modality=args.images_per_camera or 10,
                height=args.height,
                width=args.width,
                seed=args.seed,
                workers=args.workers,
                progress=not args.quiet,
                overwrite=args.overwrite,
            )
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"mpanet-synth: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "root": summary.root,
                "layout": summary.layout,
                "ids": summary.num_ids,
                "images": summary.num_images,
                "per_camera": summary.images_per_camera,
                "seconds": round(elapsed, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
