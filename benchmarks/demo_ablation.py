"""The demo with entity-conditioned generation and mention replacement on and off.

`appliance demo` end to end (``appliance.pipeline.demo``: 1,500 demo notes →
generator → synthetic notes → screen → lexicon annotation with a seeded 60 %
of the demo vocabulary (``terms.tsv``) → scratch NER model → signed package),
then scored on 200 fresh demo notes of other patients, beside the term list
alone on the same notes. One demo folder per generator setting (entity terms
on, off); inside each, the NER model is trained once per mention-replacement
setting and each share of terms held out of its training labels (the
pipeline reruns only the stages whose settings changed, so these models
learn from the same synthetic notes and annotations). Each row set ends with
the package as it answers by default: the union at its threshold, or the
term list alone, as held-out terms chose (``appliance.ner.holdout``).

    .venv/bin/python benchmarks/demo_ablation.py --workdir /tmp/demo-ablation \\
        --json-out /tmp/demo-ablation/result.json

Resumable: a finished variant is read back from ``--workdir``'s state file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any


def _micro(report: dict[str, Any]) -> dict[str, Any]:
    seqeval = report.get("seqeval", {})
    return {
        "micro": seqeval.get("micro", {}),
        "per_type": {t: v.get("f1") for t, v in seqeval.get("per_type", {}).items()},
    }


def _package_default(package: Path | None) -> dict[str, Any]:
    """The package's default combination (``ner.json``), with what chose it."""
    if package is None:
        return {}
    meta = json.loads((package / "ner.json").read_text(encoding="utf-8"))
    return (meta.get("lexicon") or {}).get("combine") or {}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--notes", type=int, default=1500)
    ap.add_argument("--synthetic", type=int, default=1000)
    ap.add_argument("--entity-terms", default="off,on", help="generator settings to run, in order")
    ap.add_argument("--mention-copies", default="0,1", help="NER settings to run, in order")
    ap.add_argument(
        "--term-holdout", default="0.2", help="shares of terms withheld from NER training, in order"
    )
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from appliance.pipeline import demo

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "state.json"
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}
    variants = [
        (flag, int(copies), float(held))
        for flag in args.entity_terms.split(",")
        for copies in args.mention_copies.split(",")
        for held in args.term_holdout.split(",")
    ]
    for flag, copies, held in variants:
        name = f"entity-terms-{flag}/mention-copies-{copies}/term-holdout-{held:g}"
        if name in state:
            print(f"{name}: done earlier", flush=True)
            continue
        t0 = time.perf_counter()
        result = demo(
            work / f"entity-terms-{flag}",
            notes=args.notes,
            synthetic=args.synthetic,
            entity_terms=flag == "on",
            mention_copies=copies,
            term_holdout=held,
            echo=lambda m: print(f"  {m}", flush=True),
        )
        comparison = result.f1.get("comparison") or {}
        p = result.pipeline
        state[name] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "stages": {s.name: [s.status, s.seconds, s.summary] for s in p.stages},
            "released": p.released,
            "entities": p.entities,
            "lexicon": _micro(result.lexicon_f1),
            "model": _micro(comparison.get("model", result.f1)),
            "union": _micro(comparison["union"]) if "union" in comparison else None,
            "default": _micro(result.f1),
            "combine": _package_default(p.package),
        }
        state_path.write_text(json.dumps(state, indent=2))
        print(f"{name}: {json.dumps(state[name]['model'])}", flush=True)

    print(
        "\n| generator | mention copies | terms held out | entities annotated | entities from | P | R | F1 | F1 DIAGNOSIS / DRUG / PROCEDURE |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for name, r in state.items():
        flag, copies, *rest = name.split("/")
        held = rest[0].removeprefix("term-holdout-") if rest else "0"
        for what in ("lexicon", "model", "union", "default"):
            m = r.get(what)
            if not m:
                continue
            label = what
            if what == "default":
                c = r.get("combine") or {}
                label = f"package default: {c.get('default')}"
                if c.get("default") == "union":
                    label += f" at {c.get('min_confidence')}"
                label += f" ({c.get('chosen')})"
            micro, types = m["micro"], m["per_type"]
            per_type = " / ".join(
                f"{types.get(t, 0):.3f}" for t in ("DIAGNOSIS", "DRUG", "PROCEDURE")
            )
            print(
                f"| {flag.removeprefix('entity-terms-')} | {copies.removeprefix('mention-copies-')} "
                f"| {held} | {r['entities']} | {label} | {micro.get('precision', 0):.3f} | "
                f"{micro.get('recall', 0):.3f} | {micro.get('f1', 0):.3f} | {per_type} |"
            )
    if args.json_out:
        args.json_out.write_text(json.dumps(state, indent=2))


if __name__ == "__main__":
    main()
