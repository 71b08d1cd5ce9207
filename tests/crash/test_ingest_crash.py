"""Ingest killed at any commit point (SIGKILL) or stopped by SIGTERM: the rerun
resumes, nothing is lost or stored twice, and tampering is still refused."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.crash.harness import audit_entries, ok, pick_points, run, trace_points

NOTES = 600


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest-crash")
    ok("demo-data", root / "export", "--notes", NOTES, "--format", "csv", "--seed", 3)
    ok("init", root / "ws")
    config = root / "ws" / "appliance.toml"
    config.write_text(
        re.sub(r"shard_max_records = \d+", "shard_max_records = 150", config.read_text())
    )
    return root


def _fresh(template, tmp_path):
    shutil.copytree(template / "ws", tmp_path / "ws")
    return tmp_path / "ws", template / "export" / "notes.csv"


def _stats(ws):
    return json.loads(ok("records", "stats", "-w", ws, "--json").stdout)


def _assert_complete(ws, export):
    again = ok("ingest", export, "-w", ws)
    assert f"store holds {NOTES} records" in again.stdout
    assert _stats(ws)["records"] == NOTES
    ok("audit", "verify", "-w", ws)


def test_crash_at_every_kind_of_commit_point_then_rerun_completes(template, tmp_path):
    ws, export = _fresh(template, tmp_path / "ref")
    trace = tmp_path / "trace"
    ok("ingest", export, "-w", ws, trace=trace)
    points = trace_points(trace)
    assert {"ingest/atomic_write", "ingest/audit.line"} <= set(points)
    for spec in pick_points(points, k=3, seed=14):
        ws, export = _fresh(template, tmp_path / spec.replace("*", "any").replace(":", "-"))
        crashed = run("ingest", export, "-w", ws, crash_at=spec)
        assert crashed.returncode == -signal.SIGKILL, (spec, crashed.stderr)
        # Every command can open the workspace afterwards.
        ok("records", "stats", "-w", ws)
        verify = ok("audit", "verify", "-w", ws)
        assert "intact" in verify.stdout
        _assert_complete(ws, export)
        seqs = [e["seq"] for e in audit_entries(ws)]
        assert seqs == list(range(1, len(seqs) + 1))


def test_issue_repro_sigterm_and_sigkill_after_first_shard(template, tmp_path):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        ws, export = _fresh(template, tmp_path / sig.name)
        env_cmd = [sys.executable, "-m", "appliance", "ingest", str(export), "-w", str(ws)]
        proc = subprocess.Popen(env_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (ws / "records" / "store.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            pytest.skip("the ingest finished before the signal arrived")
        if sig == signal.SIGTERM:
            assert proc.returncode == 143
            assert "terminated (SIGTERM)" in err and "Traceback" not in err
            assert audit_entries(ws)[-1]["result"] == "interrupted (SIGTERM)"
        else:
            assert proc.returncode == -signal.SIGKILL
        _assert_complete(ws, export)


def test_sigterm_at_a_commit_point_is_handled_like_ctrl_c(template, tmp_path):
    ws, export = _fresh(template, tmp_path)
    stopped = run("ingest", export, "-w", ws, crash_at="audit.line:3", signal="TERM")
    assert stopped.returncode == 143, stopped.stderr
    assert "resumes" in stopped.stderr
    _assert_complete(ws, export)


def test_sigterm_while_the_started_line_is_written_is_closed_as_interrupted(template, tmp_path):
    ws, export = _fresh(template, tmp_path)
    stopped = run("ingest", export, "-w", ws, crash_at="ingest/audit.line:1", signal="TERM")
    assert stopped.returncode == 143, stopped.stderr
    started, closing = audit_entries(ws)[-2:]
    assert started["result"] == "started"
    assert closing["result"] == "interrupted (SIGTERM)" and closing["started"] == started["seq"]
    _assert_complete(ws, export)


def test_interrupted_ingest_is_reported_then_resumed(template, tmp_path):
    ws, export = _fresh(template, tmp_path)
    assert run("ingest", export, "-w", ws, crash_at="atomic_write:4").returncode == -signal.SIGKILL
    verify = ok("audit", "verify", "-w", ws)
    assert "`ingest`" in verify.stdout and "stopped without finishing" in verify.stdout
    doctor = run("doctor", "-w", ws, "--json")
    assert "stopped without finishing" in doctor.stdout
    _assert_complete(ws, export)
    assert "stopped without finishing" not in ok("audit", "verify", "-w", ws).stdout
    started = [e for e in audit_entries(ws) if e["result"] == "started"]
    assert started[-1]["details"]["resumes"] == [started[0]["seq"]]
