"""Ensembles: run several members over the notes and combine their spans."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from appliance.annotate.align import resolve_overlaps
from appliance.annotate.annotators.base import Member, MemberResult
from appliance.documents import Span

COMBINE = ("union", "intersection", "majority")


def combine(span_sets: Sequence[Sequence[Span]], mode: str) -> list[Span]:
    """Combine members' spans for one note by ``union``, ``intersection`` or ``majority``."""
    if len(span_sets) == 1:
        return list(span_sets[0])
    votes: Counter[Span] = Counter()
    for spans in span_sets:
        votes.update(set(spans))
    n = len(span_sets)
    need = {"union": 1, "intersection": n, "majority": n // 2 + 1}[mode]
    chosen = [(s, -c) for s, c in votes.items() if c >= need]
    kept, _ = resolve_overlaps(chosen)
    return kept


def run_members(
    members: Sequence[Member],
    notes: Sequence[tuple[str, str]],
    mode: str,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, list[Span]], dict[str, tuple[str, str]], list[MemberResult]]:
    """Run every member over ``notes`` and combine: (spans by id, failures by id, member results)."""
    results = [m.run(notes, progress) for m in members]
    spans: dict[str, list[Span]] = {}
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
    return spans, failures, results
