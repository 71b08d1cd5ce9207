"""The lexicon annotator: term lists (or the built-in demo lexicon) and regex rules; local, never fails."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appliance.annotate.annotators.base import AnnotatorOptions, Member, MemberResult
from appliance.annotate.cache import AnswerCache
from appliance.annotate.lexicon import Lexicon, LexiconAnnotator, demo_lexicon, load_lexicon
from appliance.config import EgressPolicy, EntitySchema


class LexiconMember:
    name = "lexicon"

    def __init__(self, annotator: LexiconAnnotator) -> None:
        self.annotator = annotator

    def params(self) -> dict[str, Any]:
        return self.annotator.params()

    def run(
        self, notes: Sequence[tuple[str, str]], progress: Callable[[int], None] | None
    ) -> MemberResult:
        start = time.perf_counter()
        spans = {}
        for i, (note_id, text) in enumerate(notes, 1):
            spans[note_id] = self.annotator.annotate_text(text)
            if progress is not None and i % 100 == 0:
                progress(i)
        elapsed = time.perf_counter() - start
        record = {
            "kind": "lexicon",
            "sources": [s["sha256"][:16] for s in self.annotator.lexicon.sources],
            "terms": self.annotator.size,
        }
        qa = {"seconds": round(elapsed, 3), "lexicon_type_conflicts": self.annotator.conflicts}
        return MemberResult(spans, {}, qa, record)


def _parse_lexicon_arg(value: Path, label: str | None) -> tuple[Path, str | None]:
    """``FILE`` or ``TYPE=FILE``."""
    text = str(value)
    if not value.exists() and "=" in text:
        head, tail = text.split("=", 1)
        if head and Path(tail).exists():
            return Path(tail), head
    return value, label


def build_lexicon(options: AnnotatorOptions) -> Lexicon:
    if not options.lexicons:
        return demo_lexicon()
    lex = Lexicon()
    for item in options.lexicons:
        path, label = _parse_lexicon_arg(item, options.label)
        lex.extend(load_lexicon(path, label))
    return lex


def build(
    options: AnnotatorOptions,
    schema: EntitySchema,
    egress: EgressPolicy,
    *,
    cache: AnswerCache | None,
    language: str,
) -> list[Member]:
    lex = LexiconAnnotator(build_lexicon(options), rules=options.regex, language=language)
    return [LexiconMember(lex)]
