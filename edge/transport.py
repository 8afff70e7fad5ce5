"""ZeroMQ sockets of the edge node, chosen per mode (see docs/edge.md, "Transport").

- **live**: ``PUB`` (bind) -> ``SUB``. Metadata of live video is worthless when late, so a slow
  subscriber must not stall the cameras: a small send high-water mark, non-blocking sends, and
  ``XPUB_NODROP`` so that a full queue makes the send fail (``zmq.Again``) instead of dropping
  silently -- the node counts those drops (``drop_counts["publish"]`` in heartbeats) and receivers
  see the holes in ``seq``. Linger 0: unsent messages are discarded on close.
- **replay**: ``PUSH`` (bind) -> ``PULL``. Nothing may be lost: a send blocks while the
  high-water mark is reached or no receiver is connected (``IMMEDIATE`` keeps messages off
  half-open connections); :class:`TransportError` is raised (never a silent loss) after
  ``peer_timeout_ms`` (5 s) without any receiver connected, or ``send_timeout_ms`` (60 s) behind a
  connected receiver that stopped reading; linger keeps unsent messages for ``linger_ms`` on close.

Both: ZMTP heartbeats so dead TCP peers are noticed (the sending end pings with
``HEARTBEAT_IVL/TIMEOUT/TTL``; the receiving end answers and times out on the sender's TTL, but sends
no pings of its own: see :class:`Subscriber`), TCP keepalive, and ``ZMQ_MAXMSGSIZE`` on every receiving socket (a peer sending a bigger frame is
disconnected before the frame is stored: a 300 MiB frame used to be accepted).

Security (docs/messages.md, "Security"): with ``curve_secret_key_file`` set, a socket speaks
CurveZMQ (encrypted, and the binding end knows who connected). The binding end is the CURVE
server and admits only the public keys of ``curve_allowed_clients`` (a ZAP handler,
:class:`CurveGuard`, counts the refusals); the connecting end names the server's public key in
``curve_server_key_file``. Without keys a socket is plaintext and open to anyone who reaches it,
which is only acceptable on loopback: binding another address without Curve logs a warning.
zmq is imported here, not in ``edge/__init__``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from edge.endpoints import check_endpoint, is_loopback
from edge.keys import KeyFileError, load_allowed_keys, load_key_pair, load_public_key
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
        endpoint: ZeroMQ endpoint, e.g. ``tcp://127.0.0.1:5555`` (the default: loopback only) or
            ``tcp://host:5555`` (connect); ``tcp://127.0.0.1:*`` binds a free port (see
            :attr:`Publisher.endpoint`); ``tcp://*:5555`` binds every interface (use Curve).
        bind: bind (the node's default) or connect.
        send_hwm: messages queued per peer before sends fail (live) or block (replay); ``None``
            picks 50 (live: about 2 s of one camera at 25 fps) or 1000 (replay).
        receive_hwm: the receiving end's queue, messages (``None``: same defaults).
        linger_ms: how long close() keeps unsent messages (``None``: 0 live, 10000 replay).
        send_timeout_ms: replay: a blocked send gives up after this (-1 = wait forever).
        heartbeat_ivl_ms, heartbeat_timeout_ms, heartbeat_ttl_ms: ZMTP heartbeats.
        peer_timeout_ms: replay: a send fails after this long without any receiver connected
            (the linker is not running or points elsewhere) instead of waiting ``send_timeout_ms``;
            a connected receiver that is merely slow is waited for up to ``send_timeout_ms``.
        max_message_bytes: ``ZMQ_MAXMSGSIZE`` of a receiving socket: a peer that sends a bigger
            frame is disconnected (default 64 MiB: 4096 sightings of 4096-d float32 embeddings).
        curve_secret_key_file: this end's ``.key_secret`` file (``mpanet-keys``); ``""``: no Curve.
        curve_server_key_file: connecting end: the binding end's public ``.key`` file.
        curve_allowed_clients: binding end: public ``.key`` files (or directories of them) of the
            peers that may connect; everyone else is refused and counted (:attr:`Publisher.refused`).
    """

    mode: str = "live"
    endpoint: str = "tcp://127.0.0.1:5555"
    bind: bool = True
    send_hwm: int | None = None
    receive_hwm: int | None = None
    linger_ms: int | None = None
    send_timeout_ms: int = 60000
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 5000
    heartbeat_ttl_ms: int = 10000
    peer_timeout_ms: int = 5000
    max_message_bytes: int = 64 * 2**20
    curve_secret_key_file: str = ""
    curve_server_key_file: str = ""
    curve_allowed_clients: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"transport.mode must be 'live' or 'replay', got {self.mode!r}")
        check_endpoint(self.endpoint, "transport.endpoint")
        if self.max_message_bytes < 1024:
            raise ValueError(f"transport.max_message_bytes must be >= 1024, got {self.max_message_bytes}")

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


