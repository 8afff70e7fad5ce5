"""What a source hands to the pipeline: a :class:`Frame`, or an explicit :class:`StreamEnd`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.modality import Modality


class SourceError(RuntimeError):
    """A source that cannot be opened or read: names the file/URL/device and what went wrong."""


@dataclass(frozen=True)
class Frame:
    """One camera frame.

    Attributes:
        camera_id: the camera's id.
        modality: ``visible`` or ``infrared``.
        index: 0-based frame index in the source. Live sources count every grabbed frame, so the
            indices of frames dropped before the pipeline took them are missing downstream.
        timestamp: seconds. Live: Unix wall-clock time of the grab. Replay: ``index / fps``.
        image: (H, W, 3) uint8 BGR. Infrared frames hold the (8-bit, stretched) grey value in all
            three channels.
    """

    camera_id: str
    modality: Modality
    index: int
    timestamp: float
    image: np.ndarray

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class StreamEnd:
    """The explicit end of a source's stream.

    Attributes:
        camera_id: the camera whose stream ended.
        reason: ``source_ended`` (file exhausted), ``stopped`` (closed on request), or ``error``.
        detail: what went wrong for ``error`` (e.g. the last reconnect failure).
    """

    camera_id: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class SourceStats:
    """Counters of a source (a snapshot).

    Attributes:
        frames_read: frames grabbed from the reader.
        frames_delivered: frames handed to the pipeline.
        frames_dropped: frames replaced in the bounded queue before the pipeline took them (live).
        queue_depth: frames waiting now.
        disconnects: times the stream was lost (read failure or end of a live stream).
        reconnects: times it was opened again after a loss.
        state: ``idle``, ``streaming``, ``reconnecting``, ``ended``.
        last_error: the last open/read error, ``""`` if none.
    """

    frames_read: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    queue_depth: int = 0
    disconnects: int = 0
    reconnects: int = 0
    state: str = "idle"
    last_error: str = ""
