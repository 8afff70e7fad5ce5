"""Typed messages on the wire between edge nodes and the linker (schema in ``docs/messages.md``).

A message is a ZeroMQ multipart message::

    frame 0: header  -- MessagePack map of one of the Structs below (``kind`` names which)
    frame 1: optional raw embeddings (SightingBatch only): C-contiguous little-endian float16 or
             float32, shape ``embedding_shape`` -- never re-encoded, read zero-copy with np.frombuffer

Every header carries the common fields of :class:`MessageHeader`. Decoding validates everything (the
version, the kind, field types, unknown fields, nesting, every number against its range (see
:data:`LIMITS`), equal array lengths, the raw frame's size against the declared shape/dtype) and
raises one exception type, :class:`MessageError`, whatever the bytes are: messages arrive from the
network and are untrusted (tests/test_messages_fuzz.py feeds it mutated golden messages).
:class:`MessageReceiver` counts and drops malformed messages instead of raising, optionally refuses
capture times too far from a reference clock, and :class:`SequenceTracker` detects gaps in the
per-(producer, camera) sequence numbers.

No zmq import here: frames are bytes / memoryviews (or anything with a ``.buffer``, like zmq.Frame).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np

from common.modality import Modality

SCHEMA_VERSION = 1
EMBEDDING_DTYPES = ("float16", "float32")
# Where a sighting's embedding comes from (SightingBatch.embedding_source).
EMBEDDING_SOURCES = ("track_mean", "crop")

MAX_SEQ = 2**48
"""Largest ``seq`` / ``frame_index`` / count accepted: 2.8e14, ~9000 years of 1000 messages a second, so
sums of them (missed-message counters) stay far inside int64 (a uint64-max seq overflowed them)."""
MAX_TIMESTAMP_S = 1e10
"""Largest ``capture_ts`` / ``send_ts`` accepted (Unix seconds: the year 2286); stream times are smaller."""
MAX_ID = 2**62
"""Largest ``track_id`` / ``global_id`` accepted."""
MAX_SIGHTINGS = 4096
"""Most sightings in one SightingBatch."""
MAX_EMBEDDING_DIM = 65536
"""Largest embedding size D."""
MAX_FRAME_SIDE = 65536
"""Largest frame width / height in pixels."""
MAX_TEXT = 256
"""Longest id (producer, camera, engine) in characters; ``EndOfStream.detail`` may have 4096."""
MAX_ENTRIES = 4096
"""Most entries in a list / dict of a Heartbeat."""
LIMITS = {
    "seq": MAX_SEQ,
    "timestamp_s": MAX_TIMESTAMP_S,
    "id": MAX_ID,
    "sightings": MAX_SIGHTINGS,
    "embedding_dim": MAX_EMBEDDING_DIM,
    "frame_side": MAX_FRAME_SIDE,
    "text": MAX_TEXT,
    "entries": MAX_ENTRIES,
}

__all__ = [
    "SCHEMA_VERSION",
    "LIMITS",
    "MessageError",
    "MessageHeader",
    "SightingBatch",
    "Heartbeat",
    "EndOfStream",
    "IdentityUpdate",
    "Message",
    "Decoded",
    "encode_message",
    "decode_message",
    "MessageReceiver",
    "SequenceTracker",
    "SequenceEvent",
]


class MessageError(ValueError):
    """A message that cannot be decoded or encoded: wrong version, kind, field, or frame size."""


class MessageHeader(msgspec.Struct, kw_only=True, frozen=True, tag_field="kind", forbid_unknown_fields=True):
    """Fields every message carries.

    Attributes:
        schema_version: wire schema version (:data:`SCHEMA_VERSION`); receivers refuse others.
        kind: the message type (the msgspec tag): ``sightings``, ``heartbeat``, ``end_of_stream``,
            ``identity``.
        producer_id: the sender (an edge node's id, or the linker's).
        camera_id: the camera the message is about; ``""`` for producer-level messages (heartbeats,
            the producer's final end-of-stream).
        seq: per-(producer_id, camera_id) sequence number, 0, 1, 2, ... with no holes on the sender
            side; a receiver that sees a hole knows messages were lost (:class:`SequenceTracker`).
        capture_ts: seconds. Live sources: Unix wall-clock time the frame was grabbed. Replays:
            stream time, ``frame_index / fps`` of the file. Heartbeats/end-of-stream: send time.
        send_ts: seconds, Unix wall-clock time the message was sent.
        engine_id: the embedder's ``engine_id`` (sidecar content hash); ``""`` when no embedder
            is involved. Receivers must not compare embeddings across engine ids.
    """

    schema_version: int = SCHEMA_VERSION
    producer_id: str
    camera_id: str
    seq: int
    capture_ts: float
    send_ts: float
    engine_id: str = ""

    def _check_header(self) -> None:
        _force(self, "capture_ts", float(self.capture_ts))
        _force(self, "send_ts", float(self.send_ts))
        _force(self, "seq", int(self.seq))
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (expected {SCHEMA_VERSION})"
            )
        if not self.producer_id:
            raise ValueError("producer_id must not be empty")
        for name in ("producer_id", "camera_id", "engine_id"):
            _check_text(name, getattr(self, name))
        _check_int("seq", self.seq, 0, MAX_SEQ)
        for name in ("capture_ts", "send_ts"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= MAX_TIMESTAMP_S):
                raise ValueError(f"{name} must be finite seconds in [0, {MAX_TIMESTAMP_S:g}], got {value}")


class SightingBatch(MessageHeader, kw_only=True, frozen=True, tag="sightings"):
    """All sightings (tracked person boxes) of one camera frame; N rows, possibly N = 0.

    Attributes:
        modality: ``visible`` or ``infrared`` (the camera's).
        frame_index: 0-based index of the frame in its source (frames dropped by a live source
            still advance it, so holes here are frame drops, not message loss).
        frame_width, frame_height: the frame's size in pixels.
        boxes: N boxes ``(x1, y1, x2, y2)`` in pixels of that frame.
        track_ids: N camera-local track ids (>= 0) from the camera's tracker.
        scores: N detection confidences in [0, 1].
        quality: N crop quality values in [0, 1] (0 = failed the crop gate, no embedding).
        embedding_rows: indices (strictly increasing) of the sightings that have an embedding; row
            ``k`` of the embeddings frame belongs to sighting ``embedding_rows[k]``.
        embedding_dtype: ``float16`` or ``float32`` (little endian) of the raw embeddings frame.
        embedding_shape: ``(len(embedding_rows), D)``; ``(0, 0)`` when the frame carries none.
        embedding_source: ``track_mean`` (the track's quality-weighted running mean of L2-normalised
            crop embeddings up to this frame, re-normalised: what the edge node sends) or ``crop``
            (this frame's crop alone).
    """

    modality: Modality
    frame_index: int
    frame_width: int
    frame_height: int
    boxes: list[tuple[float, float, float, float]] = []
    track_ids: list[int] = []
    scores: list[float] = []
    quality: list[float] = []
    embedding_rows: list[int] = []
    embedding_dtype: Literal["float16", "float32"] = "float32"
    embedding_shape: tuple[int, int] = (0, 0)
    embedding_source: Literal["track_mean", "crop"] = "track_mean"

    def __post_init__(self) -> None:
        self._check_header()
        if not self.camera_id:
            raise ValueError("a SightingBatch needs a camera_id")
        # Normalise values given by Python code (numpy scalars, ints, plain strings) so the encoding
        # is canonical: floats stay floats on the wire and the modality is the enum.
        _force(self, "modality", Modality.parse(self.modality))
        for name in ("frame_index", "frame_width", "frame_height"):
            _force(self, name, int(getattr(self, name)))
        if any(len(box) != 4 for box in self.boxes):
            raise ValueError("every box must be 4 numbers (x1, y1, x2, y2)")
        _force(self, "boxes", [tuple(float(v) for v in box) for box in self.boxes])
        _force(self, "track_ids", [int(v) for v in self.track_ids])
        _force(self, "scores", [float(v) for v in self.scores])
        _force(self, "quality", [float(v) for v in self.quality])
        _force(self, "embedding_rows", [int(v) for v in self.embedding_rows])
        _force(self, "embedding_shape", tuple(int(v) for v in self.embedding_shape))
        if self.frame_index < 0 or self.frame_width < 1 or self.frame_height < 1:
            raise ValueError(
                f"frame_index must be >= 0 and the frame size positive, got index {self.frame_index}, "
                f"size {self.frame_width}x{self.frame_height}"
            )
        _check_int("frame_index", self.frame_index, 0, MAX_SEQ)
        _check_int("frame_width", self.frame_width, 1, MAX_FRAME_SIDE)
        _check_int("frame_height", self.frame_height, 1, MAX_FRAME_SIDE)
        n = len(self.boxes)
        if n > MAX_SIGHTINGS:
            raise ValueError(f"{n} sightings in one batch, at most {MAX_SIGHTINGS}")
        for name in ("track_ids", "scores", "quality"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries but boxes has {n}")
        for track_id in self.track_ids:
            # A detector without a tracker (MOT det.txt) says -1: such rows are not tracks.
            _check_int("track_ids", track_id, 0, MAX_ID)
        for name in ("scores", "quality"):
            for value in getattr(self, name):
                if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                    raise ValueError(f"{name} must be finite values in [0, 1], got {value}")
        for x1, y1, x2, y2 in self.boxes:
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
                raise ValueError(f"box ({x1}, {y1}, {x2}, {y2}) is not a finite x1<=x2, y1<=y2 box")
        rows = self.embedding_rows
        if any(r < 0 or r >= n for r in rows) or any(b <= a for a, b in zip(rows, rows[1:], strict=False)):
            raise ValueError(f"embedding_rows must be strictly increasing indices in [0, {n}), got {rows}")
        if len(self.embedding_shape) != 2:
            raise ValueError(f"embedding_shape must be (M, D), got {self.embedding_shape}")
        m, d = self.embedding_shape
        if d > MAX_EMBEDDING_DIM:
            raise ValueError(f"embedding_shape {self.embedding_shape}: D above {MAX_EMBEDDING_DIM}")
        if rows and (m != len(rows) or d < 1):
            raise ValueError(
                f"embedding_shape {self.embedding_shape} does not match {len(rows)} embedding rows"
            )
        if not rows and (m, d) != (0, 0):
            raise ValueError(
                f"embedding_shape must be (0, 0) without embedding rows, got {self.embedding_shape}"
            )

    @property
    def num_sightings(self) -> int:
        return len(self.boxes)

    def xyxy(self) -> np.ndarray:
        """Boxes as (N, 4) float32 pixels."""
        return np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)

    def track_id_array(self) -> np.ndarray:
        """(N,) int64."""
        return np.asarray(self.track_ids, dtype=np.int64)

    def score_array(self) -> np.ndarray:
        """(N,) float32."""
        return np.asarray(self.scores, dtype=np.float32)


class Heartbeat(MessageHeader, kw_only=True, frozen=True, tag="heartbeat"):
    """Periodic health of a producer (``camera_id`` is ``""``: one heartbeat covers all cameras).

    Attributes:
        mode: ``live`` or ``replay``.
        uptime_s: seconds since the producer started.
        camera_ids: the cameras this producer serves.
        stage_rates_hz: items per second per stage over the last heartbeat interval, keyed
            ``<stage>`` or ``<stage>/<camera_id>`` (e.g. ``capture/cam0``, ``detect/cam0``, ``embed``,
            ``publish``).
        stage_latency_ms: mean time per call per stage over the interval, same keys.
        queue_depths: current depth of each bounded queue (e.g. ``frames/cam0``).
        drop_counts: cumulative drops (e.g. ``frames/cam0``: frames a live source replaced before
            the pipeline took them; ``publish``: messages the socket refused at its high-water mark).
        reconnects: cumulative reconnects per camera (live sources).
    """

    mode: Literal["live", "replay"]
    uptime_s: float
    camera_ids: list[str] = []
    stage_rates_hz: dict[str, float] = {}
    stage_latency_ms: dict[str, float] = {}
    queue_depths: dict[str, int] = {}
    drop_counts: dict[str, int] = {}
    reconnects: dict[str, int] = {}

    def __post_init__(self) -> None:
        self._check_header()
        _force(self, "uptime_s", float(self.uptime_s))
        if not (math.isfinite(self.uptime_s) and self.uptime_s >= 0):
            raise ValueError(f"uptime_s must be finite seconds >= 0, got {self.uptime_s}")
        if len(self.camera_ids) > MAX_ENTRIES:
            raise ValueError(f"camera_ids has {len(self.camera_ids)} entries, at most {MAX_ENTRIES}")
        for camera in self.camera_ids:
            _check_text("camera_ids", camera)
        for name in ("stage_rates_hz", "stage_latency_ms"):
            _force(self, name, {str(k): float(v) for k, v in getattr(self, name).items()})
            for value in getattr(self, name).values():
                if not (math.isfinite(value) and value >= 0):
                    raise ValueError(f"{name} values must be finite and >= 0, got {value}")
        for name in ("queue_depths", "drop_counts", "reconnects"):
            _force(self, name, {str(k): int(v) for k, v in getattr(self, name).items()})
            for value in getattr(self, name).values():
                _check_int(name, value, 0, 2**63 - 1)
        for name in ("stage_rates_hz", "stage_latency_ms", "queue_depths", "drop_counts", "reconnects"):
            table = getattr(self, name)
            if len(table) > MAX_ENTRIES:
                raise ValueError(f"{name} has {len(table)} entries, at most {MAX_ENTRIES}")
            for key in table:
                _check_text(f"{name} key", key)


class EndOfStream(MessageHeader, kw_only=True, frozen=True, tag="end_of_stream"):
    """Explicit end of a camera's stream (``camera_id`` set) or of the whole producer (``""``).

    A node sends one per camera when that camera's source ends (its ``seq`` continues the camera's
    sighting sequence, so a receiver can tell it saw everything), then one with ``camera_id=""``
    (continuing the heartbeat sequence) when it stops.

    Attributes:
        reason: ``source_ended`` (the file/stream is exhausted), ``stopped`` (asked to stop), or
            ``error`` (``detail`` says what).
        frames_read: frames the source delivered to the pipeline.
        frames_dropped: frames a live source dropped (always 0 in replay).
        messages_sent: messages sent on this (producer, camera) sequence before this one.
        detail: free text (the error message for ``error``).
    """

    reason: Literal["source_ended", "stopped", "error"]
    frames_read: int = 0
    frames_dropped: int = 0
    messages_sent: int = 0
    detail: str = ""

    def __post_init__(self) -> None:
        self._check_header()
        for name in ("frames_read", "frames_dropped", "messages_sent"):
            _check_int(name, getattr(self, name), 0, MAX_SEQ)
        _check_text("detail", self.detail, 4096)


class IdentityUpdate(MessageHeader, kw_only=True, frozen=True, tag="identity"):
    """The linker's decision about one track: which global identity it is (published by the linker).

    ``producer_id`` is the linker's, ``camera_id`` the track's camera, ``seq`` per (linker, camera),
    ``capture_ts`` the sighting's capture time, ``engine_id`` the embeddings' engine.

    Attributes:
        global_id: the identity assigned (>= 0).
        track_id: the camera-local track id of the sighting.
        source_producer_id: the edge node that produced the sighting (track ids are local to
            (source_producer_id, camera_id)).
        source_seq: ``seq`` of the SightingBatch that led to this update.
        frame_index: the frame of that batch.
        modality: the track's modality.
        event: ``new`` (a new global identity), ``matched`` (joined an existing one), ``revised``
            (moved from ``previous_global_id`` to ``global_id``).
        score: cosine similarity of the match in [-1, 1] (1.0 for ``new``).
        matched_modality: modality of the gallery entry matched (``None`` for ``new``).
        matched_camera_id: camera of the gallery entry matched (``""`` for ``new``).
        previous_global_id: the identity before a revision (``None`` otherwise).
    """

    global_id: int
    track_id: int
    source_producer_id: str
    source_seq: int
    frame_index: int
    modality: Modality
    event: Literal["new", "matched", "revised"]
    score: float
    matched_modality: Modality | None = None
    matched_camera_id: str = ""
    previous_global_id: int | None = None

    def __post_init__(self) -> None:
        self._check_header()
        if not self.camera_id:
            raise ValueError("an IdentityUpdate needs the track's camera_id")
        _force(self, "modality", Modality.parse(self.modality))
        if self.matched_modality is not None:
            _force(self, "matched_modality", Modality.parse(self.matched_modality))
        _force(self, "score", float(self.score))
        if self.global_id < 0 or self.track_id < 0:
            raise ValueError(f"global_id and track_id must be >= 0, got {self.global_id}, {self.track_id}")
        for name in ("global_id", "track_id"):
            _check_int(name, getattr(self, name), 0, MAX_ID)
        if self.previous_global_id is not None:
            _check_int("previous_global_id", self.previous_global_id, 0, MAX_ID)
        _check_int("source_seq", self.source_seq, 0, MAX_SEQ)
        _check_int("frame_index", self.frame_index, 0, MAX_SEQ)
        for name in ("source_producer_id", "matched_camera_id"):
            _check_text(name, getattr(self, name))
        if not (math.isfinite(self.score) and -1.0 - 1e-6 <= self.score <= 1.0 + 1e-6):
            raise ValueError(f"score must be a cosine similarity in [-1, 1], got {self.score}")
        if self.event == "revised" and self.previous_global_id is None:
            raise ValueError("a 'revised' IdentityUpdate needs previous_global_id")


def _force(message: MessageHeader, name: str, value: Any) -> None:
    msgspec.structs.force_setattr(message, name, value)


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value}")


def _check_text(name: str, value: str, longest: int = MAX_TEXT) -> None:
    if len(value) > longest:
        raise ValueError(f"{name} has {len(value)} characters, at most {longest}")


Message = SightingBatch | Heartbeat | EndOfStream | IdentityUpdate
_TYPES: dict[str, type[MessageHeader]] = {
    "sightings": SightingBatch,
    "heartbeat": Heartbeat,
    "end_of_stream": EndOfStream,
    "identity": IdentityUpdate,
}


class _Envelope(msgspec.Struct):
    """What a decoder reads first (other fields skipped) to pick the type and refuse other versions."""

    schema_version: int
    kind: str


MAX_HEADER_BYTES = 1 << 20
"""Largest header frame decoded (MAX_SIGHTINGS sightings take ~200 KiB)."""
_ENCODER = msgspec.msgpack.Encoder()
_ENVELOPE_DECODER = msgspec.msgpack.Decoder(_Envelope)
_DECODERS = {kind: msgspec.msgpack.Decoder(cls) for kind, cls in _TYPES.items()}


@dataclass(frozen=True)
class Decoded:
    """A decoded message and, for a SightingBatch with embeddings, the (M, D) array (read-only view)."""

    message: Message
    embeddings: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return _kind_of(self.message)


def _kind_of(message: MessageHeader) -> str:
    for kind, cls in _TYPES.items():
        if type(message) is cls:
            return kind
    raise MessageError(f"not a message type: {type(message).__name__}")


def encode_message(message: Message, embeddings: np.ndarray | None = None) -> list[bytes | memoryview]:
    """Encode ``message`` (and a SightingBatch's embeddings) into ZeroMQ multipart frames.

    Args:
        message: one of the message Structs.
        embeddings: for a SightingBatch with ``embedding_rows``: (M, D) array matching
            ``embedding_shape``; it is cast to ``embedding_dtype`` (little endian) if needed.

    Returns:
        ``[header]`` or ``[header, raw embeddings]`` (the raw frame is a memoryview, zero-copy).

    Raises:
        MessageError: embeddings missing, unexpected or of the wrong shape.
    """
    if not isinstance(message, MessageHeader) or type(message) not in _TYPES.values():
        raise MessageError(f"cannot encode {type(message).__name__}: not a message type")
    header = _ENCODER.encode(message)
    if not isinstance(message, SightingBatch) or not message.embedding_rows:
        if embeddings is not None and np.asarray(embeddings).size:
            raise MessageError(f"{_kind_of(message)} message without embedding_rows cannot carry embeddings")
        return [header]
    if embeddings is None:
        raise MessageError(
            f"SightingBatch declares {len(message.embedding_rows)} embedding rows but none given"
        )
    array = np.asarray(embeddings)
    if array.shape != tuple(message.embedding_shape):
        raise MessageError(
            f"embeddings have shape {array.shape}, header says {tuple(message.embedding_shape)}"
        )
    raw = np.ascontiguousarray(array, dtype=np.dtype(message.embedding_dtype).newbyteorder("<"))
    return [header, memoryview(raw).cast("B")]


def decode_message(frames: Sequence[Any]) -> Decoded:
    """Decode multipart ``frames`` (bytes, memoryview, or zmq.Frame) into a :class:`Decoded`.

    The embeddings array (if any) is a read-only zero-copy view on the raw frame's buffer.

    Raises:
        MessageError: anything wrong: frame count, MessagePack, version, kind, field types or values,
            raw frame size vs declared shape and dtype.
    """
    if not 1 <= len(frames) <= 2:
        raise MessageError(f"expected 1 or 2 frames (header [, embeddings]), got {len(frames)}")
    header = _buffer(frames[0])
    if header.nbytes > MAX_HEADER_BYTES:
        raise MessageError(f"header has {header.nbytes} bytes, at most {MAX_HEADER_BYTES}")
    try:
        envelope = _ENVELOPE_DECODER.decode(header)
    except (msgspec.DecodeError, RecursionError) as exc:
        # RecursionError: msgspec skips the fields it does not read recursively, so ~1000 nested
        # arrays in one of them exhaust the stack (a hostile header); it unwinds cleanly.
        raise MessageError(f"header is not a message envelope: {_short(exc)}") from exc
    if envelope.schema_version != SCHEMA_VERSION:
        raise MessageError(
            f"schema_version {envelope.schema_version} is not supported (this receiver speaks {SCHEMA_VERSION})"
        )
    decoder = _DECODERS.get(envelope.kind)
    if decoder is None:
        raise MessageError(f"unknown message kind {envelope.kind!r} (expected one of {sorted(_DECODERS)})")
    try:
        message = decoder.decode(header)
    except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError (incl. __post_init__) is one
        raise MessageError(f"invalid {envelope.kind} message: {_short(exc)}") from exc
    if not isinstance(message, SightingBatch) or not message.embedding_rows:
        if len(frames) != 1:
            raise MessageError(
                f"{envelope.kind} message without embeddings must be 1 frame, got {len(frames)}"
            )
        return Decoded(message)
    if len(frames) != 2:
        raise MessageError(
            f"SightingBatch declares {len(message.embedding_rows)} embedding rows but has no raw frame"
        )
    dtype = np.dtype(message.embedding_dtype).newbyteorder("<")
    shape = tuple(message.embedding_shape)
    raw = _buffer(frames[1])
    expected = shape[0] * shape[1] * dtype.itemsize
    if raw.nbytes != expected:
        raise MessageError(
            f"embeddings frame has {raw.nbytes} bytes, header says {shape} {message.embedding_dtype} = {expected}"
        )
    embeddings = np.frombuffer(raw, dtype=dtype).reshape(shape)
    embeddings.flags.writeable = False
    return Decoded(message, embeddings)


def _short(exc: BaseException) -> str:
    text = "nesting too deep" if isinstance(exc, RecursionError) else str(exc)
    return text if len(text) <= 300 else text[:300] + "..."


def _buffer(frame: Any) -> memoryview:
    if hasattr(frame, "buffer"):  # zmq.Frame received with copy=False
        frame = frame.buffer
    try:
        return memoryview(frame).cast("B")
    except TypeError as exc:
        raise MessageError(f"a frame must be bytes-like, got {type(frame).__name__}") from exc


# --------------------------------------------------------------------------------------- receiving


@dataclass(frozen=True)
class SequenceEvent:
    """What :meth:`SequenceTracker.observe` saw for one message.

    Attributes:
        missed: messages lost just before this one (0 when in order).
        duplicate: ``seq`` at or below one already seen (a duplicate or reordered message).
        restarted: ``seq`` went back to 0 after a higher value: the producer restarted.
    """

    missed: int = 0
    duplicate: bool = False
    restarted: bool = False


@dataclass
class SequenceTracker:
    """Detects holes in the per-(producer_id, camera_id) sequence numbers.

    Attributes:
        missed: total messages known to be lost, per (producer_id, camera_id).
        duplicates: messages seen with an old seq, per key.
        restarts: producer restarts (seq back to 0), per key.
    """

    last: dict[tuple[str, str], int] = field(default_factory=dict)
    missed: dict[tuple[str, str], int] = field(default_factory=dict)
    duplicates: dict[tuple[str, str], int] = field(default_factory=dict)
    restarts: dict[tuple[str, str], int] = field(default_factory=dict)

    def observe(self, producer_id: str, camera_id: str, seq: int) -> SequenceEvent:
        key = (producer_id, camera_id)
        previous = self.last.get(key)
        if previous is None:
            # The first message seen: anything before it was sent before we subscribed, unless it is
            # not seq 0, in which case we count it as missed (a late joiner knows it joined late).
            self.last[key] = seq
            if seq > 0:
                self.missed[key] = self.missed.get(key, 0) + seq
            return SequenceEvent(missed=seq)
        if seq == previous + 1:
            self.last[key] = seq
            return SequenceEvent()
        if seq == 0 and previous > 0:
            self.last[key] = 0
            self.restarts[key] = self.restarts.get(key, 0) + 1
            return SequenceEvent(restarted=True)
        if seq <= previous:
            self.duplicates[key] = self.duplicates.get(key, 0) + 1
            return SequenceEvent(duplicate=True)
        gap = seq - previous - 1
        self.last[key] = seq
        self.missed[key] = self.missed.get(key, 0) + gap
        return SequenceEvent(missed=gap)

    @property
    def total_missed(self) -> int:
        return sum(self.missed.values())


@dataclass
class MessageReceiver:
    """Decodes received multipart messages; malformed ones are counted and dropped, never raised.

    Attributes:
        sequences: the gap detector, fed every valid message.
        malformed: number of messages dropped because they did not decode.
        last_error: the text of the last decoding error (for logs / heartbeats).
        received: number of valid messages per kind.
        clock: the reference time (s) a SightingBatch's ``capture_ts`` is checked against, or
            ``None`` (no check). Live: ``time.time``; replays: the linker's stream clock (``None``
            until its first batch). A callable, so the reference can move.
        max_ahead_s, max_behind_s: how far ``capture_ts`` may be ahead of / behind ``clock()``.
            One batch from the far future would otherwise move the linker's clock and expire
            every identity at once (a ``capture_ts`` of 1e300 emptied the gallery for good).
        clock_refused: SightingBatches dropped for a ``capture_ts`` outside that window.
    """

    sequences: SequenceTracker = field(default_factory=SequenceTracker)
    malformed: int = 0
    last_error: str = ""
    received: dict[str, int] = field(default_factory=dict)
    clock: Callable[[], float | None] | None = None
    max_ahead_s: float = math.inf
    max_behind_s: float = math.inf
    clock_refused: int = 0

    def decode(self, frames: Sequence[Any]) -> Decoded | None:
        """A :class:`Decoded`, or ``None`` (counted in :attr:`malformed` or :attr:`clock_refused`)
        when the message is bad."""
        try:
            decoded = decode_message(frames)
        except MessageError as exc:
            self.malformed += 1
            self.last_error = str(exc)
            return None
        message = decoded.message
        if isinstance(message, SightingBatch) and self.clock is not None:
            reference = self.clock()
            if reference is not None and not (
                reference - self.max_behind_s <= message.capture_ts <= reference + self.max_ahead_s
            ):
                self.clock_refused += 1
                self.last_error = (
                    f"{message.producer_id}/{message.camera_id} seq {message.seq}: capture_ts "
                    f"{message.capture_ts} is outside [{reference} - {self.max_behind_s}, "
                    f"{reference} + {self.max_ahead_s}] s of the receiver's clock"
                )
                return None
        self.sequences.observe(message.producer_id, message.camera_id, message.seq)
        self.received[decoded.kind] = self.received.get(decoded.kind, 0) + 1
        return decoded
