"""A second language: Swedish medical text as the hospital's notes, a synthetic-only NER model.

The Swedish silver corpus in ``../shared/corpora/swedish-medical-wiki-silver``
(``Wiki_annotated_60.txt``: 60-character windows of Swedish Wikipedia
medical pages, entities marked by dictionary matching: ``(disorder or
finding)``, ``[drug]``, ``{body structure}``) stands in for a Swedish
hospital's notes:

* the markup is stripped; a span touching the window's edge is dropped
  (the window may have cut the word); exact duplicate windows are dropped; consecutive
  windows (one page's windows follow each other) are grouped in blocks of
  ``--block`` lines, and a seeded 20 % of the blocks is held out: their
  windows, with their silver spans, are the test set; the other blocks'
  windows, joined per block, are the "real notes" ingested into a workspace
  made with ``--language sv``;
* the lexicon is a seeded 60 % of the distinct silver terms of each type
  (case-folded; the rest held out, as the demo's term list), written as a
  TSV (``term, label``) the lexicon annotator reads; types ``DIAGNOSIS``
  (disorder/finding), ``DRUG``, ``ANATOMY`` (body structure);
* the product's pipeline runs on it (``appliance.pipeline.run``): the
  generator from scratch with entity-conditioned prefixes from that lexicon,
  synthetic notes, the leakage screen, lexicon annotation (language ``sv``:
  no English rules), a scratch NER model (no Swedish encoder is available
  offline), a signed package carrying the lexicon;
* on the held-out windows: the lexicon alone, the model alone and the
  package's union (``appliance.ner.evaluate``), exact spans, per type.

No English assumption may remain on the path: the workspace language is
``sv`` and every stage runs as a user's would.

    .venv/bin/python benchmarks/swedish.py --workdir /tmp/sv --json-out /tmp/sv/result.json

Resumable: the pipeline skips finished stages in ``--workdir``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKS = {"(": (")", "DIAGNOSIS"), "[": ("]", "DRUG"), "{": ("}", "ANATOMY")}
_TAG = re.compile(r"\(([^()\[\]{}]+)\)|\[([^()\[\]{}]+)\]|\{([^()\[\]{}]+)\}")
TYPES = ("DIAGNOSIS", "DRUG", "ANATOMY")

CONFIG = """[pipeline]
export = "notes.jsonl"

[generator]
recipe = "{recipe}"
entity_terms = {entity_terms}
max_steps = {generator_steps}

[generate]
count = {synthetic}
batch_size = 32
seed = 1

[annotate]
annotator = ["lexicon"]
lexicons = ["terms.tsv"]

[ner]
base = "scratch"
epochs = {epochs}
batch_size = 16
mention_copies = {mention_copies}
term_holdout = {term_holdout}
"""


def parse(line: str) -> tuple[str, list[tuple[int, int, str]]] | None:
    """A window's plain text and silver spans (None if it holds no letter)."""
    out: list[str] = []
    spans: list[tuple[int, int, str]] = []
    pos = 0
    at = 0
    for m in _TAG.finditer(line):
        inner = next(g for g in m.groups() if g is not None)
        label = MARKS[line[m.start()]][1]
        out.append(line[pos : m.start()])
        at += m.start() - pos
        if not re.search(r"[^\W\d_]", inner):  # "[1]": a citation mark, not a drug
            out.append(line[m.start() : m.end()])
            at += m.end() - m.start()
        else:
            start = at + (len(inner) - len(inner.lstrip()))
            out.append(inner)
            at += len(inner)
            end = at - (len(inner) - len(inner.rstrip()))
            if end > start:
                spans.append((start, end, label))
        pos = m.end()
    out.append(line[pos:])
    text = "".join(out)
    if not re.search(r"[^\W\d_]", text):
        return None
    # A span at the window's edge may be a word the window cut ("lett" of "skelett").
    spans = [(a, b, label) for a, b, label in spans if a > 0 and b < len(text)]
    return text, spans


