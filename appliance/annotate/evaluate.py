"""Scoring an annotator against a gold set, with or without a workspace.

A data steward runs this on a few real annotated notes (or a public corpus)
to compare lexicons, prompts and models before trusting them: the annotator
labels the gold texts and the spans are scored exact and partial, per type
(:func:`appliance.metrics.score`), plus seqeval's strict IOB2
figures. Only the entity types present in the gold set are scored: an
annotator that also finds drugs is not penalized on a disease-only corpus.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.annotate.annotators import AnnotatorOptions, build_members, run_members
from appliance.annotate.cache import AnswerCache
from appliance.config import EgressPolicy, EntitySchema, load_policy
from appliance.documents import Document, read_gold, write_jsonl
from appliance.errors import InputError
from appliance.metrics import score, seqeval_report

__all__ = ["evaluate"]


def evaluate(
    gold_path: Path,
    options: AnnotatorOptions,
    *,
    fmt: str = "auto",
    label_map: Mapping[str, str] | None = None,
    egress: EgressPolicy | None = None,
    schema: EntitySchema | None = None,
    cache: AnswerCache | None = None,
    language: str = "en",
    predictions_out: Path | None = None,
) -> dict[str, Any]:
    """Annotate the gold texts and score the result; returns a JSON-ready report."""
    if egress is None or schema is None:
        default = load_policy()
        egress = egress or default.egress
        schema = schema or default.entity_schema()
    gold = read_gold(gold_path, fmt, label_map)
    if not gold:
        raise InputError(f"{gold_path}: the gold set has no documents")
    members = build_members(options, schema, egress, cache=cache, language=language)
    notes = [(d.id, d.text) for d in gold]
    combined = run_members(members, notes, options.combine)
    spans, failures, results = combined.spans, combined.failures, combined.members
    types = {s.label for d in gold for s in d.spans}
    pred = [
        Document(
            d.id,
            d.text,
            [s for s in spans[d.id] if s.label in types],
            uncertain=combined.uncertain.get(d.id, []),
        )
        for d in gold
        if d.id in spans
    ]
    if predictions_out is not None:
        write_jsonl(pred, predictions_out)
    report = score(gold, pred)
    return {
        "gold": {"path": str(gold_path), "documents": len(gold), "types": sorted(types)},
        "annotator": {"combine": options.combine, "members": [m.params() for m in members]},
        "exact": report["exact"],
        "partial": report["partial"],
        "counts": report["counts"],
        "seqeval": seqeval_report(gold, pred),
        "uncertain_by_reason": dict(
            sorted(Counter(u.reason for d in pred for u in d.uncertain).items())
        ),
        "failed_documents": len(failures),
        "failures_by_kind": {
            k: sum(1 for kind, _ in failures.values() if kind == k)
            for k in sorted({kind for kind, _ in failures.values()})
        },
        "qa": [r.qa for r in results],
    }
