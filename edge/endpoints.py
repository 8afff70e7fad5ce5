"""ZeroMQ endpoint strings: checked where a config names them (no zmq import here).

``tcp://HOST:PORT`` with a port in 1..65535 (or ``*`` when binding: a free port), ``ipc://PATH``
or ``inproc://NAME``. :func:`is_loopback` tells whether an endpoint can only be reached from this
machine, which decides whether it may run without CurveZMQ (see docs/messages.md, "Security").
"""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def check_endpoint(endpoint: str, what: str = "endpoint") -> str:
    """``endpoint`` unchanged if it is well formed, else ValueError naming ``what`` and the problem."""
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ValueError(f"{what} {endpoint!r} must look like tcp://host:port (or ipc://path)")
    scheme, rest = endpoint.split("://", 1)
    if scheme in ("ipc", "inproc"):
        if not rest:
            raise ValueError(f"{what} {endpoint!r} names no {scheme} path")
        return endpoint
    if scheme != "tcp":
        raise ValueError(f"{what} {endpoint!r}: only tcp://, ipc:// and inproc:// are supported")
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{what} {endpoint!r} must look like tcp://host:port")
    if port == "*":
        return endpoint
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"{what} {endpoint!r}: the port must be a number in 1..65535 (or * to bind any), got {port!r}"
        )
    return endpoint


def endpoint_host(endpoint: str) -> str:
    """The host part of a tcp endpoint (``*`` for all interfaces), ``""`` for ipc / inproc."""
    scheme, rest = endpoint.split("://", 1)
    if scheme != "tcp":
        return ""
    host = rest.rpartition(":")[0]
    host = host.rpartition(";")[2]  # tcp://source;host:port
    return host.strip("[]")


def is_loopback(endpoint: str) -> bool:
    """True when only processes of this machine can reach ``endpoint`` (loopback, ipc, inproc)."""
    host = endpoint_host(endpoint)
    if host == "":
        return True
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: assume reachable from outside
