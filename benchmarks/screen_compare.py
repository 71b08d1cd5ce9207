"""Leakage screen, side by side: this checkout against an earlier revision, same workspace, same notes.

For a change meant to make the screen faster without changing what it
decides. Checks the revision out with ``git worktree`` (detached, in a
temporary folder), then screens the same notes (``--input``, JSONL with id
and text) against the same workspace with the revision's code and with this
checkout's, each in its own process and each loading or building its own
index (a different index format is rebuilt). Prints both screening times
(index load or build apart) and whether every note's decision, scores and
findings in the two JSON reports are the same; lists the first differences.

Usage::

    .venv/bin/python benchmarks/screen_compare.py --baseline 51bfd79 \\
        --workspace /tmp/sb/tp/run-100000/ws --input /tmp/sb/tp/synthetic.jsonl

A workspace made by a newer version may have policy keys the older code
does not know: ``--drop-policy-key KEY`` takes a ``KEY = …`` line out of the
workspace's policy copy for both runs (the newer code then uses its default;
the line is put back afterwards).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

RUNNER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
# Import cost is not screening cost: load the recognizers first (where this revision keeps them).
try:
    import appliance.identifiers.recognizers  # noqa: F401
except ImportError:
    import appliance.privacy.recognizers  # noqa: F401
from pathlib import Path
from appliance.privacy import screen
from appliance.workspace import Workspace
ws = Workspace.open(Path(sys.argv[2]))
t0 = time.perf_counter()
result = screen.run(ws, corpus=None, input_path=Path(sys.argv[3]))
total = time.perf_counter() - t0
report = json.loads(result.report_json.read_text())
Path(sys.argv[4]).write_text(json.dumps({
    "index_seconds": result.index_seconds,
    "screening_seconds": result.seconds - result.index_seconds,
    "total_seconds": total,
    "counts": report["counts"],
    "notes": report["notes"],
    "quarantined": report["quarantined"],
}))
"""


def run_one(code_root: Path, workspace: Path, notes: Path, out: Path) -> dict[str, Any]:
    subprocess.run(
        [sys.executable, "-c", RUNNER, str(code_root), str(workspace), str(notes), str(out)],
        check=True,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Notes whose decision, scores or findings differ, as one line each."""
    out = []
    before = {n["id"]: n for n in a["notes"]}
    after = {n["id"]: n for n in b["notes"]}
    for note_id in sorted(before.keys() | after.keys()):
        if before.get(note_id) != after.get(note_id):
            out.append(f"{note_id}: {before.get(note_id)} -> {after.get(note_id)}")
    why_a = {q["id"]: q["findings"] for q in a["quarantined"]}
    why_b = {q["id"]: q["findings"] for q in b["quarantined"]}
    for note_id in sorted(why_a.keys() | why_b.keys()):
        if why_a.get(note_id) != why_b.get(note_id):
            out.append(f"{note_id}: findings differ")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="git revision to compare with")
    p.add_argument("--workspace", type=Path, required=True)
    p.add_argument("--input", type=Path, required=True, help="notes to screen (JSONL)")
    p.add_argument("--drop-policy-key", action="append", default=[], metavar="KEY")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)

    policy = args.workspace / "policy.toml"
    if not policy.is_file():
        raise SystemExit(f"{args.workspace}: not a workspace (no policy.toml)")
    if not args.input.is_file():
        raise SystemExit(f"{args.input}: no such file")
    known = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{args.baseline}^{{commit}}"],
        capture_output=True,
    )
    if known.returncode != 0:
        raise SystemExit(f"--baseline {args.baseline}: no such git revision in {ROOT}")
    original = policy.read_text(encoding="utf-8")
    edited = original
    for key in args.drop_policy_key:
        edited = re.sub(rf"(?m)^{re.escape(key)}\s*=.*\n", "", edited)
    with tempfile.TemporaryDirectory(prefix="screen-compare-") as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.baseline],
            check=True,
        )
        try:
            policy.write_text(edited, encoding="utf-8")
            print(f"baseline {args.baseline} ...", file=sys.stderr)
            base = run_one(tree, args.workspace, args.input, Path(tmp) / "baseline.json")
            print("this checkout ...", file=sys.stderr)
            mine = run_one(ROOT, args.workspace, args.input, Path(tmp) / "current.json")
        finally:
            policy.write_text(original, encoding="utf-8")
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
            )
    diff = differences(base, mine)
    print(f"# Leakage screen: {args.baseline} against this checkout\n")
    print(f"{base['counts']['screened']:,} notes from {args.input}, workspace {args.workspace}\n")
    print("| code | index load or build s | screening s | released | quarantined |")
    print("|---|---:|---:|---:|---:|")
    for name, r in ((args.baseline, base), ("this checkout", mine)):
        print(
            f"| {name} | {r['index_seconds']:.1f} | **{r['screening_seconds']:.1f}** "
            f"| {r['counts']['released']:,} | {r['counts']['quarantined']:,} |"
        )
    print()
    if diff:
        print(f"**{len(diff)} differences** (first 20):\n")
        for line in diff[:20]:
            print(f"- {line}")
    else:
        print("Every note's decision, scores and findings are the same.")
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "baseline": args.baseline,
                    "seconds": {
                        "baseline": base["screening_seconds"],
                        "current": mine["screening_seconds"],
                    },
                    "index_seconds": {
                        "baseline": base["index_seconds"],
                        "current": mine["index_seconds"],
                    },
                    "counts": {"baseline": base["counts"], "current": mine["counts"]},
                    "differences": diff,
                },
                indent=1,
            )
            + "\n"
        )
    return 1 if diff else 0


if __name__ == "__main__":
    raise SystemExit(main())
