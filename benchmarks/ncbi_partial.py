"""Partial labels on NCBI-disease: can a model trained on lexicon labels beat the lexicon?

The NCBI-disease train abstracts (592, PubTator title + abstract) are labelled
by the product's lexicon annotator (``appliance.annotate.lexicon``, the
Disease Ontology 2016, type ``DIAGNOSIS``); the gold labels are thrown away.
MiniLM (all-MiniLM-L6-v2) is trained on them with each of the NER training
switches of :class:`appliance.ner.settings.NerSettings` on and off, the dev
set being the product's default (a 15 % split of the annotated notes, scored
with the view the settings ask for): no model sees a human label. Every model
is then scored on NCBI-disease devel (100 abstracts, gold ``Disease`` spans),
exact spans (``appliance.metrics.score``), beside the lexicon applied to
devel directly and a model trained on the gold train labels (upper bound).
The test set is never read.

Undecided ranges and confidences: the annotator of this revision marks
spans only (each with confidence 1.0). Until it marks what it could not
decide itself, ``--undecided standin`` (the default) adds what it is being
taught to: undecided ranges over head-noun phrases no lexicon term matched
(a word that ends at least 30 multi-word Disease Ontology terms and rarely
stands anywhere else in one (under 40 %), e.g. *syndrome*, *tumor*, *deficiency*, with
up to three words before it) and over unmatched abbreviations (2 to 6
capitals and digits), and confidence 0.4 on a match that is a single
abbreviation (gene or disease?). All of it comes from the ontology and the
text, none from a gold label. ``--undecided none`` trains on spans only.

    PYTHONPATH=. .venv/bin/python benchmarks/ncbi_partial.py --corpora ../shared/corpora \\
        --workdir /tmp/ncbi-partial --max-steps 150 --eval-every 50 --json-out /tmp/ncbi-partial/result.json

Resumable: a model already trained and scored in ``--workdir`` is not
trained again (``--only NAME,...`` retrains those).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.ncbi_experiment import LABEL, load_avg, log, minilm_dir, read_pubtator  # noqa: E402

_ABBREVIATION = re.compile(r"^(?=(?:.*[A-Z]){2})[A-Z][A-Z0-9]{1,5}$")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "these",
        "this",
        "those",
        "to",
        "was",
        "were",
        "which",
        "with",
        "we",
        "our",
        "not",
        "no",
    ]
)

UNION_THRESHOLDS = (0.5, 0.9)  # the union's minimum confidence: the old default and the new one

# name: (what it shows, NerSettings overrides on top of PLAIN, train on gold?)
PLAIN: dict[str, Any] = {
    "partial_labels": False,
    "o_keep": 1.0,
    "self_training_rounds": 0,
    "dev_signal": "plain",
    "mention_copies": 0,
}
RUNS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "plain": ("plain lexicon labels", {}, False),
    "all": (
        "all on (partial, O sampling 0.3, 1 self-training round)",
        {"partial_labels": True, "dev_signal": "partial", "o_keep": 0.3, "self_training_rounds": 1},
        False,
    ),
    "default": (
        "the product's default on annotator labels: partial labels + O sampling 0.3",
        {"partial_labels": True, "dev_signal": "partial", "o_keep": 0.3},
        False,
    ),
    "mentions": (
        "the default + mention replacement (1 copy, share 0.5, Disease Ontology terms)",
        {"partial_labels": True, "dev_signal": "partial", "o_keep": 0.3, "mention_copies": 1},
        False,
    ),
    "o-sampling": ("+ O sampling (o_keep 0.3)", {"o_keep": 0.3}, False),
    "partial": (
        "+ partial labels (undecided out of the loss, dev scored the same way)",
        {"partial_labels": True, "dev_signal": "partial"},
        False,
    ),
    "self-training": (
        "+ self-training (1 round, threshold 0.9)",
        {"self_training_rounds": 1},
        False,
    ),
    "gold-train": ("gold train labels (upper bound), plain", {}, True),
}


def disease_heads(annotator: Any, min_terms: int = 30, max_elsewhere: float = 0.4) -> set[str]:
    """Head nouns of the ontology: last word of many multi-word terms, rarely anywhere else."""
    from appliance.documents import word_tokens

    last: Counter[str] = Counter()
    inner: Counter[str] = Counter()
    for entry in annotator.lexicon.entries:
        toks = [annotator.normalize(entry.surface[a:b]) for a, b in word_tokens(entry.surface)]
        if len(toks) < 2 or not toks[-1].isalpha():
            continue
        last[toks[-1]] += 1
        for t in toks[:-1]:
            inner[t] += 1
    return {
        w
        for w, n in last.items()
        if n >= min_terms and inner[w] <= max_elsewhere * (n + inner[w]) and len(w) > 3
    }


def standin_doubts(doc: Any, annotator: Any, heads: set[str]) -> Any:
    """``doc`` with undecided ranges and low confidences of the kind described in the docstring."""
    from dataclasses import replace

    from appliance.documents import Document, Uncertain, word_tokens

    text = doc.text
    toks = word_tokens(text)
    covered = [False] * len(toks)
    for s in doc.spans:
        for i, (a, b) in enumerate(toks):
            if a < s.end and s.start < b:
                covered[i] = True
    uncertain: list[Uncertain] = []
    for i, (a, b) in enumerate(toks):
        if covered[i]:
            continue
        word = text[a:b]
        if _ABBREVIATION.match(word):
            uncertain.append(Uncertain(a, b, "abbreviation"))
            continue
        if annotator.normalize(word) not in heads:
            continue
        j, words = i, 0
        while j > 0 and words < 3 and not covered[j - 1]:
            prev = text[toks[j - 1][0] : toks[j - 1][1]]
            if prev == "-" or prev == "/":
                j -= 1
                continue
            if not prev[0].isalnum() or prev.lower() in _STOP:
                break
            j -= 1
            words += 1
        uncertain.append(Uncertain(toks[j][0], b, "head_noun"))
    spans = [
        replace(s, confidence=0.4) if _ABBREVIATION.match(s.text) and " " not in s.text else s
        for s in doc.spans
    ]
    return Document(doc.id, text, spans, doc.meta, uncertain)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--undecided", choices=("annotator", "standin", "none"), default="annotator")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", type=Path, default=None, help="encoder folder (default: MiniLM)")
    ap.add_argument("--only", default="", help="comma-separated run names to (re)run")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)

    from appliance.annotate.lexicon import LexiconAnnotator, load_lexicon
    from appliance.documents import Document
    from appliance.metrics import partial_view, score
    from appliance.ner.augment import replace_mentions
    from appliance.ner.lexicon import combine
    from appliance.ner.runtime import torch_tagger
    from appliance.ner.settings import NerSettings
    from appliance.ner.train import split_dev, train_model

    ncbi = args.corpora / "ncbi-disease" / "pubtator"
    doid = args.corpora / "doid" / "doid.obo"
    if not (ncbi / "NCBItrainset_corpus.txt").exists() or not doid.exists():
        sys.exit(f"{args.corpora}: NCBI-disease (pubtator) and doid/doid.obo are needed")
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "state.json"
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}
    base = args.base or minilm_dir()

    gold_train = read_pubtator(ncbi / "NCBItrainset_corpus.txt")
    devel = read_pubtator(ncbi / "NCBIdevelopset_corpus.txt")
    annotator = LexiconAnnotator(load_lexicon(doid, LABEL))
    if args.undecided == "annotator":
        results = [annotator.annotate(d.text) for d in gold_train]
        lex_train = [
            Document(d.id, d.text, r.spans, {}, r.uncertain)
            for d, r in zip(gold_train, results, strict=True)
        ]
    else:
        lex_train = [Document(d.id, d.text, annotator.annotate_text(d.text)) for d in gold_train]
    if args.undecided == "standin":
        heads = disease_heads(annotator)
        lex_train = [standin_doubts(d, annotator, heads) for d in lex_train]
        log(f"stand-in head nouns ({len(heads)}): {', '.join(sorted(heads))}")
    lex_devel = [Document(d.id, d.text, annotator.annotate_text(d.text)) for d in devel]
    lex = score(devel, lex_devel)["exact"]["micro"]
    # What the undecided ranges hold, on train (against gold: for the write-up only).
    n_unc = sum(len(d.uncertain) for d in lex_train)
    n_low = sum(s.confidence < 0.5 for d in lex_train for s in d.spans)
    g_in = sum(
        any(u.start < g.end and g.start < u.end for u in d.uncertain)
        for d, gd in zip(lex_train, gold_train, strict=True)
        for g in gd.spans
    )
    state["data"] = {
        "train_abstracts": len(gold_train),
        "devel_abstracts": len(devel),
        "lexicon_train_spans": sum(len(d.spans) for d in lex_train),
        "gold_train_spans": sum(len(d.spans) for d in gold_train),
        "undecided_ranges": n_unc,
        "low_confidence_spans": n_low,
        "gold_train_spans_touching_undecided": g_in,
        "lexicon_devel": lex,
    }
    log(f"lexicon on devel: P {lex['precision']:.3f} R {lex['recall']:.3f} F1 {lex['f1']:.3f}")
    log(f"train: {json.dumps(state['data'])}")
    models: dict[str, Any] = state.setdefault("models", {})
    only = {x for x in args.only.split(",") if x}
    names = [n for n in args.runs.split(",") if n]
    lex_spans = [d.spans for d in lex_devel]

    def unions(preds: list[Any]) -> dict[str, Any]:
        """What a package ships: the model with its lexicon (the union rule), per threshold."""
        out = {}
        for t in UNION_THRESHOLDS:
            docs = [
                Document(d.id, d.text, [e.span() for e in combine(p, s, "union", t)])
                for d, p, s in zip(devel, preds, lex_spans, strict=True)
            ]
            out[f"{t:g}"] = score(devel, docs)["exact"]["micro"]
        return out

    for name in names:
        title, overrides, gold = RUNS[name]
        if name in models and name not in only:
            m = models[name]
            if set(m.get("devel_union") or {}) != {f"{t:g}" for t in UNION_THRESHOLDS}:
                tagger = torch_tagger(work / name, device="cpu")  # scored before: add the union
                m["devel_union"] = unions(tagger.predict([d.text for d in devel]))
                state_path.write_text(json.dumps(state, indent=2))
            log(f"{name}: done earlier, devel F1 {m['devel']['f1']:.3f}")
            continue
        settings = NerSettings(
            epochs=args.epochs,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            max_length=args.max_length,
            lr=args.lr,
            eval_every=args.eval_every,
            patience=3,
            seed=args.seed,
            device="cpu",
            **{**PLAIN, **overrides},
        )
        docs = gold_train if gold else lex_train
        train, dev = split_dev(docs, settings.dev_fraction, settings.seed)
        if settings.mention_copies:  # as `ner train` does, from the annotator's lexicon
            pools: dict[str, list[str]] = {}
            for entry in annotator.lexicon.entries:
                pools.setdefault(entry.label, []).append(entry.surface)
            copies, stats = replace_mentions(
                train,
                pools,
                share=settings.mention_share,
                copies=settings.mention_copies,
                min_confidence=0.9,
                seed=settings.seed,
            )
            log(f"{name}: mention replacement {stats.as_dict()}")
            train = [*train, *copies]
        log(f"{name}: {title}; {len(train)} train / {len(dev)} dev notes; load {load_avg()}")
        t0 = time.perf_counter()
        res = train_model(train, dev, base=base, out_dir=work / name, settings=settings)
        seconds = time.perf_counter() - t0
        tagger = torch_tagger(work / name, device="cpu")
        preds = tagger.predict([d.text for d in devel])
        pred_docs = [
            Document(d.id, d.text, [e.span() for e in p]) for d, p in zip(devel, preds, strict=True)
        ]
        micro = score(devel, pred_docs)["exact"]["micro"]
        # The dev split as the plain and the partial view score it (what the rounds saw).
        dev_preds = tagger.predict([d.text for d in dev])
        dev_docs = [
            Document(d.id, d.text, [e.span() for e in p])
            for d, p in zip(dev, dev_preds, strict=True)
        ]
        models[name] = {
            "title": title,
            "settings": settings.as_dict(),
            "steps": res.steps,
            "best_step": res.best_step,
            "rounds": res.rounds,
            "seconds": round(seconds, 1),
            "devel": micro,
            "devel_union": unions(preds),
            "dev_plain_f1": score(dev, dev_docs)["exact"]["micro"]["f1"],
            "dev_partial_f1": score(*partial_view(dev, dev_docs, 0.5))["exact"]["micro"]["f1"],
            "load_after": load_avg(),
        }
        state_path.write_text(json.dumps(state, indent=2))
        log(
            f"{name}: {res.steps} steps (best {res.best_step}) in {seconds:.0f} s; devel "
            f"P {micro['precision']:.3f} R {micro['recall']:.3f} F1 {micro['f1']:.3f}; "
            f"rounds {json.dumps(res.rounds)}"
        )
    state_path.write_text(json.dumps(state, indent=2))

    print(
        f"\nNCBI-disease devel ({len(devel)} abstracts, {sum(len(d.spans) for d in devel)} gold "
        f"mentions), exact-span P/R/F1; MiniLM, batch {args.batch_size}, max_length "
        f"{args.max_length}, lr {args.lr}, at most {args.max_steps} steps per model (round), "
        f"dev = 15 % split of the training notes, undecided: {args.undecided}\n"
    )
    heads = " | ".join(f"union at {t:g}: P / R / F1" for t in UNION_THRESHOLDS)
    print(f"| training labels | steps (best) | P | R | F1 | {heads} |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(UNION_THRESHOLDS))
    print(
        f"| lexicon applied directly to devel (no model) | – | {lex['precision']:.3f} | "
        f"{lex['recall']:.3f} | {lex['f1']:.3f} |" + " – |" * len(UNION_THRESHOLDS)
    )
    for name in names:
        if name not in models:
            continue
        m = models[name]
        d = m["devel"]
        steps = f"{m['steps']} ({m['best_step']})"
        if m["rounds"]:
            steps = " + ".join(f"{r['steps']}" for r in m["rounds"]) + (
                f", round {next(r['round'] for r in m['rounds'] if r['kept'])} kept"
            )
        cells = []
        for t in UNION_THRESHOLDS:
            u = (m.get("devel_union") or {}).get(f"{t:g}")
            cells.append(f"{u['precision']:.3f} / {u['recall']:.3f} / {u['f1']:.3f}" if u else "–")
        print(
            f"| {m['title']} | {steps} | {d['precision']:.3f} | {d['recall']:.3f} | "
            f"**{d['f1']:.3f}** | {' | '.join(cells)} |"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(state, indent=2))


if __name__ == "__main__":
    main()
