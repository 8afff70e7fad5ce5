"""Recall / precision at IoU 0.5 of the edge detector backends on the real frames in ../shared/data/real.

    python benchmarks/edge_detectors.py [--out outputs/benchmarks/edge_detectors.json]

thermal on LLVIP infrared; hog on LLVIP visible and MOT17-02/09 (gt: consider flag 1, class 1).
Writes a JSON report (and prints it); the numbers are quoted in docs/edge.md and the floors of
tests/test_edge_detect.py sit a little below them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.files import atomic_write_text  # noqa: E402
from edge.detect import build_detector  # noqa: E402
from edge.detect.annotations import read_mot_file, read_voc_boxes  # noqa: E402
from edge.detect.boxes import xywh_to_xyxy  # noqa: E402
from edge.detect.scoring import DetectionScore, evaluate_detections  # noqa: E402
from edge.sources import Frame  # noqa: E402

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def llvip(modality: str) -> list[tuple[Frame, np.ndarray]]:
    items = []
    for xml in sorted((REAL / "llvip" / "annotations").glob("*.xml")):
        image = cv2.imread(str(REAL / "llvip" / modality / f"{xml.stem}.jpg"))
        items.append((Frame("llvip", modality, 0, 0.0, image), read_voc_boxes(xml)))
    return items


def mot17() -> list[tuple[Frame, np.ndarray]]:
    items = []
    for sequence in sorted((REAL / "mot17").iterdir()):
        table = read_mot_file(sequence / "gt" / "gt.txt")
        for path in sorted((sequence / "img1").glob("*.jpg")):
            keep = (table.frames == int(path.stem)) & (table.conf > 0) & (table.classes == 1)
            items.append(
                (
                    Frame(sequence.name, "visible", 0, 0.0, cv2.imread(str(path))),
                    xywh_to_xyxy(table.xywh[keep]),
                )
            )
    return items


def evaluate(name: str, settings: dict, items: list[tuple[Frame, np.ndarray]]) -> dict:
    detector = build_detector(name, **settings)
    total = DetectionScore()
    start = time.perf_counter()
    for frame, gt in items:
        det = detector(frame)
        total = total + evaluate_detections(det.xyxy, det.scores, gt, iou_min=0.5)
    return {
        "detector": name,
        "settings": settings,
        "frames": len(items),
        "people": total.true_positives + total.false_negatives,
        "recall": round(total.recall, 3),
        "precision": round(total.precision, 3),
        "true_positives": total.true_positives,
        "false_positives": total.false_positives,
        "ms_per_frame": round(1000 * (time.perf_counter() - start) / max(len(items), 1), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/benchmarks/edge_detectors.json")
    args = parser.parse_args()
    if not REAL.is_dir():
        print(f"no real frames at {REAL}", file=sys.stderr)
        return 1
    runs = [
        ("LLVIP infrared", "thermal", {}, llvip("infrared")),
        ("LLVIP visible", "hog", {}, llvip("visible")),
        ("LLVIP visible", "hog", {"equalize": True}, llvip("visible")),
        ("MOT17-02+09", "hog", {}, mot17()),
        ("MOT17-02+09", "hog", {"win_stride": 4, "scale": 1.03}, mot17()),
    ]
    report = [{"data": data, **evaluate(name, settings, items)} for data, name, settings, items in runs]
    text = json.dumps(report, indent=2) + "\n"
    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
