"""Procedural people for synthetic visible-infrared re-identification data (numpy + OpenCV only).

A person is a :class:`PersonAppearance`: identity attributes drawn once per identity by
:func:`sample_appearance`. :func:`render_person` draws that person in one pose and view, in either
modality, on a transparent background.

What shows where (so that cross-modality matching is possible, but not trivial):

- **Shape "nuances"**, visible in both modalities: body proportions (leg ratio, build, head size),
  hair style, sleeve length, trousers / shorts / skirt and their length, coat, shoulder bag (side and
  size), backpack, hat (cap or beanie), glasses, shoes (sneakers, boots, sandals), gait amplitude.
- **Colour** (clothes, hair, skin tone, bag, hat): visible images only.
- **Heat** (infrared images only, grey, brighter = warmer): skin is warmest (per-person
  metabolism), clothes are cooler the thicker they are (per-garment insulation), accessories (bags,
  glasses, shoes) are near ambient, i.e. cold; hair insulates.

Geometry: a tiny 3-D body model (joints in a body frame: x = the person's left, y = down,
z = forward), posed by a walking phase, rotated by the facing angle and projected orthographically;
parts are painted far-to-near into a label map (the head is shaded per pixel as a sphere, which
places the hairline, face, glasses and hat correctly for any view), coloured per modality, shaded,
and area-downsampled from a supersampled canvas (antialiased alpha).

Conventions: ``facing`` is in radians; 0 = facing the camera, pi = back to the camera, +pi/2 =
walking towards the right of the image. ``walk_phase`` is in radians (one gait cycle = 2 pi).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import cv2
import numpy as np

from common import Modality

__all__ = [
    "HAIR_STYLES",
    "HATS",
    "LOWER_GARMENTS",
    "PersonAppearance",
    "SHOES",
    "TOP_PATTERNS",
    "canvas_width",
    "render_person",
    "sample_appearance",
]

RGB = tuple[int, int, int]

HAIR_STYLES = ("bald", "short", "bob", "long", "ponytail")
LOWER_GARMENTS = ("trousers", "shorts", "skirt")
HATS = ("none", "cap", "beanie")
SHOES = ("sneakers", "boots", "sandals")
BAG_SIDES = ("none", "left", "right")
TOP_PATTERNS = ("plain", "stripes", "logo", "two_tone")

# Label map values (uint8). Order matters only for readability.
_BG, _SKIN, _HAIR, _TOP, _TOP2, _BOTTOM, _SHOES, _BAG, _BACKPACK, _HAT, _GLASSES = range(11)
_NUM_LABELS = 11

_SKIN_TONES: tuple[RGB, ...] = (
    (255, 224, 196),
    (241, 194, 156),
    (224, 172, 130),
    (198, 134, 94),
    (160, 104, 70),
    (110, 72, 48),
)
_HAIR_COLOURS: tuple[RGB, ...] = (
    (25, 20, 20),
    (55, 38, 28),
    (95, 65, 40),
    (190, 160, 105),
    (150, 148, 145),
    (135, 60, 30),
)
_NEUTRALS: tuple[RGB, ...] = (
    (20, 20, 24),
    (235, 235, 232),
    (128, 128, 130),
    (30, 40, 80),
    (205, 190, 160),
    (85, 60, 45),
    (60, 75, 50),
)


@dataclasses.dataclass(frozen=True)
class PersonAppearance:
    """Everything that identifies one synthetic person (frozen; draw with :func:`sample_appearance`).

    Lengths are fractions of the person's height unless stated; colours are RGB 0..255 and only
    show in visible images; ``*_insulation`` and ``skin_heat`` (0..1) only show in infrared images.
    """

    global_id: int
    height_m: float  # standing height in metres (for scene generators placing people in a world)
    build: float  # width factor, ~0.8 (slim) .. 1.3 (broad)
    leg_ratio: float  # hip height / body height, ~0.45..0.53
    head_scale: float  # head radius factor, ~0.9..1.12
    gait_amplitude: float  # leg swing in radians, ~0.25..0.5
    hair_style: str  # one of HAIR_STYLES
    sleeve_length: float  # 0 sleeveless .. 1 to the wrist (fraction of the arm)
    lower_garment: str  # one of LOWER_GARMENTS
    lower_length: float  # trousers/shorts: fraction of the leg covered; skirt: fraction of the leg
    coat: bool  # a knee-length coat over the top (long sleeves, thick)
    bag: str  # one of BAG_SIDES: a shoulder bag hanging at that hip
    bag_size: float  # ~0.8..1.4
    backpack: bool
    hat: str  # one of HATS
    glasses: bool
    shoes: str  # one of SHOES
    top_pattern: str  # one of TOP_PATTERNS (visible only)
    skin_rgb: RGB
    hair_rgb: RGB
    top_rgb: RGB
    top2_rgb: RGB  # second colour of the top pattern
    bottom_rgb: RGB
    shoe_rgb: RGB
    bag_rgb: RGB
    hat_rgb: RGB
    skin_heat: float  # 0..1, per-person skin temperature offset
    top_insulation: float  # 0 (thin T-shirt) .. 1 (thick coat)
    bottom_insulation: float  # 0 .. 1
    hair_insulation: float  # 0 .. 1

    @property
    def pid(self) -> int:
        """Training-data name of :attr:`global_id`."""
        return self.global_id


def _colour(rng: np.random.Generator, saturated_p: float = 0.5) -> RGB:
    if rng.random() > saturated_p:
        base = np.asarray(_NEUTRALS[int(rng.integers(len(_NEUTRALS)))], dtype=np.float64)
        value = np.clip(base + rng.normal(0, 10, 3), 0, 255)
        return (int(value[0]), int(value[1]), int(value[2]))
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(110, 256), rng.integers(70, 240)]]])
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def _pick(rng: np.random.Generator, options: tuple[str, ...], p: tuple[float, ...]) -> str:
    return options[int(rng.choice(len(options), p=np.asarray(p) / np.sum(p)))]


def sample_appearance(pid: int, rng: np.random.Generator) -> PersonAppearance:
    """Draw one identity's attributes (deterministic for a given ``rng`` state).

    Attribute priors are loosely realistic; many identities share each discrete attribute, so the
    continuous ones (proportions, build, sizes, heat) and colours are needed to tell them apart.
    """
    hair = _pick(rng, HAIR_STYLES, (0.06, 0.38, 0.16, 0.22, 0.18))
    coat = bool(rng.random() < 0.15)
    sleeve = (
        1.0
        if coat
        else float(
            np.clip(rng.choice([0.0, 0.3, 0.7, 1.0], p=[0.1, 0.45, 0.1, 0.35]) + rng.normal(0, 0.04), 0, 1)
        )
    )
    lower = _pick(rng, LOWER_GARMENTS, (0.6, 0.2, 0.2))
    if lower == "trousers":
        lower_length = float(rng.uniform(0.85, 1.0))
    elif lower == "shorts":
        lower_length = float(rng.uniform(0.22, 0.45))
    else:
        lower_length = float(rng.uniform(0.25, 0.65))
    if coat:
        top_insulation = float(rng.uniform(0.7, 1.0))
    else:
        top_insulation = float(np.clip(0.1 + 0.5 * sleeve + rng.normal(0, 0.12), 0, 1))
    return PersonAppearance(
        global_id=int(pid),
        height_m=float(np.clip(rng.normal(1.72, 0.09), 1.5, 1.98)),
        build=float(np.clip(rng.normal(1.0, 0.12), 0.78, 1.32)),
        leg_ratio=float(np.clip(rng.normal(0.49, 0.018), 0.44, 0.54)),
        head_scale=float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.14)),
        gait_amplitude=float(rng.uniform(0.25, 0.5)),
        hair_style=hair,
        sleeve_length=sleeve,
        lower_garment=lower,
        lower_length=lower_length,
        coat=coat,
        bag=_pick(rng, BAG_SIDES, (0.55, 0.2, 0.25)),
        bag_size=float(rng.uniform(0.8, 1.4)),
        backpack=bool(rng.random() < 0.3),
        hat=_pick(rng, HATS, (0.72, 0.16, 0.12)),
        glasses=bool(rng.random() < 0.3),
        shoes=_pick(rng, SHOES, (0.62, 0.24, 0.14)),
        top_pattern=_pick(rng, TOP_PATTERNS, (0.5, 0.2, 0.15, 0.15)),
        skin_rgb=_SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))],
        hair_rgb=_HAIR_COLOURS[int(rng.integers(len(_HAIR_COLOURS)))],
        top_rgb=_colour(rng, 0.55),
        top2_rgb=_colour(rng, 0.6),
        bottom_rgb=_colour(rng, 0.3),
        shoe_rgb=_colour(rng, 0.25),
        bag_rgb=_colour(rng, 0.4),
        hat_rgb=_colour(rng, 0.5),
        skin_heat=float(rng.uniform(0, 1)),
        top_insulation=top_insulation,
        bottom_insulation=float(rng.uniform(0.1, 0.9)),
        hair_insulation=float(rng.uniform(0, 1)),
    )


# ------------------------------------------------------------------------------------------ geometry

_SHIFT = 4  # OpenCV fixed-point bits: sub-pixel precision for the drawing calls
_ONE = 1 << _SHIFT


def canvas_width(height_px: int) -> int:
    """Width of :func:`render_person`'s output for a given height (room for stride, arms and bags)."""
    return max(4, int(round(0.64 * height_px)))


