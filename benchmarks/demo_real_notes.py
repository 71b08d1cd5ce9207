"""How far can the NER training go on demo data when the text is not the limit?

The demo's synthetic-only model scores far below its teacher (the 60 % term
list). This bounds the training method apart from the generator: the same
scratch NER model trained on the *real* demo notes the generator learned from
(``DIR/export/gold.jsonl`` of a finished ``appliance demo DIR``), labelled

- ``lexicon``: by the term list's annotator, with the product's defaults on
  annotations (partial labels, O sampling, one mention-replaced copy);
- ``oracle``: the same, but every gold mention the term list missed is left
  out of the loss (perfect partial labels: the most "unsure" marking can do);
- ``novel``: the same as ``lexicon`` with two mention-replaced copies whose
  terms include made-up ones spliced from list terms of the type (can
  replacement teach context over memorized names?);
- ``gold``: by the gold labels (the ceiling);

each scored on the demo's 200 fresh notes (``DIR/fresh-export/gold.jsonl``)
beside the term list alone. Real notes never leave the real zone in the
product; this is a measurement, not a training path.

    .venv/bin/appliance demo /tmp/demo
    .venv/bin/python benchmarks/demo_real_notes.py --demo /tmp/demo --workdir /tmp/demo-real
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNS = ("lexicon", "oracle", "novel", "gold")


def splice_terms(pools: dict[str, list[str]], per_term: int, seed: int) -> dict[str, list[str]]:
    """Each type's terms plus made-up ones: word halves of two terms, or a word's head and tail."""
    rng = random.Random(seed)

    def splice(a: str, b: str) -> str:
        wa, wb = a.split(), b.split()
        if len(wb) > 1:
            return " ".join(wa[: max(1, len(wa) // 2)] + wb[len(wb) // 2 :])
        if len(wa) > 1:
            return " ".join(wa[:-1] + wb[-1:])
        i = rng.randint(2, max(2, len(a) - 2))
        j = rng.randint(1, max(1, len(b) - 3))
        return a[:i] + b[j:]

    out = {}
    for label, terms in pools.items():
        made: set[str] = set()
        tries = 0
        while len(made) < per_term * len(terms) and tries < 100 * len(terms):
            tries += 1
            made.add(splice(rng.choice(terms), rng.choice(terms)))
        out[label] = sorted(set(terms) | made)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--demo", type=Path, required=True, help="a finished `appliance demo` folder")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--runs", default=",".join(RUNS))
    ap.add_argument("--epochs", type=int, default=12, help="the demo's NER budget (12)")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from appliance.annotate.lexicon import LexiconAnnotator, load_lexicon
    from appliance.documents import Document, Uncertain, read_gold
    from appliance.metrics import score
    from appliance.ner.augment import replace_mentions
    from appliance.ner.runtime import torch_tagger
    from appliance.ner.settings import NerSettings
    from appliance.ner.train import split_dev, train_model

    demo = args.demo.resolve()
    real = read_gold(demo / "export" / "gold.jsonl")
    fresh = read_gold(demo / "fresh-export" / "gold.jsonl")
    annotator = LexiconAnnotator(load_lexicon(demo / "terms.tsv"))
    pools: dict[str, list[str]] = {}
    for entry in annotator.lexicon.entries:
        pools.setdefault(entry.label, []).append(entry.surface)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "state.json"
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}

    teacher = [Document(d.id, d.text, annotator.annotate_text(d.text)) for d in fresh]
    state["term list alone"] = score(fresh, teacher)["exact"]

    for run in (r for r in args.runs.split(",") if r):
        if run not in RUNS:
            sys.exit(f"--runs: {run}? (one of {', '.join(RUNS)})")
        if run in state:
            print(f"{run}: done earlier", flush=True)
            continue
        if run == "gold":
            docs = real
        else:
            docs = []
            for d in real:
                r = annotator.annotate(d.text)
                unsure = list(r.uncertain)
                if run == "oracle":
                    unsure += [
                        Uncertain(g.start, g.end, "oracle")
                        for g in d.spans
                        if not any(s.start < g.end and g.start < s.end for s in r.spans)
                    ]
                docs.append(Document(d.id, d.text, r.spans, {}, unsure))
        settings = NerSettings(
            epochs=args.epochs,
            batch_size=16,
            seed=0,
            device="cpu",
            mention_copies=2 if run == "novel" else None,
        ).resolved(gold=run == "gold")
        train, dev = split_dev(docs, settings.dev_fraction, settings.seed)
        if settings.mention_copies:
            terms = splice_terms(pools, 3, seed=0) if run == "novel" else pools
            copies, _ = replace_mentions(
                train,
                terms,
                share=settings.mention_share,
                copies=settings.mention_copies,
                min_confidence=0.9,
                seed=settings.seed,
            )
            train = [*train, *copies]
        started = time.perf_counter()
        res = train_model(train, dev, base=None, out_dir=work / run, settings=settings)
        tagger = torch_tagger(work / run, device="cpu")
        preds = tagger.predict([d.text for d in fresh])
        pred_docs = [
            Document(d.id, d.text, [e.span() for e in p]) for d, p in zip(fresh, preds, strict=True)
        ]
        state[run] = {
            **score(fresh, pred_docs)["exact"],
            "steps": res.steps,
            "seconds": round(time.perf_counter() - started),
        }
        state_path.write_text(json.dumps(state, indent=2))
        print(f"{run}: F1 {state[run]['micro']['f1']:.3f}", flush=True)

    print(f"\n{len(real)} real demo notes for training; {len(fresh)} fresh notes scored\n")
    print("| entities from | P | R | F1 | F1 DIAGNOSIS / DRUG / PROCEDURE |")
    print("|---|---:|---:|---:|---:|")
    for name, r in state.items():
        m, t = r["micro"], r.get("per_type", {})
        types = " / ".join(
            f"{t.get(x, {}).get('f1', 0):.3f}" for x in ("DIAGNOSIS", "DRUG", "PROCEDURE")
        )
        print(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {types} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(state, indent=2))


if __name__ == "__main__":
    main()
