"""Hot-region person detector for infrared frames of fixed cameras (offline, no learned weights).

People are warmer than most of a night scene, so in a thermal image they are compact bright
regions that stand taller than wide. The detector keeps pixels that are both brighter than their
local background (an adaptive threshold against a large box-filtered background) and among the
bright part of the frame (a global percentile), cleans the mask with morphology (opening removes
speckle, a tall closing joins head, torso and legs), and keeps connected components that look like
a standing or walking person:

- size and shape: height limits, aspect ratio (height / width), and a fill ratio *range* -- a
  silhouette covers roughly 35-75 % of its box, a sign or lit window (a warm rectangle) nearly all;
- texture: a person's region is not uniform (skin, clothes, legs against the ground), a sign, lamp
  or heater panel is; the grey-level spread inside the region, relative to its contrast against the
  scene, must reach ``texture_min``;
- the camera's geometry (optional, per camera): a person-height range by foot row
  (:class:`edge.detect.priors.HeightPrior`);
- on video, a motion/background gate (:class:`edge.detect.motion.MotionGate`, OpenCV MOG2/KNN)
  so static warm objects are not people, and temporal persistence
  (:class:`edge.detect.persistence.Persistence`) before a box is reported.

The gate and persistence need consecutive frames of one fixed camera. They warm up at the start of
a stream, after a gap in frame indices, and after a scene cut (more than ``scene_cut_frac`` of the
pixels changed by more than ``scene_cut_level`` grey levels since the previous frame: a folder of
unrelated stills, a camera that was moved, a thermal camera's shutter recalibration); during
warm-up they pass every candidate by default (``warmup: pass``), so stills -- one at a time or as a
folder -- get the shape/texture/geometry detector alone.

Limits (measured on LLVIP/KAIST): people touching each other merge into one box; warm walls or
cars in daytime pass the threshold; people cooler than, or as warm as, the background (hot days,
KAIST's daytime frames) are missed -- train a thermal YOLO (``mpanet-train-detector``) for those.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.detect.boxes import nms
from edge.detect.detections import Detections
from edge.detect.motion import GATES, MotionGate
from edge.detect.persistence import Persistence
from edge.detect.priors import HeightPrior
from edge.sources.frame import Frame


class HotRegionDetector:
    """Person-shaped warm regions of an infrared frame.

    Args:
        work_width: frames are resized to this width for the search (speed; boxes are scaled back).
        background_frac: side of the background box filter as a fraction of the working width.
        local_offset: a pixel must exceed its local background by this many grey levels (0..255).
        global_percentile: and be above this percentile of the frame's grey levels.
        open_px, close_px: opening kernel side and the height of the vertical closing kernel, in
            working pixels.
        min_height_px, max_height_frac: component height limits (frame pixels; fraction of frame height).
        aspect_min, aspect_max: allowed height / width.
        fill_min, fill_max: allowed fraction of the box covered by the component.
        texture_min: minimum grey-level standard deviation inside the component divided by its
            mean contrast against the scene's median (uniform warm surfaces score ~0.05).
        height_prior: per-camera ``[[foot_row, min_height, max_height], ...]`` (fractions of the
            frame height; see :class:`~edge.detect.priors.HeightPrior`); ``None``: no prior.
        nms_iou: suppress overlapping boxes above this IoU.
        split_width_ratio: a component wider than this fraction of its height is probably people
            side by side: it is split at the valleys of its column profile.
        gate: ``mog2`` | ``knn`` | ``none``: the motion/background gate.
        gate_history, gate_warmup_frames, gate_moving_frac_min, gate_hold_frames: the gate's
            ``history``, ``warmup_frames``, ``moving_frac_min`` and ``hold_frames``.
        persist_frames, persist_window: report a box found in ``persist_frames`` of the last
            ``persist_window`` frames (1 = off).
        persist_max_gap_s: frames further apart than this (seconds) are not compared (a 1 fps
            folder, stills): persistence then restarts and, warming up, passes everything.
        warmup: ``pass`` | ``hold``: what the gate and persistence do before they have history.
        scene_cut_frac, scene_cut_level: a frame where more than this fraction of the (working
            size) pixels changed by more than this many grey levels restarts the gate and persistence.
    """

    name = "thermal"

    def __init__(
        self,
        work_width: int = 640,
        background_frac: float = 0.12,
        local_offset: float = 35.0,
        global_percentile: float = 85.0,
        open_px: int = 3,
        close_px: int = 9,
        min_height_px: float = 32.0,
        max_height_frac: float = 0.9,
        aspect_min: float = 1.1,
        aspect_max: float = 6.0,
        fill_min: float = 0.3,
        fill_max: float = 0.8,
        texture_min: float = 0.12,
        height_prior: Sequence[Sequence[float]] | HeightPrior | None = None,
        nms_iou: float = 0.5,
        split_width_ratio: float = 0.45,
        gate: str = "mog2",
        gate_history: int = 300,
        gate_warmup_frames: int = 10,
        gate_moving_frac_min: float = 0.2,
        gate_hold_frames: int = 100,
        persist_frames: int = 2,
        persist_window: int = 3,
        persist_max_gap_s: float = 0.5,
        warmup: str = "pass",
        scene_cut_frac: float = 0.5,
        scene_cut_level: float = 40.0,
    ) -> None:
        if work_width < 32 or not 0 < background_frac < 1 or not 0 <= global_percentile < 100:
            raise ValueError(
                "thermal: work_width >= 32, 0 < background_frac < 1, 0 <= global_percentile < 100"
            )
        if not 0 <= fill_min <= fill_max <= 1 or texture_min < 0 or aspect_min > aspect_max:
            raise ValueError(
                "thermal: need 0 <= fill_min <= fill_max <= 1, texture_min >= 0, aspect_min <= aspect_max"
            )
        if gate not in GATES:
            raise ValueError(f"thermal: gate must be one of {GATES}, got {gate!r}")
        self.work_width = work_width
        self.background_frac = background_frac
        self.local_offset = local_offset
        self.global_percentile = global_percentile
        self.open_px = open_px
        self.close_px = close_px
        self.min_height_px = min_height_px
        self.max_height_frac = max_height_frac
        self.aspect_min = aspect_min
        self.aspect_max = aspect_max
        self.fill_min = fill_min
        self.fill_max = fill_max
        self.texture_min = texture_min
        self.height_prior = HeightPrior.from_setting(height_prior)
        self.nms_iou = nms_iou
        self.split_width_ratio = split_width_ratio
        self.gate = (
            None
            if gate == "none"
            else MotionGate(
                gate,
                history=gate_history,
                warmup_frames=gate_warmup_frames,
                warmup=warmup,
                moving_frac_min=gate_moving_frac_min,
                hold_frames=gate_hold_frames,
                work_width=work_width,
            )
        )
        self.persistence = Persistence(
            persist_frames, persist_window, warmup=warmup, max_gap_s=persist_max_gap_s
        )
        if not 0 < scene_cut_frac <= 1 or scene_cut_level <= 0:
            raise ValueError("thermal: need 0 < scene_cut_frac <= 1 and scene_cut_level > 0")
        self.scene_cut_frac = scene_cut_frac
        self.scene_cut_level = scene_cut_level
        self.scene_cuts = 0
        self._previous: np.ndarray | None = None

    def __call__(self, frame: Frame) -> Detections:
        image = frame.image
        grey = image if image.ndim == 2 else image[:, :, 0]  # infrared frames are grey replicated
        if grey.dtype != np.uint8:
            raise ValueError(
                f"thermal detector needs 8-bit frames (normalise 16-bit first), got {grey.dtype}"
            )
        factor = min(1.0, self.work_width / grey.shape[1])
        small = (
            cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA) if factor < 1 else grey
        )
        small = cv2.GaussianBlur(small, (3, 3), 0)
        if self._scene_cut(small):
            self.scene_cuts += 1
            if self.gate is not None:
                self.gate.reset()
            self.persistence.reset()
        # The gate's model learns from every frame, with or without candidates.
        foreground = self.gate.update(small, frame.index) if self.gate is not None else None
        mask = self._hot_mask(small)
        boxes, scores = self._components(mask, small, factor, frame.height)
        if len(boxes):
            keep = nms(boxes, scores, self.nms_iou)
            boxes, scores = boxes[keep], scores[keep]
        if self.height_prior is not None and len(boxes):
            fits = self.height_prior.allows(boxes, frame.height)
            boxes, scores = boxes[fits], scores[fits]
        if self.gate is not None and len(boxes):
            moving = self.gate.accept(boxes * factor, mask > 0, foreground)
            boxes, scores = boxes[moving], scores[moving]
        persistent = self.persistence(boxes, frame.index, frame.timestamp)
        boxes, scores = boxes[persistent], scores[persistent]
        if len(boxes) == 0:
            return Detections.empty()
        return Detections(boxes, scores).clipped(frame.width, frame.height)

    def _scene_cut(self, small: np.ndarray) -> bool:
        """Whether ``small`` (the working-size grey frame) is not a continuation of the previous one."""
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape:
            return False  # the first frame, or a new size (the gate resets itself on that)
        changed = cv2.absdiff(previous, small) > self.scene_cut_level
        return float(changed.mean()) > self.scene_cut_frac

    def _hot_mask(self, small: np.ndarray) -> np.ndarray:
        side = max(3, int(self.background_frac * small.shape[1]) | 1)
        background = cv2.blur(small, (side, side))
        local = small.astype(np.int16) - background.astype(np.int16) > self.local_offset
        global_level = np.percentile(small[::2, ::2], self.global_percentile)
        mask = (local & (small > global_level)).astype(np.uint8) * 255
        if self.open_px > 1:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((self.open_px, self.open_px), np.uint8))
        if self.close_px > 1:
            kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, self.close_px))
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
        return mask

    def _components(
        self, mask: np.ndarray, small: np.ndarray, factor: float, frame_height: int
    ) -> tuple[np.ndarray, np.ndarray]:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes, scores = [], []
        background = float(np.median(small))
        for label in range(1, count):
            x, y, w, h, _ = (int(v) for v in stats[label])
            component = labels[y : y + h, x : x + w] == label
            for part in self._split(component):
                self._keep(
                    part, small[y : y + h, x : x + w], (x, y), factor, frame_height, background, boxes, scores
                )
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32)

    def _split(self, component: np.ndarray) -> list[np.ndarray]:
        """Split a too-wide component at column-profile valleys (people standing side by side)."""
        h, w = component.shape
        if w <= self.split_width_ratio * h or w < 6:
            return [component]
        profile = np.convolve(component.sum(axis=0).astype(np.float32), np.ones(5) / 5, mode="same")
        peak = float(profile.max())
        cuts = [
            c
            for c in range(2, w - 2)
            if profile[c] < 0.5 * peak and profile[c] <= profile[c - 1] and profile[c] <= profile[c + 1]
        ]
        # Keep one cut per valley and only cuts that leave both sides with a real peak.
        parts, start = [], 0
        for c in cuts:
            if (
                c - start >= 0.2 * h
                and profile[start:c].max() > 0.7 * peak
                and profile[c:].max() > 0.7 * peak
            ):
                part = np.zeros_like(component)
                part[:, start:c] = component[:, start:c]
                parts.append(part)
                start = c
        last = np.zeros_like(component)
        last[:, start:] = component[:, start:]
        return [*parts, last]

    def _keep(
        self,
        part: np.ndarray,
        patch: np.ndarray,
        origin: tuple[int, int],
        factor: float,
        frame_height: int,
        background: float,
        boxes: list[list[float]],
        scores: list[float],
    ) -> None:
        """Append the part's box and score if it looks like a person."""
        ys, xs = np.nonzero(part)
        if ys.size == 0:
            return
        x0, y0 = origin
        x, y = x0 + int(xs.min()), y0 + int(ys.min())
        w, h = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
        area = int(ys.size)
        height_px = h / factor
        if height_px < self.min_height_px or height_px > self.max_height_frac * frame_height:
            return
        if not self.aspect_min <= h / max(w, 1) <= self.aspect_max:
            return
        if not self.fill_min <= area / float(w * h) <= self.fill_max:
            return
        region = patch[part].astype(np.float32)
        contrast_levels = max(float(region.mean()) - background, 1.0)
        if float(region.std()) / contrast_levels < self.texture_min:
            return  # a uniformly warm surface: sign, lamp, heater panel, lit window
        # Score: how much warmer than the scene's median the region is, squashed to (0, 1).
        contrast = contrast_levels / 255.0
        scores.append(float(np.clip(0.5 + 2.0 * contrast, 0.0, 1.0)))
        boxes.append([x / factor, y / factor, (x + w) / factor, (y + h) / factor])
