"""What every annotator shares: the options it reads, the result it returns, the interface."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from appliance.annotate.cache import AnswerCache
from appliance.config import EgressPolicy, EntitySchema
from appliance.documents import Span, Uncertain


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
    # Lexicon rules beyond plain matching (see appliance/annotate/lexicon.py); the schema
    # declares them per language.
    abbreviations: bool = True
    variants: bool = True
    head_nouns: bool = True
    unknown_words: bool = False
    max_in_flight: int = 8
    timeout: float | None = None  # None: derived from the endpoint's measured speed
    retries: int = 4
    max_failures: int = 10
    temperature: float = 0.0
    max_tokens: int = 2048  # ceiling; each note's own budget follows from its length
    api_key: str | None = field(default=None, repr=False)


@dataclass
class MemberResult:
    spans: dict[str, list[Span]]  # note id -> spans, for notes that succeeded
    failures: dict[str, tuple[str, str]]  # note id -> (kind, detail)
    qa: dict[str, Any]
    record: dict[str, Any]  # what each annotation line records about this member
    # note id -> character ranges the member could not decide on (entity or not)
    uncertain: dict[str, list[Uncertain]] = field(default_factory=dict)


class Member(Protocol):
    """One annotator run over notes (an ensemble has several)."""

    name: str

    def params(self) -> dict[str, Any]: ...

    def run(
        self, notes: Sequence[tuple[str, str]], progress: Callable[[int], None] | None
    ) -> MemberResult: ...


class Builder(Protocol):
    """How the registry makes an annotator's members from the options (an LLM makes one per prompt)."""

    def __call__(
        self,
        options: AnnotatorOptions,
        schema: EntitySchema,
        egress: EgressPolicy,
        *,
        cache: AnswerCache | None,
        language: str,
    ) -> list[Member]: ...
