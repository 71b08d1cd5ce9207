"""Run appliance commands as subprocesses, optionally killed at a named commit point."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path


def run(
    *args: str | Path,
    crash_at: str | None = None,
    signal: str | None = None,
    trace: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["HF_HUB_OFFLINE"] = "1"
    if crash_at:
        env["APPLIANCE_CRASH_AT"] = crash_at
    if signal:
        env["APPLIANCE_CRASH_SIGNAL"] = signal
    if trace:
        env["APPLIANCE_CRASH_TRACE"] = str(trace)
    return subprocess.run(
        [sys.executable, "-m", "appliance", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def ok(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    proc = run(*args, **kwargs)
    assert proc.returncode == 0, f"{args}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def trace_points(trace: Path) -> list[str]:
    return trace.read_text().splitlines() if trace.exists() else []


def pick_points(points: list[str], k: int, seed: int) -> list[str]:
    """Crash specs: the first and last hit of each (stage-scoped) point name, plus ``k`` seeded ``*:N``."""
    counts = Counter(points)
    specs = set()
    for name, n in counts.items():
        specs.add(f"{name}:1")
        specs.add(f"{name}:{n}")
    rng = random.Random(seed)
    for n in rng.sample(range(1, len(points) + 1), min(k, len(points))):
        specs.add(f"*:{n}")
    return sorted(specs)


def audit_entries(ws: Path) -> list[dict]:
    return [json.loads(line) for line in (ws / "audit.log").read_text().splitlines() if line]


def stage_points(points: list[str]) -> dict[str, int]:
    """How many commit points each stage reached (``STAGE/NAME`` lines of a trace)."""
    counts: Counter[str] = Counter()
    for point in points:
        stage, sep, _ = point.rpartition("/")
        if sep:
            counts[stage] += 1
    return dict(counts)
