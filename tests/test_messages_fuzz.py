"""Fuzzing the decoder with mutated golden messages: nothing but MessageError ever comes out.

Two mutators, both seeded from the golden files in tests/golden (every kind):

- **bytes**: flips, overwrites, insertions, deletions and truncations anywhere in the header and the
  raw embeddings frame (what a broken or hostile sender can put on the wire);
- **fields**: one field of the decoded header replaced by an arbitrary MessagePack value (huge and
  negative integers, NaN / inf / 1e300, deep nesting, strings, maps) or an unknown field added.

Whatever decodes must be a valid message (ranges hold, it re-encodes) and must go through a linker
without raising. Deterministic (``derandomize=True``: the same cases every run) and bounded (a few
thousand cases, ~10-30 s). The longer run with its numbers is ``benchmarks/bench_fuzz.py``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import msgspec
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.linking.assignment import MatchingRules
from edge.linking.gallery import GalleryConfig
from edge.linking.linker import IdentityLinker
from edge.messages import (
    MAX_ID,
    MAX_SEQ,
    MAX_TIMESTAMP_S,
    Decoded,
    MessageError,
    SightingBatch,
    decode_message,
    encode_message,
)

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
from write_message_goldens import golden_messages, golden_path  # noqa: E402

KINDS = sorted(golden_messages())
GOLDEN = {
    name: [golden_path(name, i).read_bytes() for i in range(2) if golden_path(name, i).is_file()]
    for name in KINDS
}


def fuzz(cases: int) -> settings:
    """Hypothesis settings: ``cases`` examples, the same ones every run, no example database."""
    return settings(
        max_examples=cases,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def check_decodes_or_refuses(frames: list[bytes]) -> Decoded | None:
    """The property: a Decoded that satisfies the schema's ranges, or MessageError; nothing else."""
    try:
        decoded = decode_message(frames)
    except MessageError:
        return None
    message = decoded.message
    assert 0 <= message.seq <= MAX_SEQ
    assert math.isfinite(message.capture_ts) and 0 <= message.capture_ts <= MAX_TIMESTAMP_S
    if isinstance(message, SightingBatch):
        assert all(0 <= t <= MAX_ID for t in message.track_ids)
        assert all(0 <= q <= 1 for q in message.quality)
        if decoded.embeddings is not None:
            assert decoded.embeddings.shape == tuple(message.embedding_shape)
        encode_message(message, decoded.embeddings)  # what decodes can be sent on
        linker = IdentityLinker(MatchingRules(min_sightings=1), GalleryConfig(adopt_engine=True))
        linker.observe(message, decoded.embeddings)
        linker.end_camera(message.producer_id, message.camera_id)
    else:
        encode_message(message)
    return decoded


def test_the_golden_messages_themselves_decode() -> None:
    for name in KINDS:
        assert check_decodes_or_refuses(GOLDEN[name]) is not None, name


_edit = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.integers(0, 2**16),
    st.integers(0, 255),
)


@fuzz(1500)
@given(name=st.sampled_from(KINDS), frame=st.integers(0, 1), edits=st.lists(_edit, min_size=1, max_size=6))
def test_byte_mutations_of_golden_messages(name: str, frame: int, edits) -> None:
    frames = [bytearray(f) for f in GOLDEN[name]]
    target = frames[min(frame, len(frames) - 1)]
    for op, position, value in edits:
        at = position % (len(target) + 1)
        if op == "flip" and target:
            target[at % len(target)] ^= 1 << (value % 8)
        elif op == "set" and target:
            target[at % len(target)] = value
        elif op == "insert":
            target[at:at] = bytes([value]) * (1 + value % 4)
        elif op == "delete" and target:
            del target[at % len(target)]
        elif op == "truncate":
            del target[at:]
    check_decodes_or_refuses([bytes(f) for f in frames])


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([-1, 0, 1, 2**31, 2**48 + 1, 2**62 + 1, 2**63 - 1, 2**64 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e300, -1e300, float("nan"), float("inf"), 1.5, -0.0]),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_value = st.recursive(
    _leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
)
_deep = st.integers(1, 3000).map(lambda depth: msgspec.Raw(b"\x91" * depth + b"\xc0"))


@fuzz(1500)
@given(
    name=st.sampled_from(KINDS),
    field_index=st.integers(0, 63),
    value=st.one_of(_value, _deep),
    unknown=st.booleans(),
)
def test_field_mutations_of_golden_messages(name: str, field_index: int, value, unknown: bool) -> None:
    header = msgspec.msgpack.decode(GOLDEN[name][0])
    names = sorted(header)
    key = "extra_field" if unknown else names[field_index % len(names)]
    header[key] = value
    frames = [msgspec.msgpack.encode(header), *GOLDEN[name][1:]]
    check_decodes_or_refuses(frames)


@fuzz(400)
@given(
    rows=st.integers(0, 3),
    dim=st.integers(0, 5),
    dtype=st.sampled_from(["float16", "float32", "float64", "int8"]),
    raw=st.binary(max_size=64),
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=16),
)
def test_embedding_frames_of_any_shape_and_content(
    rows: int, dim: int, dtype: str, raw: bytes, values
) -> None:
    header = msgspec.msgpack.decode(GOLDEN["sightings"][0])
    header["embedding_rows"] = list(range(min(rows, len(header["boxes"]))))
    header["embedding_shape"] = [rows, dim]
    header["embedding_dtype"] = dtype
    payload = raw if not values else np.asarray(values, np.float32).tobytes()
    check_decodes_or_refuses([msgspec.msgpack.encode(header), payload])
