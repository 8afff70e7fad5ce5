"""The linker service on real sockets: bad input, a SIGKILL mid-replay, slow consumers.

The process tests run ``python -m edge.linking`` as a child process and drive it with an
:class:`edge.transport.Publisher` playing the edge node (PUSH in replay, PUB live, bound, as the node
does); the linker connects to it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from linker_scenes import ENGINE_ID, Appearance, People, encode, scene_messages, sighting_batch

from common.configuring import load_config
from common.modality import Modality
from edge.linking import LinkerConfig, LinkerService
from edge.linking.persistence import Journal, load_snapshot
from edge.linking.publishing import decode_published, read_updates, subscribe_identities
from edge.linking.service import STATS_NAME
from edge.messages import EndOfStream, encode_message
from edge.transport import Publisher, TransportSettings

VIS, IR = Modality.VISIBLE, Modality.INFRARED
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_of_producer(seq: int = 0, producer_id: str = "node0") -> EndOfStream:
    return EndOfStream(
        producer_id=producer_id,
        camera_id="",
        seq=seq,
        capture_ts=0.0,
        send_ts=time.time(),
        reason="source_ended",
    )


def overrides(state_dir: Path, endpoint: str, **extra) -> list[str]:
    items = {
        "persistence.state_dir": str(state_dir),
        "persistence.journal_fsync": "false",
        "service.input_endpoints": f"[{endpoint}]",
        "service.publish_endpoint": f"tcp://127.0.0.1:{free_port()}",
        "service.poll_ms": 20,
        "service.stats_interval_s": 0.1,
        "gallery.engine_id": ENGINE_ID,  # pinned: the service never adopts the first sender's engine
        **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]


def start_linker(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "edge.linking", "--log-level", "WARNING", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def read_stats(state_dir: Path) -> dict:
    path = state_dir / STATS_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def wait_for(condition, timeout_s: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise AssertionError(f"linker exited ({process.returncode}) while waiting for {what}:\n{out}")
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ------------------------------------------------------------------------------ bad input (thread)


def test_malformed_truncated_and_foreign_engine_messages_are_counted_and_dropped(tmp_path):
    node = Publisher(TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*", send_timeout_ms=10000))
    config = load_config(
        LinkerConfig, overrides=overrides(tmp_path, node.endpoint, **{"service.expected_producers": 1})
    )
    service = LinkerService(config)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        assert service.ready.wait(10)
        people = People(3, dim=32)
        good = [sighting_batch("cam0", VIS, k, 0.1 * k, [1], people.embed(0, VIS)[None]) for k in range(6)]
        header, raw = encode(good[0])
        foreign = sighting_batch("cam0", VIS, 2, 0.2, [1], people.embed(0, VIS)[None], engine_id="f" * 16)
        wrong_dim = sighting_batch("cam0", VIS, 4, 0.4, [1], np.ones((1, 16), np.float32) / 4)
        sequence = [
            encode(good[0]),
            [b"\x00\x01 not msgpack"],  # garbage
            [header[: len(header) // 2], raw],  # truncated header
            [header, raw[:-10]],  # truncated embeddings frame
            [header, raw, b"extra"],  # too many frames
            [b""],  # empty
            encode(good[1]),
            encode(foreign),  # another engine: refused whole
            encode(good[3]),
            encode(good[1]),  # a duplicate (seq 1 again): counted, dropped
            encode(wrong_dim),  # 16-d embeddings into a 32-d gallery
            encode(good[5]),
            [bytes(f) for f in encode_message(end_of_producer())],
        ]
        for frames in sequence:
            node.send_frames(frames)
        thread.join(20)
        assert not thread.is_alive(), "the linker did not finish after the producer's end-of-stream"
    finally:
        service.stop()
        thread.join(5)
        node.close()
    stats = read_stats(tmp_path)
    assert stats["malformed"] == 5
    assert stats["linker"]["foreign_engine_batches"] == 1
    assert stats["linker"]["wrong_dim_batches"] == 1
    assert stats["received"]["sightings"] == 7  # 4 good + duplicate + foreign + wrong-dim decoded fine
    assert stats["duplicates"] == 1
    assert stats["linker"]["batches"] == 6 and stats["linker"]["embeddings"] == 4
    assert stats["missed_total"] == 0  # the foreign and wrong-dim batches arrived, and were refused
    (update,) = read_updates(config.updates_path)
    assert (update["event"], update["global_id"], update["track_id"]) == ("new", 0, 1)


def test_restart_publishes_journaled_decisions_missing_from_the_update_log(tmp_path):
    """A crash after the journal append but before the update log write: the restart publishes."""
    from edge.linking.assignment import MatchingRules
    from edge.linking.gallery import GalleryConfig
    from edge.linking.linker import IdentityLinker

    linker = IdentityLinker(MatchingRules(min_sightings=1), GalleryConfig())
    people = People(2, dim=16)
    journal = Journal(tmp_path, 1, fsync=False)
    for k, person in enumerate((0, 1)):
        batch, rows = sighting_batch("cam0", VIS, k, 10.0 * k, [k], people.embed(person, VIS)[None])
        journal.append(linker.observe(batch, rows))
    journal.close()
    node = Publisher(TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*"))
    port = free_port()
    args = overrides(tmp_path, node.endpoint, **{"service.publish_endpoint": f"tcp://127.0.0.1:{port}"})
    args += ["matching.min_sightings=1"]
    config = load_config(LinkerConfig, overrides=args)
    service = LinkerService(config)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        assert service.ready.wait(10)
        service.stop()
        thread.join(10)
    finally:
        service.stop()
        node.close()
    lines = read_updates(config.updates_path)
    assert [(line["global_id"], line["event"], line["seq"]) for line in lines] == [
        (0, "new", 0),
        (1, "new", 1),
    ]
    assert [line["journal_seq"] for line in lines] == [2, 3]  # event 1 adopted the engine
    assert read_stats(tmp_path)["republished_after_recovery"] == 2


def test_consumers_subscribe_by_camera(tmp_path):
    import zmq

    node = Publisher(TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*"))
    port = free_port()
    args = overrides(
        tmp_path,
        node.endpoint,
        **{"service.publish_endpoint": f"tcp://127.0.0.1:{port}", "service.expected_producers": 1},
    )
    config = load_config(LinkerConfig, overrides=args + ["matching.min_sightings=1"])
    context = zmq.Context()
    consumer = context.socket(zmq.SUB)
    consumer.connect(f"tcp://127.0.0.1:{port}")
    subscribe_identities(consumer, ["cam1"])  # not cam0, and not cam10
    service = LinkerService(config)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        assert service.ready.wait(10)
        time.sleep(0.3)  # let the subscription reach the PUB socket
        people = People(3, dim=16)
        for k, camera in enumerate(("cam0", "cam1", "cam10")):
            node.send_frames(encode(sighting_batch(camera, VIS, 0, 5.0 * k, [7], people.embed(k, VIS)[None])))
        node.send_frames([bytes(f) for f in encode_message(end_of_producer())])
        thread.join(20)
        received = []
        while consumer.poll(500):
            received.append(decode_published(consumer.recv_multipart()).message)
    finally:
        service.stop()
        thread.join(5)
        consumer.close(0)
        context.term()
        node.close()
    updates = [m for m in received if m.camera_id]
    assert [(m.camera_id, m.track_id, m.event) for m in updates] == [("cam1", 7, "new")]
    assert len(read_updates(config.updates_path)) == 3  # the log has every camera


# ----------------------------------------------------------------------- SIGKILL mid-replay (process)


def test_sigkill_mid_replay_keeps_every_published_identity_and_the_replay_completes(tmp_path):
    people = People(24, dim=64, seed=11)
    appearances = []
    for p in range(24):
        appearances.append(Appearance(p, "rgb0", VIS, 1 + p, 0.4 * p, 1.2))
        appearances.append(Appearance(p, "ir0", IR, 101 + p, 0.4 * p + 1.5, 1.2))
    messages = scene_messages(people, appearances) + [(end_of_producer(), None)]
    sent_before_kill: list[int] = []
    node = Publisher(TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*", send_timeout_ms=30000))
    args = overrides(
        tmp_path,
        node.endpoint,
        **{
            "service.expected_producers": 1,
            "service.receive_hwm": 5,
            "persistence.snapshot_every_events": 8,
            "persistence.journal_fsync": "true",
        },
    )
    progress = {"sent": 0}
    killed = threading.Event()

    def send_all():
        for index, item in enumerate(messages):
            if index == 3 * len(messages) // 4:
                killed.wait(60)  # however slow the machine, the kill lands before the replay ends
            node.send_frames(encode(item))
            progress["sent"] += 1
            time.sleep(0.002)  # a paced replay: messages are in flight when the kill comes

    linker = start_linker(args)
    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    log = tmp_path / "identity_updates.jsonl"
    try:
        wait_for(lambda: len(read_updates(log)) >= 12, 30, "12 published identity updates", linker)
        linker.send_signal(signal.SIGKILL)
        linker.wait(10)
        sent_before_kill.append(progress["sent"])
        killed.set()
        before = read_updates(log)
        assert progress["sent"] < len(messages), "the replay finished before the kill; slow the sender down"
        restarted = start_linker(args)
        assert restarted.wait(60) == 0, restarted.stdout.read().decode(errors="replace")
        sender.join(30)
        assert not sender.is_alive()
    finally:
        killed.set()
        for process in (linker, locals().get("restarted")):
            if process is not None and process.poll() is None:
                process.kill()
        node.close()
    after = read_updates(log)
    stats = read_stats(tmp_path)
    print(
        f"kill after {sent_before_kill[0]}/{len(messages)} messages sent, {len(before)} updates published; "
        f"restart: {stats['republished_after_recovery']} republished, {stats['missed_total']} missed, "
        f"{len(after)} updates in all"
    )
    # 1. Nothing published before the kill is lost or rewritten: the log only grew.
    assert after[: len(before)] == before
    # 2. No renumbering: each identity number was introduced once, and numbers given out after the
    #    restart are new ones.
    introduced = [u["global_id"] for u in after if u["event"] == "new"]
    assert len(introduced) == len(set(introduced))
    first_seen: dict[int, int] = {}
    for index, u in enumerate(after):
        first_seen.setdefault(u["global_id"], index)
    max_before = max(u["global_id"] for u in before)
    for u in after[len(before) :]:
        if first_seen[u["global_id"]] >= len(before):
            assert u["global_id"] > max_before
    # 3. Every identity published before the kill still exists at the end unless a published update
    #    moved all its tracks away (TTL is an hour here: nothing expires).
    final = {}
    for u in after:
        final[(u["camera_id"], u["track_id"])] = u["global_id"]
    meta, _ = load_snapshot(tmp_path)
    alive = {item["global_id"] for item in meta["linker"]["gallery"]["identities"]}
    for u in before:
        assert final[(u["camera_id"], u["track_id"])] in alive
    # 4. The replay completed: both cameras and the producer ended, the last seq of each camera was
    #    received; what a dead linker had taken off the wire is reported as missed, not hidden.
    assert stats["ended_producers"] == ["node0"]
    assert stats["ended_cameras"] == ["node0/ir0", "node0/rgb0"]
    batches = {c: sum(1 for m, _ in messages if getattr(m, "camera_id", "") == c) for c in ("rgb0", "ir0")}
    assert stats["last_seq"]["node0/rgb0"] == batches["rgb0"] - 1
    assert stats["last_seq"]["node0/ir0"] == batches["ir0"] - 1
    assert stats["missed_total"] <= sent_before_kill[0]
    # Tracks that started after the restart were linked too: most people got one identity for both
    # cameras (a few whose sightings were in flight at the kill may have fewer decisions).
    linked = sum(final.get(("rgb0", 1 + p)) == final.get(("ir0", 101 + p)) is not None for p in range(24))
    assert linked >= 20
    assert sum(1 for p in range(24) if ("ir0", 101 + p) in final) >= 22


# ---------------------------------------------------------------------- slow consumer (process)


@pytest.mark.parametrize("mode", ["live", "replay"])
def test_slow_linker_live_drops_and_counts_with_bounded_memory_replay_loses_nothing(tmp_path, mode):
    # Full-size float16 embeddings, 28 KiB each: replay sends more than loopback TCP buffers hold.
    dim, total = 14336, 4000 if mode == "live" else 800
    node = Publisher(
        TransportSettings(mode=mode, endpoint="tcp://127.0.0.1:*", send_hwm=10, send_timeout_ms=30000)
    )
    args = overrides(
        tmp_path,
        node.endpoint,
        **{"service.mode": mode, "service.receive_hwm": 10, "service.expected_producers": 1},
    )
    linker = start_linker(args)
    rng = np.random.default_rng(0)
    person = rng.standard_normal(dim).astype(np.float32)
    person /= np.linalg.norm(person)
    t0 = time.time() if mode == "live" else 0.0  # live capture times are wall-clock (checked by skew)
    frames = [encode(sighting_batch("cam0", VIS, k, t0 + 0.04 * k, [1], person[None])) for k in range(total)]
    try:
        if mode == "live":
            # Subscriptions take a moment, and the first batches warm the linker up (gallery,
            # buffers): send paced until it has handled 10, then measure its memory.
            k = 0
            while read_stats(tmp_path).get("received", {}).get("sightings", 0) < 10:
                node.send_frames(frames[k])
                k += 1
                time.sleep(0.05)
                assert linker.poll() is None and k < 200
            start = k
        else:
            start = 0
            wait_for(lambda: read_stats(tmp_path), 20, "the linker's first stats", linker)
        baseline = rss_mb(linker.pid)
        linker.send_signal(signal.SIGSTOP)  # the consumer stops reading
        progress = {"sent": 0}

        def send_rest():
            for f in frames[start:]:
                node.send_frames(f)
                progress["sent"] += 1

        sender = threading.Thread(target=send_rest, daemon=True)
        sender.start()
        sender.join(2.0)
        if mode == "replay":
            assert sender.is_alive() and progress["sent"] < total - start  # the sender waits
        else:
            assert not sender.is_alive() and node.dropped > 0  # live: never waits, drops
        linker.send_signal(signal.SIGCONT)
        sender.join(30)
        assert not sender.is_alive()
        time.sleep(0.5)  # live: let the linker drain what it had queued
        if mode == "live":
            while not node.send(end_of_producer()):
                time.sleep(0.05)
        else:
            node.send(end_of_producer())
        assert linker.wait(30) == 0, linker.stdout.read().decode(errors="replace")
        stats = read_stats(tmp_path)
    finally:
        if linker.poll() is None:
            os.kill(linker.pid, signal.SIGCONT)
            linker.kill()
        node.close()
    received = stats["received"]["sightings"]
    if mode == "replay":
        assert received == total and stats["missed_total"] == 0
    else:
        # The node refused what its queue could not take (counted there); the linker counted every
        # hole up to the last batch it got, whatever queue dropped it (node's PUB or its own SUB).
        assert node.dropped > 0 and node.sent + node.dropped >= total + 1
        assert stats["missed_total"] >= node.dropped - (total - 1 - stats["last_seq"]["node0/cam0"])
        assert received + stats["missed_total"] == stats["last_seq"]["node0/cam0"] + 1
        # 4000 x 28 KiB = 109 MiB went out while the linker slept; its memory did not follow (what
        # it does grow by is allocator churn, not a queue: it does not scale with the flood).
        print(
            f"live: sent {node.sent}, dropped by the node {node.dropped}, linker missed {stats['missed_total']}, "
            f"received {received}, peak RSS {stats['max_rss_mb']:.0f} MiB vs {baseline:.0f} MiB before"
        )
        assert stats["max_rss_mb"] - baseline < 40, (stats["max_rss_mb"], baseline)


# ------------------------------------------------------------------------------------------- CLI


def test_cli_loads_the_shipped_config_and_rejects_unknown_keys():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "edge.linking", "--config", "configs/linker.yaml", "--print-config"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "cosine_min_cross: null" in done.stdout and "mode: replay" in done.stdout
    done = subprocess.run(
        command + ["matching.cosine_min=0.4"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "did you mean 'matching.cosine_min_same'" in done.stderr


def test_importing_the_linker_loads_neither_faiss_nor_zmq():
    code = (
        "import sys, edge.linking, edge.linking.config, edge.linking.service; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('faiss', 'zmq', 'torch')))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------ deterministic replay order (thread)


def _replay_with_random_delays(state_dir: Path, per_producer: dict[str, list], seed: int) -> bytes:
    """One replay: each producer its own PUSH socket and sender thread, random pauses between sends."""
    nodes = {
        p: Publisher(TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*", send_timeout_ms=30000))
        for p in per_producer
    }
    endpoints = ",".join(n.endpoint for n in nodes.values())
    args = overrides(state_dir, endpoints, **{"service.expected_producers": len(nodes)})
    config = load_config(LinkerConfig, overrides=args + ["matching.min_sightings=2"])
    service = LinkerService(config)
    thread = threading.Thread(target=service.run)
    thread.start()

    def send(producer: str, rng: np.random.Generator) -> None:
        for item in per_producer[producer]:
            if rng.random() < 0.3:
                time.sleep(float(rng.uniform(0.0, 0.01)))
            nodes[producer].send_frames(encode(item))

    try:
        assert service.ready.wait(10)
        senders = [
            threading.Thread(target=send, args=(p, np.random.default_rng([seed, k])))
            for k, p in enumerate(sorted(nodes))
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(60)
        thread.join(60)
        assert not thread.is_alive(), "the linker did not finish after every producer's end-of-stream"
    finally:
        service.stop()
        thread.join(5)
        for node in nodes.values():
            node.close()
    return config.updates_path.read_bytes()


def test_the_same_replay_with_random_send_delays_gives_byte_identical_identity_updates(tmp_path):
    """Three producers (two visible cameras, one infrared) whose messages race each other."""
    people = People(8, dim=32, seed=3)
    cameras = {"node-a": ("rgb0", VIS), "node-b": ("rgb1", VIS), "node-c": ("ir0", IR)}
    per_producer = {}
    for k, (producer, (camera, modality)) in enumerate(cameras.items()):
        appearances = [
            Appearance(p, camera, modality, 10 * k + p, 0.5 * p + 0.7 * k, 1.5)
            for p in range(8)
            if (p + k) % 3
        ]
        per_producer[producer] = scene_messages(people, appearances, producer_id=producer) + [
            (end_of_producer(producer_id=producer), None)
        ]
    logs = [_replay_with_random_delays(tmp_path / f"run{run}", per_producer, run) for run in range(3)]
    assert logs[0] and logs[0] == logs[1] == logs[2]
    updates = [json.loads(line) for line in logs[0].splitlines()]
    assert all("send_ts" not in u for u in updates)  # wall clock is left out of a replay's log
    cross = [u for u in updates if u["matched_modality"] and u["matched_modality"] != u["modality"]]
    assert cross, "the scene should link some tracks across modalities"
    stats = read_stats(tmp_path / "run0")
    assert stats["ordering"]["forced_releases"] == 0 and stats["ordering"]["buffered"] == 0
