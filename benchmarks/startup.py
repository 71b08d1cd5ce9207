"""Command-line start-up: how long a command takes before it does its work, per source tree.

Each command runs as a user runs it (``python -m appliance ...``, a fresh
process) with ``PYTHONPATH`` set to one source tree, best of ``--repeat``;
the commands are ``--help``, ``init`` of a new workspace and ``ingest`` of a
two-row CSV, none of which needs a model. It also lists the heavy modules
(torch, transformers, presidio, spaCy, onnxruntime) that ``import
appliance.cli`` loads. Give the tree to compare with as a second ``--tree``
(a ``git worktree`` of an earlier commit); the first is measured first.

Usage::

    git worktree add /tmp/appliance-before <commit>
    .venv/bin/python benchmarks/startup.py --tree . --tree /tmp/appliance-before
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "presidio_analyzer", "spacy", "onnxruntime")


def _env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["PYTHONPATH"] = str(tree.resolve())
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _best(args: list[str], env: dict[str, str], cwd: Path, repeat: int) -> float:
    """Best wall time of ``repeat`` runs; ``{k}`` in an argument becomes the run's number."""
    best = float("inf")
    for k in range(repeat):
        argv = [a.replace("{k}", str(k)) for a in args]
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "appliance", *argv],
            env=env,
            cwd=cwd,
            check=True,
            capture_output=True,
        )
        best = min(best, time.perf_counter() - t0)
    return best


def measure(tree: Path, repeat: int) -> dict[str, object]:
    env = _env(tree)
    code = (
        "import sys; import appliance.cli; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)  # not the repository: sys.path[0] must not shadow PYTHONPATH
        loaded = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (cwd / "notes.csv").write_text("id,text\n1,Seen for asthma.\n2,No complaints.\n")
        times = {
            "--help": _best(["--help"], env, cwd, repeat),
            "init": _best(["init", "ws{k}"], env, cwd, repeat),
            "ingest": _best(["ingest", "notes.csv", "-w", "ws0"], env, cwd, repeat),
        }
    return {"tree": str(tree), "loaded": loaded or "none", **times}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tree", type=Path, action="append", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = [measure(t, args.repeat) for t in args.tree]
    print(
        "| source tree | heavy modules loaded by `import appliance.cli` | `--help` s | `init` s | `ingest` (2 rows) s |"
    )
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['tree']} | {r['loaded']} | {r['--help']:.2f} | {r['init']:.2f} | {r['ingest']:.2f} |"
        )


if __name__ == "__main__":
    main()