@dataclasses.dataclass
class _Painter:
    """Draws into a label map in body units (fractions of the body height), projected by ``facing``."""

    labels: np.ndarray
    scale: float  # pixels per body unit
    origin_x: float  # pixel x of the body axis
    origin_y: float  # pixel y of body y = 0 (top of the head)
    cos_f: float
    sin_f: float

    def project(self, point: tuple[float, float, float]) -> tuple[float, float, float]:
        """(x, y, z) body frame -> (pixel x, pixel y, depth towards the camera in body units)."""
        x, y, z = point
        screen_x = x * self.cos_f + z * self.sin_f
        depth = -x * self.sin_f + z * self.cos_f
        return self.origin_x + screen_x * self.scale, self.origin_y + y * self.scale, depth

    def _fixed(self, points: np.ndarray) -> np.ndarray:
        return np.round(points * _ONE).astype(np.int32)

    def polygon(self, points: list[tuple[float, float]], label: int) -> None:
        """Fill a polygon given in pixel coordinates."""
        cv2.fillPoly(self.labels, [self._fixed(np.asarray(points, np.float64))], label, cv2.LINE_8, _SHIFT)

    def circle(self, centre: tuple[float, float], radius_px: float, label: int) -> None:
        cv2.circle(
            self.labels,
            (int(round(centre[0] * _ONE)), int(round(centre[1] * _ONE))),
            max(1, int(round(radius_px * _ONE))),
            label,
            -1,
            cv2.LINE_8,
            _SHIFT,
        )

    def capsule(
        self, a: tuple[float, float], b: tuple[float, float], ra: float, rb: float, label: int
    ) -> None:
        """A tapered limb between pixel points ``a`` and ``b`` with end radii in pixels."""
        ax, ay = a
        bx, by = b
        dx, dy = bx - ax, by - ay
        length = math.hypot(dx, dy)
        self.circle(a, ra, label)
        self.circle(b, rb, label)
        if length < 1e-6:
            return
        nx, ny = -dy / length, dx / length
        self.polygon(
            [
                (ax + nx * ra, ay + ny * ra),
                (bx + nx * rb, by + ny * rb),
                (bx - nx * rb, by - ny * rb),
                (ax - nx * ra, ay - ny * ra),
            ],
            label,
        )

    def box(
        self,
        centre: tuple[float, float, float],
        half: tuple[float, float, float],
        label: int,
        round_px: float = 0.0,
    ) -> None:
        """An axis-aligned 3-D box (body frame) seen from the side given by ``facing``: its outline."""
        cx, cy, _ = self.project(centre)
        half_w = (half[0] * abs(self.cos_f) + half[2] * abs(self.sin_f)) * self.scale
        half_h = half[1] * self.scale
        r = min(round_px, half_w, half_h) if round_px > 0 else 0.0
        self.polygon(
            [
                (cx - half_w + r, cy - half_h),
                (cx + half_w - r, cy - half_h),
                (cx + half_w - r, cy + half_h),
                (cx - half_w + r, cy + half_h),
            ],
            label,
        )
        self.polygon(
            [
                (cx - half_w, cy - half_h + r),
                (cx + half_w, cy - half_h + r),
                (cx + half_w, cy + half_h - r),
                (cx - half_w, cy + half_h - r),
            ],
            label,
        )
        if r > 0:
            for sx in (-1, 1):
                for sy in (-1, 1):
                    self.circle((cx + sx * (half_w - r), cy + sy * (half_h - r)), r, label)


