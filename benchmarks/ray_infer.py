"""Batch inference on Ray against the local engine: the same package, the same export, the same machine.

The export is the MTSamples transcriptions in ``../shared/corpora`` (stand-ins
for real notes; ``--notes`` of them, repeated when more are asked for, each
with its own id), written as JSONL. Each engine tags all of it with
``appliance.ner.infer.run`` into its own output:

* ``local``: this process, onnxruntime with ``--threads`` threads (all cores);
* ``ray``: a Ray instance started on this machine (loopback) with
  ``--workers`` actors of ``--ray-threads`` threads each, or the cluster at ``--address``.

Reported per engine: wall seconds including the Ray start and the package's
verification on each worker, the notes/s of the tagging itself (the run's own
figure, from the first chunk to the last commit), and whether the output is
byte for byte the local engine's. Engines run in the order given, alternated
``--repeat`` times; the machine's load average is printed beside.

Usage::

    .venv/bin/python benchmarks/ray_infer.py --package PKG --public-key signing.pub --json-out ray.json
    .venv/bin/python benchmarks/ray_infer.py --package PKG --public-key signing.pub --notes 40  # smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORPUS = (
    ROOT.parent / "shared" / "corpora" / "mtsamples-partial" / "mtsamples_subset_complete_rows.csv"
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def write_export(path: Path, notes: int) -> int:
    csv.field_size_limit(10**8)
    with open(CORPUS, encoding="utf-8", newline="") as fh:
        texts = [row["transcription"].strip() for row in csv.DictReader(fh)]
    texts = [t for t in texts if t]
    chars = 0
    with open(path, "w", encoding="utf-8") as out:
        for i in range(notes):
            text = texts[i % len(texts)]
            chars += len(text)
            out.write(json.dumps({"id": f"mts-{i:06d}", "text": text}) + "\n")
    return chars


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", type=Path, required=True, help="a signed, screened-zone package")
    ap.add_argument("--public-key", type=Path, required=True)
    ap.add_argument("--notes", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="local engine")
    ap.add_argument("--ray-threads", type=int, default=1, help="onnxruntime threads per Ray worker")
    ap.add_argument(
        "--address", default=None, help="a Ray cluster's head (default: start one here)"
    )
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ray-infer-bench"))
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    if not CORPUS.is_file():
        sys.exit(f"{CORPUS} is not present")

    from appliance.ner import infer
    from appliance.security.keys import load_public_key

    args.workdir.mkdir(parents=True, exist_ok=True)
    export = args.workdir / "export.jsonl"
    chars = write_export(export, args.notes)
    key = load_public_key(args.public_key)
    log(f"{args.notes} notes, {chars:,} characters; package {args.package}; load {load_avg()}")

    rows: list[dict[str, Any]] = []
    outputs: dict[str, bytes] = {}
    for rep in range(args.repeat):
        for engine in args.engines.split(","):
            out = args.workdir / f"{engine}-{rep}.jsonl"
            for leftover in (out, out.with_name(out.name + ".progress")):
                leftover.unlink(missing_ok=True)
            kw: dict[str, Any] = {"threads": args.threads}
            if engine == "ray":
                kw = {"threads": args.ray_threads, "workers": args.workers, "address": args.address}
            lines: list[str] = []
            t0 = time.perf_counter()
            result = infer.run(
                export,
                args.package,
                out,
                "jsonl",
                trusted_public_key=key,
                engine=engine,
                log=lines.append,
                **kw,
            )
            wall = time.perf_counter() - t0
            data = out.read_bytes()
            outputs.setdefault(engine, data)
            row = {
                "engine": engine,
                "repeat": rep,
                "workers": result.workers,
                "threads_each": kw["threads"],
                "notes": result.notes,
                "entities": result.entities,
                "wall_s": round(wall, 2),
                "tagging_notes_per_s": round(result.notes_per_second, 2),
                "wall_notes_per_s": round(result.notes / wall, 2),
                "same_as_local": data == outputs.get("local", data),
                "load": load_avg(),
                "pool": lines[0] if lines else "",
            }
            rows.append(row)
            log(json.dumps(row))
            shutil.rmtree(out.with_name(out.name + ".rejects.jsonl"), ignore_errors=True)

    print(
        f"\n{'engine':<8} {'workers x threads':>18} {'wall s':>8} {'notes/s (tagging)':>18} "
        f"{'notes/s (wall)':>15} {'same output':>12}"
    )
    for r in rows:
        print(
            f"{r['engine']:<8} {str(r['workers']) + ' x ' + str(r['threads_each']):>18} "
            f"{r['wall_s']:>8.1f} {r['tagging_notes_per_s']:>18.2f} {r['wall_notes_per_s']:>15.2f} "
            f"{r['same_as_local']!s:>12}"
        )
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "notes": args.notes,
        "characters": chars,
        "package": str(args.package),
        "rows": rows,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
