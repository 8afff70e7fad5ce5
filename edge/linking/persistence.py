"""Crash-safe linker state: an atomic snapshot plus an append-only journal of events.

Layout of ``state_dir``::

    snapshot.bin                 the linker at event seq S (written atomically: old or new, never half)
    journal-<first seq>.jsonl    events, one per line, seq S+1, S+2, ... (segments)
    quarantine/                  journal entries that could not be applied on a restart (moved aside)

Integrity: every journal line is ``<crc32 of the JSON, 8 hex digits> <event JSON>``; a snapshot
ends with a trailer holding a CRC32 per MiB block and a SHA-256 of everything before it. A flipped
bit is therefore an error naming the file and the byte range (or line), never a different state.

Writing: every event is appended to the journal (one ``write`` per group of events, flushed, and
fsync'ed when ``fsync`` is on) *before* anything is published, so whatever a consumer has seen is on
disk. A snapshot is written atomically (:func:`common.files.atomic_open`); only after it is
durable does the journal rotate to a new segment and drop the segments the snapshot covers. The
prototype vectors are streamed from faiss' storage into the file chunk by chunk, so a snapshot does
not need a second copy of the gallery in memory.

Recovery (:func:`recover`): remove stale ``.tmp`` files of interrupted atomic writes, load the
snapshot (if any), then apply the journal's events with ``seq > S`` in order. A crash can leave the
last line of the last segment torn (a partial write): it is ignored and cut off; a broken line
anywhere else, or a hole in the seq numbers, is real damage and raises :class:`JournalError`. An
intact entry that cannot be applied (it can only come from a bug) is *quarantined*: appended to
``quarantine/journal.jsonl`` with the reason, counted and logged, and recovery goes on, instead
of every restart failing on it. Then the update log (``identity_updates.jsonl``, what consumers
saw) is compared with the journal: if it names events or global ids the journal no longer has (a
journal cut short by a disk or an operator), the numbering is moved past them, so a published
global id or event seq is never given out again. A crash between appending and snapshotting only
means more journal to replay; a crash while snapshotting leaves the previous snapshot and its
journal intact.

What is *not* journaled: the refinement of a live track's prototype by each later sighting (that
would put a vector on disk per sighting). After a crash, a prototype is the track's evidence at its
last decision (or at the snapshot, if later); global ids, assignments and numbering are exact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np

from common.files import atomic_open
from common.modality import Modality
from edge.linking.assignment import MatchingRules
from edge.linking.events import Event, EventError, event_from_json, event_to_json
from edge.linking.gallery import ChunkedArray, Gallery, GalleryConfig, TrackKey
from edge.linking.linker import EndedSpan, IdentityLinker, LinkerCounters, TrackState

LOG = logging.getLogger("edge.linking")
SNAPSHOT_NAME = "snapshot.bin"
SNAPSHOT_MAGIC = b"MPALINK\x01"
SNAPSHOT_END = b"MPALEND\x01"
SNAPSHOT_FORMAT = 3  # 2: tracks written field by field (issue 10); 3: checksummed trailer (issue 12)
CHECKSUM_BLOCK = 1 << 20
QUARANTINE_DIR = "quarantine"
_SEGMENT = re.compile(r"^journal-(\d{12})\.jsonl$")


class JournalError(RuntimeError):
    """The state directory is damaged in a way a crash cannot explain (names the file and line)."""


def segment_name(first_seq: int) -> str:
    return f"journal-{first_seq:012d}.jsonl"


def journal_segments(state_dir: str | os.PathLike[str]) -> list[Path]:
    """The journal segment files of ``state_dir``, oldest first."""
    directory = Path(state_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _SEGMENT.match(p.name))]
    return [p for _, p in sorted(found)]


@dataclass(frozen=True)
class JournalTail:
    """Where the readable journal ends: ``path`` of the last segment and the byte ``size`` to keep."""

    path: Path
    size: int
    torn: bool


def encode_journal_line(event: Event) -> bytes:
    """``<crc32 hex> <json>\\n``: one journal line."""
    body = json.dumps(event_to_json(event), separators=(",", ":")).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def decode_journal_line(line: bytes) -> Event:
    """The event of one complete journal line (without its newline check).

    Raises:
        ValueError: a checksum mismatch or unreadable JSON; EventError: not an event.
    """
    body = line.rstrip(b"\n")
    if len(body) < 10 or body[8:9] != b" ":
        raise ValueError("no checksum (expected '<crc32> <json>')")
    try:
        expected = int(body[:8], 16)
    except ValueError:
        raise ValueError(f"malformed checksum {body[:8]!r}") from None
    payload = body[9:]
    if zlib.crc32(payload) != expected:
        raise ValueError(f"checksum mismatch (stored {expected:08x}, computed {zlib.crc32(payload):08x})")
    return event_from_json(json.loads(payload))


@dataclass(frozen=True)
class JournalEntry:
    """One intact journal line: its event and where it is (for errors and the quarantine)."""

    event: Event
    path: Path
    line: int
    raw: bytes


def read_journal(state_dir: str | os.PathLike[str]) -> tuple[list[Event], JournalTail | None]:
    """All events of the journal, in order, and where its intact part ends.

    Raises:
        JournalError: a damaged line (checksum, JSON) that is not the torn end of the last segment.
    """
    entries, tail = read_journal_entries(state_dir)
    return [e.event for e in entries], tail


def read_journal_entries(state_dir: str | os.PathLike[str]) -> tuple[list[JournalEntry], JournalTail | None]:
    """Like :func:`read_journal`, with each event's file, line number and raw bytes."""
    segments = journal_segments(state_dir)
    entries: list[JournalEntry] = []
    tail: JournalTail | None = None
    for index, path in enumerate(segments):
        data = path.read_bytes()
        last_segment = index == len(segments) - 1
        offset = 0
        torn = False
        for number, line in enumerate(data.splitlines(keepends=True), start=1):
            complete = line.endswith(b"\n")
            try:
                if not complete:
                    raise ValueError("no newline at the end (a partial write)")
                entries.append(JournalEntry(decode_journal_line(line), path, number, line))
            except (ValueError, EventError) as exc:
                is_last_line = offset + len(line) == len(data)
                if last_segment and is_last_line:
                    torn = True  # a write cut short by a crash: never acknowledged, safe to drop
                    break
                raise JournalError(
                    f"{path}:{number} (byte {offset}): damaged journal entry ({exc}); a crash only "
                    "tears the last line, so this is damage: restore a backup, or move the file aside "
                    "to start from the snapshot"
                ) from exc
            offset += len(line)
        if last_segment:
            tail = JournalTail(path, offset, torn)
    return entries, tail


