"""The lexicon annotator: term lists (or the built-in demo lexicon) and regex rules; local, never fails."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appliance.annotate.annotators.base import AnnotatorOptions, Member, MemberResult
from appliance.annotate.cache import AnswerCache
from appliance.annotate.lexicon import (
    Lexicon,
    LexiconAnnotator,
    LexiconRules,
    demo_lexicon,
    load_lexicon,
)
from appliance.config import EgressPolicy, EntitySchema
from appliance.documents import Span, Uncertain


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
        spans: dict[str, list[Span]] = {}
        uncertain: dict[str, list[Uncertain]] = {}
        counts: Counter[str] = Counter()
        for i, (note_id, text) in enumerate(notes, 1):
            result = self.annotator.annotate(text)
            spans[note_id] = result.spans
            if result.uncertain:
                uncertain[note_id] = result.uncertain
            counts.update(result.counts)
            if progress is not None and i % 100 == 0:
                progress(i)
        elapsed = time.perf_counter() - start
        a = self.annotator
        record = {
            "kind": "lexicon",
            "sources": [s["sha256"][:16] for s in a.lexicon.sources],
            "terms": a.size,
            "rules": [
                name
                for name, on in (
                    ("abbreviations", a.abbreviations),
                    ("variants", a.variants),
                    ("head_nouns", a.head_nouns),
                    ("unknown_words", a.unknown_words),
                )
                if on
            ],
        }
        qa = {
            "seconds": round(elapsed, 3),
            "lexicon_type_conflicts": a.conflicts,
            "spans_by_rule": {
                k: counts[k]
                for k in ("exact", "variant", "pattern", "abbreviation", "head_noun")
                if counts[k]
            },
            "uncertain_by_reason": {
                k.removeprefix("uncertain_"): n
                for k, n in sorted(counts.items())
                if k.startswith("uncertain_")
            },
        }
        return MemberResult(spans, {}, qa, record, uncertain)


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
    lex = LexiconAnnotator(
        build_lexicon(options),
        rules=options.regex,
        language=language,
        language_rules=LexiconRules.from_schema(schema, language),
        abbreviations=options.abbreviations,
        variants=options.variants,
        head_nouns=options.head_nouns,
        unknown_words=options.unknown_words,
    )
    return [LexiconMember(lex)]


def term_finder(
    options: AnnotatorOptions, schema: EntitySchema, language: str
) -> tuple[Callable[[str], list[tuple[str, str]]], dict[str, list[str]], list[dict[str, Any]]]:
    """The term list of ``options`` (its lexicons, else the demo vocabularies) as a term finder.

    Returns ``(find, vocabulary, sources)``: ``find(text)`` names the terms a
    note mentions, as ``(type, text)`` in text order, the way the annotator
    matches them (case folding, inflection, spelling variants; dictionary
    matches only: no abbreviations or head-noun phrases, which are note text
    rather than list terms); ``vocabulary`` is every term per type; ``sources``
    the files with their hashes. Plain values, so the generator (a lower
    layer) can take them without importing the annotator.
    """
    lex = build_lexicon(options)
    annotator = LexiconAnnotator(
        lex,
        language=language,
        language_rules=LexiconRules.from_schema(schema, language),
        abbreviations=False,
        variants=options.variants,
        head_nouns=False,
        unknown_words=False,
    )

    def find(text: str) -> list[tuple[str, str]]:
        return [(s.label, s.text) for s in annotator.annotate_text(text) if s.confidence >= 0.9]

    vocabulary: dict[str, list[str]] = {}
    for entry in lex.entries:
        vocabulary.setdefault(entry.label, []).append(entry.surface)
    return find, vocabulary, list(lex.sources)