@dataclass(frozen=True)
class CurveKeys:
    """Which key files a socket uses (see :class:`TransportSettings`); empty secret: no Curve."""

    secret_key_file: str = ""
    server_key_file: str = ""
    allowed_clients: Sequence[str] = ()

    @classmethod
    def of(cls, settings: TransportSettings) -> CurveKeys:
        return cls(
            settings.curve_secret_key_file,
            settings.curve_server_key_file,
            tuple(settings.curve_allowed_clients),
        )


class CurveGuard:
    """The ZAP handler of one zmq context: per ZAP domain (one per bound socket) the public keys
    that may connect; everyone else is refused, logged and counted in :attr:`refused`.

    One per context (ZeroMQ asks the handler bound in the socket's context); get it with
    :func:`curve_guard` and stop it with :func:`stop_curve_guard` before terminating the context.
    """

    def __init__(self, context: zmq.Context) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self._lock = threading.Lock()
        self._allowed: dict[str, frozenset[bytes]] = {}
        self.refused: dict[str, int] = {}
        self.admitted: dict[str, int] = {}
        self._authenticator = ThreadAuthenticator(context, log=logging.getLogger("edge.transport.zap"))
        self._authenticator.start()

    def allow(self, domain: str, keys: set[bytes]) -> None:
        with self._lock:
            self._allowed[domain] = frozenset(keys)
            self.refused.setdefault(domain, 0)
            self.admitted.setdefault(domain, 0)
        self._authenticator.configure_curve_callback(domain, credentials_provider=self)

    def callback(self, domain: str, client_key: bytes) -> bool:
        """Called by the ZAP thread for every CURVE handshake of ``domain`` (``client_key``: Z85)."""
        with self._lock:
            allowed = client_key in self._allowed.get(domain, frozenset())
            table = self.admitted if allowed else self.refused
            table[domain] = table.get(domain, 0) + 1
        if not allowed:
            log.warning(
                "refused a CURVE client with key %s (not in the allow-list of %s)",
                client_key.decode(),
                domain,
            )
        return allowed

    def stop(self) -> None:
        self._authenticator.stop()


_PEER_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
_HANDSHAKE_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
_GUARDS: dict[int, tuple[zmq.Context, CurveGuard]] = {}
_GUARDS_LOCK = threading.Lock()


def curve_guard(context: zmq.Context) -> CurveGuard:
    """The :class:`CurveGuard` of ``context`` (started on first use)."""
    with _GUARDS_LOCK:
        entry = _GUARDS.get(id(context))
        if entry is None or entry[0] is not context:
            entry = (context, CurveGuard(context))
            _GUARDS[id(context)] = entry
        return entry[1]


def stop_curve_guard(context: zmq.Context) -> None:
    """Stop the guard of ``context`` if it has one (before ``context.term()``, which it would block)."""
    with _GUARDS_LOCK:
        entry = _GUARDS.pop(id(context), None)
    if entry is not None:
        entry[1].stop()


