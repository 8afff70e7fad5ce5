"""How fast the synthetic generator writes a SYSU-MM01-layout set.

    python benchmarks/bench_synthetic_speed.py [--ids 100] [--images-per-camera 10] [--workers 2]

Writes ``benchmarks/results/synthetic_speed.json``: images written, seconds, images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.files import atomic_write_text  # noqa: E402
from trainer.synthetic.datasets import write_regdb, write_sysu  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=100)
    parser.add_argument("--images-per-camera", type=int, default=10)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "synthetic_speed.json"))
    args = parser.parse_args()
    report: dict = {"workers": args.workers, "size": [args.height, args.width]}
    with tempfile.TemporaryDirectory(prefix="synth-speed-") as work:
        for layout, writer, kwargs in (
            ("sysu", write_sysu, {"images_per_camera": args.images_per_camera}),
            ("regdb", write_regdb, {"images_per_modality": args.images_per_camera}),
        ):
            start = time.perf_counter()
            summary = writer(
                Path(work) / layout,
                num_ids=args.ids,
                height=args.height,
                width=args.width,
                seed=0,
                workers=args.workers,
                progress=False,
                **kwargs,
            )
            seconds = time.perf_counter() - start
            report[layout] = {
                "ids": args.ids,
                "images": summary.num_images,
                "seconds": round(seconds, 2),
                "images_per_second": round(summary.num_images / seconds, 1),
            }
    report["machine"] = {"cpu_count": os.cpu_count(), "python": platform.python_version()}
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
