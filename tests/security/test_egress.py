"""The egress rule: loopback always, other hosts only when the policy lists them."""

from __future__ import annotations

import pytest

from appliance.config import EgressPolicy
from appliance.errors import EgressDenied
from appliance.security.egress import check_endpoint

DEFAULT = EgressPolicy()
LISTED = EgressPolicy(allowed_hosts=["llm.hospital.internal", "10.1.2.3:8000"])


@pytest.mark.parametrize(
    ("url", "policy", "expected"),
    [
        ("http://127.0.0.1:8000/v1", DEFAULT, "http://127.0.0.1:8000"),
        ("http://localhost:8000", DEFAULT, "http://localhost:8000"),
        ("http://127.8.9.10:1234", DEFAULT, "http://127.8.9.10:1234"),
        ("http://[::1]:8000/v1", DEFAULT, "http://[::1]:8000"),
        ("https://LOCALHOST/v1", DEFAULT, "https://localhost:443"),
        ("http://[::ffff:127.0.0.1]:9000", DEFAULT, "http://127.0.0.1:9000"),
        ("http://[0:0:0:0:0:0:0:1]:8000", DEFAULT, "http://[::1]:8000"),
        ("http://[::ffff:10.1.2.3]:8000", LISTED, "http://10.1.2.3:8000"),
        ("https://llm.hospital.internal/v1", LISTED, "https://llm.hospital.internal:443"),
        ("http://10.1.2.3:8000/v1", LISTED, "http://10.1.2.3:8000"),
    ],
)
def test_allowed(url, policy, expected):
    assert check_endpoint(url, policy) == expected


@pytest.mark.parametrize(
    ("url", "policy", "message"),
    [
        ("https://api.openai.com/v1", DEFAULT, "not loopback"),
        ("http://10.1.2.3:8000/v1", DEFAULT, "not loopback"),
        ("http://10.1.2.3:9000/v1", LISTED, "not loopback"),  # listed with another port
        ("http://llm.hospital.internal.evil.com/v1", LISTED, "not loopback"),
        (
            "http://127.0.0.1.nip.io:8000",
            DEFAULT,
            "not loopback",
        ),  # resolves to loopback, but by DNS
        ("http://0.0.0.0:8000", DEFAULT, "not loopback"),
        ("ftp://127.0.0.1/", DEFAULT, "scheme 'ftp'"),
        ("127.0.0.1:8000", DEFAULT, "scheme"),
        ("http://user:pw@127.0.0.1:8000", DEFAULT, "credentials"),
        ("http://:8000", DEFAULT, "no host"),
        ("http://127.0.0.1:99999", DEFAULT, "out of range|not a valid URL"),
        ("http://evil.localhost/", DEFAULT, "not loopback"),
        ("http://localhost.:8000", DEFAULT, "RFC 1123|not loopback"),
        ("http://localhost.localdomain/", DEFAULT, "not loopback"),
        ("http://evil.com\\.localhost/", DEFAULT, "backslashes"),
        ("http://[::1]evil.com/", DEFAULT, "not a plain host"),
        ("http://127.0.0.1\\@evil.com/", DEFAULT, "backslashes"),
        ("http://evil.com#@127.0.0.1/", DEFAULT, "not loopback"),
        ("http://127.0.0.1 .evil.com/", DEFAULT, "spaces"),
        ("http://ｌｏｃａｌｈｏｓｔ/", DEFAULT, "RFC 1123"),
        ("http://127。0。0。1/", DEFAULT, "RFC 1123"),
        ("http://2130706433/", DEFAULT, "not loopback"),
        ("https://127.0.0.1", EgressPolicy(allowed_schemes=["http"]), "scheme 'https'"),
    ],
)
def test_denied(url, policy, message):
    with pytest.raises(EgressDenied, match=message):
        check_endpoint(url, policy)


@pytest.mark.parametrize(
    "entry", ["http://llm.internal:8000", "fd00::1:8000", "llm internal", "a@b"]
)
def test_malformed_allowed_hosts_entries_are_config_errors(entry):
    from appliance.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed_hosts"):
        check_endpoint("http://10.0.0.1:8000", EgressPolicy(allowed_hosts=[entry]))
