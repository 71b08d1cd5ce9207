"""Placing entity strings at exact character offsets in a note.

An LLM names entities well but counts characters badly, so it returns
strings and this module finds them. The rules, in order:

1. **Matching** is case-insensitive and whitespace-tolerant: the mention's
   words must appear in order, separated by any whitespace where the mention
   has some, and by optional whitespace where it has none (``"CT-guided"``
   finds ``"CT - guided"``). A mention that starts or ends with a letter or
   digit must start or end on a word boundary (``"ACE"`` is not found inside
   ``"ACEI"``). Surrounding quotes and trailing punctuation are tried off when
   the mention as given is not found.
2. **Occurrences**: every occurrence is marked, unless the mention carries a
   ``context`` (a few words around it, copied from the note) that is found in
   the note; then only the occurrences inside that context are marked.
3. **Invented** mentions (found nowhere) are counted and dropped.
4. **Conflicts**: candidates are taken longest first, then earliest, then in
   the order the response named them; a candidate overlapping one already
   taken is dropped. So ``"type 2 diabetes"`` beats ``"diabetes"`` inside it,
   and of two mentions naming the same characters with different types the
   first named wins.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from appliance.documents import Span

__all__ = ["AlignResult", "Intervals", "Mention", "align", "mention_pattern", "resolve_overlaps"]

_PIECE = re.compile(r"[^\W_]+|\S")
_STRIP = "\"'`“”‘’«».,;:!?"


@dataclass(frozen=True)
class Mention:
    """An entity as named by an annotator: its text, type and optional context."""

    text: str
    label: str
    context: str | None = None


@dataclass
class AlignResult:
    spans: list[Span]
    invented: list[Mention] = field(default_factory=list)  # found nowhere in the note
    overruled: int = 0  # occurrences dropped by the overlap rule
    pinned: int = 0  # mentions placed by their context


def mention_pattern(mention: str) -> re.Pattern[str] | None:
    """The case- and whitespace-tolerant pattern of a mention (None for an empty one)."""
    pieces = [(m.group(), m.start(), m.end()) for m in _PIECE.finditer(mention)]
    if not pieces:
        return None
    parts: list[str] = []
    for i, (piece, start, _) in enumerate(pieces):
        if i:
            gap = mention[pieces[i - 1][2] : start]
            parts.append(r"\s+" if gap else r"\s*")
        parts.append(re.escape(piece))
    body = "".join(parts)
    if pieces[0][0][0].isalnum():
        body = r"(?<![^\W_])" + body
    if pieces[-1][0][-1].isalnum():
        body += r"(?![^\W_])"
    return re.compile(body, re.IGNORECASE)


def _find(text: str, mention: str) -> list[tuple[int, int]]:
    for candidate in (mention, mention.strip(_STRIP + " ")):
        pattern = mention_pattern(candidate)
        if pattern is None:
            continue
        found = [m.span() for m in pattern.finditer(text)]
        if found:
            return found
    return []


def resolve_overlaps(candidates: Iterable[tuple[Span, int]]) -> tuple[list[Span], int]:
    """Keep non-overlapping spans: longest first, then earliest, then lowest rank.

    ``candidates`` are (span, rank) pairs, rank being the order in which they
    were named. Returns the kept spans in text order and how many were dropped.
    """
    ordered = sorted(
        set(candidates), key=lambda c: (-(c[0].end - c[0].start), c[0].start, c[1], c[0].label)
    )
    kept: list[Span] = []
    taken = Intervals()
    dropped = 0
    for span, _ in ordered:
        if taken.overlaps(span.start, span.end):
            dropped += 1
            continue
        kept.append(span)
        taken.add(span.start, span.end)
    kept.sort(key=lambda s: (s.start, s.end))
    return kept, dropped


class Intervals:
    """Non-overlapping character ranges kept in order; each test is a binary search."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def find(self, start: int, end: int) -> tuple[int, int] | None:
        """A range overlapping ``[start, end)``, if any."""
        k = bisect.bisect_right(self.ends, start)  # the first range ending after start
        if k < len(self.starts) and self.starts[k] < end:
            return self.starts[k], self.ends[k]
        return None

    def overlaps(self, start: int, end: int) -> bool:
        return self.find(start, end) is not None

    def add(self, start: int, end: int) -> None:
        """Add a range that overlaps none already there."""
        k = bisect.bisect_left(self.starts, start)
        self.starts.insert(k, start)
        self.ends.insert(k, end)


def align(text: str, mentions: Sequence[Mention]) -> AlignResult:
    """Place ``mentions`` in ``text`` by the rules in the module docstring."""
    result = AlignResult(spans=[])
    candidates: list[tuple[Span, int]] = []
    for rank, mention in enumerate(mentions):
        found = _find(text, mention.text)
        if not found:
            result.invented.append(mention)
            continue
        if mention.context:
            windows = _find(text, mention.context)
            inside = [(s, e) for s, e in found if any(ws <= s and e <= we for ws, we in windows)]
            if inside:
                found = inside
                result.pinned += 1
        candidates.extend((Span(s, e, mention.label, text[s:e]), rank) for s, e in found)
    unique = {
        (c[0].start, c[0].end, c[0].label): c for c in sorted(candidates, key=lambda c: -c[1])
    }
    result.spans, result.overruled = resolve_overlaps(unique.values())
    return result