@dataclasses.dataclass
class _Pose:
    """Joint positions (body frame, body units) of one walking pose."""

    shoulder: dict[int, tuple[float, float, float]]
    elbow: dict[int, tuple[float, float, float]]
    wrist: dict[int, tuple[float, float, float]]
    hip: dict[int, tuple[float, float, float]]
    knee: dict[int, tuple[float, float, float]]
    ankle: dict[int, tuple[float, float, float]]
    toe: dict[int, tuple[float, float, float]]
    head_centre: tuple[float, float, float]
    head_radius: float
    neck_y: float
    shoulder_y: float
    hip_y: float
    shoulder_half: float
    hip_half: float
    torso_depth: float


def _pose(person: PersonAppearance, walk_phase: float) -> _Pose:
    r = 0.064 * person.head_scale
    hip_y = 1.0 - person.leg_ratio
    shoulder_y = 2 * r + 0.045
    shoulder_half = 0.112 * person.build
    hip_half = 0.085 * person.build
    torso_depth = 0.062 * person.build
    leg_length = (1.0 - hip_y) - 0.035  # hip to ankle; the foot takes the rest
    thigh, shin = 0.5 * leg_length, 0.5 * leg_length
    arm = 0.36  # shoulder to wrist
    upper, fore = 0.52 * arm, 0.48 * arm
    amplitude = person.gait_amplitude
    pose = _Pose(
        {},
        {},
        {},
        {},
        {},
        {},
        {},
        (0.0, r, 0.0),
        r,
        2 * r,
        shoulder_y,
        hip_y,
        shoulder_half,
        hip_half,
        torso_depth,
    )
    for side in (-1, 1):  # -1: the person's right, +1: the person's left
        phase = walk_phase + (0.0 if side > 0 else math.pi)
        swing = amplitude * math.sin(phase)
        # The knee bends most while the leg swings forward (mid-swing) and little in stance.
        bend = 0.55 * amplitude / 0.4 * max(0.0, math.sin(phase + 0.9)) ** 2
        hip = (side * 0.5 * hip_half, hip_y, 0.0)
        knee = (hip[0], hip[1] + thigh * math.cos(swing), thigh * math.sin(swing))
        shin_angle = swing - bend
        ankle = (hip[0], knee[1] + shin * math.cos(shin_angle), knee[2] + shin * math.sin(shin_angle))
        toe = (ankle[0], ankle[1] + 0.02, ankle[2] + 0.065)
        arm_swing = -0.8 * amplitude * math.sin(phase)
        shoulder = (side * shoulder_half * 0.92, shoulder_y + 0.012, 0.0)
        elbow = (
            shoulder[0] + side * 0.018,
            shoulder[1] + upper * math.cos(arm_swing),
            upper * math.sin(arm_swing),
        )
        fore_angle = arm_swing + 0.25 + 0.3 * max(0.0, -math.sin(phase))
        wrist = (
            elbow[0] + side * 0.006,
            elbow[1] + fore * math.cos(fore_angle),
            elbow[2] + fore * math.sin(fore_angle),
        )
        pose.hip[side], pose.knee[side], pose.ankle[side], pose.toe[side] = hip, knee, ankle, toe
        pose.shoulder[side], pose.elbow[side], pose.wrist[side] = shoulder, elbow, wrist
    # Keep the lowest foot on the ground (y = 1): legs apart lower the body a little.
    lowest = max(max(pose.ankle[s][1] + 0.035, pose.toe[s][1] + 0.015) for s in (-1, 1))
    drop = 1.0 - lowest
    if abs(drop) > 1e-9:
        for joints in (pose.shoulder, pose.elbow, pose.wrist, pose.hip, pose.knee, pose.ankle, pose.toe):
            for side, (x, y, z) in list(joints.items()):
                joints[side] = (x, y + drop, z)
        pose.head_centre = (0.0, r + drop, 0.0)
        pose.neck_y += drop
        pose.shoulder_y += drop
        pose.hip_y += drop
    return pose


