"""The linker service against hostile input and damaged state (issue 12): each case used to stop it,
poison its state, or pass silently; now each is refused, counted, and the linker goes on."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import msgspec
import numpy as np
import pytest
from linker_scenes import ENGINE_ID, People, encode, sighting_batch
from test_linker_service import end_of_producer, free_port, overrides, read_stats

from common.configuring import load_config
from common.modality import Modality
from edge.linking import LinkerConfig, LinkerService
from edge.linking.assignment import MatchingRules
from edge.linking.events import IdentityDecision
from edge.linking.gallery import GalleryConfig
from edge.linking.linker import IdentityLinker
from edge.linking.persistence import Journal, encode_journal_line, journal_segments
from edge.linking.publishing import read_updates
from edge.messages import encode_message
from edge.transport import Publisher, TransportSettings

VIS, IR = Modality.VISIBLE, Modality.INFRARED
REPO = Path(__file__).resolve().parents[1]


def raw_batch(number: int, ts: float, track: int = 1, person: int = 0, **fields) -> list[bytes]:
    """Batch ``number`` (its seq)'s frames with header ``fields`` forced in (past the encoder's checks)."""
    people = People(3, dim=16)
    header, raw = encode(sighting_batch("cam0", VIS, number, ts, [track], people.embed(person, VIS)[None]))
    decoded = msgspec.msgpack.decode(bytes(header))
    decoded.update(fields)
    return [msgspec.msgpack.encode(decoded), bytes(raw)]


def run_service(tmp_path: Path, sequence: list[list[bytes]], *extra: str) -> tuple[dict, LinkerConfig]:
    """Serve one replay: send ``sequence``, then the producer's end; return the final stats."""
    node = Publisher(TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*", send_timeout_ms=10000))
    try:
        args = overrides(tmp_path, node.endpoint, **{"service.expected_producers": 1})
        config = load_config(LinkerConfig, overrides=[*args, "matching.min_sightings=1", *extra])
    except Exception:
        node.close()
        raise
    service = LinkerService(config)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        assert service.ready.wait(10)
        for frames in sequence:
            node.send_frames(frames)
        node.send_frames([bytes(f) for f in encode_message(end_of_producer())])
        thread.join(30)
        assert not thread.is_alive(), "the linker did not finish"
    finally:
        service.stop()
        thread.join(5)
        node.close()
    return read_stats(tmp_path), config


def test_poison_values_are_dropped_and_counted_and_the_linker_goes_on(tmp_path):
    """track_id -1 (was journaled, then every restart exited 1), seq 2**64-1 (overflowed the
    heartbeat's missed counter), capture_ts 1e300 (emptied the gallery), nested unknown fields
    (RecursionError): all refused at decode; the good batches around them link as before."""
    deep = msgspec.Raw(b"\x91" * 5000 + b"\xc0")
    sequence = [
        raw_batch(0, 1.0, track=1, person=0),
        raw_batch(1, 1.1, track_ids=[-1]),
        raw_batch(2, 1.2, seq=2**64 - 1),
        raw_batch(3, 1.3, seq=2**64 - 1),
        raw_batch(4, 1.4, capture_ts=1e300),
        raw_batch(5, 1.5, unknown=deep),
        raw_batch(6, 1.6, track=2, person=1),
    ]
    stats, config = run_service(tmp_path, sequence)
    assert stats["malformed"] == 5
    assert stats["identities"] == 2 and stats["linker"]["decisions_new"] == 2
    assert [u["track_id"] for u in read_updates(config.updates_path)] == [1, 2]
    assert stats["missed_total"] == 5  # the refused batches show up as lost seqs, not as 2**64
    # ... and the state on disk restarts cleanly (exit 0, the same identities).
    args = overrides(tmp_path, "tcp://127.0.0.1:1", **{"service.expected_producers": 0})
    again = LinkerService(load_config(LinkerConfig, overrides=args))
    thread = threading.Thread(target=again.run)
    thread.start()
    assert again.ready.wait(10)
    again.stop()
    thread.join(10)
    assert read_stats(tmp_path)["identities"] == 2


def test_a_capture_time_far_ahead_of_the_replay_clock_is_refused_and_identities_survive(tmp_path):
    """A plausible-looking capture_ts 1e9 s ahead: before, the clock jumped and TTL evicted everything."""
    sequence = [
        raw_batch(0, 1.0, track=1, person=0),
        raw_batch(1, 1e9, track=2, person=1),
        raw_batch(2, 2.0, track=3, person=2),
    ]
    stats, _ = run_service(tmp_path, sequence)
    assert stats["clock_refused"] == 1 and stats["malformed"] == 0
    assert stats["identities"] == 2 and stats["linker"]["evicted_ttl"] == 0


def test_the_first_sender_does_not_pin_the_engine(tmp_path):
    """Before: with gallery.engine_id "" whoever sent first pinned the engine for good."""
    people = People(3, dim=16)
    intruder = encode(
        sighting_batch("cam0", VIS, 0, 1.0, [9], people.embed(0, VIS)[None], engine_id="e" * 16)
    )
    sequence = [intruder, raw_batch(1, 1.1, track=1), raw_batch(2, 1.2, track=2, person=1)]
    stats, config = run_service(tmp_path, sequence, f"gallery.engine_id={ENGINE_ID}")
    assert stats["engine_id"] == ENGINE_ID and stats["linker"]["foreign_engine_batches"] == 1
    assert stats["identities"] == 2
    # Without a configured engine, nothing is adopted from the wire unless asked for.
    other = tmp_path / "unpinned"
    stats, _ = run_service(other, [intruder, raw_batch(1, 1.1)], "gallery.engine_id=''")
    assert stats["engine_id"] == "" and stats["identities"] == 0
    assert stats["linker"]["foreign_engine_batches"] == 2
    adopted = tmp_path / "adopting"
    stats, _ = run_service(adopted, [raw_batch(0, 1.0)], "gallery.engine_id=''", "gallery.adopt_engine=true")
    assert stats["engine_id"] == ENGINE_ID and stats["identities"] == 1


def test_the_engine_comes_from_the_calibration_file_or_sidecar(tmp_path):
    calibration = tmp_path / "model.onnx.linking.json"
    calibration.write_text(json.dumps({"engine_id": ENGINE_ID, "cosine_min_same": 0.5}))
    stats, _ = run_service(
        tmp_path / "state", [raw_batch(0, 1.0)], "gallery.engine_id=''", f"calibration.engine={calibration}"
    )
    assert stats["engine_id"] == ENGINE_ID and stats["identities"] == 1


def test_a_poisoned_journal_entry_is_quarantined_and_the_service_starts(tmp_path):
    """Before: one journaled entry that IdentityUpdate rejected made every restart exit 1."""
    linker = IdentityLinker(MatchingRules(min_sightings=1), GalleryConfig(engine_id=ENGINE_ID))
    people = People(3, dim=16)
    journal = Journal(tmp_path, 1, fsync=False)
    events = []
    for k in range(3):
        batch, rows = sighting_batch("cam0", VIS, k, 1.0 + k, [k], people.embed(k, VIS)[None])
        new = linker.observe(batch, rows)
        journal.append(new)
        events += new
    journal.close()
    path = journal_segments(tmp_path)[-1]
    lines = path.read_bytes().splitlines(keepends=True)
    index = next(i for i, e in enumerate(events) if isinstance(e, IdentityDecision) and e.track_id == 1)
    poisoned = dataclasses.replace(events[index], embedding=np.ones(5, np.float32))
    lines[index] = encode_journal_line(poisoned)
    path.write_bytes(b"".join(lines))
    for attempt in range(2):  # and it stays started: no crash loop
        args = overrides(tmp_path, "tcp://127.0.0.1:1")
        service = LinkerService(load_config(LinkerConfig, overrides=args))
        thread = threading.Thread(target=service.run)
        thread.start()
        assert service.ready.wait(10), f"attempt {attempt}: the service did not start"
        service.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert service.recovered.quarantined == (1 if attempt == 0 else 0)
    assert (tmp_path / "quarantine" / "journal.jsonl").is_file()
    assert read_stats(tmp_path)["identities"] >= 2


def test_a_failing_message_is_rolled_back_not_fatal(tmp_path, monkeypatch):
    """Defence in depth: if the linker raises on a message that decoding let through, the message
    is dropped, counted and the linker rebuilt from disk; later messages are handled as usual."""
    original = IdentityLinker.observe

    def observe(self, batch, embeddings):
        events = original(self, batch, embeddings)
        if batch.seq == 1:
            raise RuntimeError("a bug triggered by this batch")
        return events

    monkeypatch.setattr(IdentityLinker, "observe", observe)
    stats, config = run_service(
        tmp_path,
        [
            raw_batch(0, 1.0, track=1),
            raw_batch(1, 1.1, track=2, person=1),
            raw_batch(2, 1.2, track=3, person=2),
        ],
    )
    assert stats["failed_messages"] == 1 and "a bug" in stats["last_failure"]
    assert [u["track_id"] for u in read_updates(config.updates_path)] == [1, 3]
    assert stats["identities"] == 2


def test_an_oversized_frame_disconnects_the_peer(tmp_path):
    """Before: a 300 MiB frame was accepted (no ZMQ_MAXMSGSIZE). Scaled down: 2 MiB against 1 MiB."""
    from edge.transport import Subscriber

    assert TransportSettings().max_message_bytes <= 64 * 2**20 < 300 * 2**20
    node = Publisher(TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*", send_timeout_ms=3000))
    receiver = Subscriber(TransportSettings(mode="replay", endpoint=node.endpoint, max_message_bytes=1 << 20))
    try:
        header, raw = raw_batch(0, 1.0)
        node.send_frames([header, b"\0" * (2 << 20)])
        assert receiver.receive(timeout_ms=1500) is None
    finally:
        receiver.close()
        node.close()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["persistence.state_dir={file}"], "is a file, not a directory"),
        (["service.publish_endpoint=tcp://127.0.0.1:70000"], "1..65535"),
        (["service.input_endpoints=[tcp://127.0.0.1:0]"], "1..65535"),
        (["calibration.engine={missing}"], "does not exist"),
        (
            [
                "service.curve_secret_key_file={missing}",
                "service.curve_node_keys=[x]",
                "service.curve_subscriber_keys=[y]",
            ],
            "does not exist",
        ),
    ],
)
def test_bad_linker_settings_are_one_line_errors_not_tracebacks(tmp_path, args, fragment):
    state = tmp_path / "state"
    (tmp_path / "afile").write_text("x")
    names = {"file": tmp_path / "afile", "missing": tmp_path / "missing.onnx"}
    base = [
        f"persistence.state_dir={state}",
        f"service.publish_endpoint=tcp://127.0.0.1:{free_port()}",
        "service.input_endpoints=[tcp://127.0.0.1:1]",
        "service.expected_producers=1",
    ]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge.linking",
            "--log-level",
            "ERROR",
            *base,
            *[a.format(**names) for a in args],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 2, run.stderr
    assert fragment in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: "), run.stderr


def test_a_heartbeat_with_huge_counters_still_encodes(tmp_path):
    stats, _ = run_service(tmp_path, [raw_batch(2**48, 1.0)])  # the largest seq accepted: 2**48 missed
    assert stats["missed_total"] == 2**48
