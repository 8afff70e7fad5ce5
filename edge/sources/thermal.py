"""Thermal frames to 8 bits: a robust percentile stretch, then 3 channels as the embedder expects.

Radiometric (16-bit) cameras deliver raw counts whose useful range is a small slice of 0..65535
and drifts with the scene; a min/max stretch would be ruled by a few hot or dead pixels, so the
range is taken between two percentiles (1st/99th by default), optionally smoothed over time so the
brightness does not flicker from frame to frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class ThermalNormalizer:
    """Turns a thermal frame (8- or 16-bit, 1 or 3 channels) into an (H, W) uint8 grey image.

    Attributes:
        low_percentile, high_percentile: the percentiles (0..100) mapped to 0 and 255.
        smoothing: weight in [0, 1) of the previous frame's range in an exponential moving average
            of (low, high); 0 = every frame stretched on its own.
        stretch_8bit: also stretch 8-bit input (by default 8-bit frames pass through unchanged).
        sample_step: percentiles are computed on every ``sample_step``-th pixel in each direction
            (a 640x512 frame has 20k samples at step 4: plenty for a 1% percentile, 16x faster).
        min_range: smallest (high - low) in input units, so a flat frame does not divide by ~0.
    """

    low_percentile: float = 1.0
    high_percentile: float = 99.0
    smoothing: float = 0.0
    stretch_8bit: bool = False
    sample_step: int = 4
    min_range: float = 1.0
    _range: tuple[float, float] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ValueError(
                f"thermal percentiles must satisfy 0 <= low < high <= 100, got "
                f"{self.low_percentile}, {self.high_percentile}"
            )
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"thermal smoothing must be in [0, 1), got {self.smoothing}")
        if self.sample_step < 1 or self.min_range <= 0:
            raise ValueError("thermal sample_step must be >= 1 and min_range > 0")

    def reset(self) -> None:
        """Forget the smoothed range (e.g. after a reconnect)."""
        self._range = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Args: image (H, W), (H, W, 1) or (H, W, 3) uint8/uint16 (3 channels: converted to grey).

        Returns:
            (H, W) uint8.
        """
        grey = _grey(image)
        if grey.dtype == np.uint8 and not self.stretch_8bit:
            return grey
        if grey.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"thermal frames must be uint8 or uint16, got {grey.dtype}")
        samples = grey[:: self.sample_step, :: self.sample_step]
        low, high = (float(v) for v in np.percentile(samples, (self.low_percentile, self.high_percentile)))
        if self._range is not None and self.smoothing > 0:
            a = self.smoothing
            low = a * self._range[0] + (1 - a) * low
            high = a * self._range[1] + (1 - a) * high
        self._range = (low, high)
        scale = 255.0 / max(high - low, self.min_range)
        # cv2.convertScaleAbs would fold negatives back up; do the affine map in float32 and clip.
        out = (grey.astype(np.float32) - low) * scale
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def infrared_to_3ch(grey: np.ndarray, how: str = "replicate") -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8 as an engine sidecar's ``infrared_to_3ch`` says (``replicate``)."""
    if how != "replicate":
        raise ValueError(f"infrared_to_3ch must be 'replicate', got {how!r}")
    if grey.ndim != 2:
        raise ValueError(f"expected an (H, W) grey image, got shape {grey.shape}")
    return cv2.merge((grey, grey, grey))


def _grey(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy image, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (3, 4):
        # Thermal files stored as colour (KAIST, LLVIP jpgs) hold the grey value in every channel.
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(image, code)
    raise ValueError(f"expected a (H, W), (H, W, 1) or (H, W, 3) thermal frame, got shape {image.shape}")
