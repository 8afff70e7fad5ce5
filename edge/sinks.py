"""Outputs a node writes when asked: an annotated video per camera and a JSON-lines sightings log.

Stages compute, sinks do I/O: the drawing lives here, not in detectors or trackers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from edge.messages import SightingBatch
from edge.sources.frame import Frame


def id_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per id (golden-angle hue steps): track ids, global ids."""
    hue = int((track_id * 137.508) % 180)
    bgr = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_sightings(frame: Frame, batch: SightingBatch) -> np.ndarray:
    """A copy of the frame with boxes, track ids, scores and a camera/frame label drawn."""
    image = frame.image.copy()
    embedded = set(batch.embedding_rows)
    for row, ((x1, y1, x2, y2), track_id, score) in enumerate(
        zip(batch.boxes, batch.track_ids, batch.scores)
    ):
        colour = id_colour(track_id)
        thickness = 2 if row in embedded else 1
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), colour, thickness)
        cv2.putText(
            image,
            f"{track_id} {score:.2f}",
            (int(x1), max(10, int(y1) - 3)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            colour,
            1,
        )
    label = f"{batch.camera_id} [{batch.modality}] #{batch.frame_index} t={batch.capture_ts:.2f}"
    cv2.putText(image, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1)
    return image


class AnnotatedVideoWriter:
    """``<directory>/<camera_id>.<ext>``, one per camera, created at its first frame.

    Args:
        directory: output folder (created).
        fps: default frame rate of the files; :meth:`write` takes each camera's own rate (a 3 fps
            thermal file next to a 25 fps RGB one must not play 8x too fast).
        fourcc: codec (``mp4v`` -> .mp4, ``MJPG`` -> .avi; both written and read back by this
            OpenCV build).
    """

    def __init__(self, directory: str | os.PathLike[str], fps: float = 25.0, fourcc: str = "mp4v") -> None:
        if not fps > 0:
            raise ValueError(f"annotated video fps must be positive, got {fps}")
        self.directory = Path(directory)
        self.fps = fps
        self.fourcc = fourcc
        self.suffix = ".avi" if fourcc.upper() == "MJPG" else ".mp4"
        self._writers: dict[str, cv2.VideoWriter] = {}
        self.paths: dict[str, Path] = {}
        self.rates: dict[str, float] = {}

    def write(self, frame: Frame, batch: SightingBatch, fps: float | None = None) -> None:
        """Draw and append one frame; ``fps`` (the camera's frame rate) is used when its file is
        created at its first frame (later values are ignored: a file has one rate)."""
        writer = self._writers.get(frame.camera_id)
        if writer is None:
            rate = float(fps) if fps and fps > 0 else self.fps
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{frame.camera_id}{self.suffix}"
            writer = cv2.VideoWriter(
                str(path), cv2.VideoWriter_fourcc(*self.fourcc), rate, (frame.width, frame.height)
            )
            if not writer.isOpened():
                raise OSError(f"cannot write video {path} with codec {self.fourcc}")
            self._writers[frame.camera_id] = writer
            self.paths[frame.camera_id] = path
            self.rates[frame.camera_id] = rate
        writer.write(draw_sightings(frame, batch))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.release()
        self._writers.clear()


class SightingsLog:
    """JSON lines, one per SightingBatch (without the embeddings, with which rows had one).

    Lines are flushed as they are written, so a crash loses at most the line being written; the
    file is a log that grows while the node runs, not an artifact to replace atomically.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, batch: SightingBatch) -> None:
        if self._handle is None:
            raise ValueError(f"{self.path} is closed")
        embedded = set(batch.embedding_rows)
        record = {
            "producer_id": batch.producer_id,
            "camera_id": batch.camera_id,
            "modality": str(batch.modality),
            "seq": batch.seq,
            "frame_index": batch.frame_index,
            "capture_ts": batch.capture_ts,
            "engine_id": batch.engine_id,
            "sightings": [
                {
                    "track_id": track_id,
                    "box": [round(v, 2) for v in box],
                    "score": round(score, 4),
                    "quality": round(quality, 4),
                    "embedded": row in embedded,
                }
                for row, (box, track_id, score, quality) in enumerate(
                    zip(batch.boxes, batch.track_ids, batch.scores, batch.quality)
                )
            ],
        }
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
