"""Training, side by side: this checkout against an earlier revision, same data, same key, same seeds.

For a change meant to leave training untouched (a refactor, a new layout).
Checks the revision out with ``git worktree`` (detached, in a temporary
folder), writes one demo export and one data key, then, with each code in
its own process and its own workspace (the same key, so the same held-out
split and the same pseudonyms), runs the commands a user would:

    appliance init --key-file KEY; appliance ingest EXPORT
    appliance generator train --recipe tiny --device cpu
    appliance ner train --train EXPORT/gold.jsonl --base scratch --max-steps N --device cpu

and compares what they wrote: the generator's held-out perplexity and loss
history (its weights are encrypted with a fresh nonce, so their bytes always
differ; its tokens/s is timing), and the NER model's weights (SHA-256 of ``model.safetensors``), dev
F1 and training history. Prints both and whether they are identical.

Usage::

    .venv/bin/python benchmarks/train_compare.py --baseline 1e48981 --workdir /tmp/tc
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# The command line is the stable contract across revisions, so each code is
# driven through its own ``appliance.cli.main``.
RUNNER = """
import sys
sys.path.insert(0, sys.argv[1])
from appliance.cli import main
sys.argv = ["appliance", *sys.argv[2:]]
try:
    main()
except SystemExit as exc:
    sys.exit(exc.code)
"""


def appliance(code_root: Path, *args: str | Path) -> None:
    # One thread: the same arithmetic in the same order, run after run.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(code_root), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"{code_root}: appliance {' '.join(map(str, args))} failed:\n{proc.stderr}"
        )


def train_both(
    code_root: Path, folder: Path, export: Path, key: Path, ner_steps: int
) -> dict[str, Any]:
    ws = folder / "ws"
    appliance(code_root, "init", ws, "--key-file", key)
    appliance(code_root, "ingest", export / "notes.jsonl", "-w", ws)
    appliance(code_root, "generator", "train", "-w", ws, "--recipe", "tiny", "--device", "cpu")
    appliance(
        code_root, "ner", "train", "-w", ws, "--train", export / "gold.jsonl", "--base", "scratch",
        "--max-steps", str(ner_steps), "--device", "cpu", "--seed", "0",
    )  # fmt: skip
    gen = json.loads((ws / "models" / "generator" / "manifest.json").read_text())
    model = ws / "models" / "ner" / "default" / "model"
    ner = json.loads((model / "ner.json").read_text())
    return {
        "generator": {
            # Throughput is the one figure a refactor may change.
            "metrics": {
                k: v for k, v in (gen.get("metrics") or {}).items() if k != "tokens_per_second"
            },
            "history": gen.get("history"),
            "steps": gen.get("steps"),
        },
        "ner": {
            "weights_sha256": hashlib.sha256(
                (model / "model.safetensors").read_bytes()
            ).hexdigest(),
            "dev_f1": ner["metrics"]["dev"]["exact"]["micro"]["f1"],
            "steps": ner["training"]["steps"],
            "history": ner["training"]["history"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="git revision to compare with")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--notes", type=int, default=120, help="demo notes to train on")
    ap.add_argument("--ner-steps", type=int, default=200)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)

    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    export = work / "export"
    appliance(
        ROOT, "demo-data", export, "--notes", str(args.notes), "--format", "jsonl", "--seed", "5"
    )
    key = work / "data.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.baseline],
            check=True,
        )
        try:
            results[args.baseline] = train_both(
                tree, work / "baseline", export, key, args.ner_steps
            )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
            )
    results["this checkout"] = train_both(ROOT, work / "current", export, key, args.ner_steps)

    print(f"# Training: {args.baseline} against this checkout\n")
    print(f"{args.notes} demo notes (seed 5), one data key, one thread\n")
    print("| code | generator steps | held-out perplexity | NER steps | NER dev F1 | NER weights |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r in results.items():
        ppl = (r["generator"]["metrics"] or {}).get("holdout_perplexity")
        print(
            f"| {name} | {r['generator']['steps']} | {ppl} | {r['ner']['steps']} | "
            f"{r['ner']['dev_f1']} | {r['ner']['weights_sha256'][:16]} |"
        )
    a, b = results.values()
    same = a == b
    print()
    print(
        "Generator and NER results are identical."
        if same
        else "DIFFERENT: " + ", ".join(k for k in ("generator", "ner") if a[k] != b[k]) + " differ."
    )
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"baseline": args.baseline, "results": results, "same": same}, indent=1)
        )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
