"""The side-by-side video of a run: every camera next to each other, each person boxed and labelled
with the global identity the linker gave its track (one colour per identity, across cameras).

Reads the cameras' recorded videos and the run's sightings/identities; draws; writes one video
(written under a temporary name and renamed when complete, so a crash never leaves half a file
that looks finished).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.evaluation.scoring import Sighting
from edge.sinks import id_colour

_HEADER_PX = 22
_GREY = (160, 160, 160)


@dataclass(frozen=True)
class CameraVideo:
    """A recorded camera: its id, modality and video file (frame i = frame_index i)."""

    camera_id: str
    modality: str
    path: Path


def write_side_by_side(
    cameras: Sequence[CameraVideo],
    sightings: Sequence[Sighting],
    identities: np.ndarray,
    out_path: str | os.PathLike[str],
    fps: float,
    fourcc: str = "mp4v",
    height: int | None = None,
) -> Path:
    """Draw every camera's frames side by side with global identities and write one video.

    Args:
        cameras: the cameras, left to right.
        sightings: all sightings of the run; ``identities[i]`` is the global id of ``sightings[i]``
            (-1: no identity yet, drawn grey as ``t<track>``).
        out_path: ``.mp4`` (``mp4v``) or ``.avi`` (``MJPG``).
        fps: frame rate written into the file.
        height: every panel is scaled to this height (default: the first camera's).

    Returns:
        The written path. Frames run until the longest camera ends (a shorter one shows black).
    """
    if not cameras:
        raise ValueError("write_side_by_side needs at least one camera")
    boxes: dict[tuple[str, int], list[tuple[Sighting, int]]] = defaultdict(list)
    for sighting, gid in zip(sightings, identities, strict=True):
        boxes[(sighting.camera_id, sighting.frame_index)].append((sighting, int(gid)))
    captures = []
    for camera in cameras:
        capture = cv2.VideoCapture(str(camera.path))
        if not capture.isOpened():
            raise OSError(f"cannot read video {camera.path} (camera {camera.camera_id})")
        captures.append(capture)
    sizes = [(int(c.get(cv2.CAP_PROP_FRAME_WIDTH)), int(c.get(cv2.CAP_PROP_FRAME_HEIGHT))) for c in captures]
    panel_h = height or sizes[0][1]
    widths = [max(1, round(w * panel_h / max(h, 1))) for w, h in sizes]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    writer = cv2.VideoWriter(
        str(partial), cv2.VideoWriter_fourcc(*fourcc), fps, (sum(widths), panel_h + _HEADER_PX)
    )
    if not writer.isOpened():
        raise OSError(f"cannot write video {partial} with codec {fourcc}")
    try:
        frame_index = 0
        while True:
            panels, alive = [], False
            for camera, capture, width in zip(cameras, captures, widths, strict=True):
                ok, image = capture.read()
                if ok:
                    alive = True
                    image = _annotate(image, boxes.get((camera.camera_id, frame_index), []))
                    image = cv2.resize(image, (width, panel_h), interpolation=cv2.INTER_AREA)
                else:
                    image = np.zeros((panel_h, width, 3), np.uint8)
                header = np.zeros((_HEADER_PX, width, 3), np.uint8)
                cv2.putText(
                    header,
                    f"{camera.camera_id} [{camera.modality}]  frame {frame_index}",
                    (6, 15),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.45,
                    (255, 255, 255),
                    1,
                    cv2.LINE_AA,
                )
                panels.append(np.vstack([header, image]))
            if not alive:
                break
            writer.write(np.hstack(panels))
            frame_index += 1
    finally:
        writer.release()
        for capture in captures:
            capture.release()
    os.replace(partial, out)
    return out


def _annotate(image: np.ndarray, rows: Sequence[tuple[Sighting, int]]) -> np.ndarray:
    for sighting, gid in rows:
        x1, y1, x2, y2 = (int(round(v)) for v in sighting.box)
        colour = id_colour(gid) if gid >= 0 else _GREY
        label = f"ID {gid}" if gid >= 0 else f"t{sighting.track_id}"
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(0, y1 - th - 6)
        cv2.rectangle(image, (x1, top), (x1 + tw + 6, top + th + 6), colour, -1)
        cv2.putText(
            image, label, (x1 + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA
        )
    return image
