"""The egress guard: the one place that decides whether an endpoint may be contacted.

Loopback is always allowed (the LLM is served on this machine); any other
host must be listed in the policy's ``[egress] allowed_hosts`` as ``host`` or
``host:port``. The decision is made on the URL before any connection, and a
host name is never resolved through DNS to decide: ``localhost`` and literal
loopback addresses are the only loopback names, so a DNS answer cannot turn
an outside host into an allowed one.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from appliance.config import EgressPolicy
from appliance.errors import EgressDenied

_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def check_endpoint(url: str, policy: EgressPolicy) -> str:
    """Return the normalized ``scheme://host:port`` if ``url`` may be contacted, else raise EgressDenied."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise EgressDenied(f"endpoint '{url}' is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in policy.allowed_schemes:
        allowed = ", ".join(policy.allowed_schemes) or "none"
        raise EgressDenied(
            f"endpoint '{url}': scheme '{scheme or '(none)'}' is not allowed (policy allows: {allowed})"
        )
    if not host:
        raise EgressDenied(f"endpoint '{url}' has no host")
    if parts.username or parts.password:
        raise EgressDenied(
            f"endpoint '{url}': credentials in the URL are not accepted; use an API key option"
        )
    port = port or _DEFAULT_PORTS[scheme]
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if is_loopback_host(host):
        return f"{scheme}://{netloc}"
    for entry in policy.allowed_hosts:
        entry = entry.strip().lower()
        if entry in (host, f"{host}:{port}", netloc):
            return f"{scheme}://{netloc}"
    raise EgressDenied(
        f"endpoint '{url}' is not loopback and not listed in the policy's [egress] allowed_hosts; "
        "synthetic notes are only sent to endpoints the policy allows"
    )
