"""Capture-time order across producers (edge.linking.ordering): merge, release rules, live window.

The service-level check (the same replay, sent with random delays from several producers, gives
byte-identical identity updates) is in test_linker_service.py.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from common.modality import Modality
from edge.linking.ordering import Arrival, LiveReorder, OrderingSettings, ReplayMerge
from edge.messages import Decoded, EndOfStream, Heartbeat, SightingBatch


def batch(producer: str, camera: str, seq: int, ts: float) -> SightingBatch:
    return SightingBatch(
        producer_id=producer,
        camera_id=camera,
        seq=seq,
        capture_ts=ts,
        send_ts=time.time(),
        modality=Modality.VISIBLE,
        frame_index=seq,
        frame_width=64,
        frame_height=64,
    )


def end(producer: str, camera: str = "", seq: int = 0) -> EndOfStream:
    # The sender's wall clock as capture_ts, as a node sends it: ordering must not key on it.
    return EndOfStream(
        producer_id=producer,
        camera_id=camera,
        seq=seq,
        capture_ts=time.time(),
        send_ts=0.0,
        reason="source_ended",
    )


def arrival(message, received: float = 0.0) -> Arrival:
    return Arrival(Decoded(message, None), received=received)


def streams(seed: int) -> dict[str, list]:
    """Three producers, one with two cameras at different frame rates, each ending its cameras then itself."""
    rng = np.random.default_rng(seed)
    out = {}
    for p, cameras in (("a", {"a0": 0.1}), ("b", {"b0": 0.1, "b1": 0.15}), ("c", {"c0": 0.07})):
        messages = []
        for camera, step in cameras.items():
            n = int(rng.integers(5, 12))
            messages += [batch(p, camera, k, round(k * step + 0.01 * rng.random(), 4)) for k in range(n)]
        messages.sort(key=lambda m: m.capture_ts)  # a node interleaves its cameras by capture time
        seqs = {c: sum(1 for m in messages if m.camera_id == c) for c in cameras}
        messages += [end(p, c, seqs[c]) for c in cameras] + [end(p)]
        out[p] = messages
    return out


def interleave(per_producer: dict[str, list], rng: random.Random) -> list:
    """One arrival order: each producer's messages in its own order, producers mixed at random."""
    cursors = {p: 0 for p in per_producer}
    out = []
    while cursors:
        p = rng.choice(sorted(cursors))
        out.append(per_producer[p][cursors[p]])
        cursors[p] += 1
        if cursors[p] == len(per_producer[p]):
            del cursors[p]
    return out


def ident(message) -> tuple:
    return (type(message).__name__, message.producer_id, message.camera_id, message.seq)


def run_merge(messages: list, expected: int, settings: OrderingSettings | None = None) -> list[tuple]:
    merge = ReplayMerge(settings or OrderingSettings(), expected)
    out = []
    for m in messages:
        out += [ident(a.decoded.message) for a in merge.push(arrival(m))]
    assert merge.buffered == 0
    return out


def test_replay_merge_gives_one_order_whatever_the_interleaving():
    per_producer = streams(0)
    total = sum(len(v) for v in per_producer.values())
    orders = {tuple(run_merge(interleave(per_producer, random.Random(k)), 3)) for k in range(30)}
    assert len(orders) == 1
    order = next(iter(orders))
    assert len(order) == total
    # Sightings come out in capture-time order across producers (ties by producer, camera, seq).
    by_id = {ident(m): m for ms in per_producer.values() for m in ms}
    keys = [(by_id[i].capture_ts, i[1], i[2], i[3]) for i in order if i[0] == "SightingBatch"]
    assert keys == sorted(keys)
    # A camera ends right after its last sighting; producers end last.
    for p, ms in per_producer.items():
        for camera in {m.camera_id for m in ms if m.camera_id}:
            last = max(k for k, i in enumerate(order) if i[0] == "SightingBatch" and i[2] == camera)
            eos = order.index(("EndOfStream", p, camera, sum(1 for m in ms if m.camera_id == camera) - 1))
            assert eos > last
    assert {i[1] for i in order[-3:]} == {"a", "b", "c"} and all(i[2] == "" for i in order[-3:])


