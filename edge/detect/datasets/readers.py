"""Readers of person boxes from thermal datasets, all into one record: :class:`LabelledImage`.

- **LLVIP** (bupt-ai-cz/LLVIP): ``infrared/{train,test}/NNNNNN.jpg`` with Pascal VOC files
  ``Annotations/NNNNNN.xml`` (objects named ``person``; the boxes hold for both images of a pair).
- **FLIR ADAS** (v1 ``thermal_annotations.json``, v2 ``coco.json`` per split folder): COCO JSON,
  ``images[].file_name`` relative to the JSON's folder, ``annotations[].bbox = [x, y, w, h]``
  pixels, the category named ``person`` (id 1 in both versions, looked up by name here).
- **KAIST** multispectral (SoonminHwang/rgbt-ped-detection): ``annotations/setNN/VNNN/INNNNN.txt``
  in Piotr's bbGt format -- a ``% bbGt version=3`` header, then one object per line:
  ``label left top width height occluded vx vy vw vh ignore angle``; labels ``person``, ``people``
  (a group), ``person?`` (unsure), ``cyclist``. Images: ``images/setNN/VNNN/lwir/INNNNN.jpg``.

Boxes come out as (N, 4) float32 xyxy pixels, clipped to the image, degenerate ones dropped.
Everything read is checked: a malformed file is a :class:`DatasetError` naming it.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.annotations import AnnotationError, read_voc_boxes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# KAIST labels that are one person each; "people" (a crowd box) and "person?" are left out by
# default: a detector should not learn that a group is one person, nor learn from unsure boxes.
KAIST_PERSON_LABELS = ("person", "cyclist")


class DatasetError(ValueError):
    """A dataset file that cannot be read (names the file and what is wrong)."""


@dataclass(frozen=True)
class LabelledImage:
    """One training image and its person boxes.

    Attributes:
        image: path of the image file.
        width, height: its size in pixels.
        boxes: (N, 4) float32 xyxy pixels (N may be 0: a negative image, useful too).
        split: ``train`` or ``val`` when the dataset says so, else ``""`` (the writer decides).
    """

    image: Path
    width: int
    height: int
    boxes: np.ndarray
    split: str = ""


def _clean(boxes: np.ndarray, width: int, height: int, min_side: float = 1.0) -> np.ndarray:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) and not np.isfinite(boxes).all():
        raise DatasetError("non-finite box coordinates")
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    keep = (boxes[:, 2] - boxes[:, 0] >= min_side) & (boxes[:, 3] - boxes[:, 1] >= min_side)
    return boxes[keep]


def _image_size(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"image {path} is not readable")
    return int(image.shape[1]), int(image.shape[0])


def _split_of(path: Path) -> str:
    """``train`` / ``val`` from a parent folder named train/val/test (LLVIP, FLIR), else ``""``."""
    for part in reversed(path.parent.parts):
        lowered = part.lower()
        if lowered.endswith("train"):
            return "train"
        if lowered.endswith(("val", "test", "validation")):
            return "val"
    return ""


def _voc_size(path: Path) -> tuple[int, int] | None:
    try:
        size = ET.parse(path).getroot().find("size")
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"VOC file {path} is not readable XML: {exc}") from exc
    if size is None:
        return None
    try:
        width, height = int(size.findtext("width") or 0), int(size.findtext("height") or 0)
    except ValueError as exc:
        raise DatasetError(f"{path}: bad <size> ({exc})") from exc
    return (width, height) if width > 0 and height > 0 else None


def read_llvip(
    images: str | os.PathLike[str], annotations: str | os.PathLike[str], label: str = "person"
) -> list[LabelledImage]:
    """LLVIP (or any Pascal VOC set): every image under ``images`` (recursively) with the VOC file
    of the same stem in ``annotations``. An image without an annotation file is an error (LLVIP
    labels every image); the split comes from the image's folder (``train`` / ``test``)."""
    images, annotations = Path(images), Path(annotations)
    if not images.is_dir() or not annotations.is_dir():
        raise DatasetError(f"LLVIP: {images} and {annotations} must be folders")
    xml_by_stem = {p.stem: p for p in annotations.rglob("*.xml")}
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"LLVIP: no images under {images}")
    out = []
    for path in files:
        xml = xml_by_stem.get(path.stem)
        if xml is None:
            raise DatasetError(f"LLVIP: no annotation {annotations}/{path.stem}.xml for image {path}")
        size = _voc_size(xml) or _image_size(path)
        try:
            boxes = read_voc_boxes(xml, label=label)
        except AnnotationError as exc:
            raise DatasetError(str(exc)) from exc
        out.append(LabelledImage(path, size[0], size[1], _clean(boxes, *size), _split_of(path)))
    return out


