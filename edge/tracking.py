"""Per-camera multi-object tracking around ultralytics' ByteTrack / BoT-SORT classes.

Why a wrapper: ultralytics' trackers take an argparse-like namespace and a ``Results``-like object
(``.xywh`` centre boxes, ``.conf``, ``.cls``, boolean indexing), and their ids come from a counter
that older releases kept at class level (``BaseTrack._count``, shared by every tracker in the
process; 8.3.x+ gives each tracker its own iterator, but the ids still depend on the order trackers
were created in older versions). This wrapper renumbers ids itself: each :class:`CameraTracker`
maps the library's ids to its own counter (1, 2, 3, ... in order of first appearance), so one
camera's ids never depend on another camera or on the library version, and a replay gives the same
ids every time.

``given`` keeps the ids the detector supplies (``mot`` ground truth) and needs no library.
Note: importing ultralytics imports torch (its package ``__init__`` does); a node that must run
without torch uses the ``given`` tracker or another tracker library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from edge.detect.detections import Detections

TRACKER_KINDS = ("bytetrack", "botsort", "given")


@dataclass
class TrackerSettings:
    """Tracker settings (names as in ultralytics' tracker YAML, plus ``max_age_s`` in seconds).

    The node config nests this class as its ``tracker:`` section (so every field is reachable from
    YAML); not frozen because the config loader applies ``key=value`` overrides in place.

    Attributes:
        kind: ``bytetrack``, ``botsort`` or ``given``.
        track_high_thresh: detections at least this confident join the first association.
        track_low_thresh: detections above this (and below high) join the second association.
        new_track_thresh: an unmatched detection at least this confident starts a track.
        match_thresh: association cost threshold (1 - IoU, fused with the score).
        fuse_score: fuse detection scores into the IoU cost.
        max_age_s: seconds a lost track is kept for re-association (converted with the frame rate).
        gmc_method: BoT-SORT camera-motion compensation (``none`` for fixed cameras,
            ``sparseOptFlow``, ``orb``, ``sift``, ``ecc``).
        proximity_thresh, appearance_thresh: BoT-SORT matching gates (its ReID is off).
    """

    kind: str = "bytetrack"
    track_high_thresh: float = 0.25
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.25
    match_thresh: float = 0.8
    fuse_score: bool = True
    max_age_s: float = 1.0
    gmc_method: str = "none"
    proximity_thresh: float = 0.5
    appearance_thresh: float = 0.8

    def __post_init__(self) -> None:
        if self.kind not in TRACKER_KINDS:
            raise ValueError(f"tracker.kind must be one of {TRACKER_KINDS}, got {self.kind!r}")
        if self.max_age_s <= 0:
            raise ValueError(f"tracker.max_age_s must be positive, got {self.max_age_s}")


class _TrackerInput:
    """The ``Results``-like view ultralytics' trackers read: centre ``xywh``, ``conf``, ``cls``."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy = xyxy
        self.conf = conf
        self.cls = cls
        wh = xyxy[:, 2:] - xyxy[:, :2]
        self.xywh = np.concatenate([xyxy[:, :2] + wh / 2, wh], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: Any) -> _TrackerInput:
        return _TrackerInput(self.xyxy[index], self.conf[index], self.cls[index])


class CameraTracker:
    """Tracks of one camera: ``tracker(detections, image) -> Detections`` with ``track_ids``.

    Only detections that belong to a confirmed track this frame come out (ByteTrack confirms a
    new track on its second sighting, except in the tracker's very first frame); their boxes are
    the detector's boxes (not the Kalman prediction), so crops follow what was actually seen.

    Args:
        settings: the :class:`TrackerSettings`.
        frame_rate: the camera's frames per second (turns ``max_age_s`` into frames).
    """

    def __init__(self, settings: TrackerSettings, frame_rate: float) -> None:
        self.settings = settings
        self.frame_rate = frame_rate
        self._next_id = 1
        self._ids: dict[int, int] = {}
        self._tracker = None if settings.kind == "given" else self._build(settings, frame_rate)
        self.untracked = 0  # ``given``: detector rows without a track id (< 1), dropped

    @staticmethod
    def _build(settings: TrackerSettings, frame_rate: float) -> Any:
        from ultralytics.trackers.bot_sort import BOTSORT
        from ultralytics.trackers.byte_tracker import BYTETracker

        args = SimpleNamespace(
            tracker_type=settings.kind,
            track_high_thresh=settings.track_high_thresh,
            track_low_thresh=settings.track_low_thresh,
            new_track_thresh=settings.new_track_thresh,
            track_buffer=max(1, math.ceil(settings.max_age_s * frame_rate)),
            match_thresh=settings.match_thresh,
            fuse_score=settings.fuse_score,
            gmc_method=settings.gmc_method,
            proximity_thresh=settings.proximity_thresh,
            appearance_thresh=settings.appearance_thresh,
            with_reid=False,
            model="auto",
        )
        return BOTSORT(args) if settings.kind == "botsort" else BYTETracker(args)

    def __call__(self, detections: Detections, image: np.ndarray | None = None) -> Detections:
        """Args: detections of this frame; image (H, W, 3) uint8 (BoT-SORT's motion compensation).

        Returns:
            The tracked subset of ``detections`` with ``track_ids`` (N,) int64 >= 1.
        """
        if self._tracker is None:
            if detections.track_ids is None:
                raise ValueError(
                    "tracker 'given' needs detections that carry track_ids (e.g. the mot detector)"
                )
            # A MOTChallenge det.txt carries id -1 on every row (detections, not tracks): such rows
            # are not tracks, and a sighting with a negative track id is refused on the wire, so
            # they are dropped here (counted in ``untracked``). Track det.txt with bytetrack.
            keep = np.flatnonzero(detections.track_ids >= 1)
            self.untracked += len(detections) - keep.size
            return detections if keep.size == len(detections) else detections[keep]
        results = _TrackerInput(detections.xyxy, detections.scores, detections.class_ids.astype(np.float32))
        output = self._tracker.update(results, image)
        if len(output) == 0:
            return Detections.empty(tracked=True)
        output = np.asarray(output, dtype=np.float64).reshape(len(output), -1)
        library_ids = output[:, 4].astype(np.int64)
        rows = output[:, 7].astype(np.int64)  # index of the detection each track matched this frame
        track_ids = np.asarray([self._local_id(int(i)) for i in library_ids], dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        self._forget_removed()
        return detections[rows[order]].with_track_ids(track_ids[order])

    def _local_id(self, library_id: int) -> int:
        local = self._ids.get(library_id)
        if local is None:
            local = self._ids[library_id] = self._next_id
            self._next_id += 1
        return local

    def _forget_removed(self) -> None:
        alive = {t.track_id for t in (*self._tracker.tracked_stracks, *self._tracker.lost_stracks)}
        for library_id in [i for i in self._ids if i not in alive]:
            del self._ids[library_id]
