"""Wire messages: round trips, golden encodings, validation, gap detection, malformed-message handling."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest

from common.modality import Modality
from edge.messages import (
    SCHEMA_VERSION,
    EndOfStream,
    Heartbeat,
    MessageError,
    MessageReceiver,
    SequenceTracker,
    SightingBatch,
    decode_message,
    encode_message,
)

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
from write_message_goldens import golden_messages, golden_path  # noqa: E402


def _batch(**changes) -> SightingBatch:
    fields = dict(
        producer_id="p",
        camera_id="c",
        seq=0,
        capture_ts=1.0,
        send_ts=2.0,
        engine_id="e",
        modality=Modality.INFRARED,
        frame_index=5,
        frame_width=64,
        frame_height=48,
        boxes=[(1, 2, 11, 32), (20, 4, 30, 40)],
        track_ids=[4, 5],
        scores=[0.9, 0.4],
        quality=[1.0, 0.5],
        embedding_rows=[1],
        embedding_shape=(1, 8),
        embedding_dtype="float32",
    )
    fields.update(changes)
    return SightingBatch(**fields)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_sighting_batch_round_trip_keeps_values_and_reads_embeddings_zero_copy(dtype: str) -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((2, 16)).astype(dtype)
    batch = _batch(embedding_rows=[0, 1], embedding_shape=(2, 16), embedding_dtype=dtype)
    frames = encode_message(batch, embeddings)
    assert len(frames) == 2 and frames[1].nbytes == embeddings.nbytes
    raw = bytearray(frames[1])  # a distinct buffer, as a received zmq frame would be
    decoded = decode_message([bytes(frames[0]), raw])
    assert decoded.message == batch
    assert decoded.kind == "sightings"
    assert decoded.embeddings.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded.embeddings, embeddings)
    assert np.shares_memory(decoded.embeddings, np.frombuffer(raw, dtype=np.uint8))  # zero-copy
    assert not decoded.embeddings.flags.writeable
    np.testing.assert_allclose(decoded.message.xyxy(), [[1, 2, 11, 32], [20, 4, 30, 40]])
    assert decoded.message.xyxy().dtype == np.float32
    assert decoded.message.track_id_array().tolist() == [4, 5]


def test_every_kind_round_trips() -> None:
    for name, (message, embeddings) in golden_messages().items():
        decoded = decode_message(encode_message(message, embeddings))
        assert decoded.message == message, name
        assert type(decoded.message) is type(message)


def test_golden_files_match_todays_encoder_and_decode() -> None:
    for name, (message, embeddings) in golden_messages().items():
        frames = encode_message(message, embeddings)
        stored = []
        for index, frame in enumerate(frames):
            path = golden_path(name, index)
            assert path.is_file(), f"golden file {path} is missing"
            assert path.read_bytes() == bytes(frame), (
                f"encoding of {name!r} frame {index} changed: a wire-format change needs a new SCHEMA_VERSION"
            )
            stored.append(path.read_bytes())
        assert not golden_path(name, len(frames)).exists()
        decoded = decode_message(stored)
        assert decoded.message == message
        if embeddings is not None:
            np.testing.assert_array_equal(decoded.embeddings, embeddings)


def test_golden_header_is_plain_messagepack_with_named_fields() -> None:
    # Receivers in other languages read the header as a plain map: check the names on the wire.
    header = msgspec.msgpack.decode(golden_path("sightings", 0).read_bytes())
    assert header["kind"] == "sightings" and header["schema_version"] == SCHEMA_VERSION
    assert header["modality"] == "visible" and header["embedding_shape"] == [2, 3]
    assert header["boxes"][0] == [10.5, 20.0, 60.5, 180.0]


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"track_ids": [1]}, "track_ids has 1 entries"),
        ({"boxes": [(5, 2, 1, 32), (20, 4, 30, 40)]}, "x1<=x2"),
        ({"embedding_rows": [1, 1], "embedding_shape": (2, 8)}, "strictly increasing"),
        ({"embedding_rows": [2]}, "in [0, 2)"),
        ({"embedding_shape": (2, 8)}, "does not match"),
        ({"embedding_rows": [], "embedding_shape": (1, 8)}, "(0, 0)"),
        ({"camera_id": ""}, "camera_id"),
        ({"seq": -1}, "seq"),
        ({"modality": "ultraviolet"}, "unknown modality"),
    ],
)
def test_invalid_sighting_batches_are_refused(changes: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        _batch(**changes)
    assert fragment in str(info.value)


def _raw_header(**changes) -> bytes:
    header = msgspec.msgpack.decode(golden_path("sightings", 0).read_bytes())
    header.update(changes)
    return msgspec.msgpack.encode(header)


@pytest.mark.parametrize(
    "frames, fragment",
    [
        (lambda: [], "expected 1 or 2 frames"),
        (lambda: [b"\x93\x01"], "not a message envelope"),
        (lambda: [b"not msgpack at all"], "not a message envelope"),
        (lambda: [_raw_header(schema_version=2), b"\0" * 12], "schema_version 2"),
        (lambda: [_raw_header(kind="telemetry"), b"\0" * 12], "unknown message kind"),
        (lambda: [_raw_header(modality="rgb"), b"\0" * 12], "modality"),
        (lambda: [_raw_header(scores=[0.5]), b"\0" * 12], "scores has 1 entries"),
        (lambda: [_raw_header(seq="7"), b"\0" * 12], "Expected `int`"),
        (lambda: [_raw_header()], "has no raw frame"),
        (lambda: [_raw_header(), b"\0" * 11], "has 11 bytes"),
        (lambda: [_raw_header(), b"\0" * 12, b""], "expected 1 or 2 frames"),
        (lambda: [golden_path("heartbeat", 0).read_bytes(), b"\0"], "must be 1 frame"),
        (lambda: [12345], "bytes-like"),
    ],
)
def test_malformed_messages_raise_one_error_type(frames, fragment: str) -> None:
    with pytest.raises(MessageError) as info:
        decode_message(frames())
    assert fragment in str(info.value)


def test_encode_checks_embeddings_against_the_header() -> None:
    batch = _batch()
    with pytest.raises(MessageError, match="none given"):
        encode_message(batch)
    with pytest.raises(MessageError, match="shape"):
        encode_message(batch, np.zeros((2, 8), np.float32))
    empty = _batch(embedding_rows=[], embedding_shape=(0, 0))
    with pytest.raises(MessageError, match="cannot carry"):
        encode_message(empty, np.zeros((1, 8), np.float32))
    # float64 input is cast to the declared dtype on the wire
    frames = encode_message(batch, np.ones((1, 8), np.float64))
    assert frames[1].nbytes == 8 * 4


def test_receiver_counts_and_drops_malformed_messages_and_keeps_going() -> None:
    receiver = MessageReceiver()
    good = [encode_message(_batch(seq=i, embedding_rows=[], embedding_shape=(0, 0))) for i in range(3)]
    assert receiver.decode(good[0]) is not None
    assert receiver.decode([b"garbage"]) is None
    assert receiver.decode([_raw_header(), b"\0"]) is None
    assert receiver.decode(good[1]) is not None and receiver.decode(good[2]) is not None
    assert receiver.malformed == 2
    assert "bytes" in receiver.last_error
    assert receiver.received == {"sightings": 3}
    assert receiver.sequences.total_missed == 0


def test_sequence_tracker_detects_gaps_duplicates_and_restarts_per_producer_and_camera() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("a", "c0", 0).missed == 0
    assert tracker.observe("a", "c0", 1).missed == 0
    assert tracker.observe("a", "c1", 0).missed == 0  # separate stream per camera
    assert tracker.observe("b", "c0", 0).missed == 0  # and per producer
    assert tracker.observe("a", "c0", 4).missed == 2
    assert tracker.observe("a", "c0", 3).duplicate
    assert tracker.observe("a", "c0", 5).missed == 0
    assert tracker.observe("a", "c0", 0).restarted
    assert tracker.observe("a", "c1", 2).missed == 1
    assert tracker.observe("b", "c9", 3).missed == 3  # joined late: three were never seen
    assert tracker.missed == {("a", "c0"): 2, ("a", "c1"): 1, ("b", "c9"): 3}
    assert tracker.duplicates == {("a", "c0"): 1}
    assert tracker.restarts == {("a", "c0"): 1}
    assert tracker.total_missed == 6


def test_receiver_reports_gaps_from_sequence_numbers() -> None:
    receiver = MessageReceiver()
    for seq in (0, 1, 2, 5, 6, 9):
        receiver.decode(encode_message(_batch(seq=seq, embedding_rows=[], embedding_shape=(0, 0))))
    assert receiver.sequences.missed == {("p", "c"): 4}


def test_identity_update_and_end_of_stream_validation() -> None:
    base = golden_messages()["identity"][0]
    with pytest.raises(ValueError, match="previous_global_id"):
        msgspec.structs.replace(base, previous_global_id=None)
    with pytest.raises(ValueError, match="cosine"):
        msgspec.structs.replace(base, score=1.5)
    assert isinstance(base.matched_modality, Modality)
    with pytest.raises(ValueError, match="producer_id"):
        EndOfStream(producer_id="", camera_id="", seq=0, capture_ts=0, send_ts=0, reason="stopped")
    heartbeat = Heartbeat(
        producer_id="p",
        camera_id="",
        seq=0,
        capture_ts=0,
        send_ts=0,
        mode="replay",
        uptime_s=1,
        drop_counts={"frames/c": np.int64(2)},
    )
    assert decode_message(encode_message(heartbeat)).message.drop_counts == {"frames/c": 2}


# ------------------------------------------------------------- hostile input (issue 12): all refused


def _nested(depth: int) -> bytes:
    """MessagePack of ``depth`` arrays nested in each other: 0x91 = array of one element."""
    return b"\x91" * depth + b"\xc0"


def _with_unknown_field(header: bytes, value: bytes) -> bytes:
    """``header`` (a msgpack map) with one more entry ``"x": value`` (value: raw msgpack bytes)."""
    return _map_head(header, 1) + _map_body(header) + b"\xa1x" + value


def _map_head(header: bytes, more: int) -> bytes:
    if 0x80 <= header[0] <= 0x8E:  # fixmap
        return bytes([header[0] + more])
    assert header[0] == 0xDE, "a map16 header"
    return b"\xde" + (int.from_bytes(header[1:3], "big") + more).to_bytes(2, "big")


def _map_body(header: bytes) -> bytes:
    return header[1:] if header[0] != 0xDE else header[3:]


@pytest.mark.parametrize("kind", ["sightings", "heartbeat", "end_of_stream", "identity"])
def test_deeply_nested_unknown_field_is_a_message_error_not_a_recursion_error(kind: str) -> None:
    frames = [golden_path(kind, i).read_bytes() for i in range(2 if kind == "sightings" else 1)]
    for depth in (1, 50, 1000, 100_000):
        hostile = [_with_unknown_field(frames[0], _nested(depth)), *frames[1:]]
        with pytest.raises(MessageError):
            decode_message(hostile)
    # Before the known fields too (the envelope decoder skips what it does not read).
    header = frames[0]
    first = _map_head(header, 1) + b"\xa1x" + _nested(100_000) + _map_body(header)
    with pytest.raises(MessageError):
        decode_message([first, *frames[1:]])


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"track_ids": [4, -1]}, "track_ids"),
        ({"track_ids": [4, 2**62 + 1]}, "track_ids"),
        ({"seq": 2**64 - 1}, "seq"),
        ({"seq": 2**48 + 1}, "seq"),
        ({"frame_index": 2**63}, "frame_index"),
        ({"capture_ts": 1e300}, "capture_ts"),
        ({"capture_ts": -5.0}, "capture_ts"),
        ({"send_ts": float("inf")}, "send_ts"),
        ({"quality": [1.0, 1.5]}, "quality"),
        ({"quality": [1.0, float("nan")]}, "quality"),
        ({"scores": [-0.1, 0.4]}, "scores"),
        ({"frame_width": 10**6}, "frame_width"),
        ({"embedding_shape": (1, 100_000)}, "D above"),
        ({"camera_id": "c" * 1000}, "camera_id"),
    ],
)
def test_out_of_range_numbers_are_refused_at_decode(changes: dict, fragment: str) -> None:
    frames = encode_message(_batch(), np.ones((1, 8), np.float32))
    header = msgspec.msgpack.decode(bytes(frames[0]))
    header.update({k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()})
    with pytest.raises(MessageError, match=fragment):
        decode_message([msgspec.msgpack.encode(header), frames[1]])
    with pytest.raises(ValueError, match=fragment):  # and a sender cannot build one either
        _batch(**changes)


def test_unknown_fields_are_refused() -> None:
    header = golden_path("heartbeat", 0).read_bytes()
    with pytest.raises(MessageError, match="unknown field"):
        decode_message([_with_unknown_field(header, b"\x01")])


def test_heartbeat_counts_must_fit_int64() -> None:
    header = msgspec.msgpack.decode(golden_path("heartbeat", 0).read_bytes())
    header["drop_counts"] = {"publish": 2**64 - 1}
    with pytest.raises(MessageError, match="drop_counts"):
        decode_message([msgspec.msgpack.encode(header)])


def test_oversized_header_is_refused_before_parsing() -> None:
    with pytest.raises(MessageError, match="at most"):
        decode_message([b"\x80" + b"\0" * (2 << 20)])


def test_receiver_refuses_capture_times_outside_its_clock_window() -> None:
    now = [1000.0]
    receiver = MessageReceiver(clock=lambda: now[0], max_ahead_s=60.0, max_behind_s=300.0)
    plain = dict(embedding_rows=[], embedding_shape=(0, 0))
    assert receiver.decode(encode_message(_batch(seq=0, capture_ts=1010.0, **plain))) is not None
    assert receiver.decode(encode_message(_batch(seq=1, capture_ts=1e9, **plain))) is None
    assert receiver.decode(encode_message(_batch(seq=2, capture_ts=600.0, **plain))) is None
    assert receiver.clock_refused == 2 and receiver.malformed == 0
    assert "capture_ts" in receiver.last_error
    assert receiver.decode(encode_message(_batch(seq=3, capture_ts=990.0, **plain))) is not None
    assert receiver.sequences.total_missed == 2  # the refused ones count as lost
    now[0] = None  # no reference yet (a replay linker before its first batch): no check
    assert receiver.decode(encode_message(_batch(seq=4, capture_ts=5e9, **plain))) is not None
