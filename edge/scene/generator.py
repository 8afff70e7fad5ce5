"""A synthetic two-camera scene: a visible and an infrared camera watching overlapping parts of a
walkway where procedural people (``trainer.synthetic.person``) walk in and out.

World: a ground plane, ``x`` along the walkway in metres (0 .. ``WORLD_LENGTH_M``), ``z`` the depth
from the cameras (``DEPTH_RANGE_M``). Camera 0 (visible) sees ``x`` in [0, 12], camera 1 (infrared)
sees ``x`` in [8, 20]: people seen by both cameras in [8, 12] are the cross-modality matches. The
projection maps the camera's walkway span onto the frame width, and depth to size and height in
the frame (pin-hole, horizon at 30% of the frame height). People walk at constant depth
and speed from one end to the other, nearer ones occluding farther ones.

Ground truth per camera and frame: MOTChallenge rows ``frame, id, x, y, w, h, 1, 1, visibility``
(1-based frames; id = the person's global id >= 1; the box is the person's visible extent clipped
to the frame; visibility = the fraction of the person's pixels neither outside the frame nor behind
a nearer person). Everything is a function of the seed: the same seed renders the same videos.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from common.annotations import format_mot_rows
from common.files import atomic_write_text
from common.modality import Modality
from edge.sources.frame import SourceError
from edge.sources.readers import FrameReader
from trainer.synthetic.datasets import appearance_rng
from trainer.synthetic.person import PersonAppearance, render_person, sample_appearance

WORLD_LENGTH_M = 20.0
DEPTH_RANGE_M = (5.0, 12.0)
PERSON_HEIGHT_M = 1.7
STRIDE_M = 1.4  # one gait cycle


@dataclass(frozen=True)
class SceneCamera:
    """A camera of the scene: its id, modality and the walkway span it sees (metres)."""

    camera_id: str
    modality: Modality
    x_min_m: float
    x_max_m: float


CAMERAS = (
    SceneCamera("cam-rgb", Modality.VISIBLE, 0.0, 12.0),
    SceneCamera("cam-ir", Modality.INFRARED, 8.0, 20.0),
)


@dataclass(frozen=True)
class SceneSettings:
    """Scene size and content.

    Attributes:
        seed: everything random derives from it. duration_s, fps: length and frame rate.
        width, height: frame size in pixels. num_people: people walking through (global ids 1..n).
        dataset_seed, dataset_pids: optionally, the people are identities of a synthetic dataset
            (``trainer.synthetic`` written with ``dataset_seed``): person i looks like dataset
            identity ``dataset_pids[i]``. For tests that need people a small model was trained on.
    """

    seed: int = 0
    duration_s: float = 20.0
    fps: float = 10.0
    width: int = 640
    height: int = 480
    num_people: int = 6
    dataset_seed: int | None = None
    dataset_pids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if (
            self.duration_s <= 0
            or self.fps <= 0
            or self.width < 64
            or self.height < 64
            or self.num_people < 0
        ):
            raise ValueError(f"invalid scene settings {self}")
        if self.dataset_seed is not None and len(self.dataset_pids) < self.num_people:
            raise ValueError(
                f"dataset_pids must name one identity per person ({self.num_people}), got {self.dataset_pids}"
            )

    @property
    def num_frames(self) -> int:
        return int(round(self.duration_s * self.fps))


@dataclass(frozen=True)
class Walker:
    """One person's path: enters at ``start_s`` at ``x0_m``, walks at ``speed_mps`` (signed)."""

    global_id: int
    start_s: float
    x0_m: float
    speed_mps: float
    depth_m: float
    phase0: float

    def x_at(self, t_s: float) -> float:
        return self.x0_m + self.speed_mps * (t_s - self.start_s)

    def active(self, t_s: float) -> bool:
        x = self.x_at(t_s)
        return t_s >= self.start_s and -1.0 <= x <= WORLD_LENGTH_M + 1.0


@dataclass(frozen=True)
class GroundTruthBox:
    """A person in a camera frame: global id, (x, y, w, h) pixels, visibility in [0, 1]."""

    global_id: int
    xywh: tuple[float, float, float, float]
    visibility: float


