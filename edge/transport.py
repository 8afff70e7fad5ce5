"""ZeroMQ sockets of the edge node, chosen per mode (see docs/edge.md, "Transport").

- **live**: ``PUB`` (bind) -> ``SUB``. Metadata of live video is worthless when late, so a slow
  subscriber must not stall the cameras: a small send high-water mark, non-blocking sends, and
  ``XPUB_NODROP`` so that a full queue makes the send fail (``zmq.Again``) instead of dropping
  silently -- the node counts those drops (``drop_counts["publish"]`` in heartbeats) and receivers
  see the holes in ``seq``. Linger 0: unsent messages are discarded on close.
- **replay**: ``PUSH`` (bind) -> ``PULL``. Nothing may be lost: a send blocks while the
  high-water mark is reached or no receiver is connected (``IMMEDIATE`` keeps messages off
  half-open connections), up to ``send_timeout_ms`` after which :class:`TransportError` is raised
  (never a silent loss); linger keeps unsent messages for ``linger_ms`` on close.

Both: ZMTP heartbeats (``HEARTBEAT_IVL/TIMEOUT/TTL``) so dead TCP peers are noticed, and TCP
keepalive. zmq is imported here, not in ``edge/__init__``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from edge.messages import Decoded, Message, MessageReceiver, encode_message

log = logging.getLogger(__name__)
MODES = ("live", "replay")


class TransportError(RuntimeError):
    """A socket that cannot bind/connect, or a replay send that timed out."""


@dataclass(frozen=True)
class TransportSettings:
    """Socket settings of one end.

    Attributes:
        mode: ``live`` (PUB/SUB) or ``replay`` (PUSH/PULL).
        endpoint: ZeroMQ endpoint, e.g. ``tcp://*:5555`` (bind) or ``tcp://host:5555`` (connect);
            ``tcp://127.0.0.1:*`` binds a free port (see :attr:`Publisher.endpoint`).
        bind: bind (the node's default) or connect.
        send_hwm: messages queued per peer before sends fail (live) or block (replay); ``None``
            picks 50 (live: about 2 s of one camera at 25 fps) or 1000 (replay).
        receive_hwm: the receiving end's queue, messages (``None``: same defaults).
        linger_ms: how long close() keeps unsent messages (``None``: 0 live, 10000 replay).
        send_timeout_ms: replay: a blocked send gives up after this (-1 = wait forever).
        heartbeat_ivl_ms, heartbeat_timeout_ms, heartbeat_ttl_ms: ZMTP heartbeats.
    """

    mode: str = "live"
    endpoint: str = "tcp://*:5555"
    bind: bool = True
    send_hwm: int | None = None
    receive_hwm: int | None = None
    linger_ms: int | None = None
    send_timeout_ms: int = 60000
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 5000
    heartbeat_ttl_ms: int = 10000

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"transport.mode must be 'live' or 'replay', got {self.mode!r}")
        if "://" not in self.endpoint:
            raise ValueError(f"transport.endpoint {self.endpoint!r} must look like tcp://host:port")

    @property
    def hwm(self) -> int:
        return self.send_hwm if self.send_hwm is not None else (50 if self.mode == "live" else 1000)

    @property
    def linger(self) -> int:
        return self.linger_ms if self.linger_ms is not None else (0 if self.mode == "live" else 10000)


def _common_options(socket: zmq.Socket, settings: TransportSettings) -> None:
    socket.setsockopt(zmq.LINGER, settings.linger)
    socket.setsockopt(zmq.HEARTBEAT_IVL, settings.heartbeat_ivl_ms)
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, settings.heartbeat_timeout_ms)
    socket.setsockopt(zmq.HEARTBEAT_TTL, settings.heartbeat_ttl_ms)
    socket.setsockopt(zmq.TCP_KEEPALIVE, 1)


def _attach(socket: zmq.Socket, settings: TransportSettings, bind: bool) -> str:
    try:
        if bind:
            socket.bind(settings.endpoint)
        else:
            socket.connect(settings.endpoint)
    except zmq.ZMQError as exc:
        socket.close(0)
        verb = "bind" if bind else "connect"
        raise TransportError(f"cannot {verb} {settings.endpoint}: {exc}") from exc
    endpoint = socket.getsockopt(zmq.LAST_ENDPOINT)
    return endpoint.decode() if endpoint else settings.endpoint


class Publisher:
    """The node's sending socket. ``send(message, embeddings) -> bool`` (False: dropped, live only).

    Attributes:
        endpoint: the actual endpoint (with the port chosen when binding ``:*``).
        sent: messages sent. dropped: messages refused at the high-water mark (live).
    """

    def __init__(self, settings: TransportSettings, context: zmq.Context | None = None) -> None:
        self.settings = settings
        # A context of its own unless one is given: close() terminates it, which blocks until the
        # queued messages are handed to the OS (up to the linger time). Without that, a process
        # exiting right after close() silently loses what was still queued (seen: 430 of 500 batches).
        self._own_context = context is None
        self._context = context or zmq.Context()
        live = settings.mode == "live"
        self._socket = self._context.socket(zmq.PUB if live else zmq.PUSH)
        _common_options(self._socket, settings)
        self._socket.setsockopt(zmq.SNDHWM, settings.hwm)
        if live:
            self._socket.setsockopt(zmq.XPUB_NODROP, 1)  # full queue -> zmq.Again, counted below
        else:
            self._socket.setsockopt(zmq.IMMEDIATE, 1)
            self._socket.setsockopt(zmq.SNDTIMEO, settings.send_timeout_ms)
        self.endpoint = _attach(self._socket, settings, settings.bind)
        self.sent = 0
        self.dropped = 0

    def send(self, message: Message, embeddings: np.ndarray | None = None) -> bool:
        """Encode and send. Live: never blocks, returns False when dropped. Replay: blocks; raises
        :class:`TransportError` after ``send_timeout_ms``."""
        frames = encode_message(message, embeddings)
        return self.send_frames(frames)

    def send_frames(self, frames: Sequence[Any]) -> bool:
        live = self.settings.mode == "live"
        try:
            self._socket.send_multipart(frames, flags=zmq.NOBLOCK if live else 0, copy=False)
        except zmq.Again as exc:
            if live:
                self.dropped += 1
                return False
            raise TransportError(
                f"replay send to {self.endpoint} timed out after {self.settings.send_timeout_ms} ms "
                "(no receiver, or it stopped reading); nothing was dropped"
            ) from exc
        self.sent += 1
        return True

    def close(self) -> None:
        """Close the socket; unsent messages are kept for ``linger`` ms (replay: 10 s by default) and,
        with the publisher's own context, flushed before this returns."""
        if not self._socket.closed:
            self._socket.close(self.settings.linger)
            if self._own_context:
                self._context.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscriber:
    """The receiving end (linker, tests): SUB (live) or PULL (replay); decodes with a
    :class:`MessageReceiver` that counts and drops malformed messages and tracks seq gaps.

    By default it connects (``bind=False`` semantics are taken from ``settings.bind`` inverted:
    pass the node's settings with the node's endpoint and it connects to it).
    """

    def __init__(
        self,
        settings: TransportSettings,
        context: zmq.Context | None = None,
        bind: bool | None = None,
        receiver: MessageReceiver | None = None,
    ) -> None:
        self.settings = settings
        self._context = context or zmq.Context.instance()
        live = settings.mode == "live"
        self._socket = self._context.socket(zmq.SUB if live else zmq.PULL)
        _common_options(self._socket, settings)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, settings.receive_hwm or settings.hwm)
        if live:
            self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.endpoint = _attach(self._socket, settings, (not settings.bind) if bind is None else bind)
        self.receiver = receiver or MessageReceiver()

    def receive(self, timeout_ms: int = 1000) -> Decoded | None:
        """The next valid message, or ``None`` on timeout. Malformed messages are counted
        (``receiver.malformed``) and skipped."""
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._socket.poll(remaining):
                return None
            decoded = self.receiver.decode(self._socket.recv_multipart(copy=False))
            if decoded is not None:
                return decoded

    def close(self) -> None:
        if not self._socket.closed:
            self._socket.close(0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
