"""Entity-level scores of predicted spans against gold spans.

``score`` is the appliance's own span scorer: documents are matched by id,
and every entity type gets precision, recall and F1 twice:

* **exact**: a prediction is right when its start, end and type equal a gold
  span's;
* **partial**: a prediction is right when it overlaps a gold span of the same
  type; precision counts the predictions that overlap some gold span, recall
  the gold spans that some prediction overlaps (one long prediction covering
  two gold spans finds both).

``partial_view`` scores against annotator labels the way partial-label
training reads them: what the annotator left undecided counts neither for
nor against a prediction.

``seqeval_report`` gives the usual CoNLL-style figures from seqeval (strict
IOB2 mode) on word-level tags, for comparison with published results.
Both are pure functions of documents; no workspace is needed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from appliance.documents import Document, Span, bio_tags
from appliance.errors import InputError

__all__ = ["partial_view", "prf", "score", "seqeval_report"]


def prf(tp_pred: int, n_pred: int, tp_gold: int, n_gold: int) -> dict[str, float]:
    """Precision, recall and F1 (0 where undefined)."""
    p = tp_pred / n_pred if n_pred else 0.0
    r = tp_gold / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)}


def _cell(tp_pred: int, n_pred: int, tp_gold: int, n_gold: int) -> dict[str, Any]:
    return {
        **prf(tp_pred, n_pred, tp_gold, n_gold),
        "gold": n_gold,
        "pred": n_pred,
        "tp": tp_gold,
        "fp": n_pred - tp_pred,
        "fn": n_gold - tp_gold,
    }


def _pairs(
    gold: Sequence[Document], pred: Sequence[Document]
) -> tuple[list[tuple[Document, Document | None]], list[str]]:
    by_id: dict[str, Document] = {}
    for d in pred:
        if d.id in by_id:
            raise InputError(f"predictions: document id {d.id!r} appears twice")
        by_id[d.id] = d
    gold_ids = set()
    pairs: list[tuple[Document, Document | None]] = []
    for g in gold:
        if g.id in gold_ids:
            raise InputError(f"gold: document id {g.id!r} appears twice")
        gold_ids.add(g.id)
        pairs.append((g, by_id.get(g.id)))
    extra = sorted(set(by_id) - gold_ids)
    return pairs, extra


def _overlaps(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end and a.label == b.label


def score(gold: Sequence[Document], pred: Sequence[Document]) -> dict[str, Any]:
    """Per-type and micro (and macro) P/R/F1, exact and partial, with counts.

    Returns ``{"exact": {"micro": cell, "macro": {...}, "per_type": {TYPE: cell}},
    "partial": {...}, "counts": {...}}`` where a cell holds precision, recall,
    f1, gold, pred, tp (gold spans found), fp (predictions not matching) and
    fn (gold spans missed). Documents are matched by id; a gold document with
    no prediction counts as predicting nothing, and predictions for documents
    not in the gold set are ignored (their ids are listed in the counts).
    """
    pairs, extra = _pairs(gold, pred)
    n_gold: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    exact_tp: Counter[str] = Counter()
    part_pred: Counter[str] = Counter()
    part_gold: Counter[str] = Counter()
    missing = 0
    for g, p in pairs:
        gspans = set(g.spans)
        pspans = set(p.spans) if p is not None else set()
        missing += p is None
        gkeys = {(s.start, s.end, s.label) for s in gspans}
        pkeys = {(s.start, s.end, s.label) for s in pspans}
        for _, _, label in gkeys:
            n_gold[label] += 1
        for _, _, label in pkeys:
            n_pred[label] += 1
        for _, _, label in gkeys & pkeys:
            exact_tp[label] += 1
        for s in pspans:
            if any(_overlaps(s, t) for t in gspans):
                part_pred[s.label] += 1
        for t in gspans:
            if any(_overlaps(s, t) for s in pspans):
                part_gold[t.label] += 1

    types = sorted(set(n_gold) | set(n_pred))

    def table(tp_pred: Counter[str], tp_gold: Counter[str]) -> dict[str, Any]:
        per_type = {t: _cell(tp_pred[t], n_pred[t], tp_gold[t], n_gold[t]) for t in types}
        micro = _cell(
            sum(tp_pred.values()), sum(n_pred.values()), sum(tp_gold.values()), sum(n_gold.values())
        )
        macro = {
            k: round(sum(c[k] for c in per_type.values()) / len(per_type), 4) if per_type else 0.0
            for k in ("precision", "recall", "f1")
        }
        return {"micro": micro, "macro": macro, "per_type": per_type}

    return {
        "exact": table(exact_tp, exact_tp),
        "partial": table(part_pred, part_gold),
        "counts": {
            "documents": len(pairs),
            "documents_without_prediction": missing,
            "predicted_documents_not_in_gold": len(extra),
            "gold_entities": sum(n_gold.values()),
            "pred_entities": sum(n_pred.values()),
            "gold_by_type": dict(sorted(n_gold.items())),
            "pred_by_type": dict(sorted(n_pred.items())),
        },
    }


def partial_view(
    gold: Sequence[Document], pred: Sequence[Document], min_confidence: float
) -> tuple[list[Document], list[Document]]:
    """Gold and predictions with the annotator's doubts taken out, for :func:`score`.

    Gold spans below ``min_confidence`` are dropped, and so is every
    prediction that overlaps one of them or an undecided range of its gold
    document (``Document.uncertain``) without matching a confident gold span
    exactly. On gold without confidences or undecided ranges this changes
    nothing.
    """
    by_id = {g.id: g for g in gold}
    kept_gold: list[Document] = []
    for g in gold:
        sure = [s for s in g.spans if s.confidence >= min_confidence]
        kept_gold.append(Document(g.id, g.text, sure, g.meta))
    sure_by_id = {d.id: d for d in kept_gold}
    kept_pred: list[Document] = []
    for p in pred:
        ref = by_id.get(p.id)
        if ref is None:
            kept_pred.append(p)
            continue
        open_ = [(u.start, u.end) for u in ref.uncertain]
        open_ += [(s.start, s.end) for s in ref.spans if s.confidence < min_confidence]
        sure_keys = {(s.start, s.end, s.label) for s in sure_by_id[p.id].spans}
        spans = [
            s
            for s in p.spans
            if (s.start, s.end, s.label) in sure_keys
            or not any(s.start < b and a < s.end for a, b in open_)
        ]
        kept_pred.append(Document(p.id, p.text, spans, p.meta))
    return kept_gold, kept_pred


def seqeval_report(gold: Sequence[Document], pred: Sequence[Document]) -> dict[str, Any]:
    """seqeval's strict IOB2 entity report on word-level tags.

    Returns ``{"per_type": {TYPE: {precision, recall, f1, support}}, "micro": {...},
    "macro": {...}, "weighted": {...}}``. A prediction's text must equal its gold
    document's text (spans are offsets into the same text).
    """
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    pairs, _ = _pairs(gold, pred)
    y_true: list[list[str]] = []
    y_pred: list[list[str]] = []
    for g, p in pairs:
        if p is not None and p.text != g.text:
            raise InputError(f"document {g.id!r}: the prediction's text differs from the gold text")
        true = bio_tags(g)
        if not true:
            continue
        y_true.append(true)
        y_pred.append(
            bio_tags(Document(g.id, g.text, p.spans)) if p is not None else ["O"] * len(true)
        )
    if not any(t != "O" for seq in y_true for t in seq) and not any(
        t != "O" for seq in y_pred for t in seq
    ):
        zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        return {"per_type": {}, "micro": zero, "macro": zero, "weighted": zero}
    raw = classification_report(
        y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
    )

    def clean(row: Any) -> dict[str, Any]:
        return {
            "precision": round(float(row["precision"]), 4),
            "recall": round(float(row["recall"]), 4),
            "f1": round(float(row["f1-score"]), 4),
            "support": int(row["support"]),
        }

    out: dict[str, Any] = {"per_type": {}}
    for key, row in raw.items():
        if key == "micro avg":
            out["micro"] = clean(row)
        elif key == "macro avg":
            out["macro"] = clean(row)
        elif key == "weighted avg":
            out["weighted"] = clean(row)
        else:
            out["per_type"][key] = clean(row)
    return out
