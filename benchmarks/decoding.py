"""Decoding: each token's own argmax against the best valid BIO path, on the same packages.

The runtime decodes the model's token probabilities along the most probable
tag sequence that is valid BIO (``appliance.ner.encoding.bio_paths``,
Viterbi). The baseline here is the decoding it replaced: each token's argmax,
an ``I-`` that follows another tag starting a new entity. Both run on the
same package, the same notes and the same token probabilities (the model is
run once per decoding), and are scored with ``appliance.metrics.score``
(exact spans): the model alone, the union with the package's lexicon at its
threshold, and the package's default combination. The time is the whole
``Tagger.predict`` per note (model and decoding), best of ``--repeat``.

Usage::

    .venv/bin/python benchmarks/decoding.py --package WS/models/ner/NAME/package \\
        --gold gold.jsonl -w WS [--package ... --gold ... -w ...]

Repeat ``--package/--gold/-w`` for several packages; each row says which.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def argmax_paths(probs: Sequence[np.ndarray], labels: Sequence[str]) -> list[list[int]]:
    """The baseline: every token's own most probable tag."""
    return [p.argmax(axis=-1).tolist() if len(p) else [] for p in probs]


def _f1(gold: Sequence[Any], entities: Sequence[Sequence[Any]]) -> dict[str, float]:
    from appliance.documents import Document
    from appliance.metrics import score

    docs = [
        Document(g.id, g.text, [e.span() for e in ents])
        for g, ents in zip(gold, entities, strict=True)
    ]
    micro = score(gold, docs)["exact"]["micro"]
    return {k: round(float(micro[k]), 4) for k in ("precision", "recall", "f1")}


def measure(package: Path, gold_path: Path, ws_root: Path, repeat: int) -> dict[str, Any]:
    import appliance.ner.runtime as runtime
    from appliance.documents import read_gold
    from appliance.ner import lexicon as lx
    from appliance.ner.evaluate import load_tagger, model_key
    from appliance.security.keys import load_public_key
    from appliance.workspace import Workspace

    ws = Workspace.open(ws_root)
    key = model_key(ws, package, None)
    tagger = load_tagger(
        package, public_key=load_public_key(ws.signing_key_path.with_suffix(".pub")), key=key
    )
    lexicon = lx.load_package_lexicon(package, key)
    gold = read_gold(gold_path)
    texts = [d.text for d in gold]
    matches = lexicon.match(texts) if lexicon else None
    info = (lexicon.info.get("combine") or {}) if lexicon else {}
    threshold = float(info.get("min_confidence") or lx.DEFAULT_MIN_CONFIDENCE)
    default = info.get("default", "union" if lexicon else "model")
    viterbi = runtime.bio_paths
    out: dict[str, Any] = {"package": str(package), "notes": len(gold), "default": default}
    for name, paths in (("argmax", argmax_paths), ("viterbi", viterbi)):
        runtime.bio_paths = paths  # type: ignore[assignment]
        try:
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                model = tagger.predict(texts)
                best = min(best, time.perf_counter() - t0)
        finally:
            runtime.bio_paths = viterbi
        row: dict[str, Any] = {
            "notes_per_s": round(len(texts) / best, 1),
            "model": _f1(gold, model),
        }
        if matches is not None:
            row[f"union at {threshold:g}"] = _f1(
                gold,
                [lx.combine(m, x, "union", threshold) for m, x in zip(model, matches, strict=True)],
            )
            row[f"package default ({default})"] = _f1(
                gold,
                [lx.combine(m, x, default, threshold) for m, x in zip(model, matches, strict=True)],
            )
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--package", type=Path, action="append", required=True)
    ap.add_argument("--gold", type=Path, action="append", required=True)
    ap.add_argument("-w", "--workspace", type=Path, action="append", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    if not len(args.package) == len(args.gold) == len(args.workspace):
        ap.error("give one --gold and one -w per --package")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = [
        measure(p, g, w, args.repeat)
        for p, g, w in zip(args.package, args.gold, args.workspace, strict=True)
    ]
    print("| package | notes | decoding | what | P | R | F1 | notes/s (model + decoding) |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for r in results:
        for decoding in ("argmax", "viterbi"):
            row = r[decoding]
            for what, m in row.items():
                if what == "notes_per_s":
                    continue
                print(
                    f"| {r['package']} | {r['notes']} | {decoding} | {what} | {m['precision']:.3f} "
                    f"| {m['recall']:.3f} | {m['f1']:.3f} | {row['notes_per_s']} |"
                )
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
