"""The side-by-side video of a run: every camera next to each other, each person boxed and labelled
with the global identity the linker gave its track (one colour per identity, across cameras).

Reads the cameras' recorded frames (video files, single images, or folders of frames, through the
same readers and 8-bit conversion as the node, so boxes land on the pixels they were found on) and
the run's sightings/identities; draws; writes one video (under a temporary name and renamed when
complete, so a crash never leaves half a file that looks finished).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.modality import Modality
from edge.evaluation.scoring import Sighting
from edge.sinks import id_colour
from edge.sources.readers import FolderReader, FrameReader, VideoFileReader
from edge.sources.streams import visible_to_bgr
from edge.sources.thermal import ThermalNormalizer, infrared_to_3ch

_HEADER_PX = 22
_GREY = (160, 160, 160)


@dataclass(frozen=True)
class CameraVideo:
    """A recorded camera (frame i of its recording = frame_index i of its sightings).

    Attributes:
        camera_id, modality: of the camera.
        path: a video file or single image (``kind="file"``), or a folder of frames (``"folder"``).
        kind: ``file`` or ``folder`` (as the node's source config says).
        pattern: the folder's glob of frame files.
        thermal: the node's infrared normaliser settings (16-bit frames are stretched the same way).
    """

    camera_id: str
    modality: str
    path: Path
    kind: str = "file"
    pattern: str = "*"
    thermal: ThermalNormalizer = field(default_factory=ThermalNormalizer)

    def __post_init__(self) -> None:
        if self.kind not in ("file", "folder"):
            raise ValueError(
                f"camera {self.camera_id}: the side-by-side video reads 'file' or 'folder' sources, "
                f"not {self.kind!r}"
            )

    def frames(self) -> Iterator[np.ndarray]:
        """The recording's frames as (H, W, 3) uint8 BGR, in order."""
        reader: FrameReader = (
            FolderReader(self.path, self.pattern) if self.kind == "folder" else VideoFileReader(self.path)
        )
        try:
            reader.open()
        except Exception as exc:
            raise OSError(f"cannot read {self.path} (camera {self.camera_id}): {exc}") from exc
        infrared = Modality.parse(self.modality) is Modality.INFRARED
        try:
            while (image := reader.read()) is not None:
                yield infrared_to_3ch(self.thermal(image)) if infrared else visible_to_bgr(image)
        finally:
            reader.close()


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
    streams = [camera.frames() for camera in cameras]
    firsts = [next(stream, None) for stream in streams]
    for camera, first in zip(cameras, firsts, strict=True):
        if first is None:
            raise OSError(f"{camera.path} (camera {camera.camera_id}) holds no frame")
    sizes = [(int(f.shape[1]), int(f.shape[0])) for f in firsts]  # type: ignore[union-attr]
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
    pending: list[np.ndarray | None] = list(firsts)
    try:
        frame_index = 0
        while True:
            panels, alive = [], False
            for i, (camera, width) in enumerate(zip(cameras, widths, strict=True)):
                image = pending[i] if pending[i] is not None else next(streams[i], None)
                pending[i] = None
                if image is not None:
                    alive = True
                    image = _annotate(image.copy(), boxes.get((camera.camera_id, frame_index), []))
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
        for stream in streams:
            stream.close()
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
