"""Concept-code accuracy on gold spans that carry codes (PubTator, JSONL ``code``, BRAT N lines).

A gold code may list alternatives (``D001|D002``) or a composite mention's
parts (``D001+D002``); a prediction is right when it is any concept one of
them resolves to: the code itself when the terminology has it, else every
concept listing it as a cross-reference (NCBI-disease's MeSH and OMIM ids
reach Disease Ontology concepts through DOID's xrefs). Gold spans whose
codes resolve to nothing are *unmappable* and counted apart.

Reported beside the normalizer in the same table: the exact-match baseline
(the mention's text, case and spacing aside, equal to a concept's name or
synonym; the first such concept).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.documents import Document
from appliance.normalize.linker import Normalizer

_SPLIT = re.compile(r"[|+,;]")


@dataclass
class Row:
    """Counts over gold mentions.

    ``at1``/``at5``: a right concept among the top 1/5 candidates (accuracy@k as
    the normalization literature reports it, NIL or not); ``coded``: the code
    inference writes is right (a NIL counts wrong); ``nil``: left without a code.
    """

    n: int = 0
    at1: int = 0
    at5: int = 0
    coded: int = 0
    nil: int = 0

    def add(self, at1: bool, at5: bool, coded: bool, nil: bool) -> None:
        self.n += 1
        self.at1 += at1
        self.at5 += at5
        self.coded += coded
        self.nil += nil

    def as_dict(self) -> dict[str, Any]:
        def share(k: int) -> float | None:
            return round(k / self.n, 4) if self.n else None

        return {
            "mentions": self.n,
            "accuracy_at_1": share(self.at1),
            "accuracy_at_5": share(self.at5),
            "coded_right": share(self.coded),
            "nil": self.nil,
        }


@dataclass
class NormalizeReport:
    gold_mentions: int = 0
    with_code: int = 0
    mappable: int = 0
    unmappable_nil: int = 0  # coded gold mentions outside the terminology the normalizer left NIL
    model: dict[str, Row] = field(
        default_factory=lambda: {"all": Row(), "seen": Row(), "unseen": Row()}
    )
    exact: dict[str, Row] = field(
        default_factory=lambda: {"all": Row(), "seen": Row(), "unseen": Row()}
    )
    via: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    describe: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "gold_mentions": self.gold_mentions,
            "with_code": self.with_code,
            "mappable": self.mappable,
            "unmappable": self.with_code - self.mappable,
            "unmappable_left_nil": self.unmappable_nil,
            "normalizer": {k: r.as_dict() for k, r in self.model.items()},
            "exact_match_baseline": {k: r.as_dict() for k, r in self.exact.items()},
            "via": dict(sorted(self.via.items())),
            "seconds": round(self.seconds, 2),
            "normalizer_description": self.describe,
        }

    def table(self) -> str:
        lines = [
            f"{'':24} {'mentions':>8} {'acc@1':>7} {'acc@5':>7} {'coded':>7} {'NIL':>6}",
        ]
        for name, rows in (("exact-match baseline", self.exact), ("normalizer", self.model)):
            for part in ("all", "seen", "unseen"):
                r = rows[part]
                if not r.n and part != "all":
                    continue
                a1, a5, cd = (f"{k / r.n:.3f}" if r.n else "-" for k in (r.at1, r.at5, r.coded))
                lines.append(f"{name + ' ' + part:24} {r.n:>8} {a1:>7} {a5:>7} {cd:>7} {r.nil:>6}")
        lines.append(
            "acc@k: a right concept among the top k candidates; coded: the code inference "
            "writes is right (NIL counts wrong)"
        )
        unmappable = self.with_code - self.mappable
        if unmappable:
            lines.append(
                f"{unmappable} gold mentions name concepts outside the terminology; "
                f"the normalizer left {self.unmappable_nil} of them without a code (NIL)"
            )
        return "\n".join(lines)

    @property
    def accuracy(self) -> float | None:
        r = self.model["all"]
        return r.at1 / r.n if r.n else None

    def summary(self) -> str:
        m, e = self.model["all"], self.exact["all"]
        acc = lambda r: f"{r.at1 / r.n:.3f}" if r.n else "-"  # noqa: E731
        coded = f"{m.coded / m.n:.3f}" if m.n else "-"
        return (
            f"normalized {self.mappable} mappable gold mentions ({self.with_code} with a code, "
            f"{self.gold_mentions} in all): accuracy@1 {acc(m)}, @5 "
            f"{(m.at5 / m.n if m.n else 0):.3f}, coded right {coded} ({m.nil} NIL); "
            f"exact-match baseline @1 {acc(e)}"
        )


def gold_concepts(normalizer: Normalizer, code: str) -> set[str]:
    out: set[str] = set()
    for part in _SPLIT.split(code):
        if part.strip():
            out.update(normalizer.terminology.resolve(part.strip()))
    return out


def evaluate(normalizer: Normalizer, docs: Sequence[Document]) -> NormalizeReport:
    started = time.monotonic()
    report = NormalizeReport(describe=normalizer.describe())
    first_concept: dict[str, str] = {}
    for c in normalizer.terminology.concepts:
        for name in c.names:
            first_concept.setdefault(" ".join(name.split()).casefold(), c.code)
    seen = {c for c, n in normalizer.mentions.items() if n > 0}

    def typed(span: Any) -> str | None:
        # A gold set may name its types otherwise (NCBI's SpecificDisease...): then any type.
        return span.label if span.label in normalizer.label_set else None

    for doc in docs:
        report.gold_mentions += len(doc.spans)
        spans = [s for s in doc.spans if s.code]
        report.with_code += len(spans)
        targets = [gold_concepts(normalizer, s.code) for s in spans]
        mappable = [(s, t) for s, t in zip(spans, targets, strict=True) if t]
        outside = [s for s, t in zip(spans, targets, strict=True) if not t]
        if outside:
            links = normalizer.link_note(doc.text, [(s.start, s.end, typed(s)) for s in outside])
            report.unmappable_nil += sum(1 for link in links if link.code is None)
        if not mappable:
            continue
        links = normalizer.link_note(doc.text, [(s.start, s.end, typed(s)) for s, _ in mappable])
        for (span, target), link in zip(mappable, links, strict=True):
            report.mappable += 1
            part = "seen" if target & seen else "unseen"
            codes = [c.code for c in link.candidates]
            at1 = bool(codes) and codes[0] in target
            at5 = any(c in target for c in codes[:5])
            report.via[link.via] = report.via.get(link.via, 0) + 1
            for key in ("all", part):
                report.model[key].add(at1, at5, link.code in target, link.code is None)
            guess = first_concept.get(" ".join(span.text.split()).casefold())
            hit = guess in target
            for key in ("all", part):
                report.exact[key].add(hit, hit, hit, guess is None)
    report.seconds = time.monotonic() - started
    return report


def span_code_scores(
    normalizer: Normalizer,
    docs: Sequence[Document],
    predictions: Sequence[Sequence[tuple[int, int, str]]],
) -> dict[str, Any]:
    """End-to-end span + code precision, recall and F1.

    Gold: spans whose code the terminology resolves. Predicted: entities the
    normalizer gives a code (NIL ones are not claims). A prediction is right
    when its offsets and type equal a gold span's and its code is one of the
    concepts that span's code resolves to.
    """
    tp = n_pred = n_gold = 0
    for doc, spans in zip(docs, predictions, strict=True):
        gold = {}
        for s in doc.spans:
            target = gold_concepts(normalizer, s.code) if s.code else set()
            if target:
                gold[(s.start, s.end, s.label)] = target
        n_gold += len(gold)
        for (start, end, label), link in zip(
            spans, normalizer.link_note(doc.text, spans), strict=True
        ):
            if link.code is None:
                continue
            n_pred += 1
            tp += link.code in gold.get((start, end, label), ())
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(f1, 4),
        "gold": n_gold,
        "pred": n_pred,
        "tp": tp,
    }
