"""A whole pipeline killed (SIGKILL) or stopped (SIGTERM) inside each stage in
turn: after every crash each command can still open the workspace, the audit
log verifies and names the interrupted stage, and the next run resumes and
ends where an uninterrupted run does, with nothing lost or written twice."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.crash.harness import audit_entries, ok, run, stage_points, trace_points
from tests.test_pipeline import CONFIG

NOTES = 120
GENERATED = 40
STAGES = ("ingest", "generator train", "generate", "screen", "annotate", "ner train", "export")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """An initialized workspace, its export and config, and the points an uninterrupted run reaches."""
    root = tmp_path_factory.mktemp("pipeline-crash")
    ok("demo-data", root / "export", "--notes", NOTES, "--format", "csv", "--seed", 5)
    (root / "pipeline.toml").write_text(CONFIG.format(ner_steps=30))
    # The lexicon names words a 40-step generator does write (the test is about stages, not quality).
    (root / "terms.tsv").write_text("term\tlabel\nmg\tDRUG\nwith\tDIAGNOSIS\nand\tDIAGNOSIS\n")
    ok("init", root / "ws")
    shutil.copytree(root / "ws", root / "reference")
    trace = root / "trace"
    _pipeline(root, root / "reference", trace=trace)
    points = stage_points(trace_points(trace))
    assert set(STAGES) <= set(points), points
    return root, points


def _pipeline(root: Path, ws: Path, **kwargs):
    return run("pipeline", "run", "-w", ws, "--config", root / "pipeline.toml", **kwargs)


def _fresh(root: Path, tmp_path: Path) -> Path:
    shutil.copytree(root / "ws", tmp_path / "ws")
    return tmp_path / "ws"


def _assert_openable(ws: Path, stage: str) -> None:
    """What a user runs after a crash: every command opens the workspace and names the stage."""
    ok("records", "stats", "-w", ws)
    verify = ok("audit", "verify", "-w", ws)
    assert "intact" in verify.stdout
    doctor = run("doctor", "-w", ws, "--json")
    assert doctor.returncode == 0, doctor.stdout
    # Killed after its closing line (the last points of a stage are that line
    # and the audit head), the stage is done; before it, it is interrupted.
    last = [e for e in audit_entries(ws) if e["command"] == stage][-1]
    if last["result"] in ("started", "intent"):
        assert f"interrupted stage (recoverable): `{stage}`" in verify.stdout, verify.stdout
        assert "stopped without finishing" in doctor.stdout


def _assert_complete(root: Path, ws: Path, tmp_path: Path) -> None:
    """The workspace ends as an uninterrupted run leaves it: counts, ids, package, audit."""
    from appliance.corpus import read_annotations, read_corpus, released_notes
    from appliance.workspace import Workspace

    assert json.loads(ok("records", "stats", "-w", ws, "--json").stdout)["records"] == NOTES
    w = Workspace.open(ws)
    generated = [n.id for n in read_corpus(w)]
    assert len(generated) == GENERATED and len(set(generated)) == GENERATED
    released = [n.id for n in released_notes(w)]
    assert released and len(set(released)) == len(released) and set(released) <= set(generated)
    annotated = [d.id for d in read_annotations(w)]
    assert sorted(annotated) == sorted(released)
    out = tmp_path / "entities.jsonl"
    ok("infer", root / "export" / "notes.csv", "-w", ws, "--out", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len({r["id"] for r in rows}) == NOTES == len(rows)
    verify = ok("audit", "verify", "-w", ws)
    assert "intact" in verify.stdout and "interrupted" not in verify.stdout
    entries = audit_entries(ws)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    # Each stage ended once with "ok" (a stage skipped as current writes no line).
    closed = Counter(e["command"] for e in entries if e["result"] == "ok")
    assert all(closed[stage] == 1 for stage in STAGES), closed


def _stop_in_each_stage_then_resume(root: Path, ws: Path, tmp_path: Path, points, seed: int):
    """Stop the pipeline once inside each stage (SIGKILL and SIGTERM in turn), rerunning after each."""
    rng = random.Random(seed)
    for i, stage in enumerate(STAGES):
        spec = f"{stage}/*:{rng.randint(1, points[stage])}"
        where = f"seed {seed}, {spec}"
        if (i + seed) % 2 == 0:
            crashed = _pipeline(root, ws, crash_at=spec)
            assert crashed.returncode == -signal.SIGKILL, (where, crashed.stdout, crashed.stderr)
        else:
            stopped = _pipeline(root, ws, crash_at=spec, signal="TERM")
            assert stopped.returncode == 143, (where, stopped.stdout, stopped.stderr)
            assert "terminated (SIGTERM)" in stopped.stderr and "Traceback" not in stopped.stderr
            last = [e for e in audit_entries(ws) if e["command"] == stage][-1]
            assert "SIGTERM" in last["result"] or last["result"] == "ok", (where, last)
        _assert_openable(ws, stage)
    resumed = _pipeline(root, ws)
    assert resumed.returncode == 0, (seed, resumed.stdout, resumed.stderr)
    _assert_complete(root, ws, tmp_path)


def test_stopped_inside_every_stage_in_turn_then_resumed(template, tmp_path):
    """One workspace, stopped once inside each stage, by SIGKILL and SIGTERM in turn:
    each rerun resumes and gets one stage further."""
    root, points = template
    _stop_in_each_stage_then_resume(root, _fresh(root, tmp_path), tmp_path, points, seed=14)


@pytest.mark.slow
def test_stopped_at_random_points_then_resumed(template, tmp_path):
    """The same with points and signals drawn at random (``APPLIANCE_TEST_SEED`` replays a run)."""
    root, points = template
    seed = int(os.environ.get("APPLIANCE_TEST_SEED") or random.SystemRandom().randrange(10**6))
    print(f"crash seed {seed}")
    _stop_in_each_stage_then_resume(root, _fresh(root, tmp_path), tmp_path, points, seed)


@pytest.mark.soak
@pytest.mark.parametrize("stage", STAGES)
def test_killed_at_each_commit_point_of_a_stage(template, tmp_path, stage):
    """Every commit point of the stage, each on a fresh workspace (hours in all on two cores)."""
    root, points = template
    for n in range(1, points[stage] + 1):
        ws = _fresh(root, tmp_path / str(n))
        spec = f"{stage}/*:{n}"
        crashed = _pipeline(root, ws, crash_at=spec)
        assert crashed.returncode == -signal.SIGKILL, (spec, crashed.stderr)
        _assert_openable(ws, stage)
        resumed = _pipeline(root, ws)
        assert resumed.returncode == 0, (spec, resumed.stdout, resumed.stderr)
        _assert_complete(root, ws, tmp_path / str(n))
