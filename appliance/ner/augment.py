"""Mention replacement: annotated mentions swapped for other terms of the same type.

A small generator writes few distinct entity names (the demo's writes about
0.2 drug mentions per note where real notes have 4), so a model trained on
its notes meets little of the vocabulary it will see. Replacing each
annotated mention, in a copy of the note, with another term of the same type
from the annotator's lexicon (public vocabulary, never note text) shows the
model the same contexts with many more names; the entity labels move with
the new offsets, and so do the ranges the annotator marked uncertain. Only confident spans (exact dictionary matches and the
like) are replaced: a doubtful span keeps its text, so no wrong label is
multiplied. The copies are made after the dev split, from training notes
only, and are seeded: the same notes, terms and seed give the same copies.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from appliance.documents import Document, Span, Uncertain

__all__ = ["ReplacementStats", "replace_mentions"]


@dataclass
class ReplacementStats:
    copies: int = 0
    replaced: int = 0
    kept: int = 0  # spans left as they were (doubtful, or a type with no other term)

    def as_dict(self) -> dict[str, int]:
        return {"copies": self.copies, "replaced": self.replaced, "kept": self.kept}


def _cased_like(term: str, original: str) -> str:
    """``term`` with a capital first letter where the mention had one (a sentence start)."""
    if original[:1].isupper() and not original.isupper() and term[:1].islower():
        return term[:1].upper() + term[1:]
    return term


def replace_mentions(
    docs: Sequence[Document],
    terms: Mapping[str, Sequence[str]],
    *,
    share: float = 0.5,
    copies: int = 1,
    min_confidence: float = 0.9,
    seed: int = 0,
) -> tuple[list[Document], ReplacementStats]:
    """``copies`` altered copies of each note that has a replaceable span.

    In a copy, each span of confidence >= ``min_confidence`` whose type has
    other terms in ``terms`` ({label: surfaces}) is replaced with probability
    ``share`` by a term drawn uniformly from them. Returns the copies only
    (ids ``ID~mr1``, ``ID~mr2``...); the caller trains on the originals too.
    """
    if not 0 <= share <= 1:
        raise ValueError("share must be between 0 and 1")
    pools = {label: sorted(set(surfaces)) for label, surfaces in terms.items() if surfaces}
    rng = random.Random(seed)
    stats = ReplacementStats()
    out: list[Document] = []
    for doc in docs:
        if not any(s.confidence >= min_confidence and s.label in pools for s in doc.spans):
            continue
        for k in range(1, copies + 1):
            copy = _replace(doc, pools, share, min_confidence, rng, stats)
            if copy is not None:
                text, spans, meta, uncertain = copy
                out.append(Document(f"{doc.id}~mr{k}", text, spans, meta, uncertain))
                stats.copies += 1
    return out, stats


def _replace(
    doc: Document,
    pools: Mapping[str, Sequence[str]],
    share: float,
    min_confidence: float,
    rng: random.Random,
    stats: ReplacementStats,
) -> tuple[str, list[Span], dict[str, object], list[Uncertain]] | None:
    pieces: list[str] = []
    spans: list[Span] = []
    moves: list[tuple[int, int, int]] = []  # (old start, old end, shift after it)
    shift = 0  # how far later offsets move
    cursor = 0
    changed = False
    for span in sorted(doc.spans, key=lambda s: s.start):
        if span.start < cursor:
            continue  # spans do not overlap (resolve_overlaps); be safe if they do
        pieces.append(doc.text[cursor : span.start])
        pool = [t for t in pools.get(span.label, ()) if t != span.text]
        if span.confidence >= min_confidence and pool and rng.random() < share:
            new = _cased_like(rng.choice(pool), span.text)
            stats.replaced += 1
            changed = True
        else:
            new = span.text
            stats.kept += 1
        start = span.start + shift
        pieces.append(new)
        spans.append(Span(start, start + len(new), span.label, new, span.confidence))
        shift += len(new) - (span.end - span.start)
        moves.append((span.start, span.end, shift))
        cursor = span.end
    pieces.append(doc.text[cursor:])
    if not changed:
        return None
    return "".join(pieces), spans, dict(doc.meta), _moved(doc.uncertain, moves)


def _moved(ranges: Sequence[Uncertain], moves: Sequence[tuple[int, int, int]]) -> list[Uncertain]:
    """Uncertain ranges at their new offsets; one that touches a span is dropped with it."""
    out = []
    for u in ranges:
        shift = 0
        for start, end, after in moves:
            if u.start < end and start < u.end:
                break  # overlaps a span: its meaning went with the old text
            if end <= u.start:
                shift = after
        else:
            out.append(Uncertain(u.start + shift, u.end + shift, u.reason))
    return out
