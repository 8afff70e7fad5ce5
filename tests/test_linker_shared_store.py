"""Several linkers on one Milvus identity store (edge/linking/shared_store.py), against a real
milvus-lite server process started here (``python -m milvus_lite server``, offline, ~2 s).

* two ``python -m edge.linking`` processes, one person walking from a visible camera of linker A to
  an infrared camera of linker B: B finds A's identity in the store and gives the person A's id;
  another person, seen only by B, gets a new id from B's block (ids never collide);
* the store goes down: the linker keeps deciding locally, and publishes what it missed when the
  store is back;
* a taken linker index is refused; rows that come back malformed are dropped, never imported.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.configuring import load_config
from common.modality import Modality
from edge.linking import LinkerConfig
from edge.linking.assignment import MatchingRules
from edge.linking.events import EngineAdopted
from edge.linking.gallery import GLOBAL_ID_BLOCK, GalleryConfig
from edge.linking.linker import IdentityLinker
from edge.linking.publishing import read_updates
from edge.linking.shared_store import SharedIdentities, SharedStore, SharedStoreConfig, SharedStoreError
from edge.messages import EndOfStream, encode_message
from edge.transport import Publisher, TransportSettings
from tests.linker_scenes import ENGINE_ID, Appearance, People, encode, feed, scene_messages
from tests.test_linker_service import overrides, read_stats, start_linker, wait_for

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

VIS, IR = Modality.VISIBLE, Modality.INFRARED
DIM = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MilvusServer:
    """A milvus-lite gRPC server in its own process (what a Milvus deployment is to the linkers)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir, self.port = data_dir, port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> MilvusServer:
        command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        from pymilvus import MilvusClient

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"milvus-lite exited: {self.process.stdout.read().decode(errors='replace')}"
                )
            try:
                client = MilvusClient(uri=self.uri, timeout=1.0)
                client.list_collections()
                client.close()
                return self
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        raise AssertionError(f"milvus-lite did not answer on {self.uri} within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


@pytest.fixture
def milvus(tmp_path):
    server = MilvusServer(tmp_path / "milvus").start()
    yield server
    server.stop()


def rows_of(uri: str, global_id: int) -> list[dict]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=5.0)
    try:
        return client.query(
            f"mpanet_identities_{ENGINE_ID}",
            filter=f"global_id == {global_id}",
            output_fields=["linker_id", "camera_id"],
        )
    finally:
        client.close()


# ----------------------------------------------------------------------- two linker processes


def node_frames(appearances: list[Appearance], producer_id: str) -> list[list[bytes]]:
    people = People(2, dim=DIM, seed=3)  # the same people for both nodes
    return [encode(m) for m in scene_messages(people, appearances, producer_id=producer_id)]


def end_of_producer(producer_id: str) -> list[bytes]:
    eos = EndOfStream(
        producer_id=producer_id,
        camera_id="",
        seq=0,
        capture_ts=0.0,
        send_ts=time.time(),
        reason="source_ended",
    )
    return [bytes(f) for f in encode_message(eos)]


