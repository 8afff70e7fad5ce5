"""Bad input to the command lines gives one clear line, not a traceback (issue 12, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.configuring import ConfigError, load_config
from edge.transport import Publisher, TransportError, TransportSettings

REPO = Path(__file__).resolve().parents[1]


@dataclass
class _Schema:
    pattern: str = "*.jpg"
    count: int = 1


def test_an_override_that_is_not_valid_yaml_is_taken_as_text():
    """Before: ``pattern=*.png`` raised a raw YAML error (``*`` starts an alias)."""
    assert load_config(_Schema, overrides=["pattern=*.png"]).pattern == "*.png"
    assert load_config(_Schema, overrides=["pattern=[ab"]).pattern == "[ab"
    with pytest.raises(ConfigError, match="not valid YAML, so it was taken as text"):
        load_config(_Schema, overrides=["count=*.png"])


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def frames(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"{k:03d}.png"), np.full((64, 64), 40 * k, np.uint8))
    return folder


def _node_args(frames: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "edge.node",
        "--log-level",
        "ERROR",
        "mode=replay",
        f"sources=[{{camera_id: c0, kind: folder, path: {frames}, pattern: '*.png', fps: 5, detector: {{name: thermal}}}}]",
        *extra,
    ]


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["embedder.path=/nonexistent/model.onnx"], "does not exist"),
        (["transport.endpoint=tcp://127.0.0.1:99999"], "1..65535"),
    ],
)
def test_node_configuration_errors_are_one_line(frames, extra, fragment):
    run = _run(_node_args(frames, *extra))
    assert run.returncode == 2, run.stderr
    assert fragment in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_a_node_without_a_receiver_stops_within_seconds_with_a_clear_message(frames):
    """Before: a replay node waited the full 60 s send timeout, then died with a traceback."""
    from test_linker_service import free_port

    started = time.monotonic()
    run = _run(_node_args(frames, f"transport.endpoint=tcp://127.0.0.1:{free_port()}"))
    elapsed = time.monotonic() - started
    assert run.returncode == 1, run.stderr
    assert "no receiver has been connected" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert elapsed < 30, f"took {elapsed:.1f} s"


def test_a_replay_send_without_a_receiver_fails_after_the_peer_timeout():
    publisher = Publisher(
        TransportSettings(
            mode="replay", endpoint="tcp://127.0.0.1:*", peer_timeout_ms=300, send_timeout_ms=60000
        )
    )
    try:
        started = time.monotonic()
        with pytest.raises(TransportError, match="no receiver has been connected"):
            publisher.send_frames([b"x"])
        assert time.monotonic() - started < 5
    finally:
        publisher.close()


def test_a_connected_receiver_that_stops_reading_is_waited_for_up_to_the_send_timeout():
    from edge.transport import Subscriber

    publisher = Publisher(
        TransportSettings(
            mode="replay", endpoint="tcp://127.0.0.1:*", peer_timeout_ms=200, send_timeout_ms=1500, send_hwm=1
        )
    )
    receiver = Subscriber(TransportSettings(mode="replay", endpoint=publisher.endpoint, receive_hwm=1))
    try:
        deadline = time.monotonic() + 5
        while publisher.peers == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert publisher.peers == 1
        payload = b"\0" * (1 << 20)
        with pytest.raises(TransportError, match="timed out after 1500 ms") as info:
            for _ in range(1000):  # the receiver never reads: the buffers fill, then a send blocks
                publisher.send_frames([payload])
        assert "no receiver" not in str(info.value)
    finally:
        receiver.close()
        publisher.close()


def test_mpanet_eval_with_a_missing_engine_is_one_line(tmp_path, capsys):
    from engines.cli.evaluate import main

    code = main(
        ["--engine", str(tmp_path / "missing.onnx"), f"data.root={tmp_path}", "--output", str(tmp_path / "o")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "missing.onnx does not exist" in err
