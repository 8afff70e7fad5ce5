"""Live and replay sources: a reader plus a mode, a camera id and a modality.

- :class:`ReplaySource`: every frame in order, none dropped, timestamps ``index / fps`` from the
  file's frame rate, optional real-time pacing; read on the caller's thread (deterministic).
- :class:`LiveSource`: a grabber thread reads as fast as the camera delivers into a bounded queue
  with latest-frame semantics (when the pipeline is behind, the oldest waiting frame is dropped
  and counted), wall-clock timestamps, and reconnects with exponential backoff when the stream is
  lost (read failure, end of a stream, a file that disappears).

Both end with an explicit :class:`StreamEnd`. Frames leave a source as 8-bit 3-channel BGR.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import numpy as np

from common.modality import Modality
from edge.sources.frame import Frame, SourceError, SourceStats, StreamEnd
from edge.sources.readers import FrameReader
from edge.sources.thermal import ThermalNormalizer, infrared_to_3ch

log = logging.getLogger(__name__)


class FrameSource(ABC):
    """A camera's stream of :class:`Frame` objects ending with a :class:`StreamEnd`.

    Attributes:
        camera_id, modality: of the camera.
        mode: ``live`` or ``replay``.
    """

    mode: str = "replay"

    def __init__(self, camera_id: str, modality: Modality | str, thermal: ThermalNormalizer | None) -> None:
        if not camera_id:
            raise ValueError("a source needs a camera_id")
        self.camera_id = camera_id
        self.modality = Modality.parse(modality)
        self.thermal = thermal or ThermalNormalizer()

    @abstractmethod
    def start(self) -> None:
        """Open the source (replay) or start grabbing (live). Raises :class:`SourceError`."""

    @abstractmethod
    def next_frame(self, timeout_s: float | None = None) -> Frame | StreamEnd | None:
        """The next frame, the :class:`StreamEnd` (again on every later call), or ``None`` when no
        frame arrived within ``timeout_s`` (live only; ``None`` timeout waits as long as needed)."""

    @abstractmethod
    def stats(self) -> SourceStats:
        """A snapshot of the source's counters."""

    @abstractmethod
    def close(self) -> None:
        """Stop and release the source; afterwards :meth:`next_frame` returns a ``stopped`` end."""

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the end of the stream (starts the source if needed)."""
        self.start()
        while True:
            item = self.next_frame(timeout_s=None)
            if isinstance(item, StreamEnd):
                if item.reason == "error":
                    raise SourceError(f"camera {self.camera_id}: {item.detail}")
                return
            if item is not None:
                yield item

    def __enter__(self) -> FrameSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _to_bgr(self, image: np.ndarray) -> np.ndarray:
        """A raw reader image -> (H, W, 3) uint8 BGR (infrared: stretched grey replicated)."""
        if self.modality is Modality.INFRARED:
            return infrared_to_3ch(self.thermal(image))
        return visible_to_bgr(image)


def visible_to_bgr(image: np.ndarray) -> np.ndarray:
    """Visible frames as (H, W, 3) uint8 BGR: grey is expanded, alpha dropped, 16 bits shifted to 8."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise SourceError(f"visible frames must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        grey = image.reshape(image.shape[0], image.shape[1])
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise SourceError(f"unsupported frame shape {image.shape}")


