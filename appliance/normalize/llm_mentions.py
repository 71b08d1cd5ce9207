"""LLM-written mentions: other ways a note may name a concept, asked of a local LLM.

The method of the seed study on synthetic normalized mentions: for each
concept, the LLM is given its type, name and known synonyms and asked for
other forms a clinician writes (abbreviations, lay terms, misspellings,
other word orders), as JSON under a schema. Only terminology goes out: no
note, real or synthetic, is in the prompt, and the endpoint must pass the
policy's egress guard like the annotator's.

A concept whose request fails (HTTP error, timeout, malformed or
schema-breaking answer) is counted and skipped; the run stops with one line
only when no concept got an answer.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from appliance.annotate.client import base_url
from appliance.config import EgressPolicy
from appliance.errors import ApplianceError
from appliance.normalize.terminology import Concept

MAX_MENTIONS = 8
MAX_CHARS = 80
SCHEMA = {
    "type": "object",
    "properties": {
        "mentions": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_CHARS},
            "maxItems": MAX_MENTIONS,
        }
    },
    "required": ["mentions"],
    "additionalProperties": False,
}
PROMPT = (
    'A hospital\'s terminology lists the {label} concept "{name}"{synonyms}. Write up to '
    "{n} other ways a clinician may write it in a clinical note: abbreviations, short forms, "
    "lay terms, other word orders, common misspellings. Each must mean exactly this concept. "
    'Answer with JSON: {{"mentions": [...]}}.'
)


class LLMMentionsFailed(ApplianceError):
    """No concept got an answer from the LLM endpoint."""


@dataclass
class MentionResult:
    mentions: list[tuple[str, str]] = field(default_factory=list)  # (mention, code)
    asked: int = 0
    answered: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "asked": self.asked,
            "answered": self.answered,
            "mentions": len(self.mentions),
            "failures": dict(self.failures),
            "seconds": round(self.seconds, 1),
        }


def prompt_for(concept: Concept) -> str:
    shown = [s for s in concept.synonyms[:6]]
    synonyms = f" (also: {'; '.join(shown)})" if shown else ""
    return PROMPT.format(label=concept.label, name=concept.name, synonyms=synonyms, n=MAX_MENTIONS)


def parse(content: Any, concept: Concept) -> list[str]:
    """The new forms in one answer; ValueError when it breaks the schema."""
    data = json.loads(content) if isinstance(content, str) else content
    items = data.get("mentions") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ValueError("the answer has no list of strings under 'mentions'")
    known = {n.casefold() for n in concept.names}
    out = []
    for x in items[:MAX_MENTIONS]:
        x = " ".join(x.split())
        if x and len(x) <= MAX_CHARS and x.casefold() not in known:
            known.add(x.casefold())
            out.append(x)
    return out


def write_mentions(
    concepts: Sequence[Concept],
    endpoint: str,
    model: str,
    egress: EgressPolicy,
    *,
    limit: int = 1000,
    seed: int = 0,
    timeout: float = 120.0,
    retries: int = 2,
    workers: int = 4,
    api_key: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MentionResult:
    """Ask the LLM at ``endpoint`` for mentions of up to ``limit`` concepts (a seeded sample)."""
    base = base_url(endpoint, egress)  # the egress guard: raises before any request
    chosen = list(concepts)
    if len(chosen) > limit:
        chosen = random.Random(seed).sample(chosen, limit)
    result = MentionResult(asked=len(chosen))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.monotonic()

    def ask(client: httpx.Client, concept: Concept) -> tuple[Concept, list[str] | None, str]:
        body = {
            "model": model,
            "temperature": 0.7,
            "max_tokens": 40 * MAX_MENTIONS,
            "messages": [{"role": "user", "content": prompt_for(concept)}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "mentions", "schema": SCHEMA, "strict": True},
            },
        }
        why = ""
        for attempt in range(retries + 1):
            try:
                resp = client.post("/chat/completions", json=body, timeout=timeout)
            except httpx.TimeoutException:
                why = "timeout"
                continue
            except httpx.TransportError:
                why = "connection"
                time.sleep(0.2 * 2**attempt)
                continue
            if resp.status_code != 200:
                why = f"http_{resp.status_code}"
                if resp.status_code in (429, 500, 502, 503, 504):
                    time.sleep(0.2 * 2**attempt)
                    continue
                break
            try:
                content = resp.json()["choices"][0]["message"]["content"]
                return concept, parse(content, concept), ""
            except (ValueError, KeyError, IndexError, TypeError):
                why = "malformed"
        return concept, None, why

    done = 0
    with (
        httpx.Client(base_url=base, headers=headers, trust_env=False) as client,
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
    ):
        for concept, forms, why in pool.map(lambda c: ask(client, c), chosen):
            done += 1
            if forms is None:
                result.failures[why] += 1
            else:
                result.answered += 1
                result.mentions.extend((f, concept.code) for f in forms)
            if progress is not None:
                progress(done, len(chosen))
    result.seconds = time.monotonic() - started
    if chosen and not result.answered:
        top = ", ".join(f"{n} {k}" for k, n in result.failures.most_common(3))
        raise LLMMentionsFailed(
            f"{base}: no concept got an answer from the LLM ({top}); is the model served there?"
        )
    return result
