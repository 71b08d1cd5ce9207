"""The egress guard: the one place that decides whether an endpoint may be contacted.

Loopback is always allowed (the LLM is served on this machine); any other
host must be listed in the policy's ``[egress] allowed_hosts`` as ``host``,
``host:port`` or ``[ipv6]:port``. The decision is made on the URL before any
connection, and never by resolving a name: the only loopback *name* is
``localhost`` exactly (``x.localhost``, ``localhost.`` and
``localhost.localdomain`` may go to DNS on some systems), everything else
must be an IP literal. URLs that different HTTP libraries could read
differently (backslashes, characters outside RFC 1123 host names, text after
an IPv6 literal, user info) are refused outright, and callers connect to
the normalized ``scheme://host:port`` this module returns, never to the raw
string.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

from appliance.errors import ConfigError, EgressDenied

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_NETLOC = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[^\[\]:/@]+)(:(?P<port>[0-9]{1,5}))?")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_loopback_host(host: str) -> bool:
    """``localhost`` exactly, or a loopback IP literal (127.0.0.0/8, ::1, IPv4-mapped forms)."""
    if host.lower() == "localhost":
        return True
    addr = _ip(host)
    return addr is not None and addr.is_loopback


def _parse_netloc(netloc: str, what: str) -> tuple[str, int | None]:
    """Strict host[:port] parsing; refuses anything an HTTP client might read differently."""
    match = _NETLOC.fullmatch(netloc)
    if match is None:
        raise EgressDenied(f"{what}: '{netloc}' is not a plain host or host:port")
    host = match["host"].lower()
    if not host.startswith("[") and _ip(host) is None and not _HOSTNAME.fullmatch(host):
        raise EgressDenied(f"{what}: host '{host}' is not an IP address or an RFC 1123 host name")
    if host.startswith("[") and _ip(host) is None:
        raise EgressDenied(f"{what}: '{host}' is not an IPv6 address")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise EgressDenied(f"{what}: port {port} is out of range")
    return host, port


def _canonical_host(host: str) -> str:
    addr = _ip(host)
    if addr is None:
        return host
    return f"[{addr}]" if isinstance(addr, ipaddress.IPv6Address) else str(addr)


class EgressRules(Protocol):
    """What the guard needs of a policy: plain data, so security never imports the config."""

    @property
    def allowed_hosts(self) -> Sequence[str]: ...

    @property
    def allowed_schemes(self) -> Sequence[str]: ...


def check_endpoint(url: str, policy: EgressRules) -> str:
    """Return the normalized ``scheme://host:port`` if ``url`` may be contacted, else raise EgressDenied."""
    raw = url.strip()
    if any(c in raw for c in "\\\t\r\n ") or not raw.isprintable():
        raise EgressDenied(f"endpoint {raw!r}: contains backslashes, spaces or control characters")
    try:
        parts = urlsplit(raw)
    except ValueError as exc:
        raise EgressDenied(f"endpoint '{raw}' is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in policy.allowed_schemes:
        allowed = ", ".join(policy.allowed_schemes) or "none"
        raise EgressDenied(
            f"endpoint '{raw}': scheme '{scheme or '(none)'}' is not allowed (policy allows: {allowed})"
        )
    if "@" in parts.netloc:
        raise EgressDenied(
            f"endpoint '{raw}': credentials in the URL are not accepted; use an API key option"
        )
    if not parts.netloc or parts.netloc.startswith(":"):
        raise EgressDenied(f"endpoint '{raw}' has no host")
    host, port = _parse_netloc(parts.netloc, f"endpoint '{raw}'")
    port = port or _DEFAULT_PORTS[scheme]
    host = _canonical_host(host)
    normalized = f"{scheme}://{host}:{port}"
    if is_loopback_host(host):
        return normalized
    for entry in policy.allowed_hosts:
        allowed_host, allowed_port = parse_allowed_host(entry)
        if allowed_host == host and allowed_port in (None, port):
            return normalized
    raise EgressDenied(
        f"endpoint '{raw}' is not loopback and not listed in the policy's [egress] allowed_hosts; "
        "synthetic notes are only sent to endpoints the policy allows"
    )


def parse_allowed_host(entry: str) -> tuple[str, int | None]:
    """An ``allowed_hosts`` entry as (canonical host, port or None for any port)."""
    try:
        host, port = _parse_netloc(entry.strip(), "allowed_hosts entry")
    except EgressDenied as exc:
        raise ConfigError(
            f"[egress] allowed_hosts: {exc.message}; write 'host', 'host:port' or '[ipv6]:port'"
        ) from None
    return _canonical_host(host), port
