"""The lexicon inside the package: model alone vs lexicon alone vs union, on demo data, through the command line.

A workspace ingests demo records (the "real" notes); other demo notes are
screened in as the synthetic corpus (``screen --input --import-as``, as the
test suite does, so no generator run is needed); the lexicon annotator (the
built-in demo vocabularies) labels the released notes; ``ner train`` fits a
scratch model on those labels; ``export`` packs the model with the lexicon
its annotations were made with; ``ner evaluate`` scores the package on fresh
demo notes of other patients (another seed), as the model alone, the lexicon
alone and the union (default minimum confidence, and a few others).

``--ncbi`` measures the same three on a public corpus where the lexicon is
far from complete: NCBI-disease train sentences (``../shared/corpora``; gold
labels thrown away) annotated by the lexicon annotator with the Disease
Ontology as ``DIAGNOSIS``, a scratch model trained on those labels
(``appliance.ner.train.train_model``, dev: a split of the same lexicon
labels, so no model sees a gold label), exported with that lexicon
(``export_package``), scored on NCBI-disease devel (gold ``Disease``).

    .venv/bin/python benchmarks/ner_lexicon.py --json-out ner-lexicon.json
    .venv/bin/python benchmarks/ner_lexicon.py --candidates 120 --max-steps 60   # smoke run
    .venv/bin/python benchmarks/ner_lexicon.py --ncbi --epochs 3 --json-out ner-lexicon-ncbi.json
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
    ap.add_argument("--ncbi", action="store_true", help="NCBI-disease with the Disease Ontology")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="reuse WORKDIR's exported package (demo: evaluate only) or trained model (--ncbi)",
    )
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    args = ap.parse_args()
    if args.ncbi:
        ncbi(args)
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ner-lexicon-"))
    work.mkdir(parents=True, exist_ok=True)
    ws = work / "ws"
    log(f"work {work}; load {load_avg()}")
    seconds: dict[str, float] = {}
    if args.reuse and (ws / "models" / "ner" / "default" / "package" / "manifest.json").is_file():
        log("reusing the workspace's package")
    else:
        build(args, work, ws, seconds)
    evaluate(args, work, ws, seconds)


def build(args: argparse.Namespace, work: Path, ws: Path, seconds: dict[str, float]) -> None:
    """Workspace, records, screened demo corpus, lexicon annotations, a trained and exported model."""
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


def evaluate(args: argparse.Namespace, work: Path, ws: Path, seconds: dict[str, float]) -> None:
    """ner evaluate (all three, union at several thresholds) and infer's entity sources."""
    if not (work / "test" / "gold.jsonl").is_file():
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
    # Where union's entities come from, from infer's own output (union and lexicon alone).
    outputs = {}
    for mode in ("union", "lexicon"):
        out = work / f"infer-{mode}.jsonl"
        for stale in (out, out.with_name(out.name + ".progress")):
            stale.unlink(missing_ok=True)
        printed, seconds[f"infer {mode}"] = appliance(
            "infer", work / "test" / "notes.jsonl", "-w", ws, "--out", out, "--combine", mode
        )
        log(printed.strip())
        outputs[mode] = [json.loads(line)["entities"] for line in out.read_text().splitlines()]
    sources: dict[str, int] = {}
    overruled = 0
    for union, lexicon in zip(outputs["union"], outputs["lexicon"], strict=True):
        for e in union:
            sources[e["source"]] = sources.get(e["source"], 0) + 1
            if e["source"] == "model":
                overruled += any(e["start"] < m["end"] and m["start"] < e["end"] for m in lexicon)
    log(f"done; load {load_avg()}")

    print_table(report, thresholds)
    print("```")
    print(text.rstrip())
    print("```")
    print(
        f"union entities by source: {sources}; model entities overlapping a lexicon match "
        f"(the model won): {overruled}, elsewhere: {sources.get('model', 0) - overruled}"
    )
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
                    "union_sources": sources,
                    "model_overruled_lexicon": overruled,
                },
                indent=2,
            )
            + "\n"
        )


def print_table(report: dict[str, Any], thresholds: dict[str, Any]) -> None:
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


