"""A receiver whose queue is full when its sender disconnects must not abort the process.

libzmq 4.3.x asserts (``!_io_error``, stream_engine_base.cpp) when a ZMTP heartbeat timer fires on
a connection whose input was stopped at the receive high-water mark and whose peer has gone. A linker
that is still starting while a replay node sends its whole file and disconnects is that case; it
aborted the linker in about half of the end-to-end runs. The receiver runs in a child process so
that an abort fails this test instead of killing pytest.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT

CHILD = """
import time, zmq
from edge.transport import Subscriber, TransportSettings

settings = TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*", bind=False, receive_hwm=10,
                             heartbeat_ivl_ms=100)
receiver = Subscriber(settings, bind=True)
context = zmq.Context()
for _ in range(3):
    sender = context.socket(zmq.PUSH)
    sender.setsockopt(zmq.HEARTBEAT_IVL, 100)
    sender.setsockopt(zmq.SNDHWM, 100000)
    sender.setsockopt(zmq.LINGER, 0)
    sender.connect(receiver.endpoint)
    for _ in range(5000):
        sender.send(b"x" * 1000)
    time.sleep(0.3)  # the receiver's queue is full: its input is stopped
    sender.close(0)  # the peer goes away
    time.sleep(0.5)  # several of the receiver's heartbeat intervals pass
receiver.close()
print("alive")
"""


def test_a_full_receiver_survives_its_sender_disconnecting() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"receiver process died ({result.returncode}): {result.stderr[-2000:]}"
    assert "alive" in result.stdout