class Journal:
    """Appends events to the current segment of ``state_dir`` (see the module docstring).

    Args:
        state_dir: the linker's state directory.
        next_seq: the seq the next appended event will have (names a new segment).
        fsync: fsync after each append (survives power loss, not only a killed process).
    """

    def __init__(self, state_dir: str | os.PathLike[str], next_seq: int, fsync: bool = True) -> None:
        self.directory = Path(state_dir)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._handle: io.BufferedWriter | None = None
        self._open_segment(next_seq)

    @property
    def path(self) -> Path:
        assert self._handle is not None
        return Path(self._handle.name)

    def append(self, events: list[Event]) -> None:
        """Write ``events`` as JSON lines (one write), flush, and fsync if configured."""
        if not events:
            return
        assert self._handle is not None, "journal is closed"
        payload = b"".join(encode_journal_line(e) for e in events)
        self._handle.write(payload)
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())

    def rotate(self, snapshot_seq: int) -> None:
        """After a durable snapshot at ``snapshot_seq``: start a new segment, drop the covered ones."""
        old = journal_segments(self.directory)
        self._close_handle()
        self._open_segment(snapshot_seq + 1)
        for path in old:
            if path != self.path:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self._close_handle()

    def _open_segment(self, first_seq: int) -> None:
        path = self.directory / segment_name(first_seq)
        self._handle = open(path, "ab")  # kept open for appends until close()

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            if self.fsync:
                os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None


# ------------------------------------------------------------------------------ linker <-> state
#
# The dataclasses of the linker's state (TrackState, EndedSpan, LinkerCounters) are written and read
# field by field from ``dataclasses.fields`` and their type hints, so a field added to one of them is
# saved and restored without touching this module -- or, if its type has no codec below, refused
# loudly by every snapshot (and by tests/test_linker_persistence.py), never silently forgotten.


def _decoder(hint: Any, where: str) -> Callable[[Any], Any]:
    """The JSON value -> Python value converter for a field of type ``hint`` (``where`` names it)."""
    if hint is Modality:
        return Modality.parse
    if hint == TrackKey:
        return _key
    if hint in (int, float, str):
        return lambda value: _scalar(hint, value, where)
    if get_origin(hint) in (Union, UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) == 1 and type(None) in get_args(hint):
            decode = _decoder(inner[0], where)
            return lambda value: None if value is None else decode(value)
    raise TypeError(f"{where}: no snapshot codec for type {hint!r}; add one in edge/linking/persistence.py")