class SyntheticScene:
    """The scene for ``settings``: people, backgrounds, and frame rendering with ground truth."""

    def __init__(self, settings: SceneSettings) -> None:
        self.settings = settings
        rng = np.random.default_rng(settings.seed)
        self.appearances: dict[int, PersonAppearance] = {}
        self.walkers: list[Walker] = []
        latest_start = max(settings.duration_s * 0.6, 1e-3)
        for index in range(settings.num_people):
            global_id = index + 1
            appearance = sample_appearance(
                global_id, rng
            )  # drawn always: the rest of the scene stays the same
            if settings.dataset_seed is not None:
                pid = settings.dataset_pids[index]
                appearance = dataclasses.replace(
                    sample_appearance(pid, appearance_rng(settings.dataset_seed, pid)), global_id=global_id
                )
            self.appearances[global_id] = appearance
            speed = float(rng.uniform(1.1, 1.7))
            rightwards = bool(rng.integers(0, 2))
            self.walkers.append(
                Walker(
                    global_id=global_id,
                    start_s=float(rng.uniform(0.0, latest_start)) if index else 0.0,
                    x0_m=-0.5 if rightwards else WORLD_LENGTH_M + 0.5,
                    speed_mps=speed if rightwards else -speed,
                    depth_m=float(rng.uniform(*DEPTH_RANGE_M)),
                    phase0=float(rng.uniform(0, 2 * math.pi)),
                )
            )
        self.backgrounds = {c.camera_id: self._background(c, rng) for c in CAMERAS}

    # ---------------------------------------------------------------------------------- geometry

    def _focal_px(self) -> float:
        # A person at the nearest depth is 45% of the frame tall.
        return 0.45 * self.settings.height * DEPTH_RANGE_M[0] / PERSON_HEIGHT_M

    def project(self, camera: SceneCamera, x_m: float, depth_m: float) -> tuple[float, float, float]:
        """(centre x, foot y, height) in pixels of a person at walkway position ``x_m``, depth ``depth_m``."""
        s = self.settings
        f = self._focal_px()
        horizon = 0.3 * s.height
        camera_height_m = 2.2
        # Horizontally the walkway span fills the frame (a camera looking across the walkway).
        centre = (x_m - camera.x_min_m) / (camera.x_max_m - camera.x_min_m) * s.width
        foot_y = horizon + f * camera_height_m / depth_m
        return centre, foot_y, f * PERSON_HEIGHT_M / depth_m

    def _background(self, camera: SceneCamera, rng: np.random.Generator) -> np.ndarray:
        s = self.settings
        h, w = s.height, s.width
        ys = np.linspace(0, 1, h, dtype=np.float32)[:, None]
        texture = cv2.resize(rng.uniform(-1, 1, (h // 16 + 2, w // 16 + 2)).astype(np.float32), (w, h))
        horizon = int(0.3 * h)
        if camera.modality is Modality.VISIBLE:
            sky = np.array([200, 170, 140], np.float32)  # BGR: pale sky
            ground = np.array([90, 105, 110], np.float32)
            image = np.where(ys[..., None] < 0.3, sky, ground) * (0.9 + 0.1 * texture[..., None])
            image = np.broadcast_to(image, (h, w, 3)).copy()
            cv2.rectangle(image, (0, horizon - int(0.12 * h)), (w, horizon), (120, 120, 135), -1)  # wall
        else:
            base = np.where(ys < 0.3, 40.0, 70.0) + 8.0 * texture  # cold sky, cool ground
            base = np.broadcast_to(base, (h, w)).copy()
            cv2.rectangle(base, (0, horizon - int(0.12 * h)), (w, horizon), 95.0, -1)  # sun-warmed wall
            image = np.repeat(base[..., None], 3, axis=2)
        return np.clip(image, 0, 255).astype(np.uint8)

    # --------------------------------------------------------------------------------- rendering

    def render(self, camera_index: int, frame_index: int) -> tuple[np.ndarray, list[GroundTruthBox]]:
        """Frame ``frame_index`` (0-based) of camera ``camera_index`` as (H, W, 3) uint8 BGR, and its
        ground truth. Deterministic: per-frame randomness is seeded by (seed, camera, frame)."""
        camera = CAMERAS[camera_index]
        s = self.settings
        t = frame_index / s.fps
        rng = np.random.default_rng((s.seed, camera_index, frame_index))
        image = self.backgrounds[camera.camera_id].astype(np.float32)
        people = []
        for walker in self.walkers:
            if not walker.active(t):
                continue
            cx, foot, height = self.project(camera, walker.x_at(t), walker.depth_m)
            height_px = int(round(height))
            width_px = int(round(0.64 * height_px))
            if cx + width_px < 0 or cx - width_px > s.width or height_px < 8:
                continue
            people.append((walker, cx, foot, height_px))
        # Far to near for painting; visibility needs what is in front, so paint and then measure.
        people.sort(key=lambda p: -p[0].depth_m)
        sprites = []
        for walker, cx, foot, height_px in people:
            phase = walker.phase0 + 2 * math.pi * abs(walker.x_at(t) - walker.x0_m) / STRIDE_M
            facing = math.pi / 2 if walker.speed_mps > 0 else -math.pi / 2
            rgb, alpha = render_person(
                self.appearances[walker.global_id],
                camera.modality,
                height_px=height_px,
                walk_phase=phase,
                facing=facing,
                rng=rng,
            )
            left = int(round(cx - rgb.shape[1] / 2))
            top = int(round(foot - height_px))
            sprites.append((walker.global_id, rgb[:, :, ::-1].astype(np.float32), alpha, left, top))
        owner = np.zeros((s.height, s.width), np.int32)  # who is in front at each pixel
        for global_id, bgr, alpha, left, top in sprites:
            region = _clip_region(left, top, alpha.shape[1], alpha.shape[0], s.width, s.height)
            if region is None:
                continue
            (fy0, fy1, fx0, fx1), (sy0, sy1, sx0, sx1) = region
            a = alpha[sy0:sy1, sx0:sx1, None]
            image[fy0:fy1, fx0:fx1] = image[fy0:fy1, fx0:fx1] * (1 - a) + bgr[sy0:sy1, sx0:sx1] * a
            owner[fy0:fy1, fx0:fx1][alpha[sy0:sy1, sx0:sx1] > 0.5] = global_id
        truth = []
        for global_id, _, alpha, left, top in sprites:
            body = alpha > 0.5
            total = int(body.sum())
            region = _clip_region(left, top, alpha.shape[1], alpha.shape[0], s.width, s.height)
            if total == 0 or region is None:
                continue
            (fy0, fy1, fx0, fx1), (sy0, sy1, sx0, sx1) = region
            seen = body[sy0:sy1, sx0:sx1] & (owner[fy0:fy1, fx0:fx1] == global_id)
            visible = int(seen.sum())
            if visible == 0:
                continue
            inside = body[sy0:sy1, sx0:sx1]
            ys, xs = np.nonzero(inside)
            x1, y1 = fx0 + xs.min(), fy0 + ys.min()
            x2, y2 = fx0 + xs.max() + 1, fy0 + ys.max() + 1
            truth.append(
                GroundTruthBox(
                    global_id, (float(x1), float(y1), float(x2 - x1), float(y2 - y1)), visible / total
                )
            )
        if camera.modality is Modality.INFRARED:
            image = cv2.GaussianBlur(image, (3, 3), 0)  # thermal optics are soft
        image += rng.normal(0.0, 2.0, image.shape[:2])[..., None].astype(np.float32)
        truth.sort(key=lambda g: g.global_id)
        return np.clip(image + 0.5, 0, 255).astype(np.uint8), truth

    def frames(self, camera_index: int) -> Iterator[tuple[np.ndarray, list[GroundTruthBox]]]:
        for index in range(self.settings.num_frames):
            yield self.render(camera_index, index)


def _clip_region(
    left: int, top: int, w: int, h: int, width: int, height: int
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
    """Frame and sprite slices of a sprite at (left, top), or None when fully outside."""
    fx0, fy0 = max(left, 0), max(top, 0)
    fx1, fy1 = min(left + w, width), min(top + h, height)
    if fx1 <= fx0 or fy1 <= fy0:
        return None
    return (fy0, fy1, fx0, fx1), (fy0 - top, fy1 - top, fx0 - left, fx1 - left)


class SyntheticSceneReader(FrameReader):
    """A reader that renders one camera of a :class:`SyntheticScene` on the fly (no files)."""

    def __init__(self, settings: SceneSettings, camera: int = 0) -> None:
        if camera not in (0, 1):
            raise SourceError(f"synthetic scene camera must be 0 (visible) or 1 (infrared), got {camera}")
        self.settings = settings
        self.camera = camera
        self.name = f"synthetic:{CAMERAS[camera].camera_id}:seed{settings.seed}"
        self._scene: SyntheticScene | None = None
        self._next = 0

    @property
    def fps(self) -> float | None:
        return self.settings.fps

    def open(self) -> None:
        if self._scene is None:
            self._scene = SyntheticScene(self.settings)
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self._scene is None:
            raise SourceError(f"{self.name}: read() before open()")
        if self._next >= self.settings.num_frames:
            return None
        image, _ = self._scene.render(self.camera, self._next)
        self._next += 1
        return image


def write_scene(
    settings: SceneSettings, out_dir: str | os.PathLike[str], fourcc: str = "MJPG", progress: bool = False
) -> Path:
    """Render both cameras to ``out_dir`` and return the path of ``scene.json``.

    Writes ``<camera_id>.avi`` (MJPG; ``mp4v`` -> ``.mp4``), ``<camera_id>/gt/gt.txt``
    (MOTChallenge), ``<camera_id>/seqinfo.ini``, and ``scene.json`` (settings, cameras with their
    files, people with their paths, and which global ids each camera saw). Video files are written
    under a temporary name and renamed when complete.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene = SyntheticScene(settings)
    suffix = ".mp4" if fourcc == "mp4v" else ".avi"
    cameras = []
    for camera_index in range(len(CAMERAS)):
        camera = CAMERAS[camera_index]
        video = out / f"{camera.camera_id}{suffix}"
        partial = out / f".{camera.camera_id}.partial{suffix}"
        writer = cv2.VideoWriter(
            str(partial), cv2.VideoWriter_fourcc(*fourcc), settings.fps, (settings.width, settings.height)
        )
        if not writer.isOpened():
            raise OSError(f"cannot write {partial} with codec {fourcc}")
        frames_col, ids_col, boxes_col, vis_col = [], [], [], []
        frames = scene.frames(camera_index)
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=settings.num_frames, desc=camera.camera_id, unit="frame")
        for index, (image, truth) in enumerate(frames):
            writer.write(image)
            for box in truth:
                frames_col.append(index + 1)
                ids_col.append(box.global_id)
                boxes_col.append(box.xywh)
                vis_col.append(box.visibility)
        writer.release()
        os.replace(partial, video)
        gt = out / camera.camera_id / "gt" / "gt.txt"
        gt.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            gt,
            format_mot_rows(
                np.asarray(frames_col), np.asarray(ids_col), np.asarray(boxes_col).reshape(-1, 4), vis_col
            ),
        )
        atomic_write_text(
            out / camera.camera_id / "seqinfo.ini",
            f"[Sequence]\nname={camera.camera_id}\nimDir=img1\nframeRate={settings.fps:g}\n"
            f"seqLength={settings.num_frames}\nimWidth={settings.width}\nimHeight={settings.height}\nimExt=.jpg\n",
        )
        cameras.append(
            {
                "camera_id": camera.camera_id,
                "modality": camera.modality.value,
                "walkway_span_m": [camera.x_min_m, camera.x_max_m],
                "video": video.name,
                "ground_truth": str(gt.relative_to(out)),
                "global_ids": sorted(set(ids_col)),
            }
        )
    description = {
        "settings": asdict(settings),
        "num_frames": settings.num_frames,
        "cameras": cameras,
        "people": [
            {
                "global_id": w.global_id,
                "start_s": round(w.start_s, 3),
                "speed_mps": round(w.speed_mps, 3),
                "depth_m": round(w.depth_m, 3),
            }
            for w in scene.walkers
        ],
        "ground_truth_format": "MOTChallenge: frame(1-based),id(global_id),x,y,w,h,conf(1),class(1),visibility",
    }
    path = out / "scene.json"
    atomic_write_text(path, json.dumps(description, indent=2) + "\n")
    return path
