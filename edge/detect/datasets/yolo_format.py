"""Ultralytics' YOLO dataset format: written from :class:`LabelledImage` records, read back for checks.

Layout (what ``yolo train data=<out>/data.yaml`` expects)::

    <out>/images/{train,val}/<name>.<ext>     links (or copies) of the source images
    <out>/labels/{train,val}/<name>.txt       one line per box: "class cx cy w h", normalised to [0, 1]
    <out>/data.yaml                           path, train, val, names {0: person}

Ultralytics finds a label file by replacing ``/images/`` with ``/labels/`` in the image path, so the
two trees mirror each other. Names are made unique across source folders (KAIST repeats
``I00000`` in every video) by prefixing the source's parent folders.
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.files import atomic_write_text
from edge.detect.datasets.readers import DatasetError, LabelledImage


@dataclass(frozen=True)
class YoloDataset:
    """A written dataset: its ``data.yaml`` and how many images / boxes went to each split."""

    data_yaml: Path
    images: dict[str, int]
    boxes: dict[str, int]


def _unique_name(item: LabelledImage, depth: int) -> str:
    parts = [*item.image.parent.parts[-depth:], item.image.name] if depth else [item.image.name]
    return "_".join(p for p in parts if p not in ("/", "")).replace(" ", "_")


def _place(source: Path, target: Path, mode: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    if mode == "symlink":
        target.symlink_to(source.resolve())
    elif mode == "copy":
        shutil.copy2(source, target)
    else:
        raise ValueError(f"image mode must be 'symlink' or 'copy', got {mode!r}")


def write_yolo_dataset(
    items: Sequence[LabelledImage],
    out: str | os.PathLike[str],
    *,
    val_fraction: float = 0.1,
    images: str = "symlink",
    name_depth: int = 0,
) -> YoloDataset:
    """Write ``items`` as a one-class (``person``) YOLO dataset under ``out``.

    Args:
        items: the labelled images (from :mod:`edge.detect.datasets.readers`).
        out: output folder (created; existing label files of the same names are replaced).
        val_fraction: for items without a split of their own, the share that goes to ``val``,
            chosen by a hash of the file name (stable across runs and machines).
        images: ``symlink`` (no copy of a large dataset) or ``copy``.
        name_depth: prefix this many parent folder names to the file names (unique names when
            sources repeat file names, e.g. KAIST: 3 for ``setNN_VNNN_lwir_INNNNN``).

    Raises:
        DatasetError: no items, a missing image, or two images mapping to one name.
    """
    if not items:
        raise DatasetError("no labelled images to write")
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out = Path(out)
    counts = {"train": 0, "val": 0}
    boxes = {"train": 0, "val": 0}
    seen: dict[str, Path] = {}
    box_counts: dict[str, int] = {}  # label stem -> boxes
    for item in items:
        if not item.image.is_file():
            raise DatasetError(f"image {item.image} does not exist")
        name = _unique_name(item, name_depth)
        if name in seen:
            raise DatasetError(
                f"{item.image} and {seen[name]} both map to {name!r}; raise name_depth to keep parent folders"
            )
        seen[name] = item.image
        split = item.split or (
            "val" if (zlib.crc32(name.encode()) % 10_000) < val_fraction * 10_000 else "train"
        )
        _place(item.image, out / "images" / split / name, images)
        label = out / "labels" / split / f"{Path(name).stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(_label_lines(item), encoding="utf-8")
        counts[split] += 1
        boxes[split] += len(item.boxes)
        box_counts[Path(name).stem] = len(item.boxes)
    if counts["val"] == 0 and counts["train"] > 1:
        # ultralytics needs a validation split; move the last training image (by name) there.
        last = sorted((out / "images" / "train").iterdir())[-1]
        for tree, suffix in (("images", last.suffix), ("labels", ".txt")):
            source = out / tree / "train" / f"{last.stem}{suffix}"
            target = out / tree / "val" / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        counts["train"] -= 1
        counts["val"] += 1
        boxes["train"] -= box_counts[last.stem]
        boxes["val"] += box_counts[last.stem]
    data_yaml = out / "data.yaml"
    atomic_write_text(
        data_yaml,
        f"# written by mpanet-train-detector convert: {sum(counts.values())} images, one class\n"
        f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: person\n",
    )
    return YoloDataset(data_yaml, counts, boxes)


def _label_lines(item: LabelledImage) -> str:
    lines = []
    for x1, y1, x2, y2 in np.asarray(item.boxes, np.float64).reshape(-1, 4):
        cx, cy = (x1 + x2) / 2 / item.width, (y1 + y2) / 2 / item.height
        w, h = (x2 - x1) / item.width, (y2 - y1) / item.height
        lines.append(f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def read_yolo_labels(path: str | os.PathLike[str], width: int, height: int) -> np.ndarray:
    """(N, 4) float32 xyxy pixel boxes of a YOLO label file (class column ignored), for checks and
    drawing converted labels back onto their images."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise DatasetError(f"{path}:{number}: expected 'class cx cy w h', got {line!r}")
        cx, cy, w, h = (float(v) for v in parts[1:])
        if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
            raise DatasetError(f"{path}:{number}: coordinates must be normalised to [0, 1]")
        rows.append(
            [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        )
    return np.asarray(rows, np.float32).reshape(-1, 4)
