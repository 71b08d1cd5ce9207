"""The LLM annotator: names entities through an OpenAI-compatible chat API (vLLM); code places them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from appliance.annotate.align import align
from appliance.annotate.annotators.base import AnnotatorOptions, Member, MemberResult
from appliance.annotate.cache import AnswerCache
from appliance.annotate.client import LLMClient, LLMSettings, base_url, run_sync
from appliance.annotate.prompts import PromptBuilder
from appliance.config import EgressPolicy, EntitySchema
from appliance.documents import Span, read_gold
from appliance.errors import UsageError


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
            "repaired_truncated": stats["repaired"],
            "requests": stats["requests"],
            "retries": stats["retries"],
            "completion_tokens": stats["completion_tokens"],
            "tokens_per_second_per_request": (
                round(speed, 2) if (speed := self.client.speed.per_request()) else None
            ),
            "cache_hits": stats["cache_hits"],
            "seconds": round(elapsed, 3),
            "notes_per_second": round(len(answers) / elapsed, 2) if elapsed > 0 else None,
        }
        return MemberResult(spans, failures, qa, record)


def build(
    options: AnnotatorOptions,
    schema: EntitySchema,
    egress: EgressPolicy,
    *,
    cache: AnswerCache | None,
    language: str,
) -> list[Member]:
    """One member per prompt strategy; the endpoint passes the egress guard first."""
    members: list[Member] = []
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
    if (
        options.max_in_flight < 1
        or (options.timeout is not None and options.timeout <= 0)
        or options.retries < 0
        or options.max_tokens < 16
    ):
        raise UsageError(
            "--max-in-flight must be ≥ 1, --timeout > 0, --retries ≥ 0 and --max-tokens ≥ 16"
        )
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
