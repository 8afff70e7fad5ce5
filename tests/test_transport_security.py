"""CurveZMQ between nodes, linker and subscribers: only allow-listed keys get anything (issue 12)."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time

import pytest
import zmq
from linker_scenes import ENGINE_ID, People, encode, sighting_batch
from test_linker_service import end_of_producer, free_port, read_stats

from common.configuring import load_config
from common.modality import Modality
from edge.keys import KeyFileError, load_key_pair, write_key_pair
from edge.keys import main as keys_main
from edge.linking import LinkerConfig, LinkerService
from edge.linking.publishing import decode_published, read_updates, subscribe_identities
from edge.messages import encode_message
from edge.transport import Publisher, Subscriber, TransportError, TransportSettings

VIS, IR = Modality.VISIBLE, Modality.INFRARED


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    for name in ("node", "linker", "viewer", "intruder"):
        write_key_pair(folder, name)
    return folder


def key(folder, name: str, secret: bool = False) -> str:
    return str(folder / f"{name}.key{'_secret' if secret else ''}")


def test_mpanet_keys_writes_owner_only_files_and_never_overwrites_silently(tmp_path, capsys):
    assert keys_main(["edge-0", "linker", "--dir", str(tmp_path / "k")]) == 0
    for name in ("edge-0.key", "edge-0.key_secret", "linker.key", "linker.key_secret"):
        assert stat.S_IMODE((tmp_path / "k" / name).stat().st_mode) == 0o600, name
    public, secret = load_key_pair(tmp_path / "k" / "edge-0.key_secret")
    assert len(public) == len(secret) == 40
    assert keys_main(["edge-0", "--dir", str(tmp_path / "k")]) == 2
    assert "--force" in capsys.readouterr().err
    assert keys_main(["edge-0", "--dir", str(tmp_path / "k"), "--force"]) == 0  # rotation
    assert load_key_pair(tmp_path / "k" / "edge-0.key_secret")[0] != public


def test_a_secret_key_others_can_read_is_refused(tmp_path):
    _, secret = write_key_pair(tmp_path, "loose")
    os.chmod(secret, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_pair(secret)


def _curve_node(keys, **extra) -> Publisher:
    return Publisher(
        TransportSettings(
            mode="replay",
            endpoint="tcp://127.0.0.1:*",
            send_timeout_ms=5000,
            curve_secret_key_file=key(keys, "node", True),
            curve_allowed_clients=[key(keys, "linker")],
            **extra,
        )
    )


def _client(endpoint: str, keys, me: str | None, server: str = "node") -> Subscriber:
    curve = {}
    if me is not None:
        curve = {"curve_secret_key_file": key(keys, me, True), "curve_server_key_file": key(keys, server)}
    return Subscriber(TransportSettings(mode="replay", endpoint=endpoint, **curve))


def test_only_the_allow_listed_puller_gets_messages_and_refusals_are_counted(keys):
    """Before: a second PULL peer silently took half of a replay's messages."""
    node = _curve_node(keys)
    linker = _client(node.endpoint, keys, "linker")
    intruder = _client(node.endpoint, keys, "intruder")  # a valid key pair, not on the allow-list
    plaintext = _client(node.endpoint, keys, None)  # no Curve at all
    wrong_server = _client(node.endpoint, keys, "linker", server="viewer")  # allowed key, wrong server key
    try:
        deadline = time.monotonic() + 10
        while node.refused < 3 and time.monotonic() < deadline:  # intruder, plaintext, wrong server key
            time.sleep(0.05)
        people = People(2, dim=16)
        for k in range(20):
            node.send_frames(encode(sighting_batch("cam0", VIS, k, 0.1 * k, [1], people.embed(0, VIS)[None])))
        got = []
        while (decoded := linker.receive(timeout_ms=2000)) is not None:
            got.append(decoded.message.seq)
            if len(got) == 20:
                break
        assert got == list(range(20))
        for other in (intruder, plaintext, wrong_server):
            assert other.receive(timeout_ms=300) is None
        # Counted: the intruder's key (ZAP allow-list), the plaintext peer and the one expecting
        # another server key (failed handshakes); each client retries, so at least one of each.
        assert node.handshake_failures >= 2 and node.refused >= 3
    finally:
        for end in (linker, intruder, plaintext, wrong_server):
            end.close()
        node.close()


