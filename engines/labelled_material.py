"""Labelled people to calibrate an engine's linking thresholds on, from four layouts.

Each reader yields :class:`LabelledCrop` items (a BGR uint8 crop, a person id, a camera id, the
modality), the input of :func:`engines.linking_thresholds.calibrate_thresholds`:

- ``sysu`` / ``regdb``: a SYSU-MM01 or RegDB folder, read with the trainer's dataset readers
  (``split``: ``test`` = people the model never saw, what a deployment meets; or ``train``).
- ``mot``: MOTChallenge sequences (a folder with ``gt/gt.txt`` and ``img1/``, or a folder of them):
  considered pedestrians only (flag 1, class 1, as MOTChallenge scores). A sequence is one camera;
  its selected frames are cut into ``pseudo_cameras`` consecutive ranges that stand in for cameras
  (one person's crops of one range become one tracklet, as a track does). Visible.
- ``paired``: LLVIP-style folders ``visible/``, ``infrared/`` and ``annotations/`` (Pascal VOC
  ``person`` boxes that hold for both images of a pair): each box is a person seen once in each
  modality, a different person from every box of every other pair (LLVIP frames are far apart).

``frames`` selects what is read, to calibrate on some frames and report on others: MOT frame
numbers (1-based, inclusive ``(first, last)``), or for ``paired`` the first..last pair in name order.
Person ids are made unique across sources by the caller's ``source_index``.

This module reads MOT and VOC files itself (a few lines each) because ``engines`` may not import
``edge`` (whose readers serve the edge node).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LAYOUTS = ("sysu", "regdb", "mot", "paired")
_PID_STRIDE = 1_000_000  # person ids of source k are k * stride + local id
_CAM_STRIDE = 1_000


@dataclass(frozen=True)
class LabelledCrop:
    """One person image: ``crop`` (H, W, 3) uint8 BGR; ``pid``, ``camid`` ints; ``modality``."""

    crop: np.ndarray
    pid: int
    camid: int
    modality: str


class MaterialError(ValueError):
    """Labelled material that is missing or malformed (names the file)."""


def detect_layout(root: str | os.PathLike[str]) -> str:
    """Guess the layout of ``root`` (raises :class:`MaterialError` when none fits)."""
    root = Path(root)
    if (root / "gt" / "gt.txt").is_file() or any(root.glob("*/gt/gt.txt")):
        return "mot"
    if all((root / d).is_dir() for d in ("visible", "infrared", "annotations")):
        return "paired"
    if (root / "exp").is_dir() or (root / "cam1").is_dir():
        return "sysu"
    if (root / "idx").is_dir() and (root / "Visible").is_dir():
        return "regdb"
    raise MaterialError(
        f"{root}: not a known layout (MOT sequences with gt/gt.txt, visible/+infrared/+annotations/, "
        "SYSU-MM01 or RegDB); pass --layout"
    )


def read_material(
    layout: str,
    root: str | os.PathLike[str],
    *,
    source_index: int = 0,
    frames: tuple[int, int] | None = None,
    pseudo_cameras: int = 2,
    split: str = "test",
    min_height: int = 32,
) -> Iterator[LabelledCrop]:
    """The labelled crops of one source (see the module docstring)."""
    if layout == "mot":
        yield from _read_mot(Path(root), source_index, frames, pseudo_cameras, min_height)
    elif layout == "paired":
        yield from _read_paired(Path(root), source_index, frames, min_height)
    elif layout in ("sysu", "regdb"):
        yield from _read_dataset(layout, root, source_index, split)
    else:
        raise MaterialError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def mot_sequences(root: Path) -> list[Path]:
    """``root`` itself if it is a sequence, else its sub-folders that are (sorted)."""
    if (root / "gt" / "gt.txt").is_file():
        return [root]
    found = sorted(p.parent.parent for p in root.glob("*/gt/gt.txt"))
    if not found:
        raise MaterialError(f"{root}: no MOTChallenge sequence (gt/gt.txt) here")
    return found


def read_mot_pedestrians(gt: Path) -> np.ndarray:
    """(R, 6) float64 rows ``frame, id, x, y, w, h`` of considered pedestrians (flag 1, class 1)."""
    try:
        rows = np.loadtxt(gt, delimiter=",", ndmin=2)
    except ValueError as exc:
        raise MaterialError(f"{gt}: not a MOTChallenge CSV ({exc})") from exc
    if rows.shape[1] < 6:
        raise MaterialError(f"{gt}: expected at least 6 columns (frame, id, x, y, w, h), got {rows.shape[1]}")
    keep = np.ones(len(rows), bool)
    if rows.shape[1] >= 7:
        keep &= rows[:, 6] == 1
    if rows.shape[1] >= 8:
        keep &= rows[:, 7] == 1
    return rows[keep, :6]


def _read_mot(
    root: Path, source_index: int, frames: tuple[int, int] | None, pseudo_cameras: int, min_height: int
) -> Iterator[LabelledCrop]:
    import cv2

    for s, sequence in enumerate(mot_sequences(root)):
        rows = read_mot_pedestrians(sequence / "gt" / "gt.txt")
        numbers = sorted({int(f) for f in rows[:, 0]})
        if frames is not None:
            numbers = [f for f in numbers if frames[0] <= f <= frames[1]]
        if not numbers:
            continue
        ranges = np.array_split(np.asarray(numbers), min(pseudo_cameras, len(numbers)))
        camera_of = {int(f): k for k, chunk in enumerate(ranges) for f in chunk}
        for number in numbers:
            image_path = sequence / "img1" / f"{number:06d}.jpg"
            image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if image is None:
                raise MaterialError(f"{image_path}: missing or unreadable frame")
            for _, pid, x, y, w, h in rows[rows[:, 0] == number]:
                crop = _cut(image, x, y, x + w, y + h, min_height)
                if crop is not None:
                    yield LabelledCrop(
                        crop,
                        source_index * _PID_STRIDE + s * 10_000 + int(pid),
                        source_index * _CAM_STRIDE + s * 10 + camera_of[number],
                        "visible",
                    )


def _voc_people(path: Path) -> np.ndarray:
    """(N, 4) xyxy person boxes of a VOC file (:func:`common.annotations.read_voc_boxes`)."""
    from common.annotations import AnnotationError, read_voc_boxes

    try:
        return read_voc_boxes(path).astype(np.float64)
    except AnnotationError as exc:
        raise MaterialError(str(exc)) from exc


def _read_paired(
    root: Path, source_index: int, frames: tuple[int, int] | None, min_height: int
) -> Iterator[LabelledCrop]:
    import cv2

    annotations = sorted((root / "annotations").glob("*.xml"))
    if frames is not None:
        annotations = annotations[frames[0] - 1 : frames[1]]
    for k, xml in enumerate(annotations):
        images = {}
        for modality in ("visible", "infrared"):
            path = next((p for p in (root / modality).glob(xml.stem + ".*")), None)
            image = None if path is None else cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise MaterialError(
                    f"{root / modality}/{xml.stem}.*: missing or unreadable image of the pair"
                )
            images[modality] = image
        for b, (x1, y1, x2, y2) in enumerate(_voc_people(xml)):
            crops = {m: _cut(images[m], x1, y1, x2, y2, min_height) for m in images}
            if any(c is None for c in crops.values()):
                continue
            pid = source_index * _PID_STRIDE + k * 1000 + b
            for m, crop in crops.items():
                yield LabelledCrop(crop, pid, source_index * _CAM_STRIDE + (m == "infrared"), m)


def _read_dataset(
    layout: str, root: str | os.PathLike[str], source_index: int, split: str
) -> Iterator[LabelledCrop]:
    import cv2

    from trainer.data import load_train_samples, regdb, sysu_mm01

    if split not in ("train", "test"):
        raise MaterialError(f"split must be 'train' or 'test', got {split!r}")
    if split == "train":
        samples = list(load_train_samples(root, "sysu" if layout == "sysu" else "regdb"))
    elif layout == "sysu":
        test = sysu_mm01.load_test_set(root)
        samples = list(test.query) + list(test.gallery_pool)
    else:
        visible, thermal = regdb.load_test_samples(root)
        samples = visible + thermal
    for sample in samples:
        image = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
        if image is None:
            raise MaterialError(f"{sample.path}: unreadable image")
        yield LabelledCrop(
            image,
            source_index * _PID_STRIDE + int(sample.pid),
            source_index * _CAM_STRIDE + int(sample.camid),
            str(sample.modality),
        )


def _cut(image: np.ndarray, x1: float, y1: float, x2: float, y2: float, min_height: int) -> np.ndarray | None:
    """The box clipped to the image (None if less than ``min_height`` pixels tall or 8 wide)."""
    h, w = image.shape[:2]
    a, b = max(int(round(x1)), 0), max(int(round(y1)), 0)
    c, d = min(int(round(x2)), w), min(int(round(y2)), h)
    if d - b < min_height or c - a < 8:
        return None
    return np.ascontiguousarray(image[b:d, a:c])
