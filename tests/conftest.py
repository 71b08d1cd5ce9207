"""Shared fixtures, and the network guard.

The guard (tests/netguard/guard.py) patches socket connection, sending and
name resolution for the whole session: any attempt to reach an address that
is not loopback or a Unix socket fails the test that made it. Subprocesses
started by tests (the CLI runs) get the same guard through a
``sitecustomize`` on PYTHONPATH, and CI additionally runs the suite inside a
network namespace that has only a loopback interface. The suite therefore
shows that the appliance needs no network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netguard.guard import NetworkAccessError, attempts, install

__all__ = ["NetworkAccessError", "attempts"]

SHARED_CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"

NETGUARD_DIR = Path(__file__).resolve().parent / "netguard"


def pytest_configure(config: pytest.Config) -> None:
    install()
    os.environ.pop("APPLIANCE_WORKSPACE", None)
    # Subprocesses (CLI runs) load the guard from sitecustomize.py.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(NETGUARD_DIR), os.environ.get("PYTHONPATH", "")) if p
    )


@pytest.fixture(autouse=True)
def _no_network_attempts() -> Iterator[None]:
    """Fail a test that tried to reach the network, even if it swallowed the error."""
    before = len(attempts)
    yield
    tried = attempts[before:]
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
