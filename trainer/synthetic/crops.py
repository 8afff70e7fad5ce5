"""Dataset-style person crops: a rendered person composited on a camera-specific background, with
per-image pose, viewpoint, scale, crop jitter, blur, noise and lighting (numpy + OpenCV only).

Each camera has a :class:`CameraStyle` (scene, preferred viewpoints, image quality), so images of one
identity differ between cameras the way real surveillance cameras do; :data:`SYSU_CAMERA_STYLES`
mirrors SYSU-MM01's six cameras and :data:`REGDB_CAMERA_STYLES` RegDB's co-located camera pair.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from common import Modality
from trainer.synthetic.person import PersonAppearance, render_person, sample_appearance

__all__ = [
    "REGDB_CAMERA_STYLES",
    "SYSU_CAMERA_STYLES",
    "CameraStyle",
    "CropPose",
    "render_background",
    "render_crop",
    "sample_pose",
]


@dataclasses.dataclass(frozen=True)
class CameraStyle:
    """How one camera sees people. Ranges are (low, high), drawn uniformly per image.

    Attributes:
        name: human-readable description.
        modality: the camera's modality.
        scene: background kind: ``indoor`` or ``outdoor``.
        facings: preferred view angles in radians (0 = facing the camera); each image picks one and
            adds ``facing_jitter`` (radians, normal sigma).
        person_height: person height as a fraction of the crop height.
        brightness, contrast: global lighting (visible) / gain (infrared) factors.
        blur_sigma: Gaussian blur sigma in output pixels (0 = none).
        noise_sigma: additive Gaussian noise sigma in grey levels.
        lowres_p: probability of a low-resolution capture (downscaled then upscaled).
        colour_cast: strength of a per-image white-balance error (visible only).
        distractor_p: probability of a partial second person at the crop's side.
    """

    name: str
    modality: Modality
    scene: str = "indoor"
    facings: tuple[float, ...] = (0.0, math.pi / 2, math.pi, -math.pi / 2)
    facing_jitter: float = 0.35
    person_height: tuple[float, float] = (0.8, 0.96)
    brightness: tuple[float, float] = (0.75, 1.15)
    contrast: tuple[float, float] = (0.8, 1.15)
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    noise_sigma: tuple[float, float] = (2.0, 6.0)
    lowres_p: float = 0.2
    colour_cast: float = 0.08
    distractor_p: float = 0.12


_FRONT_BACK = (0.0, math.pi)
_ALL_VIEWS = (
    0.0,
    math.pi / 4,
    math.pi / 2,
    3 * math.pi / 4,
    math.pi,
    -3 * math.pi / 4,
    -math.pi / 2,
    -math.pi / 4,
)

SYSU_CAMERA_STYLES: dict[int, CameraStyle] = {
    1: CameraStyle(
        "cam1: indoor visible, room 1", Modality.VISIBLE, "indoor", _ALL_VIEWS, brightness=(0.85, 1.2)
    ),
    2: CameraStyle(
        "cam2: indoor visible, room 2",
        Modality.VISIBLE,
        "indoor",
        _ALL_VIEWS,
        brightness=(0.6, 1.0),
        colour_cast=0.12,
    ),
    3: CameraStyle(
        "cam3: infrared, room 2 (dark)",
        Modality.INFRARED,
        "indoor",
        _ALL_VIEWS,
        noise_sigma=(3.0, 8.0),
        blur_sigma=(0.3, 1.3),
    ),
    4: CameraStyle(
        "cam4: outdoor visible, gate",
        Modality.VISIBLE,
        "outdoor",
        _FRONT_BACK + (math.pi / 2,),
        brightness=(0.7, 1.35),
        contrast=(0.8, 1.3),
        lowres_p=0.35,
    ),
    5: CameraStyle(
        "cam5: outdoor visible, garden",
        Modality.VISIBLE,
        "outdoor",
        (math.pi / 2, -math.pi / 2, math.pi / 4, -3 * math.pi / 4),
        brightness=(0.7, 1.3),
        lowres_p=0.35,
    ),
    6: CameraStyle(
        "cam6: infrared, outdoor passage",
        Modality.INFRARED,
        "outdoor",
        _FRONT_BACK + (math.pi / 2, -math.pi / 2),
        noise_sigma=(3.0, 9.0),
        lowres_p=0.35,
    ),
}

REGDB_CAMERA_STYLES: dict[Modality, CameraStyle] = {
    Modality.VISIBLE: CameraStyle(
        "RegDB visible",
        Modality.VISIBLE,
        "outdoor",
        _FRONT_BACK,
        facing_jitter=0.25,
        lowres_p=0.5,
        distractor_p=0.05,
    ),
    Modality.INFRARED: CameraStyle(
        "RegDB thermal",
        Modality.INFRARED,
        "outdoor",
        _FRONT_BACK,
        facing_jitter=0.25,
        lowres_p=0.6,
        blur_sigma=(0.5, 1.5),
    ),
}


@dataclasses.dataclass(frozen=True)
class CropPose:
    """Per-image person placement: gait phase and view (radians), height fraction, offsets (fractions)."""

    walk_phase: float
    facing: float
    height_fraction: float
    offset_x: float
    offset_y: float


def sample_pose(style: CameraStyle, rng: np.random.Generator) -> CropPose:
    """Draw a pose and placement for one crop from ``style``'s ranges."""
    facing = float(
        style.facings[int(rng.integers(len(style.facings)))] + rng.normal(0.0, style.facing_jitter)
    )
    return CropPose(
        walk_phase=float(rng.uniform(0.0, 2 * math.pi)),
        facing=facing,
        height_fraction=float(rng.uniform(*style.person_height)),
        offset_x=float(rng.normal(0.0, 0.05)),
        offset_y=float(rng.normal(0.0, 0.035)),
    )


