"""`appliance generate` with the transformers backend versus the vllm backend, same generator.

On a workspace with a trained generator, samples ``--count`` notes with each
backend (same settings and seed, separate corpora) and prints wall time
(vLLM's includes starting its server or engine), tokens/s of sampling, and
notes/s. On a CPU machine the vllm backend is vLLM's CPU build in
``.venv-vllm`` (``bash install.sh --vllm``), run as a loopback server.

    .venv/bin/python benchmarks/generate_backends.py --workspace /tmp/demo/ws --count 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--backends", default="transformers,vllm")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import shutil

    from appliance.generator import sample
    from appliance.workspace import Workspace

    ws = Workspace.open(args.workspace)
    settings = sample.SamplingSettings(batch_size=args.batch_size, seed=7)
    rows = {}
    for backend in args.backends.split(","):
        corpus = f"bench-{backend}"
        shutil.rmtree(ws.corpus_dir(corpus), ignore_errors=True)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        res = sample.run(ws, count=args.count, backend=backend, corpus=corpus, settings=settings)
        wall = time.perf_counter() - started
        rows[backend] = {
            "wall_seconds": round(wall, 1),
            "sampling_seconds": round(res.seconds, 1),
            "tokens": res.tokens,
            "tokens_per_second": round(res.tokens_per_second),
            "notes_per_second": round(args.count / wall, 2),
            "load_before": round(load, 2),
        }
        shutil.rmtree(ws.corpus_dir(corpus), ignore_errors=True)
        print(f"{backend}: {json.dumps(rows[backend])}", flush=True)
    print(f"\n{args.count} notes, batch {args.batch_size}, seed 7\n")
    print("| backend | wall s (with start) | sampling s | tokens | tokens/s | notes/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['wall_seconds']} | {r['sampling_seconds']} | {r['tokens']:,} | "
            f"{r['tokens_per_second']:,} | {r['notes_per_second']} |"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
