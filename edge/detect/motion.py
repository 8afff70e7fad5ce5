"""A background/motion gate for fixed cameras: static warm things (signs, lamps, heaters) are not people.

OpenCV's adaptive Gaussian-mixture (``cv2.createBackgroundSubtractorMOG2``) or k-nearest-neighbour
(``cv2.createBackgroundSubtractorKNN``) background model learns what the scene looks like; a hot
region is accepted when enough of its pixels are foreground (they changed recently). People who
stop walking fade into the background model after a while, so a region that matches a box the
gate accepted in the last ``hold_frames`` frames stays accepted (a person waiting at a crossing is
still a person).

Warm-up: a background model needs frames. For the first ``warmup_frames`` frames of a stream (and
again after a gap in the frame indices, a change of frame size, or :meth:`MotionGate.reset`) the
gate has no opinion: with ``warmup="pass"`` (default) every candidate passes -- the detector then
behaves like the shape/size detector alone, which is what a folder of unrelated stills gets -- and
with ``warmup="hold"`` nothing passes until the model is ready.

A moving camera (vehicle, PTZ) makes everything foreground: the gate then passes everything and
only the shape priors remain. Use ``gate: none`` there.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.detect.boxes import box_iou

GATES = ("mog2", "knn", "none")
WARMUPS = ("pass", "hold")


class MotionGate:
    """Which candidate boxes of a fixed camera's frame are on moving (or recently moving) pixels.

    Args:
        method: ``mog2`` or ``knn`` (OpenCV's background subtractors).
        history: frames the background model remembers (OpenCV's ``history``).
        threshold: MOG2 ``varThreshold`` (squared Mahalanobis distance) or KNN ``dist2Threshold``;
            ``None`` takes OpenCV's default (16 / 400).
        warmup_frames: frames before the gate judges (see the module docstring).
        warmup: ``pass`` or ``hold`` during warm-up.
        moving_frac_min: a box passes when at least this fraction of its hot pixels is foreground.
        hold_frames: a box overlapping (IoU >= ``hold_iou``) a box accepted within this many frames
            passes too (people who stand still).
        hold_iou: the overlap for ``hold_frames``.
        work_width: frames are downscaled to this width for the model (speed).
    """

    def __init__(
        self,
        method: str = "mog2",
        history: int = 300,
        threshold: float | None = None,
        warmup_frames: int = 10,
        warmup: str = "pass",
        moving_frac_min: float = 0.2,
        hold_frames: int = 100,
        hold_iou: float = 0.3,
        work_width: int = 320,
    ) -> None:
        if method not in ("mog2", "knn"):
            raise ValueError(f"motion gate: method must be 'mog2' or 'knn', got {method!r}")
        if warmup not in WARMUPS:
            raise ValueError(f"motion gate: warmup must be one of {WARMUPS}, got {warmup!r}")
        if history < 1 or warmup_frames < 0 or hold_frames < 0 or work_width < 16:
            raise ValueError(
                "motion gate: history >= 1, warmup_frames >= 0, hold_frames >= 0, work_width >= 16"
            )
        if not 0.0 <= moving_frac_min <= 1.0 or not 0.0 < hold_iou <= 1.0:
            raise ValueError("motion gate: moving_frac_min in [0, 1], hold_iou in (0, 1]")
        self.method = method
        self.history = history
        self.threshold = threshold
        self.warmup_frames = warmup_frames
        self.warmup = warmup
        self.moving_frac_min = moving_frac_min
        self.hold_frames = hold_frames
        self.hold_iou = hold_iou
        self.work_width = work_width
        self.reset()

    def reset(self) -> None:
        """Forget the background model and the held boxes (a new stream)."""
        if self.method == "mog2":
            self._model = cv2.createBackgroundSubtractorMOG2(
                history=self.history,
                varThreshold=16.0 if self.threshold is None else self.threshold,
                detectShadows=False,
            )
        else:
            self._model = cv2.createBackgroundSubtractorKNN(
                history=self.history,
                dist2Threshold=400.0 if self.threshold is None else self.threshold,
                detectShadows=False,
            )
        self.frames_seen = 0
        self._last_index: int | None = None
        self._shape: tuple[int, int] | None = None
        self._held: list[tuple[int, np.ndarray]] = []  # (frame count when accepted, (4,) box)

    @property
    def warm(self) -> bool:
        return self.frames_seen > self.warmup_frames

    def update(self, grey: np.ndarray, frame_index: int) -> np.ndarray | None:
        """Feed a frame ((H, W) uint8) to the model; returns its (H, W) bool foreground mask at full
        size, or ``None`` while warming up. A gap in ``frame_index`` or a new size resets the model."""
        shape = (int(grey.shape[0]), int(grey.shape[1]))
        if self._shape != shape or (self._last_index is not None and frame_index != self._last_index + 1):
            self.reset()
        self._shape, self._last_index = shape, frame_index
        factor = min(1.0, self.work_width / shape[1])
        small = (
            cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA) if factor < 1 else grey
        )
        foreground = self._model.apply(small)
        self.frames_seen += 1
        if not self.warm:
            return None
        if factor < 1:
            foreground = cv2.resize(foreground, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return foreground > 0

    def accept(self, xyxy: np.ndarray, hot: np.ndarray, foreground: np.ndarray | None) -> np.ndarray:
        """(N,) bool for (N, 4) candidate boxes.

        Args:
            xyxy: candidate boxes, frame pixels.
            hot: (H, W) bool, the detector's hot-pixel mask at frame size (the pixels that count).
            foreground: :meth:`update`'s mask (``None``: warming up).
        """
        xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        if foreground is None:
            return np.full(len(xyxy), self.warmup == "pass", dtype=bool)
        now = self.frames_seen
        self._held = [(seen, box) for seen, box in self._held if now - seen <= self.hold_frames]
        keep = np.zeros(len(xyxy), dtype=bool)
        for i, (x1, y1, x2, y2) in enumerate(xyxy.astype(int)):
            region = hot[y1:y2, x1:x2]
            count = int(region.sum())
            moving = int((region & foreground[y1:y2, x1:x2]).sum())
            keep[i] = count > 0 and moving >= self.moving_frac_min * count
        if self._held and (~keep).any():
            held = np.stack([box for _, box in self._held])
            overlap = box_iou(xyxy[~keep], held).max(axis=1) >= self.hold_iou
            keep[np.flatnonzero(~keep)[overlap]] = True
        self._held.extend((now, box.copy()) for box in xyxy[keep])
        return keep
