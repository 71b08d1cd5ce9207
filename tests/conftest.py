"""Shared fixtures, and the network guard.

The guard patches ``socket.socket.connect`` (and ``connect_ex``,
``create_connection`` and ``getaddrinfo`` for outside names) for the whole
session: any attempt to reach an address that is not loopback or a Unix
socket fails the test that made it. The suite therefore proves that the
appliance needs no network.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SHARED_CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"

_attempts: list[str] = []


def _is_loopback(address: Any) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False  # a host name: would need DNS, i.e. the network
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class NetworkAccessError(AssertionError):
    """Raised when code under test tries to reach a non-loopback address."""


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        _attempts.append(repr(address))
        raise NetworkAccessError(f"test tried to connect to non-loopback address {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        _attempts.append(repr(address))
        raise NetworkAccessError(f"test tried to connect to non-loopback address {address!r}")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and not _is_loopback((name, 0)) and not _is_ip(name):
        _attempts.append(f"DNS {name}")
        raise NetworkAccessError(f"test tried to resolve outside host name {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo
    os.environ.pop("APPLIANCE_WORKSPACE", None)


@pytest.fixture(autouse=True)
def _no_network_attempts() -> Iterator[None]:
    """Fail a test that tried to reach the network, even if it swallowed the error."""
    before = len(_attempts)
    yield
    tried = _attempts[before:]
    if tried:
        pytest.fail(f"test attempted network access: {', '.join(tried)}")


@pytest.fixture
def workspace(tmp_path: Path) -> Any:
    """A fresh workspace in a temporary folder."""
    from appliance.workspace import init

    return init(tmp_path / "ws")


@pytest.fixture
def shared_corpora() -> Path:
    if not SHARED_CORPORA.is_dir():
        pytest.skip("../shared/corpora is not present")
    return SHARED_CORPORA