class ReplaySource(FrameSource):
    """Every frame of a reader, in order, with stream timestamps.

    Args:
        reader: the raw reader.
        camera_id, modality: of the camera.
        fps: frame rate for timestamps; ``None`` takes the reader's (a video file's) and fails if it
            has none.
        pace: sleep so frames come out at ``fps`` in real time (for demos); off = as fast as read.
        max_frames: stop after this many frames (``None``: the whole stream).
        thermal: the infrared normaliser.
    """

    mode = "replay"

    def __init__(
        self,
        reader: FrameReader,
        camera_id: str,
        modality: Modality | str,
        *,
        fps: float | None = None,
        pace: bool = False,
        max_frames: int | None = None,
        thermal: ThermalNormalizer | None = None,
    ) -> None:
        super().__init__(camera_id, modality, thermal)
        self.reader = reader
        self._fps_override = fps
        self.fps: float | None = fps
        self.pace = pace
        self.max_frames = max_frames
        self._index = 0
        self._started_at: float | None = None
        self._end: StreamEnd | None = None
        self._opened = False

    def start(self) -> None:
        if self._opened or self._end is not None:
            return
        self.reader.open()
        self._opened = True
        self.fps = self._fps_override or self.reader.fps
        if not self.fps or self.fps <= 0:
            self.reader.close()
            raise SourceError(
                f"camera {self.camera_id}: {self.reader.name} declares no frame rate; set the source's fps"
            )
        self._started_at = time.monotonic()

    def next_frame(self, timeout_s: float | None = None) -> Frame | StreamEnd | None:
        if self._end is not None:
            return self._end
        if not self._opened:
            self.start()
        if self.max_frames is not None and self._index >= self.max_frames:
            return self._finish("source_ended")
        try:
            image = self.reader.read()
        except SourceError as exc:
            return self._finish("error", str(exc))
        if image is None:
            return self._finish("source_ended")
        timestamp = self._index / float(self.fps)  # type: ignore[arg-type]
        if self.pace and self._started_at is not None:
            delay = self._started_at + timestamp - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        frame = Frame(self.camera_id, self.modality, self._index, timestamp, self._to_bgr(image))
        self._index += 1
        return frame

    def stats(self) -> SourceStats:
        state = "ended" if self._end else ("streaming" if self._opened else "idle")
        return SourceStats(
            frames_read=self._index,
            frames_delivered=self._index,
            state=state,
            last_error=self._end.detail if self._end else "",
        )

    def close(self) -> None:
        if self._end is None:
            self._end = StreamEnd(self.camera_id, "stopped")
        self.reader.close()

    def _finish(self, reason: str, detail: str = "") -> StreamEnd:
        self._end = StreamEnd(self.camera_id, reason, detail)
        self.reader.close()
        return self._end


