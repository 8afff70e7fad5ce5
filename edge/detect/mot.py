"""Detections (or ground truth) read from a MOTChallenge file: for replays and benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from common.annotations import read_mot_file
from edge.detect.boxes import xywh_to_xyxy
from edge.detect.detections import Detections
from edge.sources.frame import Frame


class MotFileDetector:
    """Looks up the boxes of ``frame.index`` in a MOTChallenge gt.txt / det.txt.

    Args:
        path: the MOT file.
        frame_offset: MOT frame number of source frame index 0 (MOT files count from 1).
        ground_truth: a gt.txt: keep rows with the consider flag (conf column) 1, class in
            ``classes`` and visibility >= ``min_visibility``; scores are 1. Otherwise a det.txt: the
            conf column is the score, kept when >= ``min_score``.
        classes: gt classes kept (MOT17: 1 = pedestrian; 2 = person on vehicle, 7 = static person).
        min_visibility: gt rows less visible than this are dropped.
        min_score: det rows below this score are dropped.
        keep_ids: put the file's ids in ``track_ids`` (a ``given`` tracker then keeps them).
    """

    name = "mot"

    def __init__(
        self,
        path: str | os.PathLike[str],
        frame_offset: int = 1,
        ground_truth: bool = True,
        classes: tuple[int, ...] = (1,),
        min_visibility: float = 0.0,
        min_score: float = 0.0,
        keep_ids: bool = True,
    ) -> None:
        self.path = Path(path)
        table = read_mot_file(self.path)
        if ground_truth:
            keep = (
                (table.conf > 0)
                & np.isin(table.classes, np.asarray(classes))
                & ((table.visibility < 0) | (table.visibility >= min_visibility))
            )
            scores = np.ones(len(table), np.float32)
        else:
            keep = table.conf >= min_score
            scores = np.clip(table.conf, 0.0, 1.0)
        self.frame_offset = frame_offset
        self.keep_ids = keep_ids
        self._rows: dict[int, np.ndarray] = {}
        frames = table.frames[keep]
        order = np.argsort(frames, kind="stable")
        self._xyxy = xywh_to_xyxy(table.xywh[keep][order])
        self._scores = scores[keep][order]
        self._ids = table.ids[keep][order]
        sorted_frames = frames[order]
        starts = np.searchsorted(sorted_frames, np.unique(sorted_frames))
        for frame_number, start in zip(np.unique(sorted_frames), starts):
            stop = np.searchsorted(sorted_frames, frame_number, side="right")
            self._rows[int(frame_number)] = np.arange(start, stop)

    @property
    def frame_numbers(self) -> list[int]:
        """MOT frame numbers that have at least one row."""
        return sorted(self._rows)

    def __call__(self, frame: Frame) -> Detections:
        rows = self._rows.get(frame.index + self.frame_offset)
        if rows is None:
            return Detections.empty(tracked=self.keep_ids)
        ids = self._ids[rows] if self.keep_ids else None
        return Detections(self._xyxy[rows], self._scores[rows], track_ids=ids).clipped(
            frame.width, frame.height
        )