# --------------------------------------------------------------------------------------- background


def _smooth(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    coarse = rng.uniform(-1.0, 1.0, (height // cell + 2, width // cell + 2)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def render_background(style: CameraStyle, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible background for ``style``: float32 (height, width, 3), RGB 0..255 (grey heat for IR)."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    horizon = float(rng.uniform(0.55, 0.85))
    ground = (rows > horizon).astype(np.float32)
    texture = _smooth(rng, height, width, max(2, height // 10))[..., None]
    if style.modality is Modality.INFRARED:
        base = float(rng.uniform(35, 95)) if style.scene == "outdoor" else float(rng.uniform(25, 70))
        floor = base + float(rng.uniform(-15, 20))
        image = np.where(ground > 0, floor, base) + 10.0 * texture + float(rng.uniform(-8, 8)) * rows
        image = np.ascontiguousarray(np.repeat(image, 3, axis=2), dtype=np.float32)
        for _ in range(int(rng.integers(0, 3))):  # warm objects: radiators, lamps, engines
            if rng.random() < 0.5:
                x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
                w, h = int(rng.integers(width // 8, width // 2)), int(rng.integers(height // 12, height // 3))
                cv2.rectangle(
                    image, (x0, y0), (x0 + w, y0 + h), (v := float(rng.uniform(100, 170)), v, v), -1
                )
        return image
    # Muted colours: walls and floors are mostly greyish with a tint; outdoors greener.
    if style.scene == "indoor":
        wall = rng.uniform(80, 210) + rng.normal(0, 14, 3)
        floor = rng.uniform(50, 160) + rng.normal(0, 12, 3)
    else:
        wall = (
            rng.uniform(70, 160) + np.asarray([-15.0, 10.0, -20.0]) + rng.normal(0, 15, 3)
        )  # foliage/buildings
        floor = rng.uniform(90, 170) + rng.normal(0, 8, 3)  # paving
    image = np.broadcast_to(
        np.where(ground > 0, floor[None, None, :], wall[None, None, :]), (height, width, 3)
    )
    image = np.ascontiguousarray(image, dtype=np.float32) + 18.0 * texture
    for _ in range(int(rng.integers(0, 4))):  # doors, windows, furniture, benches
        x0, y0 = int(rng.integers(-width // 4, width)), int(rng.integers(-height // 4, height))
        w, h = int(rng.integers(width // 6, width // 2 + 2)), int(rng.integers(height // 8, height // 2 + 2))
        colour = tuple(float(c) for c in np.clip(rng.uniform(40, 220) + rng.normal(0, 25, 3), 0, 255))
        cv2.rectangle(image, (x0, y0), (x0 + w, y0 + h), colour, -1)
    return image


# --------------------------------------------------------------------------------------------- crop


def _composite(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, left: int, top: int) -> None:
    """Alpha-blend ``rgb`` (h, w, 3) at (left, top) into ``canvas`` (float32), clipping at the borders."""
    height, width = canvas.shape[:2]
    h, w = alpha.shape
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(width, left + w), min(height, top + h)
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - top : y1 - top, x0 - left : x1 - left, None]
    src = rgb[y0 - top : y1 - top, x0 - left : x1 - left].astype(np.float32)
    canvas[y0:y1, x0:x1] = src * a + canvas[y0:y1, x0:x1] * (1.0 - a)


def render_crop(
    appearance: PersonAppearance,
    modality: Modality,
    *,
    height: int,
    width: int,
    rng: np.random.Generator,
    style: CameraStyle | None = None,
    pose: CropPose | None = None,
) -> np.ndarray:
    """A dataset-style crop of ``appearance``: uint8 (height, width, 3) RGB (grey for infrared).

    Args:
        appearance: the identity.
        modality: visible or infrared (must match ``style.modality`` when a style is given).
        height, width: crop size in pixels.
        rng: per-image randomness (background, lighting, blur, noise; and the pose when ``pose`` is None).
        style: camera style (default: a generic camera of ``modality``).
        pose: fixed pose/placement (e.g. to render a co-located visible/thermal pair alike).
    """
    modality = Modality.parse(modality)
    if style is None:
        style = CameraStyle(f"generic {modality}", modality, "indoor")
    if style.modality is not modality:
        raise ValueError(
            f"camera style {style.name!r} is {style.modality}, but a {modality} crop was asked for"
        )
    if height < 16 or width < 8:
        raise ValueError(f"crop must be at least 16 x 8 pixels, got {height} x {width}")
    pose = pose or sample_pose(style, rng)
    canvas = render_background(style, height, width, rng)

    if rng.random() < style.distractor_p:  # part of another passer-by at one side
        other = sample_appearance(-1, rng)
        o_h = int(height * rng.uniform(0.75, 1.0))
        o_rgb, o_alpha = render_person(
            other,
            modality,
            height_px=o_h,
            walk_phase=float(rng.uniform(0, 6.3)),
            facing=float(rng.uniform(-3.1, 3.1)),
            rng=rng,
        )
        side = -1 if rng.random() < 0.5 else 1
        left = int(width / 2 + side * width * rng.uniform(0.55, 0.8) - o_alpha.shape[1] / 2)
        _composite(canvas, o_rgb, o_alpha, left, int((height - o_h) * rng.uniform(0, 1)))

    person_h = max(8, int(round(height * pose.height_fraction)))
    rgb, alpha = render_person(
        appearance, modality, height_px=person_h, walk_phase=pose.walk_phase, facing=pose.facing, rng=rng
    )
    left = int(round(width / 2 + pose.offset_x * width - alpha.shape[1] / 2))
    top = int(round((height - person_h) / 2 + pose.offset_y * height))
    _composite(canvas, rgb, alpha, left, top)

    # Lighting / gain.
    brightness = float(rng.uniform(*style.brightness))
    contrast = float(rng.uniform(*style.contrast))
    mean = float(canvas.mean())
    canvas = (canvas - mean) * contrast + mean * brightness
    if modality is Modality.VISIBLE and style.colour_cast > 0:
        canvas *= (1.0 + rng.uniform(-style.colour_cast, style.colour_cast, 3)).astype(np.float32)[
            None, None, :
        ]
    # Capture quality: low resolution, blur, noise.
    if rng.random() < style.lowres_p:
        factor = float(rng.uniform(0.35, 0.7))
        small = cv2.resize(
            canvas, (max(4, int(width * factor)), max(8, int(height * factor))), interpolation=cv2.INTER_AREA
        )
        canvas = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    sigma = float(rng.uniform(*style.blur_sigma))
    if sigma > 0.15:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
    noise_sigma = float(rng.uniform(*style.noise_sigma))
    if modality is Modality.INFRARED:
        grey = canvas[..., 0] + rng.normal(0.0, noise_sigma, (height, width)).astype(np.float32)
        out = np.clip(grey + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(out[..., None], 3, axis=2)
    canvas += rng.normal(0.0, noise_sigma, canvas.shape).astype(np.float32)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