_Point3 = tuple[float, float, float]  # (x, y, z) in the body frame, body units


def _lerp(a: _Point3, b: _Point3, t: float) -> _Point3:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


# One deferred drawing call: (depth towards the camera in body units, priority among equal depths,
# the call). render_person paints the items far-to-near, ties broken by priority.
_DrawItem = tuple[float, int, Callable[[], None]]


def _draw_body(p: _Painter, person: PersonAppearance, pose: _Pose) -> list[_DrawItem]:
    """Collect one drawer per body part, keyed by (depth, priority); returns them unsorted.

    The depth of each part is where it sits towards the camera (the painter sorts far-to-near); the
    priority breaks ties between parts at the same (rounded) depth: legs 0, pelvis 1, skirt 2,
    torso 3, arms 4, backpack and long hair's back 5, shoulder bag 6, hair strands and ponytail 7,
    head 8. The append order matters too: the sort is stable.
    """
    items: list[_DrawItem] = []
    for side in (-1, 1):  # -1: the person's right, +1: the person's left
        items.append((p.project(pose.hip[side])[2], 0, functools.partial(_draw_leg, p, person, pose, side)))
        items.append(
            (p.project(pose.shoulder[side])[2], 4, functools.partial(_draw_arm, p, person, pose, side))
        )
    items.append((0.0, 1, functools.partial(_draw_pelvis, p, pose)))
    if person.lower_garment == "skirt":
        items.append((0.0, 2, functools.partial(_draw_skirt, p, person, pose)))
    items.append((0.0, 3, functools.partial(_draw_torso, p, person, pose)))
    r = pose.head_radius
    if person.hair_style == "long":
        items.append((-pose.torso_depth * p.cos_f, 5, functools.partial(_draw_long_hair_back, p, pose)))
        items.append((0.5 * r * p.cos_f, 7, functools.partial(_draw_long_hair_front, p, pose)))
    if person.hair_style == "ponytail":
        items.append((-r * p.cos_f, 7, functools.partial(_draw_ponytail, p, pose)))
    if person.backpack:
        items.append(
            (-(pose.torso_depth + 0.04) * p.cos_f, 5, functools.partial(_draw_backpack, p, person, pose))
        )
    if person.bag != "none":
        side = 1 if person.bag == "left" else -1
        depth = p.project((side * (pose.hip_half + 0.035), 0.0, 0.01))[2] + 0.01
        items.append((depth, 6, functools.partial(_draw_shoulder_bag, p, person, pose, side)))
    items.append((0.0, 8, functools.partial(_draw_head, p, person, pose)))
    return items


def _limb_chain(
    p: _Painter,
    points: list[_Point3],
    radii: list[float],
    covered: float,
    base: int,
    cover: int,
    cover_pad: float,
) -> None:
    """Paint a jointed limb as tapered capsules, then a garment over its first ``covered`` fraction.

    Args:
        points: joints in the body frame (body units), root first (e.g. hip, knee, ankle).
        radii: limb radius at each joint (body units).
        covered: fraction of the chain's length (0..1) the garment covers, measured from the root.
        base: label of the bare limb (skin); cover: label of the garment.
        cover_pad: garment radius / limb radius (> 1: the garment stands off the skin).
    """
    s = p.scale
    projected = [p.project(q)[:2] for q in points]
    for i in range(len(points) - 1):
        p.capsule(projected[i], projected[i + 1], radii[i] * s, radii[i + 1] * s, base)
    if covered <= 0:
        return
    lengths = [math.dist(points[i], points[i + 1]) for i in range(len(points) - 1)]
    remaining = covered * sum(lengths)
    for i, length in enumerate(lengths):
        if remaining <= 0:
            break
        t = min(1.0, remaining / max(length, 1e-9))
        end = _lerp(points[i], points[i + 1], t)
        r_end = radii[i] + (radii[i + 1] - radii[i]) * t
        p.capsule(projected[i], p.project(end)[:2], radii[i] * s * cover_pad, r_end * s * cover_pad, cover)
        remaining -= length


def _draw_leg(p: _Painter, person: PersonAppearance, pose: _Pose, side: int) -> None:
    """One leg (``side`` -1 right, +1 left): thigh and shin in skin, trousers / shorts over them, a shoe,
    and for boots a shaft up the shin."""
    s = p.scale
    hip, knee, ankle, toe = pose.hip[side], pose.knee[side], pose.ankle[side], pose.toe[side]
    thick = 0.046 * person.build
    covered = person.lower_length if person.lower_garment in ("trousers", "shorts") else 0.0
    pad = 1.12 if person.lower_garment == "trousers" else 1.18
    _limb_chain(p, [hip, knee, ankle], [thick, 0.034 * person.build, 0.024], covered, _SKIN, _BOTTOM, pad)
    heel = (ankle[0], ankle[1] + 0.022, ankle[2] - 0.018)
    shoe_r = 0.02 if person.shoes != "sandals" else 0.014
    p.capsule(p.project(heel)[:2], p.project(toe)[:2], shoe_r * s, shoe_r * 0.85 * s, _SHOES)
    if person.shoes == "boots":
        top = _lerp(ankle, knee, 0.3)
        p.capsule(p.project(top)[:2], p.project(ankle)[:2], 0.03 * s, 0.027 * s, _SHOES)


