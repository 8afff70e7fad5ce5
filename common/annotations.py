"""Box annotation files: MOTChallenge text (gt.txt / det.txt) and Pascal VOC XML."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class AnnotationError(ValueError):
    """A malformed annotation file (names the file and line)."""


@dataclass(frozen=True)
class MotTable:
    """The rows of a MOTChallenge file, as arrays.

    Columns (MOT16/17): frame (1-based), id, x, y, w, h (top-left, pixels), conf, class, visibility.
    det.txt files use id -1 and a detector score in ``conf``; gt.txt files use ``conf`` as a
    consider flag (1 = evaluate) and class 1 for pedestrians.

    Attributes:
        frames: (R,) int64. ids: (R,) int64. xywh: (R, 4) float32. conf: (R,) float32.
        classes: (R,) int64 (-1 when absent). visibility: (R,) float32 (-1 when absent).
    """

    frames: np.ndarray
    ids: np.ndarray
    xywh: np.ndarray
    conf: np.ndarray
    classes: np.ndarray
    visibility: np.ndarray

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def read_mot_file(path: str | os.PathLike[str]) -> MotTable:
    """Read a MOTChallenge CSV file (7 to 10 columns per line; blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"MOT file {path} does not exist")
    rows: list[list[float]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(",")
        if not 7 <= len(parts) <= 10:
            raise AnnotationError(f"{path}:{number}: expected 7-10 comma-separated values, got {len(parts)}")
        try:
            values = [float(p) for p in parts]
        except ValueError as exc:
            raise AnnotationError(f"{path}:{number}: not a number ({exc})") from exc
        values += [-1.0] * (9 - min(len(values), 9))
        rows.append(values[:9])
    data = np.asarray(rows, dtype=np.float64).reshape(-1, 9)
    return MotTable(
        frames=data[:, 0].astype(np.int64),
        ids=data[:, 1].astype(np.int64),
        xywh=data[:, 2:6].astype(np.float32),
        conf=data[:, 6].astype(np.float32),
        classes=data[:, 7].astype(np.int64),
        visibility=data[:, 8].astype(np.float32),
    )


def format_mot_rows(
    frames: np.ndarray,
    ids: np.ndarray,
    xywh: np.ndarray,
    visibility: np.ndarray,
    conf: float = 1.0,
    cls: int = 1,
) -> str:
    """MOTChallenge gt lines ``frame,id,x,y,w,h,conf,class,visibility`` (1-based frames given)."""
    lines = [
        f"{int(f)},{int(i)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{conf:g},{cls},{v:.3f}"
        for f, i, (x, y, w, h), v in zip(frames, ids, np.asarray(xywh, np.float64), visibility)
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def read_voc_boxes(path: str | os.PathLike[str], label: str = "person") -> np.ndarray:
    """(N, 4) float32 xyxy pixel boxes of the objects named ``label`` in a Pascal VOC XML file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise AnnotationError(f"VOC file {path} is not readable XML: {exc}") from exc
    boxes = []
    for obj in root.iter("object"):
        if (obj.findtext("name") or "").strip() != label:
            continue
        box = obj.find("bndbox")
        if box is None:
            raise AnnotationError(f"{path}: an object without <bndbox>")
        try:
            boxes.append([float(box.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")])
        except ValueError as exc:
            raise AnnotationError(f"{path}: bad box coordinate ({exc})") from exc
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