def _scalar(kind: type, value: Any, where: str) -> Any:
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


def _encode_value(value: Any) -> Any:
    if isinstance(value, Modality):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _is_array_hint(hint: Any) -> bool:
    return hint is np.ndarray or (get_origin(hint) in (Union, UnionType) and np.ndarray in get_args(hint))


@dataclass(frozen=True)
class _RecordCodec:
    """Writes and reads one dataclass type as a JSON object plus rows of named arrays.

    Fields typed ``np.ndarray`` (or ``| None``) become a row of the array ``<prefix>_<field>``
    (the JSON object holds the row number or None); every other field is a JSON value.
    """

    cls: type
    prefix: str

    def fields(self) -> list[tuple[str, Any]]:
        hints = get_type_hints(self.cls)
        return [(f.name, hints[f.name]) for f in dataclasses.fields(self.cls)]

    def encode(self, record: Any, rows: dict[str, list[np.ndarray]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, hint in self.fields():
            value = getattr(record, name)
            if _is_array_hint(hint):
                if value is None:
                    out[name] = None
                else:
                    column = rows.setdefault(f"{self.prefix}_{name}", [])
                    out[name] = len(column)
                    column.append(np.asarray(value, dtype=np.float32))
            else:
                _decoder(hint, f"{self.cls.__name__}.{name}")  # refuses a type it could not read back
                out[name] = _encode_value(value)
        return out

    def decode(self, item: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
        values: dict[str, Any] = {}
        for name, hint in self.fields():
            where = f"{self.cls.__name__}.{name}"
            if name not in item:
                raise ValueError(f"{where} is missing")
            if _is_array_hint(hint):
                row = item[name]
                if row is None:
                    values[name] = None
                else:
                    column = arrays[f"{self.prefix}_{name}"]
                    row = _scalar(int, row, where)
                    if not 0 <= row < len(column):
                        raise ValueError(f"{where}: row {row} outside the {len(column)} stored rows")
                    values[name] = np.array(column[row], dtype=np.float32)
            else:
                values[name] = _decoder(hint, where)(item[name])
        return self.cls(**values)

    def array_names(self) -> list[str]:
        return [f"{self.prefix}_{name}" for name, hint in self.fields() if _is_array_hint(hint)]


_TRACKS = _RecordCodec(TrackState, "track")
_ENDED = _RecordCodec(EndedSpan, "ended")


def linker_state(linker: IdentityLinker) -> tuple[dict[str, Any], dict[str, ChunkedArray]]:
    """Everything needed to rebuild ``linker``: (JSON-ready metadata, named arrays).

    The prototype arrays are the stores' codes in their storage dtype, produced in chunks; the
    tracks' vectors (``track_<field>``) are float32 rows.
    """
    arrays: dict[str, ChunkedArray] = {}
    meta: dict[str, Any] = {
        "last_seq": linker.last_seq,
        "clock": linker.clock if math.isfinite(linker.clock) else None,
        "camera_clock": dict(linker.camera_clock),
        "counters": linker.counters.as_dict(),
        "reserved_global_ids": linker.reserved_global_ids,
        "gallery": None,
    }
    gallery = linker.gallery
    if gallery is not None:
        meta["gallery"] = _gallery_state(gallery, arrays)
    rows: dict[str, list[np.ndarray]] = {}
    meta["tracks"] = [_TRACKS.encode(linker.tracks[key], rows) for key in sorted(linker.tracks)]
    meta["ended"] = {
        camera: [_ENDED.encode(span, rows) for span in spans] for camera, spans in linker.ended.items()
    }
    # Decided tracks that ended (live ones are in "tracks"): the topology, hygiene and final pass use them.
    meta["history"] = [
        _TRACKS.encode(linker.history[key], rows)
        for key in sorted(linker.history)
        if key not in linker.tracks
    ]
    dim = gallery.dim if gallery is not None else next((r[0].shape[0] for r in rows.values() if r), 0)
    for name in _TRACKS.array_names() + _ENDED.array_names():
        column = rows.get(name, [])
        stacked = np.stack(column).astype(np.float32) if column else np.zeros((0, dim), np.float32)
        arrays[name] = ChunkedArray.of(stacked)
    return meta, arrays


def _gallery_state(gallery: Gallery, arrays: dict[str, ChunkedArray]) -> dict[str, Any]:
    identities = []
    per_modality: dict[Modality, list[int]] = {m: [] for m in Modality}
    for gid in sorted(gallery.identities):
        identity = gallery.identities[gid]
        prototypes = []
        for p in identity.prototypes:
            per_modality[p.modality].append(p.slot)
            prototypes.append(
                {
                    "modality": str(p.modality),
                    "row": len(per_modality[p.modality]) - 1,
                    "camera_id": p.camera_id,
                    "track_key": None if p.track_key is None else list(p.track_key),
                    "weight": p.weight,
                    "updated_ts": p.updated_ts,
                }
            )
        identities.append(
            {
                "global_id": gid,
                "created_ts": identity.created_ts,
                "last_seen_ts": identity.last_seen_ts,
                "live_tracks": sorted(list(k) for k in identity.live_tracks),
                "prototypes": prototypes,
            }
        )
    for modality, slots in per_modality.items():
        arrays[f"prototypes_{modality}"] = gallery.stores[modality].export_codes(slots)
    return {
        "engine_id": gallery.engine_id,
        "dim": gallery.dim,
        "next_global_id": gallery.next_global_id,
        "identities": identities,
    }


def linker_from_state(
    meta: dict[str, Any], arrays: dict[str, Any], rules: MatchingRules, gallery_config: GalleryConfig
) -> IdentityLinker:
    """Rebuild a linker from :func:`linker_state`'s output (with today's rules and bounds).

    ``arrays`` map names to row-indexable arrays (numpy arrays or the snapshot's lazy readers); the
    prototypes are read one row at a time, in order.

    Raises:
        ValueError, KeyError, TypeError: metadata that does not describe a linker (the caller
            names the file); EventError: a gallery of another engine than ``gallery_config``'s.
    """
    linker = IdentityLinker(rules, gallery_config)
    linker.last_seq = _scalar(int, meta["last_seq"], "last_seq")
    linker.clock = -math.inf if meta["clock"] is None else _scalar(float, meta["clock"], "clock")
    linker.camera_clock = {str(k): _scalar(float, v, "camera_clock") for k, v in meta["camera_clock"].items()}
    known = {f.name for f in dataclasses.fields(LinkerCounters)}
    for name, value in meta["counters"].items():
        if name in known:  # a counter that no longer exists is dropped; a new one starts at 0
            setattr(linker.counters, name, _scalar(int, value, f"counters.{name}"))
    linker.reserved_global_ids = _scalar(int, meta.get("reserved_global_ids", 0), "reserved_global_ids")
    if meta["gallery"] is not None:
        linker.gallery = _gallery_from_state(meta["gallery"], arrays, gallery_config)
    track_arrays = {n: np.asarray(arrays[n], dtype=np.float32) for n in _TRACKS.array_names()}
    for item in meta["tracks"]:
        state: TrackState = _TRACKS.decode(item, track_arrays)
        linker.tracks[state.key] = state
        linker.camera_tracks.setdefault(state.camera_id, {})[state.key] = state
    ended_arrays = {n: np.asarray(arrays[n], dtype=np.float32) for n in _ENDED.array_names()}
    linker.ended = {
        str(camera): [_ENDED.decode(item, ended_arrays) for item in spans]
        for camera, spans in meta["ended"].items()
    }
    for item in meta.get("history", []):  # (snapshots written before the history have none)
        ended: TrackState = _TRACKS.decode(item, track_arrays)
        linker.history[ended.key] = ended
    linker.configure(linker.topology)  # indexes live tracks and the history by identity
    return linker


def _gallery_from_state(g: dict[str, Any], arrays: dict[str, Any], gallery_config: GalleryConfig) -> Gallery:
    engine_id = g["engine_id"]
    if not isinstance(engine_id, str):
        raise ValueError(f"gallery.engine_id: expected a string, got {engine_id!r}")
    if gallery_config.engine_id and gallery_config.engine_id != engine_id:
        raise EventError(
            f"the snapshot's gallery holds engine {engine_id} but gallery.engine_id is "
            f"{gallery_config.engine_id}: start with a fresh state_dir for another engine"
        )
    gallery = Gallery(
        _scalar(int, g["dim"], "gallery.dim"), dataclasses.replace(gallery_config, engine_id=engine_id)
    )
    vectors = {m: arrays[f"prototypes_{m}"] for m in Modality}  # rows are read one at a time
    for item in g["identities"]:
        identity = gallery.create_identity(
            _scalar(float, item["created_ts"], "created_ts"), _scalar(int, item["global_id"], "global_id")
        )
        identity.live_tracks = {_key(k) for k in item["live_tracks"]}
        for p in item["prototypes"]:
            modality = Modality.parse(p["modality"])
            gallery.restore_prototype(
                identity.global_id,
                modality,
                str(p["camera_id"]),
                None if p["track_key"] is None else _key(p["track_key"]),
                _scalar(float, p["weight"], "prototype weight"),
                _scalar(float, p["updated_ts"], "prototype updated_ts"),
                np.asarray(vectors[modality][_scalar(int, p["row"], "prototype row")], dtype=np.float32),
            )
        gallery.touch(identity.global_id, _scalar(float, item["last_seen_ts"], "last_seen_ts"))
    gallery.next_global_id = max(gallery.next_global_id, _scalar(int, g["next_global_id"], "next_global_id"))
    return gallery


def _key(value: Any) -> TrackKey:
    producer, camera, track = value
    if not (isinstance(producer, str) and isinstance(camera, str)):
        raise ValueError(f"a track key is [producer_id, camera_id, track_id], got {value!r}")
    return (producer, camera, _scalar(int, track, "track_id"))


class _Checksummer:
    """Feeds written bytes to a SHA-256 and to a CRC32 per CHECKSUM_BLOCK block."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.crcs: list[int] = []
        self._crc = 0
        self._fill = 0
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)
        view = memoryview(data).cast("B")
        while len(view):
            take = min(CHECKSUM_BLOCK - self._fill, len(view))
            self._crc = zlib.crc32(view[:take], self._crc)
            self._fill += take
            view = view[take:]
            if self._fill == CHECKSUM_BLOCK:
                self.crcs.append(self._crc)
                self._crc, self._fill = 0, 0

    def finish(self) -> list[int]:
        if self._fill:
            self.crcs.append(self._crc)
            self._crc, self._fill = 0, 0
        return self.crcs


def save_snapshot(
    state_dir: str | os.PathLike[str], linker: IdentityLinker, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``linker`` (and the caller's ``extra`` JSON-ready state) atomically to ``snapshot.bin``.

    Layout: ``MAGIC`` (8 bytes), the header length (uint64 little endian), the header (UTF-8 JSON:
    ``format``, ``linker`` metadata, ``extra``, and per array its dtype, shape and byte offset),
    the arrays' bytes back to back, then the trailer (JSON: ``block`` size, ``crc32`` per block and
    ``sha256`` of everything before the trailer), its length (uint64) and ``END`` (8 bytes). The
    prototype vectors are streamed from the faiss stores in chunks, so a snapshot does not double
    the gallery's memory. Returns the snapshot's path.
    """
    meta, arrays = linker_state(linker)
    specs = {}
    offset = 0
    for name, array in arrays.items():
        specs[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
        offset += array.nbytes
    header = json.dumps(
        {"format": SNAPSHOT_FORMAT, "linker": meta, "extra": extra or {}, "arrays": specs}
    ).encode()
    path = Path(state_dir) / SNAPSHOT_NAME
    with atomic_open(path, "wb") as handle:
        out = _Checksummer(handle)
        out.write(SNAPSHOT_MAGIC + struct.pack("<Q", len(header)) + header)
        for name, array in arrays.items():
            written = 0
            for chunk in array.chunks():
                out.write(chunk)
                written += len(chunk)
            if written != array.nbytes:
                raise RuntimeError(f"snapshot array {name}: wrote {written} bytes, expected {array.nbytes}")
        trailer = json.dumps(
            {
                "block": CHECKSUM_BLOCK,
                "crc32": out.finish(),
                "sha256": out.digest.hexdigest(),
                "size": out.size,
            }
        ).encode()
        handle.write(trailer + struct.pack("<Q", len(trailer)) + SNAPSHOT_END)
    return path


def verify_snapshot(path: str | os.PathLike[str]) -> int:
    """Check the snapshot's block checksums and digest; return the size of its checked part.

    Raises:
        JournalError: names the file and the damaged byte range (or the trailer that is unreadable).
    """
    path = Path(path)
    size = path.stat().st_size
    tail_bytes = 8 + len(SNAPSHOT_END)
    with open(path, "rb") as handle:
        if size < len(SNAPSHOT_MAGIC) + 8 + tail_bytes:
            raise JournalError(f"{path}: {size} bytes is too short for a snapshot (damaged or cut short)")
        handle.seek(size - tail_bytes)
        end = handle.read(tail_bytes)
        if end[8:] != SNAPSHOT_END:
            older = _older_format(handle)
            if older is not None:
                raise JournalError(
                    f"{path}: snapshot format {older} (written before checksums), this linker reads "
                    f"format {SNAPSHOT_FORMAT}: move the state_dir aside and start fresh"
                )
            raise JournalError(
                f"{path}: no snapshot trailer at byte {size - len(SNAPSHOT_END)} (cut short or damaged at its end)"
            )
        (length,) = struct.unpack("<Q", end[:8])
        start = size - tail_bytes - length
        if not 0 < length < size or start < len(SNAPSHOT_MAGIC) + 8:
            raise JournalError(f"{path}: trailer length {length} at byte {size - tail_bytes} is damaged")
        handle.seek(start)
        try:
            trailer = json.loads(handle.read(length))
            block, crcs, digest, body = (
                int(trailer["block"]),
                [int(c) for c in trailer["crc32"]],
                str(trailer["sha256"]),
                int(trailer["size"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalError(
                f"{path}: trailer at bytes {start}-{start + length} is damaged ({exc})"
            ) from exc
        if body != start or block < 1 or len(crcs) != -(-body // block):
            raise JournalError(f"{path}: trailer at byte {start} does not describe the file (damaged)")
        whole = hashlib.sha256()
        handle.seek(0)
        for index, expected in enumerate(crcs):
            data = handle.read(min(block, body - index * block))
            whole.update(data)
            if zlib.crc32(data) != expected:
                first = index * block
                raise JournalError(
                    f"{path}: damaged at bytes {first}-{first + len(data)} (checksum mismatch); the "
                    "snapshot cannot be trusted: restore a backup, or move it aside to rebuild from the journal"
                )
        if whole.hexdigest() != digest:
            raise JournalError(
                f"{path}: digest mismatch over bytes 0-{body} (the trailer or the body is damaged)"
            )
    return body


class SnapshotArray:
    """A C-order array stored in the snapshot file, read by chunks of rows with ``os.pread``.

    Not a memory map: restoring a large gallery row by row would otherwise pull the whole file into
    this process's resident memory next to the rebuilt gallery. ``array[i]`` is row ``i`` (a view
    of the cached chunk); ``np.asarray(array)`` reads everything (for the small arrays).
    """

    def __init__(
        self, path: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...], rows_per_chunk: int = 256
    ):
        self.path = path
        self.offset = offset
        self.dtype = dtype
        self.shape = shape
        self.rows_per_chunk = rows_per_chunk
        self._row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self._chunk_start = -1
        self._chunk: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, row: int) -> np.ndarray:
        if not 0 <= row < self.shape[0]:
            raise IndexError(f"row {row} out of range for {self.shape[0]} rows")
        start = row - row % self.rows_per_chunk
        if start != self._chunk_start:
            count = min(self.rows_per_chunk, self.shape[0] - start)
            self._chunk = self._read(start, count)
            self._chunk_start = start
        assert self._chunk is not None
        return self._chunk[row - start]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self._read(0, self.shape[0])
        return data if dtype is None else data.astype(dtype)

    def _read(self, start: int, count: int) -> np.ndarray:
        nbytes = count * self._row_bytes
        with open(self.path, "rb") as handle:
            data = os.pread(handle.fileno(), nbytes, self.offset + start * self._row_bytes)
        if len(data) != nbytes:
            raise JournalError(f"{self.path}: snapshot ends inside an array")
        return np.frombuffer(data, dtype=self.dtype).reshape((count, *self.shape[1:]))


def _older_format(handle: Any) -> int | None:
    """The ``format`` of a readable pre-checksum snapshot (1 or 2), else None."""
    try:
        handle.seek(0)
        if handle.read(len(SNAPSHOT_MAGIC)) != SNAPSHOT_MAGIC:
            return None
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 1 << 30:
            return None
        found = json.loads(handle.read(length)).get("format")
    except (ValueError, struct.error, AttributeError, OSError):
        return None
    return found if found in (1, 2) else None


def load_snapshot(
    state_dir: str | os.PathLike[str],
) -> tuple[dict[str, Any], dict[str, SnapshotArray]] | None:
    """The snapshot's (meta, arrays), or None when there is none (arrays: :class:`SnapshotArray`).

    The checksums are verified first (:func:`verify_snapshot`), so what is parsed is what was written.

    Raises:
        JournalError: a snapshot that is damaged or cannot be read (names the file and the offset).
    """
    path = Path(state_dir) / SNAPSHOT_NAME
    if not path.is_file():
        return None
    size = verify_snapshot(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(SNAPSHOT_MAGIC))
            if magic != SNAPSHOT_MAGIC:
                raise ValueError(f"not a linker snapshot (magic {magic!r} at byte 0)")
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > size:
                raise ValueError(f"header length {length} at byte 8 runs past the end")
            meta = json.loads(handle.read(length))
        if not isinstance(meta, dict):
            raise ValueError("the header is not a JSON object")
        if meta.get("format") != SNAPSHOT_FORMAT:
            raise JournalError(f"{path}: snapshot format {meta.get('format')!r}, expected {SNAPSHOT_FORMAT}")
        start = len(SNAPSHOT_MAGIC) + 8 + length
        arrays: dict[str, SnapshotArray] = {}
        for name, spec in meta.pop("arrays").items():
            dtype, shape = np.dtype(spec["dtype"]), tuple(int(n) for n in spec["shape"])
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if min(shape, default=0) < 0 or start + int(spec["offset"]) + nbytes > size:
                raise ValueError(f"array {name} runs past the end of the file")
            arrays[name] = SnapshotArray(path, start + int(spec["offset"]), dtype, shape)
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise JournalError(f"{path}: unreadable snapshot ({exc})") from exc
    return meta, arrays


@dataclass
class Recovered:
    """The outcome of :func:`recover`.

    Attributes:
        linker: the rebuilt linker (its ``last_seq`` is the last event applied).
        extra: the caller's state saved with the snapshot (``{}`` without one).
        snapshot_seq: the snapshot's event seq (0 without one).
        replayed: the journal events applied on top of the snapshot, in order.
        torn_tail: whether a torn last journal line was dropped.
        quarantined: journal entries that could not be applied (moved to ``quarantine/``).
        stale_tmp_removed: leftover ``.tmp`` files of interrupted atomic writes that were removed.
        lost_published: events the update log has but the journal does not (its tail was lost):
            ``(first, last)`` journal seqs, or None. The numbering was moved past them.
    """

    linker: IdentityLinker
    extra: dict[str, Any]
    snapshot_seq: int
    replayed: list[Event]
    torn_tail: bool
    quarantined: int = 0
    stale_tmp_removed: int = 0
    lost_published: tuple[int, int] | None = None

    @property
    def needs_snapshot(self) -> bool:
        """Whether the state on disk should be rewritten now (a quarantine or a numbering jump
        left the journal with a hole that the next restart would refuse)."""
        return bool(self.quarantined or self.lost_published)


def remove_stale_tmp(state_dir: str | os.PathLike[str]) -> int:
    """Remove ``.*.tmp`` files that an atomic write left when its process died; return how many."""
    directory = Path(state_dir)
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.glob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def recover(
    state_dir: str | os.PathLike[str],
    rules: MatchingRules,
    gallery_config: GalleryConfig,
    updates_path: str | os.PathLike[str] | None = None,
) -> Recovered:
    """Rebuild the linker from ``state_dir`` (empty or missing: a fresh linker) and repair a torn tail.

    Args:
        updates_path: the update log; if it names events or global ids beyond the journal, the
            numbering continues after them (default ``<state_dir>/identity_updates.jsonl``).

    Raises:
        JournalError: damage a crash cannot explain (a hole in the seq numbers, a damaged line
            before the end, a damaged or unreadable snapshot), naming the file and the offset.
    """
    if Path(state_dir).exists() and not Path(state_dir).is_dir():
        raise JournalError(f"persistence.state_dir {state_dir} is a file, not a directory")
    stale = remove_stale_tmp(state_dir)
    entries, tail = read_journal_entries(state_dir)
    # An entry that cannot be applied may have changed the linker half-way before it raised: so on a
    # failure, start over from the snapshot, skipping every entry that failed so far.
    failed: dict[int, tuple[JournalEntry, Exception]] = {}
    while True:
        linker, extra = _from_snapshot(state_dir, rules, gallery_config)
        snapshot_seq = linker.last_seq
        replayed: list[Event] = []
        failure: tuple[JournalEntry, Exception] | None = None
        for entry in entries:
            event = entry.event
            if event.seq <= linker.last_seq:
                continue  # covered by the snapshot (rotation had not removed it yet)
            if event.seq != linker.last_seq + 1:
                raise JournalError(
                    f"{entry.path}:{entry.line}: journal jumps from event {linker.last_seq} to {event.seq}; "
                    "events are missing"
                )
            if event.seq in failed:
                linker.last_seq = event.seq  # quarantined; its seq stays used
                continue
            try:
                linker.apply(event)
            except Exception as exc:  # a bug made it; it must not stop every restart
                failure = (entry, exc)
                break
            replayed.append(event)
        if failure is None:
            break
        failed[failure[0].event.seq] = failure
    for entry, exc in failed.values():
        quarantine(state_dir, entry, exc)
    quarantined = len(failed)
    if tail is not None and tail.torn:
        with open(tail.path, "r+b") as handle:
            handle.truncate(tail.size)
            handle.flush()
            os.fsync(handle.fileno())
    updates = Path(updates_path) if updates_path is not None else Path(state_dir) / "identity_updates.jsonl"
    lost = _reserve_published(linker, updates)
    return Recovered(
        linker, extra, snapshot_seq, replayed, bool(tail and tail.torn), quarantined, stale, lost
    )


def _from_snapshot(
    state_dir: str | os.PathLike[str], rules: MatchingRules, gallery_config: GalleryConfig
) -> tuple[IdentityLinker, dict[str, Any]]:
    """The linker of the snapshot (a fresh one without) and the caller's extra state."""
    loaded = load_snapshot(state_dir)
    if loaded is None:
        return IdentityLinker(rules, gallery_config), {}
    meta, arrays = loaded
    try:
        linker = linker_from_state(meta["linker"], arrays, rules, gallery_config)
    except EventError:
        raise
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        path = Path(state_dir) / SNAPSHOT_NAME
        raise JournalError(f"{path}: the snapshot's header does not describe a linker ({exc!r})") from exc
    extra = meta.get("extra", {})
    return linker, extra if isinstance(extra, dict) else {}


def quarantine(state_dir: str | os.PathLike[str], entry: JournalEntry, reason: BaseException) -> Path:
    """Append ``entry`` (its raw line, where it was, why) to ``quarantine/journal.jsonl``; log it."""
    folder = Path(state_dir) / QUARANTINE_DIR
    folder.mkdir(exist_ok=True)
    target = folder / "journal.jsonl"
    record = {
        "quarantined_at": time.time(),
        "file": str(entry.path),
        "line": entry.line,
        "seq": entry.event.seq,
        "reason": f"{type(reason).__name__}: {reason}",
        "raw": entry.raw.decode("utf-8", errors="replace"),
    }
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    LOG.error(
        "journal entry %s:%d (event %d) cannot be applied (%s): quarantined in %s",
        entry.path,
        entry.line,
        entry.event.seq,
        record["reason"],
        target,
    )
    return target


def _reserve_published(linker: IdentityLinker, updates: Path) -> tuple[int, int] | None:
    """Move the numbering past what the update log published but the journal lost; the lost range.

    Only the log's last line is read unless it shows a loss (then all of it, for the highest id).
    """
    from edge.linking.publishing import read_updates

    last_published = _last_journal_seq(updates)
    if last_published <= linker.last_seq:
        return None  # every published event was replayed: the gallery's numbering covers them
    gids = [line.get("global_id") for line in read_updates(updates)]
    next_gid = max((g for g in gids if isinstance(g, int)), default=-1) + 1
    lost = (linker.last_seq + 1, last_published)
    LOG.error(
        "the update log %s has events %d..%d that the journal lost (cut short?): numbering "
        "continues after them, global ids below %d are never given out again",
        updates,
        lost[0],
        lost[1],
        next_gid,
    )
    linker.last_seq = last_published
    linker.reserve_global_ids(next_gid)
    return lost


def _last_journal_seq(updates: Path) -> int:
    """``journal_seq`` of the update log's last complete line (0: no log, or none readable)."""
    if not updates.is_file():
        return 0
    with open(updates, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - (1 << 16)))
        lines = handle.read().split(b"\n")[:-1]  # the part after the last newline is torn
    for line in reversed(lines):
        try:
            value = json.loads(line).get("journal_seq")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, int) and value >= 0:
            return value
    return 0