def secure(
    socket: zmq.Socket, context: zmq.Context, keys: CurveKeys, endpoint: str, bind: bool
) -> str | None:
    """Set up CurveZMQ on ``socket`` before it binds / connects; returns its ZAP domain (binding end).

    Without keys: plaintext, and a warning when binding an address other machines can reach.

    Raises:
        TransportError: a key file that is missing, malformed or readable by others, or a Curve
            setup without the other end's key(s).
    """
    if not keys.secret_key_file:
        if bind and not is_loopback(endpoint):
            log.warning(
                "binding %s without CurveZMQ: anyone who reaches it may connect, read and send "
                "(set curve_secret_key_file and curve_allowed_clients; see docs/messages.md, Security)",
                endpoint,
            )
        return None
    try:
        public, secret = load_key_pair(keys.secret_key_file)
        socket.curve_publickey = public
        socket.curve_secretkey = secret
        if bind:
            if not keys.allowed_clients:
                raise TransportError(
                    f"{endpoint}: a CURVE server needs curve_allowed_clients (the public keys that may connect)"
                )
            allowed = load_allowed_keys(keys.allowed_clients)
            domain = f"mpanet/{endpoint}/{id(socket)}"
            curve_guard(context).allow(domain, allowed)
            socket.zap_domain = domain.encode()
            socket.curve_server = True
            return domain
        if not keys.server_key_file:
            raise TransportError(
                f"{endpoint}: a CURVE client needs curve_server_key_file (the server's public key)"
            )
        socket.curve_serverkey = load_public_key(keys.server_key_file)
        return None
    except KeyFileError as exc:
        raise TransportError(f"{endpoint}: {exc}") from exc


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
        try:
            self._domain = secure(
                self._socket, self._context, CurveKeys.of(settings), settings.endpoint, settings.bind
            )
        except TransportError:
            self._socket.close(0)
            self._release_context()
            raise
        # Replay: watch connections, so that a send can tell "no receiver at all" (fail within
        # peer_timeout_ms) from "a slow receiver" (wait up to send_timeout_ms). A CURVE server
        # also counts the handshakes that fail before ZAP is asked (a plaintext client, a client
        # that expects another server key).
        watch = not live or self._domain is not None
        self._monitor = self._socket.get_monitor_socket(_PEER_EVENTS | _HANDSHAKE_FAILURES) if watch else None
        self.handshake_failures = 0
        try:
            self.endpoint = _attach(self._socket, settings, settings.bind)
        except TransportError:
            self._close_monitor()
            self._release_context()
            raise
        self._peers: set[int] = set()
        self._alone_since = time.monotonic()
        self.sent = 0
        self.dropped = 0

    @property
    def peers(self) -> int:
        """Receivers connected now (replay; live: 0, not tracked)."""
        self._drain_monitor()
        return len(self._peers)

    def _drain_monitor(self) -> None:
        if self._monitor is None:
            return
        from zmq.utils.monitor import recv_monitor_message

        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            kind, fd = event["event"], event["value"]
            if kind & _HANDSHAKE_FAILURES:
                self.handshake_failures += 1
            elif kind in (zmq.EVENT_ACCEPTED, zmq.EVENT_CONNECTED):
                self._peers.add(fd)
            elif kind in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
                self._peers.discard(fd)
                if not self._peers:
                    self._alone_since = time.monotonic()

    def _close_monitor(self) -> None:
        if self._monitor is not None:
            self._socket.disable_monitor()
            self._monitor.close(0)
            self._monitor = None

    @property
    def refused(self) -> int:
        """Connections refused as a CURVE server: keys not on the allow-list (ZAP) plus handshakes
        that failed (plaintext peers, peers expecting another server key); 0 without Curve."""
        self._drain_monitor()
        return _refused(self._context, self._domain) + self.handshake_failures

    def _release_context(self) -> None:
        if self._own_context:
            stop_curve_guard(self._context)
            self._context.term()

    def send(self, message: Message, embeddings: np.ndarray | None = None) -> bool:
        """Encode and send. Live: never blocks, returns False when dropped. Replay: blocks; raises
        :class:`TransportError` after ``send_timeout_ms``."""
        frames = encode_message(message, embeddings)
        return self.send_frames(frames)

    def send_frames(self, frames: Sequence[Any]) -> bool:
        if self.settings.mode == "live":
            self._drain_monitor()
            try:
                self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.dropped += 1
                return False
            self.sent += 1
            return True
        self._send_replay(frames)
        self.sent += 1
        return True

    def _send_replay(self, frames: Sequence[Any]) -> None:
        """Block until sent; fail after ``peer_timeout_ms`` alone or ``send_timeout_ms`` in all."""
        settings = self.settings
        started = time.monotonic()
        self._drain_monitor()  # keep the monitor's queue short, so no connection event is lost
        while True:
            try:
                self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                pass
            now = time.monotonic()
            if self.peers == 0 and now - self._alone_since >= settings.peer_timeout_ms / 1000.0:
                raise TransportError(
                    f"no receiver has been connected to {self.endpoint} for "
                    f"{(now - self._alone_since):.1f} s: is the linker running and pointed at this "
                    "endpoint (with CurveZMQ: is its public key on this node's allow-list)? Nothing was dropped"
                )
            if settings.send_timeout_ms >= 0 and now - started >= settings.send_timeout_ms / 1000.0:
                why = "no receiver is connected" if self.peers == 0 else "the receiver stopped reading"
                raise TransportError(
                    f"replay send to {self.endpoint} timed out after {settings.send_timeout_ms} ms "
                    f"({why}); nothing was dropped"
                )
            self._socket.poll(50, zmq.POLLOUT)

    def close(self) -> None:
        """Close the socket; unsent messages are kept for ``linger`` ms (replay: 10 s by default) and,
        with the publisher's own context, flushed before this returns."""
        if not self._socket.closed:
            self._close_monitor()
            self._socket.close(self.settings.linger)
            self._release_context()

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
        # The receiving end sends no ZMTP pings of its own (the sender's pings, with their TTL, and
        # TCP keepalive still find a dead peer). libzmq 4.3.x aborts the whole process
        # ("Assertion failed: !_io_error (stream_engine_base.cpp:310)") when a heartbeat timer fires
        # on a connection whose input was stopped at the receive high-water mark and whose peer has
        # since gone: exactly a linker still starting up while a replay node sends its whole file
        # and disconnects (tests/test_transport_heartbeat.py reproduces it).
        self._socket.setsockopt(zmq.HEARTBEAT_IVL, 0)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, settings.receive_hwm or settings.hwm)
        self._socket.setsockopt(zmq.MAXMSGSIZE, settings.max_message_bytes)
        if live:
            self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        binds = (not settings.bind) if bind is None else bind
        try:
            self._domain = secure(
                self._socket, self._context, CurveKeys.of(settings), settings.endpoint, binds
            )
        except TransportError:
            self._socket.close(0)
            raise
        self.endpoint = _attach(self._socket, settings, binds)
        self.receiver = receiver or MessageReceiver()

    @property
    def refused(self) -> int:
        """Peers refused by the CURVE allow-list (0 without Curve or when connecting)."""
        return _refused(self._context, self._domain)

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


def curve_refusals(context: zmq.Context | None, domain: str | None) -> int:
    """Peers the CURVE allow-list of ``domain`` (a socket secured by :func:`secure`) refused."""
    return 0 if context is None else _refused(context, domain)


def _refused(context: zmq.Context, domain: str | None) -> int:
    if domain is None:
        return 0
    with _GUARDS_LOCK:
        entry = _GUARDS.get(id(context))
    return 0 if entry is None else entry[1].refused.get(domain, 0)