class LiveSource(FrameSource):
    """A camera with latest-frame semantics, drops, reconnects and wall-clock timestamps.

    Args:
        open_reader: makes a fresh reader (called for the first open and every reconnect).
        camera_id, modality: of the camera.
        queue_size: frames that may wait for the pipeline; when full, the oldest is dropped.
        reconnect: when the stream is lost (read fails, the stream or file ends, the file
            disappears), open it again; ``False`` ends the stream instead.
        backoff_initial_s, backoff_max_s: the first wait before a reconnect attempt; it doubles after
            every failed attempt up to the maximum, and resets once frames flow again.
        max_reconnect_attempts: consecutive failed opens after which the stream ends with
            ``error`` (``None``: keep trying until closed).
        pace_finite: for finite readers with a frame rate (a file played as a camera), grab at that
            rate instead of as fast as the disk allows.
        thermal: the infrared normaliser (its smoothing restarts after a reconnect).
        clock: wall-clock time in seconds (injectable for tests).
    """

    mode = "live"

    def __init__(
        self,
        open_reader: Callable[[], FrameReader],
        camera_id: str,
        modality: Modality | str,
        *,
        queue_size: int = 1,
        reconnect: bool = True,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        max_reconnect_attempts: int | None = None,
        pace_finite: bool = True,
        thermal: ThermalNormalizer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(camera_id, modality, thermal)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("backoff must satisfy 0 < backoff_initial_s <= backoff_max_s")
        self.open_reader = open_reader
        self.queue_size = queue_size
        self.reconnect = reconnect
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_reconnect_attempts = max_reconnect_attempts
        self.pace_finite = pace_finite
        self.clock = clock
        self._queue: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._end: StreamEnd | None = None
        self._end_delivered = False
        self._counts = dict(frames_read=0, frames_delivered=0, frames_dropped=0, disconnects=0, reconnects=0)
        self._state = "idle"
        self._last_error = ""
        self._index = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._grab_loop, name=f"grab-{self.camera_id}", daemon=True)
        self._thread.start()

    def next_frame(self, timeout_s: float | None = None) -> Frame | StreamEnd | None:
        if self._thread is None:
            self.start()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._queue and self._end is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._queue:
                self._counts["frames_delivered"] += 1
                return self._queue.popleft()
            self._end_delivered = True
            return self._end

    def stats(self) -> SourceStats:
        with self._cond:
            return SourceStats(
                **self._counts, queue_depth=len(self._queue), state=self._state, last_error=self._last_error
            )

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)
        with self._cond:
            if self._end is None:
                self._end = StreamEnd(self.camera_id, "stopped")
                self._state = "ended"
            self._queue.clear()
            self._cond.notify_all()

    # ------------------------------------------------------------------------------ grabber thread

    def _grab_loop(self) -> None:
        failures = 0
        connected_before = False
        while not self._stop.is_set():
            reader = self.open_reader()
            try:
                reader.open()
            except SourceError as exc:
                reader.close()
                failures += 1
                self._set_state("reconnecting" if connected_before else "connecting", str(exc))
                if not self.reconnect or (
                    self.max_reconnect_attempts is not None and failures > self.max_reconnect_attempts
                ):
                    self._set_end("error", f"giving up after {failures} failed attempt(s): {exc}")
                    return
                wait = min(self.backoff_initial_s * 2 ** (failures - 1), self.backoff_max_s)
                log.warning("camera %s: %s; retrying in %.2f s", self.camera_id, exc, wait)
                self._stop.wait(wait)
                continue
            if connected_before:
                with self._cond:
                    self._counts["reconnects"] += 1
                log.warning("camera %s: reconnected to %s", self.camera_id, reader.name)
            connected_before = True
            failures = 0
            self.thermal.reset()
            self._set_state("streaming")
            lost = self._stream(reader)
            reader.close()
            if self._stop.is_set():
                break
            with self._cond:
                self._counts["disconnects"] += 1
            if not self.reconnect:
                self._set_end("source_ended" if not lost else "error", lost)
                return
            self._set_state("reconnecting", lost or f"{reader.name}: stream ended")
            log.warning("camera %s: stream lost (%s); reconnecting", self.camera_id, lost or "end of stream")
            self._stop.wait(self.backoff_initial_s)
        self._set_end("stopped")

    def _stream(self, reader: FrameReader) -> str:
        """Grab until the stream ends, fails or we are stopped; returns the error text ('' if none)."""
        period = 1.0 / reader.fps if (self.pace_finite and reader.finite and reader.fps) else 0.0
        next_due = time.monotonic()
        while not self._stop.is_set():
            try:
                image = reader.read()
            except SourceError as exc:
                return str(exc)
            if image is None:
                return ""
            try:
                bgr = self._to_bgr(image)
            except (SourceError, ValueError) as exc:
                return f"{reader.name}: {exc}"
            frame = Frame(self.camera_id, self.modality, self._index, self.clock(), bgr)
            self._index += 1
            with self._cond:
                self._counts["frames_read"] += 1
                if len(self._queue) >= self.queue_size:
                    self._queue.popleft()  # latest-frame semantics: the pipeline is behind
                    self._counts["frames_dropped"] += 1
                self._queue.append(frame)
                self._cond.notify_all()
            if period:
                next_due += period
                delay = next_due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_due = time.monotonic()
        return ""

    def _set_state(self, state: str, error: str = "") -> None:
        with self._cond:
            self._state = state
            if error:
                self._last_error = error

    def _set_end(self, reason: str, detail: str = "") -> None:
        with self._cond:
            if self._end is None:
                self._end = StreamEnd(self.camera_id, reason, detail)
            self._state = "ended"
            if detail:
                self._last_error = detail
            self._cond.notify_all()
