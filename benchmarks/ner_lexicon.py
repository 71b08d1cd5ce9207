"""The lexicon inside the package: model alone vs lexicon alone vs union, on demo data, through the command line.

A workspace ingests demo records (the "real" notes); other demo notes are
screened in as the synthetic corpus (``screen --input --import-as``, as the
test suite does, so no generator run is needed); the lexicon annotator (the
built-in demo vocabularies) labels the released notes; ``ner train`` fits a
scratch model on those labels; ``export`` packs the model with the lexicon
its annotations were made with; ``ner evaluate`` scores the package on fresh
demo notes of other patients (another seed), as the model alone, the lexicon
alone and the union (default minimum confidence, and a few others).

    .venv/bin/python benchmarks/ner_lexicon.py --json-out ner-lexicon.json
    .venv/bin/python benchmarks/ner_lexicon.py --candidates 120 --max-steps 60   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def appliance(*args: object) -> tuple[str, float]:
    """Run one appliance command in its own process; (stdout, seconds)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("APPLIANCE_WORKSPACE", None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"appliance {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout, seconds


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--real-notes", type=int, default=300, help="demo records ingested")
    ap.add_argument("--candidates", type=int, default=600, help="demo notes screened in")
    ap.add_argument("--test-notes", type=int, default=200, help="fresh demo notes scored")
    ap.add_argument("--epochs", type=int, default=20, help="ner train --epochs")
    ap.add_argument("--max-steps", type=int, default=None, help="ner train --max-steps")
    ap.add_argument(
        "--min-confidence",
        type=float,
        nargs="*",
        default=[0.0, 0.5, 0.7, 0.9],
        help="union thresholds to score besides the default",
    )
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ner-lexicon-"))
    work.mkdir(parents=True, exist_ok=True)
    ws = work / "ws"
    log(f"work {work}; load {load_avg()}")
    seconds: dict[str, float] = {}
    appliance("init", ws)
    appliance(
        "demo-data", work / "real", "--notes", args.real_notes, "--format", "jsonl", "--seed", 11
    )
    _, seconds["ingest"] = appliance("ingest", work / "real" / "notes.jsonl", "-w", ws)
    appliance(
        "demo-data", work / "cand", "--notes", args.candidates, "--format", "jsonl", "--seed", 12
    )
    with open(work / "candidates.jsonl", "w", encoding="utf-8") as fh:
        for line in (work / "cand" / "gold.jsonl").read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            fh.write(json.dumps({"id": f"D{doc['id']}", "text": doc["text"]}) + "\n")
    out, seconds["screen"] = appliance(
        "screen", "-w", ws, "--input", work / "candidates.jsonl", "--import-as", "demo"
    )
    log(out.strip().splitlines()[-1] if out.strip() else "screened")
    out, seconds["annotate"] = appliance("annotate", "-w", ws, "--corpus", "demo")
    log(out.strip())
    train = ["ner", "train", "-w", ws, "--epochs", args.epochs]
    if args.max_steps:
        train += ["--max-steps", args.max_steps]
    log(f"training; load {load_avg()}")
    out, seconds["ner train"] = appliance(*train)
    log(out.strip())
    out, seconds["export"] = appliance("export", "-w", ws)
    log(out.strip())
    appliance(
        "demo-data", work / "test", "--notes", args.test_notes, "--format", "jsonl", "--seed", 2
    )
    gold = work / "test" / "gold.jsonl"
    text, seconds["ner evaluate"] = appliance("ner", "evaluate", "-w", ws, "--gold", gold)
    report = json.loads(appliance("ner", "evaluate", "-w", ws, "--gold", gold, "--json")[0])
    thresholds: dict[str, Any] = {}
    for t in args.min_confidence:
        r = json.loads(
            appliance("ner", "evaluate", "-w", ws, "--gold", gold, "--json", "--min-confidence", t)[
                0
            ]
        )
        thresholds[str(t)] = r["comparison"]["union"]
    log(f"done; load {load_avg()}")

    def row(name: str, r: dict[str, Any]) -> str:
        m, exact = r["seqeval"]["micro"], r["spans"]["exact"]["micro"]
        per = r["seqeval"]["per_type"]
        types = " / ".join(f"{per[t]['f1']:.3f}" for t in sorted(per))
        return (
            f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | **{m['f1']:.3f}** | "
            f"{exact['f1']:.3f} | {types} |"
        )

    comparison = report["comparison"]
    types = " / ".join(sorted(comparison["model"]["seqeval"]["per_type"]))
    lines = [
        f"| entities from | P | R | F1 (seqeval strict) | exact-span F1 | F1 {types} |",
        "|---|---:|---:|---:|---:|---:|",
        row("model alone", comparison["model"]),
        row("lexicon alone", comparison["lexicon"]),
        row(f"union, min confidence {report['min_confidence']} (default)", comparison["union"]),
    ]
    lines += [row(f"union, min confidence {t}", r) for t, r in thresholds.items()]
    print("\n".join(lines))
    print()
    print("```")
    print(text.rstrip())
    print("```")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "seconds": seconds,
                    "report": report,
                    "union_by_min_confidence": thresholds,
                    "evaluate_output": text,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