def _draw_arm(p: _Painter, person: PersonAppearance, pose: _Pose, side: int) -> None:
    """One arm (``side`` -1 right, +1 left): upper and fore arm in skin, the sleeve over its first
    ``sleeve_length`` fraction, and the hand."""
    shoulder, elbow, wrist = pose.shoulder[side], pose.elbow[side], pose.wrist[side]
    radius = 0.029 * math.sqrt(person.build)
    _limb_chain(
        p,
        [shoulder, elbow, wrist],
        [radius, 0.024 * math.sqrt(person.build), 0.019],
        person.sleeve_length,
        _SKIN,
        _TOP,
        1.15,
    )
    hand = _lerp(elbow, wrist, 1.12)
    p.circle(p.project(hand)[:2], 0.021 * p.scale, _SKIN)


def _draw_pelvis(p: _Painter, pose: _Pose) -> None:
    """The seat of the lower garment: a trapezoid from just above the hips to the crotch."""
    s = p.scale
    y0, y1 = pose.hip_y - 0.025, pose.hip_y + 0.07
    half = pose.hip_half * abs(p.cos_f) + pose.torso_depth * abs(p.sin_f)
    cx = p.origin_x
    p.polygon(
        [
            (cx - half * s, y0 * s + p.origin_y),
            (cx + half * s, y0 * s + p.origin_y),
            (cx + 0.6 * half * s, y1 * s + p.origin_y),
            (cx - 0.6 * half * s, y1 * s + p.origin_y),
        ],
        _BOTTOM,
    )


def _draw_skirt(p: _Painter, person: PersonAppearance, pose: _Pose) -> None:
    """A flared skirt from the waist down ``lower_length`` of the leg."""
    s = p.scale
    y0 = pose.hip_y - 0.03
    y1 = pose.hip_y + person.lower_length * (1.0 - pose.hip_y)
    w0 = pose.hip_half * 1.05 * abs(p.cos_f) + pose.torso_depth * abs(p.sin_f)
    w1 = pose.hip_half * 1.55 * abs(p.cos_f) + pose.torso_depth * 1.5 * abs(p.sin_f)
    cx = p.origin_x
    p.polygon(
        [
            (cx - w0 * s, y0 * s + p.origin_y),
            (cx + w0 * s, y0 * s + p.origin_y),
            (cx + w1 * s, y1 * s + p.origin_y),
            (cx - w1 * s, y1 * s + p.origin_y),
        ],
        _BOTTOM,
    )


@dataclasses.dataclass(frozen=True)
class _TorsoShape:
    """Half-widths and heights of the top garment as seen by the camera (body units).

    ``shoulder`` / ``waist`` / ``hip`` are projected half-widths; ``hem_y`` and ``hem_half`` are where
    the garment ends: just below the hips for a top, at the knees (and flared) for a coat.
    """

    shoulder: float
    waist: float
    hip: float
    shoulder_y: float
    hip_y: float
    hem_y: float
    hem_half: float


def _torso_shape(p: _Painter, person: PersonAppearance, pose: _Pose) -> _TorsoShape:
    """The silhouette measures shared by the garment outline and its two-tone pattern."""
    hip = pose.hip_half * 1.05 * abs(p.cos_f) + pose.torso_depth * abs(p.sin_f)
    if person.coat:
        hem_y, hem_half = 0.5 * (pose.knee[-1][1] + pose.knee[1][1]) + 0.02, hip * 1.35
    else:
        hem_y, hem_half = pose.hip_y + 0.035, hip
    return _TorsoShape(
        shoulder=pose.shoulder_half * abs(p.cos_f) + pose.torso_depth * abs(p.sin_f),
        waist=pose.shoulder_half * 0.8 * abs(p.cos_f) + pose.torso_depth * 0.95 * abs(p.sin_f),
        hip=hip,
        shoulder_y=pose.shoulder_y,
        hip_y=pose.hip_y,
        hem_y=hem_y,
        hem_half=hem_half,
    )


def _draw_torso(p: _Painter, person: PersonAppearance, pose: _Pose) -> None:
    """The top garment (or coat), the neck, the print on the top and the backpack's straps.

    Painted in that order in one drawer: the neck, print and straps lie on the garment, at its depth.
    """
    shape = _torso_shape(p, person, pose)
    _draw_top_garment(p, person, shape)
    _draw_neck(p, pose)
    _draw_top_pattern(p, person, shape)
    if person.backpack and p.cos_f > 0.15:
        _draw_backpack_straps(p, pose)