def test_nothing_is_released_before_every_expected_producer_was_heard_from():
    merge = ReplayMerge(OrderingSettings(), expected_producers=2)
    assert merge.push(arrival(batch("a", "a0", 0, 0.0))) == []
    assert merge.push(arrival(batch("a", "a0", 1, 0.1))) == []
    out = merge.push(arrival(batch("b", "b0", 0, 0.05)))
    assert [ident(x.decoded.message)[1:] for x in out] == [("a", "a0", 0), ("b", "b0", 0)]
    # "a" waits for b's next message: it may still be earlier than 0.1.
    assert merge.push(arrival(batch("a", "a0", 2, 0.2))) == []
    # b's end releases b: a's messages flow without waiting (b's end itself sorts after them all).
    out = merge.push(arrival(end("b")))
    assert [ident(x.decoded.message)[1:] for x in out] == [("a", "a0", 1), ("a", "a0", 2)]
    assert [ident(x.decoded.message)[3] for x in merge.push(arrival(batch("a", "a0", 3, 0.3)))] == [3]
    out = merge.push(arrival(end("a")))
    assert [ident(x.decoded.message)[1] for x in out] == ["a", "b"] and merge.buffered == 0


def test_heartbeats_pass_straight_through():
    merge = ReplayMerge(OrderingSettings(), expected_producers=2)
    merge.push(arrival(batch("a", "a0", 0, 0.0)))
    heartbeat = Heartbeat(
        producer_id="a", camera_id="", seq=0, capture_ts=1.0, send_ts=1.0, mode="replay", uptime_s=1.0
    )
    assert [a.decoded.message for a in merge.push(arrival(heartbeat))] == [heartbeat]
    assert merge.buffered == 1


def test_buffer_bound_gives_up_the_order_and_counts_it():
    merge = ReplayMerge(OrderingSettings(replay_max_buffered=3), expected_producers=2)
    released = []
    for k in range(6):
        released += merge.push(arrival(batch("a", "a0", k, 0.1 * k)))
    assert merge.buffered == 3 and len(released) == 3
    assert merge.counters.forced_releases == 3


def test_a_silent_producer_is_bypassed_after_the_stall_time():
    now = [0.0]
    merge = ReplayMerge(OrderingSettings(replay_stall_s=5.0), expected_producers=2, clock=lambda: now[0])
    merge.push(arrival(batch("a", "a0", 0, 0.0), received=0.0))
    merge.push(arrival(batch("b", "b0", 0, 0.0), received=0.0))
    merge.push(arrival(batch("a", "a0", 1, 0.1), received=1.0))
    now[0] = 4.0
    assert merge.due() == []
    now[0] = 6.5
    assert [ident(a.decoded.message)[3] for a in merge.due()] == [1]
    assert merge.counters.forced_releases == 1
    assert ReplayMerge(OrderingSettings(replay_stall_s=0.0), 2).due() == []


def test_drain_releases_everything_in_merge_order():
    merge = ReplayMerge(OrderingSettings(), expected_producers=3)
    for m in (
        batch("b", "b0", 0, 0.2),
        batch("a", "a0", 0, 0.3),
        batch("a", "a0", 1, 0.4),
        batch("b", "b0", 1, 0.1),
    ):
        assert merge.push(arrival(m)) == []
    assert [ident(a.decoded.message)[1:] for a in merge.drain()] == [
        ("b", "b0", 0),
        ("b", "b0", 1),  # each producer's own order is kept: b's 0.1 came after its 0.2
        ("a", "a0", 0),
        ("a", "a0", 1),
    ]


def test_live_window_orders_what_arrives_within_it_and_counts_late_sightings():
    now = [100.0]
    live = LiveReorder(OrderingSettings(reorder_window_s=0.2), clock=lambda: now[0])
    assert live.push(arrival(batch("a", "a0", 0, 10.00), received=100.0)) == []
    assert live.push(arrival(batch("b", "b0", 0, 9.95), received=100.0)) == []
    # Capture time 10.30 is 0.2 s past both: they are released, earliest first.
    out = live.push(arrival(batch("a", "a0", 1, 10.30), received=100.0))
    assert [ident(a.decoded.message)[1] for a in out] == ["b", "a"]
    late = live.push(arrival(batch("b", "b0", 1, 9.99), received=100.0))
    assert len(late) == 1 and live.counters.late == 1
    # A quiet system: what waited 0.2 s on the linker's clock goes anyway.
    now[0] = 100.25
    assert [ident(a.decoded.message)[3] for a in live.due()] == [1]
    assert live.buffered == 0


@pytest.mark.parametrize(
    "bad", [{"reorder_window_s": -1.0}, {"replay_max_buffered": 0}, {"replay_stall_s": -2}]
)
def test_settings_are_range_checked(bad):
    with pytest.raises(ValueError, match="ordering"):
        OrderingSettings(**bad)
