"""The struct-of-arrays container passed between detection, tracking, cropping and embedding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """N person boxes of one frame.

    Attributes:
        xyxy: (N, 4) float32, ``x1, y1, x2, y2`` in pixels of the frame (x2 >= x1, y2 >= y1).
        scores: (N,) float32 confidences in [0, 1].
        class_ids: (N,) int64 detector class ids (0 = person for every backend here).
        track_ids: (N,) int64 camera-local track ids, or ``None`` before tracking.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray | None = None
    track_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"Detections.xyxy must be (N, 4), got shape {xyxy.shape}")
        n = xyxy.shape[0]
        if not np.isfinite(xyxy).all():
            raise ValueError("Detections.xyxy must be finite")
        if (xyxy[:, 2] < xyxy[:, 0]).any() or (xyxy[:, 3] < xyxy[:, 1]).any():
            raise ValueError("Detections.xyxy must have x2 >= x1 and y2 >= y1")
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if scores.shape != (n,):
            raise ValueError(f"Detections.scores must be ({n},), got shape {scores.shape}")
        class_ids = (
            np.zeros(n, np.int64)
            if self.class_ids is None
            else np.asarray(self.class_ids, np.int64).reshape(-1)
        )
        if class_ids.shape != (n,):
            raise ValueError(f"Detections.class_ids must be ({n},), got shape {class_ids.shape}")
        track_ids = None
        if self.track_ids is not None:
            track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
            if track_ids.shape != (n,):
                raise ValueError(f"Detections.track_ids must be ({n},), got shape {track_ids.shape}")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "class_ids", class_ids)
        object.__setattr__(self, "track_ids", track_ids)

    @classmethod
    def empty(cls, tracked: bool = False) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            track_ids=np.zeros(0, np.int64) if tracked else None,
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Detections:
        """Rows selected by a boolean mask, an index array or a slice (always a Detections)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.xyxy[index],
            self.scores[index],
            self.class_ids[index],  # type: ignore[index]
            None if self.track_ids is None else self.track_ids[index],
        )

    @property
    def widths(self) -> np.ndarray:
        """(N,) float32 pixels."""
        return self.xyxy[:, 2] - self.xyxy[:, 0]

    @property
    def heights(self) -> np.ndarray:
        """(N,) float32 pixels."""
        return self.xyxy[:, 3] - self.xyxy[:, 1]

    def with_track_ids(self, track_ids: np.ndarray) -> Detections:
        return Detections(self.xyxy, self.scores, self.class_ids, track_ids)

    def clipped(self, width: int, height: int) -> Detections:
        """Boxes clipped to a ``width`` x ``height`` frame."""
        xyxy = self.xyxy.copy()
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
        return Detections(xyxy, self.scores, self.class_ids, self.track_ids)
