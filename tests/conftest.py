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


class ReleasedCorpus:
    """A workspace with ingested demo records and a screened, released synthetic corpus."""

    def __init__(self, ws: Any, corpus: str, gold: dict[str, dict[str, Any]]) -> None:
        self.ws = ws
        self.corpus = corpus
        self.gold = gold


_RELEASED_TEMPLATE: dict[str, Any] = {}


def _released_template(root: Path) -> tuple[Path, str, dict[str, dict[str, Any]]]:
    """Built once per test session: 150 real demo notes ingested; 60 other demo notes screened."""
    import json

    from appliance import demo
    from appliance.corpus import released_notes
    from appliance.privacy import screen
    from appliance.records import ingest
    from appliance.workspace import init

    ws = init(root / "ws")
    real = demo.run(root / "real", notes=150, fmt="jsonl", seed=11)
    ingest.run(ws, real.export_path)
    cand = demo.run(root / "cand", notes=60, fmt="jsonl", seed=12)
    gold = {}
    with open(root / "candidates.jsonl", "w", encoding="utf-8") as fh:
        for line in cand.gold_path.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            doc["id"] = f"D{doc['id']}"
            gold[doc["id"]] = doc
            fh.write(json.dumps({"id": doc["id"], "text": doc["text"]}) + "\n")
    screen.run(ws, input_path=root / "candidates.jsonl", import_as="demo")
    released = {n.id for n in released_notes(ws, "demo")}
    assert released, "the screen released none of the demo candidates"
    return ws.root, "demo", {i: d for i, d in gold.items() if i in released}


@pytest.fixture
def released_corpus(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> ReleasedCorpus:
    """A copy of a session-wide workspace whose synthetic corpus 'demo' was screened and released.

    ``gold`` maps each released note's id to its demo gold document
    (``{"id", "text", "entities": [{"start", "end", "label", "text", ...}]}``).
    """
    import shutil

    from appliance.workspace import Workspace

    if "root" not in _RELEASED_TEMPLATE:
        root, corpus, gold = _released_template(tmp_path_factory.mktemp("released"))
        _RELEASED_TEMPLATE.update(root=root, corpus=corpus, gold=gold)
    dest = tmp_path / "released-ws"
    shutil.copytree(_RELEASED_TEMPLATE["root"], dest)
    return ReleasedCorpus(
        Workspace.open(dest), _RELEASED_TEMPLATE["corpus"], dict(_RELEASED_TEMPLATE["gold"])
    )
