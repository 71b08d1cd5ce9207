"""Annotation benchmark: LLM client throughput, and lexicon annotator quality.

Measures, each next to a baseline in the same run:

* **client throughput**: notes/s of the LLM annotator (prompt building,
  HTTP, schema validation, span alignment) against the OpenAI-compatible
  test server of the test suite (``tests/annotate_server.py``, loopback,
  fixed per-request latency standing in for the model), with 1 request in
  flight (the sequential baseline) versus 32 and 128; no answer cache;
* **lexicon quality on NCBI-disease devel** (``../shared/corpora``) with the
  Disease Ontology as lexicon: exact and partial precision/recall/F1 of the
  lexicon annotator versus an exact-match baseline (case-sensitive
  dictionary lookup of the same strings, no inflection handling, generic
  terms kept);
* **demo-data F1**: the default annotator (built-in demo vocabularies) on
  freshly generated demo notes against their gold spans, with the same
  exact-match baseline;
* **lexicon rules on NCBI-disease devel abstracts** (PubTator, so an
  abbreviation defined in an abstract is known through it; all four mention
  classes as DIAGNOSIS, the Disease Ontology typed DIAGNOSIS): the exact-match
  baseline, the lexicon with every new rule off, each rule alone
  (abbreviations, variants, head nouns), all of them, and the default
  (``LexiconAnnotator`` as ``appliance annotate`` builds it): exact and
  partial P/R/F1, the uncertain ranges left and how many of them cover a gold
  mention no span found. ``--split train`` prints the same table on NCBI
  train (where the rules' thresholds were chosen); nothing else is tuned on.

Usage::

    .venv/bin/python benchmarks/annotate.py
    .venv/bin/python benchmarks/annotate.py --notes 200 --latency 0.05 --json-out annotate.json
    .venv/bin/python benchmarks/annotate.py --only rules --split train
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance import demo  # noqa: E402
from appliance.annotate.client import LLMClient, LLMSettings  # noqa: E402
from appliance.annotate.lexicon import (  # noqa: E402
    LexiconAnnotator,
    LexiconRules,
    demo_lexicon,
    load_lexicon,
)
from appliance.annotate.prompts import PromptBuilder  # noqa: E402
from appliance.config import load_policy  # noqa: E402
from appliance.documents import Document, Span, read_gold, word_tokens  # noqa: E402
from appliance.metrics import score  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def throughput(gold_path: Path, latency: float, levels: list[int]) -> list[dict[str, Any]]:
    policy = load_policy()
    schema = policy.entity_schema()
    gold = [json.loads(x) for x in gold_path.read_text().splitlines()]
    notes = [(g["id"], g["text"]) for g in gold]
    rows = []
    # The server runs in its own process, so it does not compete with the
    # client for this interpreter's GIL.
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.annotate_server", str(gold_path), "--latency", str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert server.stdout is not None and server.stdin is not None
    url = server.stdout.readline().strip()
    try:
        for n in levels:
            client = LLMClient(
                url,
                policy.egress,
                LLMSettings(model="test-model", max_in_flight=n, timeout=60.0),
                PromptBuilder(schema, "zero-shot"),
            )
            start = time.perf_counter()
            answers = asyncio.run(client.annotate(notes))
            wall = time.perf_counter() - start
            ok = sum(a.mentions is not None for a in answers)
            rows.append(
                {
                    "in_flight": n,
                    "notes": len(notes),
                    "answered": ok,
                    "seconds": round(wall, 3),
                    "notes_per_s": round(len(notes) / wall, 1),
                    "ceiling_notes_per_s": round(n / latency, 1) if latency else None,
                }
            )
            log(f"in flight {n}: {rows[-1]['notes_per_s']} notes/s")
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    return rows


def quality(gold: list[Document], lexicon: Any) -> dict[str, Any]:
    """Exact-match baseline, the lexicon with the new rules off, and the default annotator."""
    types = {sp.label for d in gold for sp in d.spans}
    out = {}
    for name, switches in (
        ("lexicon annotator (default rules)", {}),
        ("lexicon, new rules off", OFF),
        ("exact-match baseline", RULE_ROWS[0][1]),
    ):
        ann = LexiconAnnotator(lexicon, **switches)
        start = time.perf_counter()
        pred = [
            Document(d.id, d.text, [sp for sp in ann.annotate_text(d.text) if sp.label in types])
            for d in gold
        ]
        secs = time.perf_counter() - start
        s = score(gold, pred)
        out[name] = {
            "exact": s["exact"]["micro"],
            "partial": s["partial"]["micro"],
            "per_type_f1": {t: c["f1"] for t, c in s["exact"]["per_type"].items()},
            "seconds": round(secs, 3),
            "terms": ann.size,
        }
    return out


# name -> LexiconAnnotator switches; the baseline also drops case folding, plurals and generic terms.
OFF = {"abbreviations": False, "variants": False, "head_nouns": False, "unknown_words": False}
RULE_ROWS: list[tuple[str, dict[str, Any]]] = [
    (
        "exact-match baseline",
        {**OFF, "case_insensitive": False, "inflection": False, "skip_generic": False},
    ),
    ("lexicon, all new rules off", OFF),
    ("+ abbreviations only", {**OFF, "abbreviations": True}),
    ("+ variants only", {**OFF, "variants": True}),
    ("+ head nouns only", {**OFF, "head_nouns": True}),
    ("+ unknown words only", {**OFF, "unknown_words": True}),
    (
        "all rules on",
        {"abbreviations": True, "variants": True, "head_nouns": True, "unknown_words": True},
    ),
    ("default (appliance annotate)", {}),
]


def rule_table(gold: list[Document], lexicon: Any) -> list[dict[str, Any]]:
    """Each configuration of ``RULE_ROWS`` on ``gold``: scores, uncertain ranges, seconds."""
    rules = LexiconRules.from_schema(load_policy().entity_schema(), "en")
    rows = []
    for name, switches in RULE_ROWS:
        ann = LexiconAnnotator(lexicon, language_rules=rules, **switches)
        start = time.perf_counter()
        results = [ann.annotate(d.text) for d in gold]
        secs = time.perf_counter() - start
        # As `appliance annotate evaluate`: only the gold set's types are scored.
        types = {sp.label for d in gold for sp in d.spans}
        for r in results:
            r.spans = [sp for sp in r.spans if sp.label in types]
        pred = [Document(d.id, d.text, r.spans) for d, r in zip(gold, results, strict=True)]
        s = score(gold, pred)
        # Uncertain ranges: how many cover a gold mention that no predicted span overlaps,
        # and how many of their words are inside a gold mention (the rest are true "O" words
        # that training with partial labels no longer sees).
        ranges = covering = missed = words_in = words_all = 0
        for d, r in zip(gold, results, strict=True):
            ranges += len(r.uncertain)
            lost = [g for g in d.spans if not any(_overlap(g, p) for p in r.spans)]
            missed += len(lost)
            covering += sum(
                1 for u in r.uncertain if any(g.start < u.end and u.start < g.end for g in lost)
            )
            for u in r.uncertain:
                for a, b in word_tokens(d.text[u.start : u.end]):
                    words_all += 1
                    words_in += any(
                        g.start <= u.start + a and u.start + b <= g.end for g in d.spans
                    )
        by_conf: dict[str, list[int]] = {}  # confidence -> [spans, exact matches]
        for d, r in zip(gold, results, strict=True):
            exact = {(g.start, g.end, g.label) for g in d.spans}
            for sp in r.spans:
                cell = by_conf.setdefault(f"{sp.confidence:g}", [0, 0])
                cell[0] += 1
                cell[1] += (sp.start, sp.end, sp.label) in exact
        rows.append(
            {
                "annotator": name,
                "switches": switches,
                "exact": s["exact"]["micro"],
                "partial": s["partial"]["micro"],
                "uncertain_ranges": ranges,
                "uncertain_on_missed_gold": covering,
                "uncertain_words": words_all,
                "uncertain_words_in_gold": words_in,
                "missed_gold": missed,
                "spans_by_confidence": dict(sorted(by_conf.items())),
                "seconds": round(secs, 3),
            }
        )
        log(f"{name}: exact F1 {s['exact']['micro']['f1']:.3f} ({secs:.2f} s)")
    return rows


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%} of {whole}" if whole else "-"


def _overlap(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


def ncbi_abstracts(corpora: Path, split: str) -> list[Document]:
    """NCBI-disease abstracts from PubTator, every mention class as DIAGNOSIS."""
    name = {"devel": "NCBIdevelopset_corpus.txt", "train": "NCBItrainset_corpus.txt"}[split]
    docs = read_gold(corpora / "ncbi-disease" / "pubtator" / name, "pubtator")
    for d in docs:
        d.spans = [Span(s.start, s.end, "DIAGNOSIS", s.text) for s in d.spans]
    return docs


def print_rule_table(rows: list[dict[str, Any]], title: str) -> None:
    _print_rule_rows(rows, title)
    default = rows[-1]
    print(f"\nSpans of the '{default['annotator']}' row by confidence (the rule that made them):\n")
    print("| confidence | spans | exact matches | exact precision |")
    print("|---:|---:|---:|---:|")
    for conf, (n, tp) in sorted(default["spans_by_confidence"].items(), reverse=True):
        print(f"| {conf} | {n} | {tp} | {tp / n:.3f} |")


def _print_rule_rows(rows: list[dict[str, Any]], title: str) -> None:
    print(f"\n## {title}\n")
    print(
        "| annotator | exact P | exact R | exact F1 | partial P | partial R | partial F1 "
        "| uncertain ranges (on missed gold) | uncertain words in gold | seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        e, p = r["exact"], r["partial"]
        print(
            f"| {r['annotator']} | {e['precision']:.3f} | {e['recall']:.3f} | {e['f1']:.3f} | "
            f"{p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | "
            f"{r['uncertain_ranges']} ({r['uncertain_on_missed_gold']}) | "
            f"{_share(r['uncertain_words_in_gold'], r['uncertain_words'])} | {r['seconds']} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notes", type=int, default=200, help="demo notes for the throughput test")
    ap.add_argument(
        "--latency", type=float, default=0.05, help="test server latency per request (s)"
    )
    ap.add_argument("--in-flight", default="1,32,128", help="comma-separated levels")
    ap.add_argument("--demo-notes", type=int, default=300, help="demo notes for the demo F1")
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument(
        "--only", choices=["all", "rules"], default="all", help="rules: only the NCBI rule table"
    )
    ap.add_argument(
        "--split",
        choices=["devel", "train"],
        default="devel",
        help="NCBI split of the rule table (train: where thresholds were chosen)",
    )
    args = ap.parse_args()
    if args.only == "rules":
        doid = load_lexicon(args.corpora / "doid" / "doid.obo", "DIAGNOSIS")
        rows = rule_table(ncbi_abstracts(args.corpora, args.split), doid)
        print_rule_table(rows, f"NCBI-disease {args.split} abstracts, Disease Ontology lexicon")
        if args.json_out:
            args.json_out.write_text(json.dumps(rows, indent=2))
        return

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": os.getloadavg(),
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        r = demo.run(Path(tmp) / "tp", notes=args.notes, fmt="jsonl", seed=21)
        levels = [int(x) for x in args.in_flight.split(",")]
        results["throughput"] = throughput(r.gold_path, args.latency, levels)
        results["throughput_latency_s"] = args.latency

        r = demo.run(Path(tmp) / "demo", notes=args.demo_notes, fmt="jsonl", seed=7)
        demo_gold = read_gold(r.gold_path)
    results["demo"] = quality(demo_gold, demo_lexicon())
    ncbi = args.corpora / "ncbi-disease" / "conll" / "devel.tsv"
    if ncbi.exists():
        gold_docs = read_gold(ncbi, labels={"Disease": "DIAGNOSIS"})
        doid = load_lexicon(args.corpora / "doid" / "doid.obo", "DIAGNOSIS")
        results["ncbi_devel_doid"] = quality(gold_docs, doid)
        results["ncbi_devel_rules"] = rule_table(ncbi_abstracts(args.corpora, "devel"), doid)
    else:
        log(f"{ncbi} not found: NCBI-disease figures skipped")
    results["machine"]["load_after"] = os.getloadavg()

    print(
        f"## LLM client throughput (test server, {args.latency * 1000:g} ms per request, {args.notes} notes)\n"
    )
    print("| in flight | seconds | notes/s | ceiling (in flight / latency) | speed-up vs 1 |")
    print("|---:|---:|---:|---:|---:|")
    one = results["throughput"][0]["notes_per_s"]
    for row in results["throughput"]:
        print(
            f"| {row['in_flight']} | {row['seconds']} | {row['notes_per_s']} | "
            f"{row['ceiling_notes_per_s']} | {row['notes_per_s'] / one:.1f}× |"
        )
    for key, title in (
        ("ncbi_devel_doid", "NCBI-disease devel sentences (CoNLL), Disease Ontology lexicon"),
        ("demo", "demo notes, built-in vocabularies"),
    ):
        if key not in results:
            continue
        print(f"\n## {title}\n")
        print(
            "| annotator | exact P | exact R | exact F1 | partial F1 | per-type exact F1 | seconds |"
        )
        print("|---|---:|---:|---:|---:|---|---:|")
        for name, q in results[key].items():
            e = q["exact"]
            per = ", ".join(f"{t} {f:.3f}" for t, f in q["per_type_f1"].items())
            print(
                f"| {name} | {e['precision']:.3f} | {e['recall']:.3f} | {e['f1']:.3f} | "
                f"{q['partial']['f1']:.3f} | {per} | {q['seconds']} |"
            )
    if "ncbi_devel_rules" in results:
        print_rule_table(
            results["ncbi_devel_rules"],
            "Lexicon rules, NCBI-disease devel abstracts (PubTator), Disease Ontology lexicon",
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