def _draw_top_garment(p: _Painter, person: PersonAppearance, shape: _TorsoShape) -> None:
    """The garment's outline, shoulders to hem; a coat widens below the hips down to the knees."""
    s, cx, oy = p.scale, p.origin_x, p.origin_y
    ws, ww, wh = shape.shoulder, shape.waist, shape.hip
    ys, yh = shape.shoulder_y, shape.hip_y
    if person.coat:
        wk, knee = shape.hem_half, shape.hem_y
        outline = [
            (-ws * 0.75, ys - 0.012),
            (ws * 0.75, ys - 0.012),
            (ws, ys + 0.03),
            (ww, (ys + yh) / 2),
            (wh * 1.1, yh),
            (wk, knee),
            (-wk, knee),
            (-wh * 1.1, yh),
            (-ww, (ys + yh) / 2),
            (-ws, ys + 0.03),
        ]
    else:
        hem = shape.hem_y
        outline = [
            (-ws * 0.75, ys - 0.012),
            (ws * 0.75, ys - 0.012),
            (ws, ys + 0.03),
            (ww, (ys + yh) / 2),
            (wh, hem),
            (-wh, hem),
            (-ww, (ys + yh) / 2),
            (-ws, ys + 0.03),
        ]
    p.polygon([(cx + x * s, oy + y * s) for x, y in outline], _TOP)


def _draw_neck(p: _Painter, pose: _Pose) -> None:
    """The neck in skin, from under the chin to the collar."""
    s, cx, oy = p.scale, p.origin_x, p.origin_y
    ys = pose.shoulder_y
    p.polygon(
        [
            (cx - 0.025 * s, oy + (pose.neck_y - 0.01) * s),
            (cx + 0.025 * s, oy + (pose.neck_y - 0.01) * s),
            (cx + 0.03 * s, oy + (ys + 0.005) * s),
            (cx - 0.03 * s, oy + (ys + 0.005) * s),
        ],
        _SKIN,
    )


def _draw_top_pattern(p: _Painter, person: PersonAppearance, shape: _TorsoShape) -> None:
    """The print in the second colour: a chest logo (front views only) or a two-tone lower half.

    Stripes are not drawn here: :func:`render_person` adds them per pixel when colouring.
    """
    s, cx, oy = p.scale, p.origin_x, p.origin_y
    ys, yh = shape.shoulder_y, shape.hip_y
    front = p.cos_f
    if person.top_pattern == "logo" and front > 0.35:
        lw = 0.045 * front
        p.polygon(
            [
                (cx - lw * s, oy + (ys + 0.05) * s),
                (cx + lw * s, oy + (ys + 0.05) * s),
                (cx + lw * s, oy + (ys + 0.11) * s),
                (cx - lw * s, oy + (ys + 0.11) * s),
            ],
            _TOP2,
        )
    if person.top_pattern == "two_tone":
        y_mid = ys + 0.55 * (yh - ys)
        ww, wb, bottom_y = shape.waist, shape.hem_half, shape.hem_y
        p.polygon(
            [
                (cx - ww * 1.02 * s, oy + y_mid * s),
                (cx + ww * 1.02 * s, oy + y_mid * s),
                (cx + wb * 1.02 * s, oy + bottom_y * s),
                (cx - wb * 1.02 * s, oy + bottom_y * s),
            ],
            _TOP2,
        )


def _draw_backpack_straps(p: _Painter, pose: _Pose) -> None:
    """The backpack's two shoulder straps over the chest (the caller draws them in front views only)."""
    s = p.scale
    for side in (-1, 1):
        top = p.project((side * pose.shoulder_half * 0.55, pose.shoulder_y - 0.005, 0.0))
        bottom = p.project((side * pose.hip_half * 0.7, pose.shoulder_y + 0.2, 0.0))
        p.capsule(top[:2], bottom[:2], 0.011 * s, 0.011 * s, _BACKPACK)


def _draw_long_hair_back(p: _Painter, pose: _Pose) -> None:
    """Long hair falling down the back to below the shoulders (behind the torso)."""
    r, hy = pose.head_radius, pose.head_centre[1]
    pts3 = [
        (-r * 0.95, hy, -r * 0.3),
        (r * 0.95, hy, -r * 0.3),
        (r * 1.1, pose.shoulder_y + 0.1, -pose.torso_depth),
        (-r * 1.1, pose.shoulder_y + 0.1, -pose.torso_depth),
    ]
    p.polygon([p.project(q)[:2] for q in pts3], _HAIR)


def _draw_long_hair_front(p: _Painter, pose: _Pose) -> None:
    """The two strands of long hair falling over the shoulders, in front of the torso."""
    s, r, hy = p.scale, pose.head_radius, pose.head_centre[1]
    for side in (-1, 1):
        a = p.project((side * r * 0.85, hy, 0.2 * r))
        b = p.project((side * r * 0.95, pose.shoulder_y + 0.05, 0.35 * r))
        p.capsule(a[:2], b[:2], 0.022 * s, 0.016 * s, _HAIR)


def _draw_ponytail(p: _Painter, pose: _Pose) -> None:
    """A ponytail from the back of the head down to the nape, tapering."""
    s, r, hy = p.scale, pose.head_radius, pose.head_centre[1]
    a = p.project((0.0, hy - 0.2 * r, -r * 0.95))
    b = p.project((0.0, hy + 1.9 * r, -r * 1.25))
    p.capsule(a[:2], b[:2], 0.024 * s, 0.012 * s, _HAIR)


def _draw_backpack(p: _Painter, person: PersonAppearance, pose: _Pose) -> None:
    """The backpack itself: a rounded box on the back, between the shoulder blades."""
    centre = (0.0, pose.shoulder_y + 0.12, -(pose.torso_depth + 0.04))
    p.box(centre, (0.085 * person.build**0.5, 0.115, 0.042), _BACKPACK, round_px=0.02 * p.scale)


