"""Annotators behind one interface, and ensembles of them.

An annotator takes ``(id, text)`` notes and returns, per note, either spans
or the reason it failed. Two kinds exist: the lexicon annotator (local, never
fails) and the LLM annotator (names entities through the chat API; code
places them). Several annotators, or one LLM with several prompts, combine
into an ensemble:

* ``union``: every span any member found;
* ``intersection``: spans (same characters, same type) every member found;
* ``majority``: spans more than half of the members found.

Overlaps left after combining are resolved by the alignment rule (longest,
then earliest). A note a member failed on is rejected by the ensemble with
that member's reason: a vote with a missing voter would quietly change the
rule.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from appliance.annotate.align import align, resolve_overlaps
from appliance.annotate.cache import AnswerCache
from appliance.annotate.client import LLMClient, LLMSettings, base_url, run_sync
from appliance.annotate.lexicon import Lexicon, LexiconAnnotator, demo_lexicon, load_lexicon
from appliance.annotate.prompts import PromptBuilder
from appliance.config import EgressPolicy, EntitySchema
from appliance.documents import Span, read_gold
from appliance.errors import UsageError

__all__ = [
    "ANNOTATORS",
    "COMBINE",
    "AnnotatorOptions",
    "MemberResult",
    "build_members",
    "combine",
    "run_members",
]

ANNOTATORS = ("lexicon", "llm")
COMBINE = ("union", "intersection", "majority")


@dataclass(frozen=True)
class AnnotatorOptions:
    """What to annotate with; plain data, written into the manifest."""

    annotators: tuple[str, ...] = ("lexicon",)
    lexicons: tuple[Path, ...] = ()
    label: str | None = None
    regex: tuple[tuple[str, str], ...] = ()
    endpoint: str | None = None
    model: str | None = None
    prompts: tuple[str, ...] = ("zero-shot",)
    examples: Path | None = None
    k: int = 3
    retriever: str = "bm25"
    embedder: Path | None = None
    combine: str = "union"
    max_in_flight: int = 8
    timeout: float = 120.0
    retries: int = 4
    max_failures: int = 10
    temperature: float = 0.0
    max_tokens: int = 1024
    api_key: str | None = field(default=None, repr=False)


@dataclass
class MemberResult:
    spans: dict[str, list[Span]]  # note id -> spans, for notes that succeeded
    failures: dict[str, tuple[str, str]]  # note id -> (kind, detail)
    qa: dict[str, Any]
    record: dict[str, Any]  # what each annotation line records about this member


class Member(Protocol):
    name: str

    def params(self) -> dict[str, Any]: ...

    def run(
        self, notes: Sequence[tuple[str, str]], progress: Callable[[int], None] | None
    ) -> MemberResult: ...


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


class LLMMember:
    name = "llm"

    def __init__(self, client: Any) -> None:
        self.client = client

    def params(self) -> dict[str, Any]:
        return dict(self.client.params())

    def run(
        self, notes: Sequence[tuple[str, str]], progress: Callable[[int], None] | None
    ) -> MemberResult:

        answers, elapsed = run_sync(self.client, notes, progress)
        texts = dict(notes)
        spans: dict[str, list[Span]] = {}
        failures: dict[str, tuple[str, str]] = {}
        failure_kinds: Counter[str] = Counter()
        invented: Counter[str] = Counter()
        invented_examples: list[str] = []
        overruled = pinned = mentions = 0
        for a in answers:
            if a.mentions is None:
                failures[a.id] = (a.error or "failed", a.detail)
                failure_kinds[a.error or "failed"] += 1
                continue
            result = align(texts[a.id], a.mentions)
            spans[a.id] = result.spans
            mentions += len(a.mentions)
            overruled += result.overruled
            pinned += result.pinned
            for m in result.invented:
                invented[m.label] += 1
                if len(invented_examples) < 10:
                    invented_examples.append(m.text[:80])
        p = self.client.params()
        record = {
            "kind": "llm",
            "model": p["model"],
            "prompt": p["prompt"],
            "prompt_version": p["prompt_version"],
            "temperature": p["temperature"],
            "max_tokens": p["max_tokens"],
        }
        stats = self.client.stats
        qa = {
            "parse_failures": sum(
                failure_kinds[k] for k in ("malformed_json", "schema_violation", "bad_response")
            ),
            "failures_by_kind": dict(sorted(failure_kinds.items())),
            "mentions_returned": mentions,
            "invented_entities": sum(invented.values()),
            "invented_by_type": dict(sorted(invented.items())),
            "invented_examples": invented_examples,
            "overruled_occurrences": overruled,
            "pinned_by_context": pinned,
            "requests": stats["requests"],
            "retries": stats["retries"],
            "cache_hits": stats["cache_hits"],
            "seconds": round(elapsed, 3),
            "notes_per_second": round(len(answers) / elapsed, 2) if elapsed > 0 else None,
        }
        return MemberResult(spans, failures, qa, record)


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


def build_members(
    options: AnnotatorOptions,
    schema: EntitySchema,
    egress: EgressPolicy,
    *,
    cache: AnswerCache | None = None,
    language: str = "en",
) -> list[Member]:
    """The annotators the options ask for; an LLM endpoint passes the egress guard here."""
    if not options.annotators:
        raise UsageError("choose at least one --annotator")
    for a in options.annotators:
        if a not in ANNOTATORS:
            raise UsageError(f"unknown annotator '{a}'; choose from: {', '.join(ANNOTATORS)}")
    if options.combine not in COMBINE:
        raise UsageError(
            f"unknown --combine '{options.combine}'; choose from: {', '.join(COMBINE)}"
        )
    members: list[Member] = []
    for a in dict.fromkeys(options.annotators):
        if a == "lexicon":
            lex = LexiconAnnotator(build_lexicon(options), rules=options.regex, language=language)
            members.append(LexiconMember(lex))
            continue
        if not options.endpoint or not options.model:
            raise UsageError("--annotator llm needs --endpoint URL and --model NAME")

        base_url(options.endpoint, egress)  # refuse a disallowed endpoint before anything else
        examples = read_gold(options.examples) if options.examples else None
        settings = LLMSettings(
            model=options.model,
            temperature=options.temperature,
            max_tokens=options.max_tokens,
            max_in_flight=options.max_in_flight,
            timeout=options.timeout,
            retries=options.retries,
            max_consecutive_failures=options.max_failures,
            api_key=options.api_key,
        )
        if options.max_in_flight < 1 or options.timeout <= 0 or options.retries < 0:
            raise UsageError("--max-in-flight must be ≥ 1, --timeout > 0 and --retries ≥ 0")
        for strategy in dict.fromkeys(options.prompts):
            prompts = PromptBuilder(
                schema,
                strategy,
                examples=examples,
                k=options.k,
                retriever=options.retriever,
                embedder=options.embedder,
            )
            client = LLMClient(options.endpoint, egress, settings, prompts, cache)
            members.append(LLMMember(client))
    return members


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
