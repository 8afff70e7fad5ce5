"""Image loading for the datasets: every image comes back as 3-channel 8-bit RGB.

Infrared files may be stored single-channel (SYSU-MM01 says its IR images have one channel of
content) or as 16-bit thermal; the network always sees three channels, so grey images are
replicated to RGB. An unreadable file raises :class:`ImageReadError` naming the path, or is skipped
and counted when the caller asks for ``on_corrupt="skip"`` (see :func:`filter_readable`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Literal, TypeVar

import numpy as np
from PIL import Image

from trainer.data.samples import DatasetError, Sample

__all__ = [
    "IMAGE_SUFFIXES",
    "CorruptPolicy",
    "ImageReadError",
    "apply_corrupt_policy",
    "filter_readable",
    "load_image",
    "load_image_array",
]

CorruptPolicy = Literal["error", "skip"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

_LOG = logging.getLogger(__name__)
S = TypeVar("S", bound=Sample)

# Full-scale value of the high-bit-depth modes PIL reports for thermal images.
_HIGH_DEPTH_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


class ImageReadError(DatasetError):
    """An image file that is missing or cannot be decoded."""


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode ``path`` fully and return it as a PIL image in mode ``"RGB"`` (8 bits per channel).

    Grey (``L``), palette, RGBA and 16-bit grey images are converted; 16-bit values are scaled from
    their full range (0..65535) to 0..255, 32-bit integer/float grey by the image's own min..max.

    Raises:
        ImageReadError: the file is missing, truncated or not an image.
    """
    try:
        with Image.open(path) as handle:
            handle.load()  # decode now, so a truncated file fails here and not inside a transform
            image = handle
            mode = image.mode
            if mode in _HIGH_DEPTH_SCALE:
                grey = np.asarray(image, dtype=np.float32) * (255.0 / _HIGH_DEPTH_SCALE[mode])
                return Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
            if mode in ("I", "F"):
                grey = np.asarray(image, dtype=np.float64)
                low, high = float(grey.min()), float(grey.max())
                scaled = (grey - low) * (255.0 / (high - low)) if high > low else np.zeros_like(grey)
                return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
            return image.convert("RGB")
    except FileNotFoundError as exc:
        raise ImageReadError(f"image file {os.fspath(path)} does not exist") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(
            f"image file {os.fspath(path)} cannot be decoded as an image (expected a readable "
            f"JPEG/PNG/BMP): {exc}"
        ) from exc


def load_image_array(path: str | os.PathLike[str]) -> np.ndarray:
    """:func:`load_image` as an (H, W, 3) uint8 RGB array."""
    return np.asarray(load_image(path))


def filter_readable(samples: Sequence[S], *, progress: bool = False) -> tuple[list[S], list[str]]:
    """Decode every sample's image; return (the readable samples in order, the unreadable paths).

    Decoding all images costs time (about a millisecond per small JPEG); readers only do it when
    asked to skip corrupt files.
    """
    kept: list[S] = []
    bad: list[str] = []
    iterator = samples
    if progress:
        from tqdm import tqdm

        iterator = tqdm(samples, desc="checking images", unit="img")
    for sample in iterator:
        try:
            load_image(sample.path)
        except ImageReadError:
            bad.append(sample.path)
        else:
            kept.append(sample)
    return kept, bad


def apply_corrupt_policy(samples: Sequence[S], on_corrupt: CorruptPolicy, *, what: str) -> list[S]:
    """Apply a reader's corrupt-image policy to ``samples``.

    ``"error"``: returns the list unchanged; an unreadable image raises :class:`ImageReadError`
    (naming the path) when it is loaded. ``"skip"``: decodes every image now, drops the unreadable
    ones and logs how many were skipped (and the first few paths).
    """
    if on_corrupt == "error":
        return list(samples)
    if on_corrupt != "skip":
        raise ValueError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
    kept, bad = filter_readable(samples, progress=len(samples) > 5000)
    if bad:
        _LOG.warning(
            "%s: skipped %d unreadable image(s) of %d (first: %s)",
            what,
            len(bad),
            len(samples),
            ", ".join(bad[:3]),
        )
    return kept
