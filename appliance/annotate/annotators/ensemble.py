"""Ensembles: run several members over the notes and combine their spans and undecided ranges."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from appliance.annotate.align import resolve_overlaps
from appliance.annotate.annotators.base import Member, MemberResult
from appliance.documents import Span, Uncertain

COMBINE = ("union", "intersection", "majority")


@dataclass
class EnsembleResult:
    """What the members made of the notes, combined."""

    spans: dict[str, list[Span]]  # note id -> spans, for notes every member annotated
    failures: dict[
        str, tuple[str, str]
    ]  # note id -> (kind, detail) of the first member that failed
    members: list[MemberResult]
    uncertain: dict[str, list[Uncertain]] = field(default_factory=dict)


def combine(span_sets: Sequence[Sequence[Span]], mode: str) -> list[Span]:
    """Combine members' spans for one note by ``union``, ``intersection`` or ``majority``.

    A span several members found keeps the highest confidence any of them gave it.
    """
    if len(span_sets) == 1:
        return list(span_sets[0])
    votes: dict[Span, int] = {}
    best: dict[Span, Span] = {}
    for spans in span_sets:
        for s in set(spans):
            votes[s] = votes.get(s, 0) + 1
            if s not in best or s.confidence > best[s].confidence:
                best[s] = s
    n = len(span_sets)
    need = {"union": 1, "intersection": n, "majority": n // 2 + 1}[mode]
    chosen = [(best[s], -c) for s, c in votes.items() if c >= need]
    kept, _ = resolve_overlaps(chosen)
    return kept


def combine_uncertain(
    range_sets: Sequence[Sequence[Uncertain]], spans: Sequence[Span]
) -> list[Uncertain]:
    """The union of members' undecided ranges, less those overlapping a span the ensemble kept."""
    starts = [s.start for s in spans]  # spans are in text order and do not overlap
    out: dict[tuple[int, int], Uncertain] = {}
    for ranges in range_sets:
        for u in ranges:
            k = bisect.bisect_left(starts, u.end)
            if k and spans[k - 1].end > u.start:
                continue
            out.setdefault((u.start, u.end), u)
    return [out[k] for k in sorted(out)]


def run_members(
    members: Sequence[Member],
    notes: Sequence[tuple[str, str]],
    mode: str,
    progress: Callable[[int], None] | None = None,
) -> EnsembleResult:
    """Run every member over ``notes`` and combine their spans and undecided ranges."""
    results = [m.run(notes, progress) for m in members]
    spans: dict[str, list[Span]] = {}
    uncertain: dict[str, list[Uncertain]] = {}
    failures: dict[str, tuple[str, str]] = {}
    for note_id, _ in notes:
        failed = next(
            (
                (m.name, r.failures[note_id])
                for m, r in zip(members, results, strict=True)
                if note_id in r.failures
            ),
            None,
        )
        if failed is not None:
            failures[note_id] = failed[1]
            continue
        spans[note_id] = combine([r.spans[note_id] for r in results], mode)
        ranges = combine_uncertain([r.uncertain.get(note_id, []) for r in results], spans[note_id])
        if ranges:
            uncertain[note_id] = ranges
    return EnsembleResult(spans, failures, results, uncertain)
