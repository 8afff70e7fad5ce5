"""Identity updates out of the linker: a PUB socket (subscribe by camera) and a JSON-lines log.

On the PUB socket every message is ``[topic, header]``: ``topic`` is the UTF-8 ``camera_id``
followed by one NUL byte (so a subscription to ``cam1`` does not also match ``cam10``), ``header``
the MessagePack :class:`~edge.messages.IdentityUpdate` of ``docs/messages.md``. The linker's own
heartbeats have camera ``""``, i.e. topic ``b"\\x00"``. Subscribing to ``b""`` receives everything::

    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.connect("tcp://linker-host:5571")
    subscribe_identities(socket, ["cam0", "cam1"])      # or [] for every camera and heartbeats
    decoded = decode_published(socket.recv_multipart())  # edge.messages.Decoded (raises MessageError)

PUB drops messages for a subscriber that does not keep up (live semantics; the linker never
waits for consumers): a consumer sees the hole in the per-camera ``seq`` of the updates. The JSON
lines log (:class:`UpdateLog`) is the complete record: every update, in order, each line the
update's fields plus ``journal_seq`` (the linker event it came from).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from edge.linking.events import IdentityDecision
from edge.messages import Decoded, IdentityUpdate, MessageError, decode_message, encode_message

TOPIC_END = b"\x00"


def identity_topic(camera_id: str) -> bytes:
    """The PUB topic frame of messages about ``camera_id`` (``""``: the linker itself)."""
    return camera_id.encode("utf-8") + TOPIC_END


def subscribe_identities(socket: Any, camera_ids: Iterable[str] = ()) -> None:
    """Subscribe a zmq SUB ``socket`` to the updates of ``camera_ids`` (none given: everything)."""
    import zmq

    cameras = list(camera_ids)
    if not cameras:
        socket.setsockopt(zmq.SUBSCRIBE, b"")
    for camera in cameras:
        socket.setsockopt(zmq.SUBSCRIBE, identity_topic(camera))


def decode_published(frames: Sequence[Any]) -> Decoded:
    """Decode ``[topic, header]`` from the linker's PUB socket.

    Raises:
        MessageError: not two frames, or a topic that does not name the message's camera.
    """
    if len(frames) != 2:
        raise MessageError(f"a linker publication is [topic, header], got {len(frames)} frames")
    topic = bytes(frames[0].buffer if hasattr(frames[0], "buffer") else frames[0])
    decoded = decode_message(frames[1:])
    if topic != identity_topic(decoded.message.camera_id):
        raise MessageError(f"topic {topic!r} does not match camera_id {decoded.message.camera_id!r}")
    return decoded


def build_update(decision: IdentityDecision, linker_id: str, seq: int) -> IdentityUpdate:
    """The :class:`IdentityUpdate` announcing ``decision`` (``seq``: the linker's per-camera number)."""
    return IdentityUpdate(
        producer_id=linker_id,
        camera_id=decision.camera_id,
        seq=seq,
        capture_ts=decision.capture_ts,
        send_ts=time.time(),
        engine_id=decision.engine_id,
        global_id=decision.global_id,
        track_id=decision.track_id,
        source_producer_id=decision.producer_id,
        source_seq=decision.source_seq,
        frame_index=decision.frame_index,
        modality=decision.modality,
        event=decision.event,
        score=decision.score,
        matched_modality=decision.matched_modality,
        matched_camera_id=decision.matched_camera_id,
        previous_global_id=decision.previous_global_id,
    )


class UpdateLog:
    """The JSON-lines record of every published update (append-only; a torn last line is cut off).

    Args:
        path: the ``.jsonl`` file (created with its directory).
        fsync: fsync after each write (otherwise flushed to the OS, which survives a killed process).
        send_times: keep each update's wall-clock ``send_ts`` (live: latency measurements). ``False``
            (replays) leaves it out, so a replay's log holds nothing that depends on when it ran: the
            same inputs give the same bytes (the updates on the PUB socket still carry it).
    """

    def __init__(self, path: str | os.PathLike[str], fsync: bool = False, send_times: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.send_times = send_times
        self.last_journal_seq = _repair_and_last_seq(self.path)
        self._handle = open(self.path, "ab")  # kept open for appends until close()

    def write(
        self, updates: list[tuple[IdentityUpdate, int]] | list[tuple[IdentityUpdate, int, bool]]
    ) -> None:
        """Append ``(update, journal_seq[, final_pass])`` as lines (one write) and flush; updates of
        the final offline pass carry ``"final_pass": true``."""
        if not updates:
            return
        lines = []
        for update, journal_seq, *final in updates:
            record = msgspec.to_builtins(update)
            if final and final[0]:
                record["final_pass"] = True
            if not self.send_times:
                del record["send_ts"]
            record["journal_seq"] = journal_seq
            lines.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
            self.last_journal_seq = max(self.last_journal_seq, journal_seq)
        self._handle.write(b"".join(lines))
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            self._handle.close()


def read_updates(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The complete lines of an update log as dicts (a torn last line is skipped)."""
    out = []
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def _repair_and_last_seq(path: Path) -> int:
    """Cut a torn last line off ``path``; return the last complete line's ``journal_seq`` (0: none)."""
    if not path.is_file():
        return 0
    with open(path, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        # Read backwards in blocks until two newlines bound the last complete line.
        block = 1 << 16
        data = b""
        position = size
        while position > 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
            if data.count(b"\n") >= 2 or position == 0:
                break
        keep = data.rfind(b"\n") + 1  # bytes of `data` up to the last newline
        torn = len(data) - keep
        if torn:
            handle.truncate(size - torn)
            handle.flush()
            os.fsync(handle.fileno())
        complete = data[:keep].splitlines()
        for line in reversed(complete):
            try:
                return int(json.loads(line)["journal_seq"])
            except (ValueError, KeyError, TypeError):
                continue
        return 0


def encode_publication(message: Any) -> list[bytes | memoryview]:
    """``[topic, header]`` frames of a message the linker publishes."""
    return [identity_topic(message.camera_id), *encode_message(message)]