def _draw_shoulder_bag(p: _Painter, person: PersonAppearance, pose: _Pose, side: int) -> None:
    """A shoulder bag at the hip on ``side`` (-1 right, +1 left), its strap to the same shoulder."""
    s, size = p.scale, person.bag_size
    centre = (side * (pose.hip_half + 0.035), pose.hip_y + 0.01, 0.01)
    strap_top = p.project((side * pose.shoulder_half * 0.7, pose.shoulder_y - 0.005, 0.0))
    strap_bottom = p.project((centre[0], centre[1] - 0.05 * size, centre[2]))
    p.capsule(strap_top[:2], strap_bottom[:2], 0.006 * s, 0.006 * s, _BAG)
    p.box(centre, (0.022, 0.05 * size, 0.075 * size), _BAG, round_px=0.012 * s)


def _draw_head(p: _Painter, person: PersonAppearance, pose: _Pose) -> None:
    """The head, shaded per pixel as a sphere: face (skin), hair, glasses, hat and a cap's brim.

    Each pixel of the head's bounding box is lifted onto the sphere and rotated back into the body
    frame, so the hairline, glasses and hat land where they belong for any ``facing``.
    """
    cx, cy, _ = p.project(pose.head_centre)
    radius = pose.head_radius * p.scale
    hat_radius = radius * (1.1 if person.hat == "beanie" else 1.06 if person.hat == "cap" else 1.0)
    reach = hat_radius + 1
    x0, x1 = int(max(0, math.floor(cx - reach))), int(min(p.labels.shape[1], math.ceil(cx + reach) + 1))
    y0, y1 = int(max(0, math.floor(cy - reach))), int(min(p.labels.shape[0], math.ceil(cy + reach) + 1))
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    region = p.labels[y0:y1, x0:x1]

    def sphere(rad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        nx = (xs + 0.5 - cx) / rad
        ny = (ys + 0.5 - cy) / rad
        inside = nx * nx + ny * ny <= 1.0
        nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
        # camera frame -> body frame (inverse of the facing rotation)
        bx = nx * p.cos_f - nz * p.sin_f
        bz = nx * p.sin_f + nz * p.cos_f
        return inside, bx, ny, bz

    inside, bx, by, bz = sphere(radius)
    region[inside] = _SKIN
    region[_hair_mask(person.hair_style, inside, bx, by, bz)] = _HAIR
    if person.glasses:
        lens = inside & (bz > 0.5) & (by > -0.25) & (by < 0.02) & (np.abs(bx) > 0.08) & (np.abs(bx) < 0.66)
        temple = inside & (np.abs(by + 0.12) < 0.05) & (np.abs(bx) > 0.6) & (bz > -0.1)
        region[lens | temple] = _GLASSES
    if person.hat != "none":
        h_inside, _, h_by, _ = sphere(hat_radius)
        cut = -0.32 if person.hat == "cap" else -0.12
        region[h_inside & (h_by < cut)] = _HAT
        if person.hat == "cap":
            _draw_cap_brim(p, pose)


def _hair_mask(style: str, inside: np.ndarray, bx: np.ndarray, by: np.ndarray, bz: np.ndarray) -> np.ndarray:
    """Which head pixels are hair for a hair style (one of HAIR_STYLES).

    Args:
        inside: bool (h, w), pixels on the head sphere.
        bx, by, bz: float32 (h, w), the sphere's unit normal in the body frame (x left, y down,
            z forward), so e.g. ``by < -0.35`` is the crown and ``bz < 0`` the back of the head.

    Returns:
        bool (h, w), a subset of ``inside``.
    """
    if style == "short":
        return inside & ((by < -0.35) | ((bz < -0.15) & (by < 0.45)) | ((np.abs(bx) > 0.75) & (by < 0.05)))
    if style in ("bob", "long"):
        return inside & ((by < -0.3) | ((bz < 0.3) & (by < 0.8)))
    if style == "ponytail":
        return inside & ((by < -0.38) | ((bz < -0.05) & (by < 0.5)))
    return np.zeros_like(inside)


def _draw_cap_brim(p: _Painter, pose: _Pose) -> None:
    """A cap's brim: a flat disc in front of the forehead, seen edge-on by the horizontal camera."""
    r = pose.head_radius
    centre_x = 0.9 * r * p.sin_f
    half = math.sqrt((0.75 * r * p.cos_f) ** 2 + (0.75 * r * p.sin_f) ** 2) * 0.9
    brim_y = pose.head_centre[1] - 0.35 * r
    thickness = 0.09 * r + 0.25 * r * max(0.0, p.cos_f) * 0.5
    depth = 0.9 * r * p.cos_f
    if depth > -0.5 * r:  # behind the head the brim is hidden
        x_a, x_b = p.origin_x + (centre_x - half) * p.scale, p.origin_x + (centre_x + half) * p.scale
        y_a, y_b = (
            p.origin_y + (brim_y - thickness) * p.scale,
            p.origin_y + (brim_y + thickness) * p.scale,
        )
        p.polygon([(x_a, y_a), (x_b, y_a), (x_b, y_b), (x_a, y_b)], _HAT)


# ------------------------------------------------------------------------------------------ colours


def _visible_lut(person: PersonAppearance) -> np.ndarray:
    lut = np.zeros((_NUM_LABELS, 3), np.float32)
    lut[_SKIN] = person.skin_rgb
    lut[_HAIR] = person.hair_rgb
    lut[_TOP] = person.top_rgb
    lut[_TOP2] = person.top2_rgb
    lut[_BOTTOM] = person.bottom_rgb
    lut[_SHOES] = person.shoe_rgb
    lut[_BAG] = person.bag_rgb
    lut[_BACKPACK] = person.bag_rgb if person.bag != "none" else person.hat_rgb
    lut[_HAT] = person.hat_rgb
    lut[_GLASSES] = (30, 30, 35)
    return lut


def _heat_lut(person: PersonAppearance) -> np.ndarray:
    """Grey level per label, 0..255, brighter = warmer (before per-image gain)."""
    skin = 205.0 + 35.0 * person.skin_heat
    heat = np.zeros(_NUM_LABELS, np.float32)
    heat[_SKIN] = skin
    heat[_HAIR] = skin - 45.0 - 45.0 * person.hair_insulation
    heat[_TOP] = skin - 30.0 - 95.0 * person.top_insulation
    heat[_TOP2] = heat[_TOP]  # print and colour are invisible in heat
    heat[_BOTTOM] = skin - 45.0 - 75.0 * person.bottom_insulation
    heat[_SHOES] = 95.0
    heat[_BAG] = 72.0
    heat[_BACKPACK] = 78.0
    heat[_HAT] = skin - 85.0 if person.hat == "beanie" else skin - 105.0
    heat[_GLASSES] = 55.0  # glass is opaque to long-wave IR: lenses look cold
    return heat


def render_person(
    appearance: PersonAppearance,
    modality: Modality,
    *,
    height_px: int,
    walk_phase: float,
    facing: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one person on a transparent background.

    Args:
        appearance: the identity.
        modality: ``Modality.VISIBLE`` (colours) or ``Modality.INFRARED`` (grey heat).
        height_px: output height in pixels; the body spans the full height (head top to sole, a cap
            brim or beanie may reach above the head top within a 4% margin).
        walk_phase: gait phase in radians.
        facing: view angle in radians (0 faces the camera, pi shows the back, +pi/2 walks right).
        rng: per-image randomness (clothing folds, texture, heat noise).

    Returns:
        ``(rgb, alpha)``: ``rgb`` uint8 (height_px, canvas_width(height_px), 3), for infrared a grey
        image replicated to three channels; ``alpha`` float32 (same height and width) in [0, 1].
    """
    modality = Modality.parse(modality)
    if height_px < 8:
        raise ValueError(f"height_px must be >= 8, got {height_px}")
    out_h, out_w = int(height_px), canvas_width(int(height_px))
    ss = 2 if out_h >= 48 else 4  # supersampling for antialiased edges
    h, w = out_h * ss, out_w * ss
    labels = np.zeros((h, w), np.uint8)
    margin = 0.04
    scale = h / (1.0 + margin)
    painter = _Painter(labels, scale, w / 2.0, margin * scale, math.cos(facing), math.sin(facing))
    pose = _pose(appearance, walk_phase)
    items = _draw_body(painter, appearance, pose)
    for _, _, draw in sorted(items, key=lambda item: (round(item[0], 4), item[1])):
        draw()

    mask = labels > 0
    # Shading: darker (visible) / cooler (infrared) towards part edges, which reads as roundness.
    edges = np.zeros_like(labels)
    edges[:, 1:] |= (labels[:, 1:] != labels[:, :-1]).astype(np.uint8)
    edges[1:, :] |= (labels[1:, :] != labels[:-1, :]).astype(np.uint8)
    distance = cv2.distanceTransform((edges == 0).astype(np.uint8), cv2.DIST_L2, 3)
    roundness = np.minimum(distance / (0.02 * scale), 1.0)
    noise = _smooth_noise(rng, (h, w), cell=max(2, int(0.03 * scale)))
    if modality is Modality.VISIBLE:
        colour = _visible_lut(appearance)[labels]
        if appearance.top_pattern == "stripes":
            period = max(2, int(0.032 * scale))
            stripe = ((np.arange(h) // period) % 2 == 0)[:, None] & (labels == _TOP)
            colour[stripe] = appearance.top2_rgb
        shade = 0.72 + 0.28 * roundness + 0.08 * noise
        colour *= shade[..., None]
        if appearance.lower_garment != "skirt":  # denim-like grain on trousers
            grain = rng.normal(0.0, 6.0, (h, w)).astype(np.float32)
            colour[labels == _BOTTOM] += grain[labels == _BOTTOM, None]
    else:
        heat = _heat_lut(appearance)[labels]
        heat = heat - 22.0 * (1.0 - roundness) + 9.0 * noise  # emissivity falls at grazing angles
        colour = np.repeat(heat[..., None], 3, axis=2)
    colour[~mask] = 0.0
    alpha_hr = mask.astype(np.float32)
    colour_lr = cv2.resize(colour, (out_w, out_h), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha_hr, (out_w, out_h), interpolation=cv2.INTER_AREA)
    rgb = np.where(alpha[..., None] > 1e-3, colour_lr / np.maximum(alpha[..., None], 1e-3), 0.0)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), np.clip(alpha, 0.0, 1.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid upsampled bicubically."""
    coarse = rng.uniform(-1.0, 1.0, (max(2, shape[0] // cell + 2), max(2, shape[1] // cell + 2))).astype(
        np.float32
    )
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