def test_a_person_walking_from_one_linker_to_another_keeps_the_global_id(tmp_path, milvus):
    nodes = {site: Publisher(TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*")) for site in "ab"}
    linkers, dirs = {}, {}
    try:
        for index, site in enumerate("ab", start=1):
            dirs[site] = tmp_path / f"linker-{site}"
            args = overrides(
                dirs[site],
                nodes[site].endpoint,
                **{
                    "service.linker_id": f"site-{site}",
                    "service.expected_producers": 1,
                    "shared.uri": milvus.uri,
                    "shared.linker_index": index,
                    "shared.publish_interval_s": 0.05,
                },
            )
            linkers[site] = start_linker(args)
        # Person 0 crosses linker A's visible camera.
        for frames in node_frames([Appearance(0, "a-vis", VIS, 1, 0.0, 1.0)], "node-a"):
            nodes["a"].send_frames(frames)

        def a_published():
            shared = read_stats(dirs["a"]).get("shared", {})
            return shared.get("published_identities", 0) >= 1 and shared.get("pending", 1) == 0

        wait_for(a_published, 60, "linker A to publish person 0", linkers["a"])
        # Then linker B's infrared camera: person 0 again, and person 1 whom no linker has seen.
        walk = [Appearance(0, "b-ir", IR, 1, 5.0, 1.0), Appearance(1, "b-ir", IR, 2, 5.0, 1.0)]
        for frames in node_frames(walk, "node-b"):
            nodes["b"].send_frames(frames)
        for site in "ab":
            nodes[site].send_frames(end_of_producer(f"node-{site}"))
        for site in "ab":
            assert linkers[site].wait(60) == 0, linkers[site].stdout.read().decode(errors="replace")
    finally:
        for process in linkers.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)
        for node in nodes.values():
            node.close()
    a = [
        (u["camera_id"], u["track_id"], u["event"], u["global_id"])
        for u in read_updates(dirs["a"] / "identity_updates.jsonl")
    ]
    b = [
        (u["camera_id"], u["track_id"], u["event"], u["global_id"])
        for u in read_updates(dirs["b"] / "identity_updates.jsonl")
    ]
    person0 = 1 * GLOBAL_ID_BLOCK  # linker A's first id
    assert a == [("a-vis", 1, "new", person0)]
    assert ("b-ir", 1, "matched", person0) in b  # found in the shared store
    assert ("b-ir", 2, "new", 2 * GLOBAL_ID_BLOCK) in b  # linker B's own block
    matched = next(u for u in read_updates(dirs["b"] / "identity_updates.jsonl") if u["track_id"] == 1)
    assert matched["matched_camera_id"] == "a-vis"
    stats_b = read_stats(dirs["b"])["shared"]
    assert stats_b["lookup_hits"] == 1 and stats_b["failures"] == 0
    # Both linkers' evidence of person 0 is in the store, each under its own rows.
    assert {(r["linker_id"], r["camera_id"]) for r in rows_of(milvus.uri, person0)} == {
        ("site-a", "a-vis"),
        ("site-b", "b-ir"),
    }


# ---------------------------------------------------------------------- the store goes down


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def shared_linker(uri: str, index: int, clock: Clock) -> tuple[IdentityLinker, SharedIdentities]:
    config = SharedStoreConfig(
        uri=uri, linker_index=index, publish_interval_s=0.0, retry_after_s=5.0, timeout_s=2.0
    )
    linker = IdentityLinker(
        MatchingRules(min_sightings=1), GalleryConfig(global_id_base=config.global_id_base)
    )
    shared = SharedIdentities(config, f"linker{index}", clock=clock)
    linker.shared = shared
    linker.apply(EngineAdopted(1, ENGINE_ID, DIM))
    return linker, shared


def test_the_linker_works_locally_while_the_store_is_down_and_catches_up(tmp_path):
    server = MilvusServer(tmp_path / "milvus").start()
    clock = Clock()
    people = People(4, dim=DIM, seed=5)
    linker, shared = shared_linker(server.uri, 1, clock)
    try:
        events = feed(linker, "cam0", VIS, 0.0, {1: people.embed(0, VIS, noise=0.0)})
        shared.note(events, linker.gallery)
        assert shared.flush(linker.gallery)
        server.stop()
        # Down: decisions go on locally (new ids from this linker's block), nothing is lost.
        events = feed(linker, "cam0", VIS, 10.0, {2: people.embed(1, VIS, noise=0.0)}, seq=1)
        shared.note(events, linker.gallery)
        assert not shared.flush(linker.gallery)
        assert shared.counters.failures >= 1
        events = feed(linker, "cam0", VIS, 20.0, {3: people.embed(2, VIS, noise=0.0)}, seq=2)
        shared.note(events, linker.gallery)
        assert not shared.flush(linker.gallery)  # no call is even tried before retry_after_s
        decided = set(linker.gallery.identities)
        assert decided == {GLOBAL_ID_BLOCK, GLOBAL_ID_BLOCK + 1, GLOBAL_ID_BLOCK + 2}
        assert shared.counters.lookups_skipped >= 1 and shared.counters.pending == 2
        # Back (same data, same address): after retry_after_s the pending identities are published.
        server.start()
        clock.now += 5.0
        assert shared.flush(linker.gallery)
        for gid in decided:
            assert [r["linker_id"] for r in rows_of(server.uri, gid)] == ["linker1"]
        # ... and a second linker finds them.
        other, other_shared = shared_linker(server.uri, 2, Clock())
        events = feed(other, "cam9", VIS, 30.0, {7: people.embed(2, VIS, noise=0.0)})
        assert [(e.event, e.global_id) for e in events if hasattr(e, "global_id")] == [
            ("matched", GLOBAL_ID_BLOCK + 2)
        ]
        assert other_shared.counters.lookup_hits == 1
    finally:
        server.stop()


def test_a_taken_linker_index_is_refused(milvus):
    SharedStore(SharedStoreConfig(uri=milvus.uri, linker_index=3), "east").open(ENGINE_ID, DIM)
    SharedStore(SharedStoreConfig(uri=milvus.uri, linker_index=3), "east").open(
        ENGINE_ID, DIM
    )  # itself again
    with pytest.raises(SharedStoreError, match="claimed by linker 'east'"):
        SharedStore(SharedStoreConfig(uri=milvus.uri, linker_index=3), "west").open(ENGINE_ID, DIM)


# ----------------------------------------------------------------------------- no server needed


def test_malformed_remote_rows_are_dropped():
    store = SharedStore(SharedStoreConfig(uri="http://unused:1"), "me")
    store.dim = 4
    good = {
        "global_id": 5,
        "vector": [1.0, 0, 0, 0],
        "weight": 2.0,
        "updated_ts": 1.0,
        "camera_id": "c",
        "linker_id": "x",
    }
    assert store._validated({"entity": good}, VIS).global_id == 5
    for bad in (
        {**good, "global_id": -1},
        {**good, "global_id": True},
        {**good, "vector": [1.0, 0, 0]},
        {**good, "vector": [float("nan"), 0, 0, 0]},
        {**good, "vector": [0.0, 0, 0, 0]},
        {**good, "weight": 0.0},
        {**good, "camera_id": "c" * 500},
        {k: v for k, v in good.items() if k != "updated_ts"},
    ):
        assert store._validated({"entity": bad}, VIS) is None


def test_config_gives_each_linker_its_id_block_and_checks_the_fields():
    config = load_config(LinkerConfig, overrides=["shared.uri=http://milvus:19530", "shared.linker_index=7"])
    assert config.gallery.global_id_base == 7 * GLOBAL_ID_BLOCK
    assert load_config(LinkerConfig).gallery.global_id_base == 0  # the embedded default
    with pytest.raises(Exception, match="linker_index"):
        load_config(LinkerConfig, overrides=["shared.linker_index=5000"])
    with pytest.raises(Exception, match="collection"):
        load_config(LinkerConfig, overrides=["shared.collection=bad-name"])


def test_a_down_store_at_start_costs_one_quick_attempt():
    clock = Clock()
    linker, shared = shared_linker(f"http://127.0.0.1:{free_port()}", 1, clock)  # nothing listens
    people = People(2, dim=DIM, seed=1)
    started = time.monotonic()
    for k in range(5):
        events = feed(linker, "cam0", VIS, 10.0 * k, {k: people.embed(k % 2, VIS, noise=0.0)}, seq=k)
        shared.note(events, linker.gallery)
        shared.flush(linker.gallery)
    assert time.monotonic() - started < 10
    assert shared.counters.failures == 1  # then no call until retry_after_s
    assert linker.num_identities == 2 and shared.counters.pending == 2
    assert np.all([g >= GLOBAL_ID_BLOCK for g in linker.gallery.identities])