def read_flir_coco(
    annotation_file: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None = None,
    category: str = "person",
) -> list[LabelledImage]:
    """FLIR ADAS (v1 or v2) COCO JSON: the images it lists, boxes of the category named ``category``.

    ``file_name`` is resolved against ``images_root`` (default: the JSON file's folder). Crowd
    annotations (``iscrowd: 1``) are left out. Images without person boxes stay (negatives).
    """
    annotation_file = Path(annotation_file)
    root = Path(images_root) if images_root is not None else annotation_file.parent
    try:
        data = json.loads(annotation_file.read_text(encoding="utf-8"))
        images = {int(i["id"]): i for i in data["images"]}
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        annotations = data.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"FLIR: {annotation_file} is not a COCO annotation file: {exc}") from exc
    wanted = {cid for cid, name in categories.items() if name.lower() == category.lower()}
    if not wanted:
        raise DatasetError(
            f"FLIR: {annotation_file} has no category named {category!r} ({sorted(categories.values())})"
        )
    boxes: dict[int, list[list[float]]] = {image_id: [] for image_id in images}
    for number, ann in enumerate(annotations):
        try:
            if int(ann["category_id"]) not in wanted or int(ann.get("iscrowd", 0)):
                continue
            image_id = int(ann["image_id"])
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"FLIR: {annotation_file}: annotation {number} is malformed ({exc})") from exc
        if image_id not in boxes:
            raise DatasetError(f"FLIR: {annotation_file}: annotation {number} names unknown image {image_id}")
        boxes[image_id].append([x, y, x + w, y + h])
    out = []
    for image_id, info in sorted(images.items()):
        path = root / str(info["file_name"])
        try:
            width, height = int(info["width"]), int(info["height"])
        except (KeyError, TypeError, ValueError):
            width, height = _image_size(path)
        if width <= 0 or height <= 0:
            raise DatasetError(f"FLIR: {annotation_file}: image {image_id} has size {width}x{height}")
        split = _split_of(annotation_file) or _split_of(path)
        out.append(
            LabelledImage(path, width, height, _clean(np.asarray(boxes[image_id]), width, height), split)
        )
    return out


def read_kaist_boxes(path: str | os.PathLike[str], labels: Sequence[str] = KAIST_PERSON_LABELS) -> np.ndarray:
    """(N, 4) xyxy boxes of one KAIST bbGt file for the given labels (occluded ones included)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"KAIST annotation {path} is not readable: {exc}") from exc
    boxes = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("%"):
            continue
        parts = line.split()
        if len(parts) < 5:
            raise DatasetError(f"{path}:{number}: expected 'label left top width height ...', got {line!r}")
        if parts[0] not in labels:
            continue
        try:
            x, y, w, h = (float(v) for v in parts[1:5])
        except ValueError as exc:
            raise DatasetError(f"{path}:{number}: not a number ({exc})") from exc
        boxes.append([x, y, x + w, y + h])
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def read_kaist(
    root: str | os.PathLike[str],
    sets: Iterable[str] | None = None,
    modality: str = "lwir",
    labels: Sequence[str] = KAIST_PERSON_LABELS,
    every: int = 1,
) -> list[LabelledImage]:
    """KAIST: ``root/annotations/setNN/VNNN/INNNNN.txt`` with ``root/images/setNN/VNNN/<modality>/INNNNN.jpg``.

    Args:
        sets: e.g. ``["set00", ..., "set05"]`` (the official train sets; set06-11 are the test sets,
            given split ``val``); default every set found.
        modality: ``lwir`` (thermal) or ``visible``.
        every: keep every n-th frame (KAIST is 20 fps video: neighbours are near duplicates;
            the usual training subsets take every 2nd to 20th).
    """
    root = Path(root)
    annotations = root / "annotations"
    if not annotations.is_dir():
        raise DatasetError(f"KAIST: {annotations} does not exist")
    if every < 1:
        raise DatasetError("KAIST: every must be >= 1")
    chosen = sorted(sets) if sets is not None else sorted(p.name for p in annotations.iterdir() if p.is_dir())
    out = []
    for set_name in chosen:
        files = sorted((annotations / set_name).glob("V*/I*.txt"))
        if not files:
            raise DatasetError(f"KAIST: no annotations under {annotations / set_name}")
        split = "val" if set_name >= "set06" else "train"
        for path in files[::every]:
            image = root / "images" / set_name / path.parent.name / modality / f"{path.stem}.jpg"
            if not image.is_file():
                image = image.with_suffix(".png")
            if not image.is_file():
                raise DatasetError(f"KAIST: no image for {path} (looked for {image.with_suffix('.jpg')})")
            width, height = _image_size(image)
            out.append(
                LabelledImage(
                    image, width, height, _clean(read_kaist_boxes(path, labels), width, height), split
                )
            )
    return out