def test_binding_beyond_loopback_without_curve_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="edge.transport"):
        node = Publisher(TransportSettings(mode="live", endpoint="tcp://0.0.0.0:*"))
        node.close()
        quiet = Publisher(TransportSettings(mode="live", endpoint="tcp://127.0.0.1:*"))
        quiet.close()
    warnings = [r.getMessage() for r in caplog.records if "without CurveZMQ" in r.getMessage()]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0]


def test_curve_without_the_other_ends_keys_is_a_clear_error(keys):
    with pytest.raises(TransportError, match="curve_allowed_clients"):
        Publisher(
            TransportSettings(
                mode="replay", endpoint="tcp://127.0.0.1:*", curve_secret_key_file=key(keys, "node", True)
            )
        )
    with pytest.raises(TransportError, match="does not exist"):
        Publisher(
            TransportSettings(
                mode="replay",
                endpoint="tcp://127.0.0.1:*",
                curve_secret_key_file=str(keys / "nobody.key_secret"),
                curve_allowed_clients=[key(keys, "linker")],
            )
        )


def test_an_authorised_pipeline_links_people_and_only_allowed_subscribers_hear_it(tmp_path, keys):
    node = _curve_node(keys)
    port = free_port()
    args = [
        f"persistence.state_dir={tmp_path / 'state'}",
        "persistence.journal_fsync=false",
        f"service.input_endpoints=[{node.endpoint}]",
        f"service.publish_endpoint=tcp://127.0.0.1:{port}",
        "service.poll_ms=20",
        "service.stats_interval_s=0.1",
        "service.expected_producers=1",
        f"gallery.engine_id={ENGINE_ID}",
        "matching.min_sightings=2",
        f"service.curve_secret_key_file={key(keys, 'linker', True)}",
        f"service.curve_node_keys=[{key(keys, 'node')}]",
        f"service.curve_subscriber_keys=[{key(keys, 'viewer')}]",
    ]
    config = load_config(LinkerConfig, overrides=args)
    context = zmq.Context()
    viewers = {}
    for name in ("viewer", "intruder", None):
        socket = context.socket(zmq.SUB)
        if name is not None:
            public, secret = load_key_pair(key(keys, name, True))
            socket.curve_publickey, socket.curve_secretkey = public, secret
            socket.curve_serverkey = load_key_pair(key(keys, "linker", True))[0]
        subscribe_identities(socket)
        socket.connect(f"tcp://127.0.0.1:{port}")
        viewers[name] = socket
    service = LinkerService(config)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        assert service.ready.wait(10)
        time.sleep(0.5)  # let the subscriptions (and the refusals) happen
        people = People(4, dim=32, seed=3)
        seq = {"rgb": 0, "ir": 0}
        for person in range(4):
            for camera, modality, offset in (("rgb", VIS, 0), ("ir", IR, 100)):
                for _ in range(3):
                    ts = 10.0 * person + 0.1 * seq[camera]
                    row = people.embed(person, modality)[None]
                    node.send_frames(
                        encode(sighting_batch(camera, modality, seq[camera], ts, [offset + person], row))
                    )
                    seq[camera] += 1
        node.send_frames([bytes(f) for f in encode_message(end_of_producer())])
        thread.join(30)
        assert not thread.is_alive()
        heard = {}
        for name, socket in viewers.items():
            heard[name] = []
            while socket.poll(300):
                decoded = decode_published(socket.recv_multipart())
                if decoded.message.camera_id:
                    heard[name].append(decoded.message)
    finally:
        service.stop()
        thread.join(5)
        for socket in viewers.values():
            socket.close(0)
        context.term()
        node.close()
    updates = read_updates(config.updates_path)
    final = {(u["camera_id"], u["track_id"]): u["global_id"] for u in updates}
    linked = sum(final.get(("rgb", p)) == final.get(("ir", 100 + p)) is not None for p in range(4))
    assert linked == 4, updates
    assert len(heard["viewer"]) == len(updates) and heard["intruder"] == [] and heard[None] == []
    assert read_stats(tmp_path / "state")["refused_peers"] >= 1