def load(path: Path, block: int, seed: int) -> tuple[list[list[Any]], list[Any]]:
    """(training blocks of windows, held-out windows) after dropping duplicate windows."""
    seen: set[str] = set()
    windows: list[Any] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        parsed = parse(raw.strip())
        if parsed is None or parsed[0] in seen:
            continue
        seen.add(parsed[0])
        windows.append(parsed)
    blocks = [windows[i : i + block] for i in range(0, len(windows), block)]
    train: list[list[Any]] = []
    test: list[Any] = []
    for i, b in enumerate(blocks):
        h = hashlib.sha256(f"{seed}:{i}".encode()).digest()
        (test.extend if h[0] < 256 * 0.2 else lambda x: train.append(list(x)))(b)
    return train, test


_WORD = re.compile(r"\w+")


def term_list(
    windows: list[Any], share: float, seed: int, min_tagged: float = 0.5
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """A seeded ``share`` of the distinct (case-folded) silver terms of each type.

    The markup's parentheses are also the text's own, so a word in ordinary
    parentheses reads as a disorder ("(en)", "(är)"); a term is kept only if
    at least ``min_tagged`` of its occurrences in the corpus are tagged
    (a measure of the silver labels themselves, never of a gold set), and
    only if it has at most four words (longer "terms" are parenthesized
    clauses of the text).
    """
    tagged: dict[str, dict[str, int]] = {t: {} for t in TYPES}
    grams: dict[str, int] = {}
    for text, spans in windows:
        words = [w.casefold() for w in _WORD.findall(text)]
        for n in (1, 2, 3):
            for i in range(len(words) - n + 1):
                key = " ".join(words[i : i + n])
                grams[key] = grams.get(key, 0) + 1
        for a, b, label in spans:
            term = text[a:b].casefold()
            tagged[label][term] = tagged[label].get(term, 0) + 1
    terms: dict[str, set[str]] = {t: set() for t in TYPES}
    dropped = 0
    for label in TYPES:
        for term, n in tagged[label].items():
            seen = grams.get(" ".join(_WORD.findall(term)), n)
            if n >= min_tagged * max(seen, n) and len(_WORD.findall(term)) <= 4:
                terms[label].add(term)
            else:
                dropped += 1
    rng = random.Random(seed)
    kept: dict[str, list[str]] = {}
    counts: dict[str, Any] = {}
    for label in TYPES:
        pool = sorted(terms[label])
        n = max(1, round(share * len(pool)))
        kept[label] = sorted(rng.sample(pool, n))
        counts[label] = {"distinct": len(pool), "kept": n}
    counts["dropped_mostly_untagged"] = dropped
    return kept, counts


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--block", type=int, default=40, help="windows per note (and per split unit)")
    ap.add_argument("--share", type=float, default=0.6, help="share of silver terms in the lexicon")
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--generator-steps", type=int, default=0, help="0: the recipe's")
    ap.add_argument("--synthetic", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--entity-terms", choices=("on", "off"), default="on")
    ap.add_argument("--mention-copies", type=int, default=1)
    ap.add_argument(
        "--term-holdout", type=float, default=0.2, help="share of terms held out of NER training"
    )
    ap.add_argument(
        "--test-windows", type=int, default=3000, help="held-out windows scored (seeded sample)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from appliance.annotate.annotators import AnnotatorOptions
    from appliance.annotate.evaluate import evaluate as evaluate_annotator
    from appliance.documents import Document, Span, write_jsonl
    from appliance.ner.evaluate import run as evaluate
    from appliance.pipeline import load_config, run
    from appliance.workspace import Workspace, init

    source = args.corpora / "swedish-medical-wiki-silver" / "Wiki_annotated_60.txt"
    if not source.exists():
        sys.exit(f"{source}: the Swedish silver corpus is needed")
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    train_blocks, test = load(source, args.block, args.seed)
    all_windows = [w for b in train_blocks for w in b] + test
    kept, term_counts = term_list(all_windows, args.share, args.seed)
    terms_path = work / "terms.tsv"
    terms_path.write_text(
        "term\tlabel\n" + "".join(f"{t}\t{label}\n" for label in TYPES for t in kept[label]),
        encoding="utf-8",
    )
    notes_path = work / "notes.jsonl"
    if not notes_path.exists():
        with notes_path.open("w", encoding="utf-8") as fh:
            for i, b in enumerate(train_blocks):
                text = "\n".join(t for t, _ in b)
                fh.write(json.dumps({"id": f"sv{i:05d}", "text": text}, ensure_ascii=False) + "\n")
    rng = random.Random(args.seed)
    sample = rng.sample(test, min(args.test_windows, len(test)))
    gold = [
        Document(f"t{i:05d}", text, [Span(a, b, label, text[a:b]) for a, b, label in spans])
        for i, (text, spans) in enumerate(sample)
    ]
    gold_path = work / "gold.jsonl"
    write_jsonl(gold, gold_path)
    data = {
        "windows": len(all_windows),
        "train_notes": len(train_blocks),
        "train_windows": sum(len(b) for b in train_blocks),
        "test_windows": len(test),
        "scored_windows": len(gold),
        "scored_mentions": sum(len(d.spans) for d in gold),
        "terms": term_counts,
    }
    print(json.dumps(data), file=sys.stderr, flush=True)
    config = work / "pipeline.toml"
    config.write_text(
        CONFIG.format(
            recipe=args.recipe,
            entity_terms=str(args.entity_terms == "on").lower(),
            generator_steps=args.generator_steps,
            synthetic=args.synthetic,
            epochs=args.epochs,
            mention_copies=args.mention_copies,
            term_holdout=args.term_holdout,
        )
    )
    ws_dir = work / "ws"
    ws = (
        Workspace.open(ws_dir)
        if (ws_dir / "appliance.toml").exists()
        else init(ws_dir, language="sv")
    )
    t0 = time.perf_counter()
    result = run(ws, load_config(config), echo=lambda m: print(m, file=sys.stderr, flush=True))
    for line in result.lines():
        print(line, file=sys.stderr)
    assert result.package is not None
    scores = evaluate(ws, gold=gold_path, model=result.package)
    teacher = evaluate_annotator(
        gold_path,
        AnnotatorOptions(annotators=("lexicon",), lexicons=(terms_path,)),
        egress=ws.policy.egress,
        schema=ws.policy.entity_schema(),
        language="sv",
    )
    comparison = scores.get("comparison") or {"model": scores}
    rows = {
        "lexicon alone (the teacher)": teacher,
        **{
            {"model": "model alone", "union": "model + packaged lexicon (union)"}.get(k, k): v
            for k, v in comparison.items()
            if k in ("model", "union")
        },
    }
    meta = json.loads((result.package / "ner.json").read_text(encoding="utf-8"))
    combine = (meta.get("lexicon") or {}).get("combine") or {}
    default = f"the package as it answers by default ({scores.get('combine')}"
    if scores.get("combine") == "union":
        default += f" at {combine.get('min_confidence')}"
    rows[default + f"; {combine.get('chosen')})"] = scores
    out = {
        "combine": combine,
        "data": data,
        "seconds": round(time.perf_counter() - t0, 1),
        "stages": {s.name: [s.status, s.seconds, s.summary] for s in result.stages},
        "rows": {},
    }
    print(
        f"\nSwedish silver, {len(gold)} held-out windows ({data['scored_mentions']} silver mentions); "
        f"lexicon: {args.share:.0%} of the distinct silver terms per type\n"
    )
    print("| entities from | P | R | F1 | F1 " + " / ".join(TYPES) + " |")
    print("|---|---:|---:|---:|---:|")
    for name, report in rows.items():
        seq = report.get("seqeval", {})
        micro = seq.get("micro", {})
        per = seq.get("per_type", {})
        out["rows"][name] = {
            "micro": micro,
            "per_type": {t: per.get(t, {}).get("f1") for t in TYPES},
        }
        print(
            f"| {name} | {micro.get('precision', 0):.3f} | {micro.get('recall', 0):.3f} | "
            f"**{micro.get('f1', 0):.3f}** | "
            + " / ".join(f"{float(per.get(t, {}).get('f1', 0)):.3f}" for t in TYPES)
            + " |"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