def ncbi(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import torch
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from appliance.annotate.lexicon import LexiconAnnotator, load_lexicon
    from appliance.documents import Document, read_gold
    from appliance.ner.evaluate import evaluate
    from appliance.ner.export import export_package
    from appliance.ner.lexicon import (
        PackedLexicon,
        annotator_options,
        load_package_lexicon,
        predict,
    )
    from appliance.ner.runtime import onnx_tagger
    from appliance.ner.settings import NerSettings
    from appliance.ner.train import split_dev, train_model

    torch.set_num_threads(os.cpu_count() or 1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ner-lexicon-ncbi-"))
    work.mkdir(parents=True, exist_ok=True)
    conll = args.corpora / "ncbi-disease" / "conll"
    train_gold = read_gold(conll / "train.tsv", "conll", {"Disease": "DIAGNOSIS"})
    devel = read_gold(conll / "devel.tsv", "conll", {"Disease": "DIAGNOSIS"})
    lexicon = load_lexicon(args.corpora / "doid" / "doid.obo", "DIAGNOSIS")
    annotator = LexiconAnnotator(lexicon)
    labelled = [Document(d.id, d.text, annotator.annotate_text(d.text)) for d in train_gold]
    train, dev = split_dev(labelled, 0.15, 0)
    log(
        f"{len(train)} train / {len(dev)} dev lexicon-labelled sentences; work {work}; load {load_avg()}"
    )
    settings = NerSettings(
        epochs=args.epochs, max_steps=args.max_steps, batch_size=16, seed=0, device="cpu"
    )
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if args.reuse and (work / "model" / "ner.json").is_file():
        meta = json.loads((work / "model" / "ner.json").read_text())
        steps = int(meta["training"]["steps"])
        dev_f1 = meta["metrics"]["dev"]["exact"]["micro"]["f1"]
        log(f"reusing {work / 'model'}")
    else:
        res = train_model(
            train, dev, base=None, out_dir=work / "model", settings=settings, types=["DIAGNOSIS"]
        )
        seconds["train"] = time.perf_counter() - t0
        steps, dev_f1 = res.steps, res.dev_f1
    log(f"trained: {steps} steps, dev F1 (lexicon labels) {dev_f1}; load {load_avg()}")
    key = Ed25519PrivateKey.generate()
    packed = PackedLexicon(lexicon, annotator_options(annotator.params()), {"kind": "files"})
    t0 = time.perf_counter()
    export_package(
        work / "model", work / "package", signing_key=key, dev_docs=dev[:8], lexicon=packed
    )
    seconds["export"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = evaluate(work / "package", devel, public_key=key.public_key(), device="cpu")
    seconds["evaluate"] = time.perf_counter() - t0
    thresholds = {
        str(t): evaluate(
            work / "package", devel, public_key=key.public_key(), device="cpu", min_confidence=t
        )["comparison"]["union"]
        for t in args.min_confidence
    }
    # Where union's entities come from (the same rule infer applies).
    texts = [d.text for d in devel]
    lex = load_package_lexicon(work / "package")
    union = predict(onnx_tagger(work / "package", device="cpu"), lex, texts, "union", 0.5)
    matches = lex.match(texts) if lex is not None else []
    sources: dict[str, int] = {}
    overruled = 0
    for found, spans in zip(union, matches, strict=True):
        for e in found:
            sources[str(e.source)] = sources.get(str(e.source), 0) + 1
            if e.source == "model":
                overruled += any(e.start < m.end and m.start < e.end for m in spans)
    log(f"done; load {load_avg()}")
    print_table(report, thresholds)
    print(
        f"union entities by source: {sources}; model entities overlapping a lexicon match "
        f"(the model won): {overruled}, elsewhere: {sources.get('model', 0) - overruled}"
    )
    print(
        f"model: {steps} steps, dev F1 on lexicon labels {dev_f1}; "
        + "seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
    )
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "seconds": seconds,
                    "steps": steps,
                    "dev_f1_lexicon_labels": dev_f1,
                    "union_sources": sources,
                    "model_overruled_lexicon": overruled,
                    "report": report,
                    "union_by_min_confidence": thresholds,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
