"""Which sightings are worth embedding (the crop quality gate), and cutting their crops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.detect.detections import Detections


@dataclass
class CropGate:
    """Crop quality gate (the node config's ``crops:`` section; not frozen so that the config
    loader can apply overrides in place -- treat it as a value).

    Attributes:
        min_height_px: boxes shorter than this are not embedded (too few pixels for ReID).
        min_width_px: likewise for the width.
        border_margin_px: a box within this many pixels of the frame border is cut by it
            (part of the person is outside the frame).
        reject_cut: refuse crops cut by the border (``False``: accept them at half quality).
        full_quality_height_px: height at which the size factor of the quality reaches 1.
        aspect_min, aspect_max: allowed height / width of a person box.
    """

    min_height_px: float = 48.0
    min_width_px: float = 12.0
    border_margin_px: float = 2.0
    reject_cut: bool = True
    full_quality_height_px: float = 128.0
    aspect_min: float = 1.0
    aspect_max: float = 6.0

    def __post_init__(self) -> None:
        if self.min_height_px < 1 or self.full_quality_height_px < self.min_height_px:
            raise ValueError("crops: need 1 <= min_height_px <= full_quality_height_px")
        if not 0 < self.aspect_min <= self.aspect_max:
            raise ValueError(
                f"crops: need 0 < aspect_min <= aspect_max, got {self.aspect_min}, {self.aspect_max}"
            )

    def quality(self, detections: Detections, frame_width: int, frame_height: int) -> np.ndarray:
        """(N,) float32 in [0, 1]; 0 = rejected (no embedding).

        Quality of an accepted crop = detection score x min(1, height / full_quality_height_px),
        halved for a border-cut crop when ``reject_cut`` is off.
        """
        if len(detections) == 0:
            return np.zeros(0, np.float32)
        x1, y1, x2, y2 = detections.xyxy.T
        h, w = y2 - y1, x2 - x1
        m = self.border_margin_px
        cut = (x1 < m) | (y1 < m) | (x2 > frame_width - m) | (y2 > frame_height - m)
        aspect = h / np.maximum(w, 1e-6)
        ok = (h >= self.min_height_px) & (w >= self.min_width_px)
        ok &= (aspect >= self.aspect_min) & (aspect <= self.aspect_max)
        if self.reject_cut:
            ok &= ~cut
        size = np.minimum(1.0, h / self.full_quality_height_px)
        quality = np.clip(detections.scores, 0.0, 1.0) * size * np.where(cut, 0.5, 1.0)
        return np.where(ok, quality, 0.0).astype(np.float32)


def cut_crops(image: np.ndarray, xyxy: np.ndarray) -> list[np.ndarray]:
    """Crops (views, no copy) of ``image`` (H, W, C) for boxes (N, 4) xyxy pixels, rounded outwards
    and clipped to the frame; each crop is at least 1x1."""
    height, width = image.shape[:2]
    crops = []
    for x1, y1, x2, y2 in np.asarray(xyxy, np.float32).reshape(-1, 4):
        left = int(min(max(np.floor(x1), 0), width - 1))
        top = int(min(max(np.floor(y1), 0), height - 1))
        right = int(min(max(np.ceil(x2), left + 1), width))
        bottom = int(min(max(np.ceil(y2), top + 1), height))
        crops.append(image[top:bottom, left:right])
    return crops
