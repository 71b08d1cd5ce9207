"""The README's walkthrough, as real subprocesses: init, demo-data in every format, ingest, stats, audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def appliance(*args, cwd, check=True):
    env = {k: v for k, v in os.environ.items() if k != "APPLIANCE_WORKSPACE"}
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
    return proc


@pytest.mark.slow  # four formats through every walkthrough command: about a minute
def test_readme_walkthrough_in_all_formats(tmp_path):
    appliance("init", "ws", cwd=tmp_path)
    exports = {
        "csv": "export-csv/notes.csv",
        "jsonl": "export-jsonl/notes.jsonl",
        "txt": "export-txt/notes",
        "fhir": "export-fhir/notes.ndjson",
    }
    for fmt, path in exports.items():
        out = appliance(
            "demo-data", f"export-{fmt}", "--notes", 30, "--format", fmt, "--seed", 1, cwd=tmp_path
        )
        assert "wrote 30" in out.stdout
        assert (tmp_path / path).exists()
    first = appliance("ingest", exports["csv"], "-w", "ws", cwd=tmp_path)
    assert "30 stored" in first.stdout and "0 rejected" in first.stdout
    for fmt in ("jsonl", "txt", "fhir"):
        again = appliance("ingest", exports[fmt], "-w", "ws", cwd=tmp_path)
        assert "0 stored, 30 already stored, 0 rejected" in again.stdout, again.stdout
    stats = appliance("records", "stats", "-w", "ws", "--json", cwd=tmp_path)
    assert json.loads(stats.stdout)["records"] == 30
    verify = appliance("audit", "verify", "-w", "ws", cwd=tmp_path)
    assert "intact" in verify.stdout
    show = appliance("audit", "show", "-w", "ws", cwd=tmp_path)
    lines = show.stdout.splitlines()
    # Each run writes a "started" line when it begins and its result when it ends.
    assert sum("  ingest  [started]" in line for line in lines) == 4
    assert sum("  ingest  [ok]" in line for line in lines) == 4


@pytest.mark.parametrize("strict", [False, True])
def test_ingest_with_rejects_exit_code(tmp_path, strict):
    appliance("init", "ws", cwd=tmp_path)
    (tmp_path / "x.csv").write_text("note_id,text\nA,fine\nB,\n", encoding="utf-8")
    proc = appliance(
        "ingest", "x.csv", "-w", "ws", *(["--strict"] if strict else []), cwd=tmp_path, check=False
    )
    assert proc.returncode == (5 if strict else 0)
    assert "1 stored" in proc.stdout and "1 rejected (1 empty text)" in proc.stdout


@pytest.mark.slow  # trains and samples a generator through the installed command
def test_generator_commands(tmp_path):
    appliance("init", "ws", cwd=tmp_path)
    for args in (
        ["generator", "train", "-w", "ws", "--recipe", "tiny"],
        ["generate", "-w", "ws", "--count", 2],
    ):
        early = appliance(*args, cwd=tmp_path, check=False)
        assert (
            early.returncode == 4
            and early.stderr.startswith("error: ")
            and "Traceback" not in early.stderr
        )
    appliance("demo-data", "export", "--notes", 40, "--format", "csv", "--seed", 2, cwd=tmp_path)
    appliance("ingest", "export/notes.csv", "-w", "ws", cwd=tmp_path)
    trained = appliance(
        "generator", "train", "-w", "ws", "--recipe", "tiny", "--max-steps", 6, cwd=tmp_path
    )
    assert "trained generator: 6 steps" in trained.stdout
    assert "step 6/6" in trained.stderr  # progress lines when stderr is not a terminal
    out = appliance(
        "generate",
        "-w",
        "ws",
        "--count",
        3,
        "--max-new-tokens",
        20,
        "--batch-size",
        2,
        cwd=tmp_path,
    )
    assert "generated 3 synthetic notes" in out.stdout and "unscreened" in out.stdout
    bad = appliance("generate", "-w", "ws", "--count", 0, cwd=tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --count")
    missing = appliance(
        "generator", "train", "-w", "ws", "--recipe", "huge", cwd=tmp_path, check=False
    )
    assert missing.returncode == 3 and "no generator recipe named 'huge'" in missing.stderr
    assert "Traceback" not in missing.stderr
