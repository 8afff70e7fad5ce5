"""Calibration crops for INT8 quantization: a few hundred person images of both modalities.

The crops are preprocessed exactly as the runtime will preprocess them (the sidecar's
:class:`~engines.sidecar.Preprocessing`, via :func:`engines.runtime.preprocess_crops`), so the
activation ranges measured during calibration are the ones the deployed engine sees. Both modalities
must be present: infrared images (replicated grey) have different activation statistics from colour
ones, and an engine calibrated on one modality clips the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common import Modality
from engines.runtime.preprocess import preprocess_crops
from engines.sidecar import Preprocessing

__all__ = [
    "IMAGE_SUFFIXES",
    "CalibrationError",
    "CalibrationSet",
    "build_calibration_set",
    "find_images",
    "guess_modality",
    "read_crop",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# A colour image whose channels differ by at most this (mean absolute, 0..255) counts as grey:
# SYSU-MM01 stores its infrared images as 3 identical channels, JPEG noise adds a little.
_GREY_TOLERANCE = 2.0


class CalibrationError(ValueError):
    """Calibration input that cannot be used (no images, one modality only, unreadable files)."""


@dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed calibration crops.

    Attributes:
        images: (N, 3, H, W) float32, preprocessed for the engine.
        modalities: N modality names (``visible`` / ``infrared``).
        sources: N file paths.
    """

    images: np.ndarray
    modalities: tuple[str, ...]
    sources: tuple[str, ...] = field(repr=False)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def counts(self) -> dict[str, int]:
        """Images per modality."""
        return {m.value: sum(1 for x in self.modalities if x == m.value) for m in Modality}

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Contiguous (b, 3, H, W) batches in order, all of one size b = min(batch_size, N).

        The last batch is topped up from the first images: onnxruntime's histogram calibrators
        (percentile, entropy) stack the per-batch outputs and fail on a shorter last batch, and
        repeating a few images barely changes a range estimate.
        """
        size = max(1, min(batch_size, len(self)))
        for start in range(0, len(self), size):
            batch = self.images[start : start + size]
            if batch.shape[0] < size:
                batch = np.concatenate([batch, self.images[: size - batch.shape[0]]])
            yield np.ascontiguousarray(batch)

    def describe(self) -> dict[str, Any]:
        """Summary for a sidecar: size, per-modality counts, a few example sources."""
        return {"images": len(self), "per_modality": self.counts(), "examples": list(self.sources[:4])}


def find_images(roots: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files under ``roots`` (files are taken as they are, folders searched recursively), sorted."""
    found: list[Path] = []
    for root in roots:
        path = Path(root)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            raise CalibrationError(f"calibration source {path} does not exist")
    return sorted(set(found))


def read_crop(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as uint8: (h, w) for single-channel files, (h, w, 3) BGR otherwise.

    16-bit images (raw thermal) are scaled from their full range to 8 bits.
    """
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CalibrationError(f"cannot read image {path}")
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) * (255.0 / 65535.0)).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise CalibrationError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


def guess_modality(image: np.ndarray) -> Modality:
    """Infrared if the image is single-channel or its three channels are (nearly) equal."""
    if image.ndim == 2:
        return Modality.INFRARED
    channels = image.astype(np.int16)
    spread = max(
        float(np.mean(np.abs(channels[:, :, 0] - channels[:, :, 1]))),
        float(np.mean(np.abs(channels[:, :, 1] - channels[:, :, 2]))),
    )
    return Modality.INFRARED if spread <= _GREY_TOLERANCE else Modality.VISIBLE


def build_calibration_set(
    items: Sequence[tuple[str | os.PathLike[str], Modality | str | None]],
    spec: Preprocessing,
    count: int = 256,
    seed: int = 0,
    min_fraction_per_modality: float = 0.2,
) -> CalibrationSet:
    """Pick ``count`` images (balanced over modalities where possible), read and preprocess them.

    Args:
        items: (path, modality) pairs; a ``None`` modality is guessed from the pixels
            (:func:`guess_modality`).
        spec: the engine's preprocessing.
        count: how many crops to use (a few hundred is typical for post-training quantization).
        seed: sampling seed.
        min_fraction_per_modality: each modality must make up at least this share of the set.

    Raises:
        CalibrationError: no images, or a modality is missing / under-represented.
    """
    if not items:
        raise CalibrationError("no calibration images given")
    if count < 1:
        raise CalibrationError(f"calibration count must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    quota = -(-count // len(Modality))  # balanced: half of the set per modality (rounded up)
    buckets: dict[str, list[tuple[np.ndarray, str]]] = {m.value: [] for m in Modality}
    overflow: list[tuple[np.ndarray | None, str, str | None]] = []  # over quota: used to top up
    for index in rng.permutation(len(items)):
        if all(len(bucket) >= quota for bucket in buckets.values()):
            break
        path, modality = items[int(index)]
        if modality is not None and len(buckets[Modality(modality).value]) >= quota:
            overflow.append((None, str(path), Modality(modality).value))  # read later only if needed
            continue
        image = read_crop(path)
        name = Modality(modality).value if modality is not None else guess_modality(image).value
        if len(buckets[name]) >= quota:
            if len(overflow) < count:
                overflow.append((image, str(path), name))
            continue
        buckets[name].append((image, str(path)))
    chosen = [(image, path, name) for name, bucket in buckets.items() for image, path in bucket]
    for image, path, name in overflow:
        if len(chosen) >= count:
            break
        chosen.append((read_crop(path) if image is None else image, path, str(name)))
    chosen = chosen[:count]
    result = CalibrationSet(
        images=preprocess_crops([c[0] for c in chosen], spec, input_order="BGR"),
        modalities=tuple(c[2] for c in chosen),
        sources=tuple(c[1] for c in chosen),
    )
    counts = result.counts()
    short = {m: n for m, n in counts.items() if n < min_fraction_per_modality * len(result)}
    if short:
        raise CalibrationError(
            f"calibration set of {len(result)} images is unbalanced: {counts}; each modality needs at least "
            f"{min_fraction_per_modality:.0%} (give images of both visible and infrared cameras)"
        )
    return result
