"""A network guard for the test suite: only loopback and Unix sockets are reachable.

Installed in the pytest process by tests/conftest.py and in every Python
subprocess a test starts by tests/netguard/sitecustomize.py.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

attempts: list[str] = []


class NetworkAccessError(AssertionError):
    """Raised when code under test tries to reach a non-loopback address."""


def _is_loopback_host(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in ("localhost", "", None):
        return True
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False  # a name other than localhost: resolving it needs the network
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _allowed(sock: socket.socket, address: Any) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # AF_UNIX and friends stay on the machine
    return _is_loopback_host(address[0])


def _deny(what: str) -> None:
    attempts.append(what)
    raise NetworkAccessError(f"test tried to reach the network: {what}")


def install() -> None:
    """Patch socket connect/send and name resolution (idempotent)."""
    if getattr(socket, "_appliance_guard", False):
        return
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto
    real_sendmsg = socket.socket.sendmsg
    real_getaddrinfo = socket.getaddrinfo
    real_gethostbyname = socket.gethostbyname
    real_gethostbyname_ex = socket.gethostbyname_ex

    def connect(self: socket.socket, address: Any) -> Any:
        if not _allowed(self, address):
            _deny(f"connect {address!r}")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if not _allowed(self, address):
            _deny(f"connect {address!r}")
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> Any:
        address = args[-1]
        if not _allowed(self, address):
            _deny(f"sendto {address!r}")
        return real_sendto(self, data, *args)

    def sendmsg(self: socket.socket, buffers: Any, *args: Any) -> Any:
        if len(args) >= 3 and args[2] is not None and not _allowed(self, args[2]):
            _deny(f"sendmsg {args[2]!r}")
        return real_sendmsg(self, buffers, *args)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback_host(host):
            _deny(f"DNS {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host: str) -> str:
        if not _is_loopback_host(host):
            _deny(f"DNS {host!r}")
        return real_gethostbyname(host)

    def gethostbyname_ex(host: str) -> Any:
        if not _is_loopback_host(host):
            _deny(f"DNS {host!r}")
        return real_gethostbyname_ex(host)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = sendto  # type: ignore[method-assign,assignment]
    socket.socket.sendmsg = sendmsg  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex
    socket._appliance_guard = True  # type: ignore[attr-defined]
