"""Temporal persistence: a box is reported once something overlapping it was found in enough recent frames.

One-frame flickers (a reflection, a warm car exhaust puff, noise) rarely repeat at the same place in
``min_hits`` of the last ``window`` frames; people do. Matching is by IoU against the candidates of
the previous frames (greedy, no motion model: at camera frame rates a walking person's boxes in
consecutive frames overlap well).

A stream's first frames have no history. With ``warmup="pass"`` (default) the first ``min_hits - 1``
frames after a (re)start report what they find -- a folder of unrelated stills then degrades to
single-frame detection -- and with ``warmup="hold"`` nothing is reported before a box has the hits.
A gap in the frame indices restarts the history, and so does a gap in time longer than
``max_gap_s``: IoU matching assumes frames close in time (a folder of frames one second apart, or
stills of one camera taken minutes apart, have people in different places in every frame).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from edge.detect.boxes import box_iou


class Persistence:
    """Counts, per candidate box, the recent frames with an overlapping candidate.

    Args:
        min_hits: frames (including this one) in which the box must have been found; 1 = off.
        window: the number of recent frames looked at (>= ``min_hits``).
        iou_min: overlap that counts as the same object.
        warmup: ``pass`` or ``hold`` (see the module docstring).
        max_gap_s: frames further apart in time than this are not compared (the history restarts).
    """

    def __init__(
        self,
        min_hits: int = 2,
        window: int = 3,
        iou_min: float = 0.3,
        warmup: str = "pass",
        max_gap_s: float = 0.5,
    ) -> None:
        if min_hits < 1 or window < min_hits or not 0 < iou_min <= 1 or not max_gap_s > 0:
            raise ValueError("persistence: need 1 <= min_hits <= window, 0 < iou_min <= 1, max_gap_s > 0")
        if warmup not in ("pass", "hold"):
            raise ValueError(f"persistence: warmup must be 'pass' or 'hold', got {warmup!r}")
        self.min_hits = min_hits
        self.window = window
        self.iou_min = iou_min
        self.warmup = warmup
        self.max_gap_s = max_gap_s
        self.reset()

    def reset(self) -> None:
        self._history: deque[np.ndarray] = deque(maxlen=self.window - 1)
        self._last_index: int | None = None
        self._last_time: float | None = None
        self._since_reset = 0

    def __call__(self, xyxy: np.ndarray, frame_index: int, timestamp: float | None = None) -> np.ndarray:
        """(N,) bool: which of this frame's (N, 4) candidate boxes are persistent.

        Args:
            xyxy: candidate boxes, pixels. frame_index: the frame's index in its stream.
            timestamp: the frame's time in seconds (``None``: only indices are checked).
        """
        xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        index_gap = self._last_index is not None and frame_index != self._last_index + 1
        time_gap = (
            self._last_time is not None
            and timestamp is not None
            and abs(timestamp - self._last_time) > self.max_gap_s
        )
        if index_gap or time_gap:
            self.reset()
        self._last_index, self._last_time = frame_index, timestamp
        self._since_reset += 1
        hits = np.ones(len(xyxy), dtype=np.int64)
        for previous in self._history:
            if len(previous) and len(xyxy):
                hits += box_iou(xyxy, previous).max(axis=1) >= self.iou_min
        self._history.append(xyxy.copy())
        if self.warmup == "pass" and self._since_reset < self.min_hits:
            return np.ones(len(xyxy), dtype=bool)
        return hits >= self.min_hits
