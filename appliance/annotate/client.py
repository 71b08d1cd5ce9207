"""The OpenAI-compatible chat client that asks a local LLM (vLLM) for entities.

Per note: build the prompt, look the answer up in the cache, else POST
``/v1/chat/completions`` with ``response_format`` ``{"type": "json_schema"}``.
vLLM dropped the older ``guided_json`` field and ignores unknown fields
silently, so the schema is never trusted to have been applied: every answer
is parsed and validated here, and one that is not JSON or does not match the
schema is a failure of that note (``malformed_json`` / ``schema_violation``),
never cached, and asked again on the next run.

Every answer is bounded: the schema caps the entity list and each string
(:func:`appliance.annotate.prompts.response_schema`), and each request's
``max_tokens`` is the note's own budget (:func:`~appliance.annotate.prompts.answer_budget`,
at most ``LLMSettings.max_tokens``). An answer the server cut off at
``max_tokens`` (``finish_reason: length``) is repaired only where closing its
open brackets is all it lacks (:func:`close_truncated`; counted as
``repaired``); otherwise the note fails as ``truncated``.

Requests run concurrently with at most ``max_in_flight`` outstanding, each
with a timeout: a fixed one when ``LLMSettings.timeout`` is set, else one
derived from the endpoint's measured speed (:class:`Speed`: a short probe
request before the first note, then the answers' own ``usage``). Connection errors, timeouts, HTTP 429 and 5xx are retried
with exponential backoff (honouring a short ``Retry-After``); after
``max_consecutive_failures`` notes in a row failed that way, the run stops
with :class:`LLMUnavailable` (answers received so far stay cached, so the
next run resumes). The endpoint passes the egress guard before the client
exists, and the client never reads proxy settings from the environment:
it talks only to the normalized address the guard returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from appliance.annotate.align import Mention
from appliance.annotate.cache import AnswerCache, cache_key
from appliance.annotate.prompts import (
    PromptBuilder,
    answer_budget,
    max_entities,
    response_schema,
)
from appliance.config import EgressPolicy
from appliance.errors import ApplianceError
from appliance.security.egress import check_endpoint

__all__ = [
    "LLMClient",
    "LLMSettings",
    "LLMUnavailable",
    "NoteAnswer",
    "Speed",
    "base_url",
    "close_truncated",
]

POOL_SIZE = 16  # connections per HTTP connection pool
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class LLMUnavailable(ApplianceError):
    """Raised when the LLM endpoint failed too many notes in a row (the run stops; a rerun resumes)."""


def base_url(url: str, policy: EgressPolicy) -> str:
    """The API base (``scheme://host:port/v1``) for ``url``, after the egress guard allowed it."""
    normalized = check_endpoint(url, policy)
    path = urlsplit(url.strip()).path.rstrip("/")
    if not path:
        path = "/v1"
    return normalized + path


@dataclass(frozen=True)
class LLMSettings:
    model: str
    temperature: float = 0.0
    max_tokens: int = 2048  # ceiling; each note asks for its own budget below it
    max_in_flight: int = 8
    timeout: float | None = None  # seconds per request; None: from the measured speed
    retries: int = 4  # extra attempts after a retryable failure
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    max_consecutive_failures: int = 10
    api_key: str | None = field(default=None, repr=False)

    def request_params(self) -> dict[str, Any]:
        return {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens}


# Timeouts derived from speed: generous margins, since a timeout only has to
# tell a stuck request from a slow one.
PROBE_TOKENS = 8
PROBE_PROMPT = "Reply with the word ready."
PROBE_TIMEOUT = 120.0  # seconds for the probe: a server that cannot say a word in that is unusable
TIMEOUT_MARGIN = 3.0  # times the expected duration
TIMEOUT_FLOOR = 30.0  # seconds added to every derived timeout (queueing, prompt processing)
TIMEOUT_CEILING = 3600.0


class Speed:
    """Tokens per second one request gets from the endpoint, as measured.

    Starts from a probe (one short answer, alone on the server) divided by the
    requests that will run at once, a pessimistic guess: a GPU serves many
    requests nearly as fast as one, a CPU does not. From the third answer on,
    the median of the answers' own ``completion_tokens`` per second of wall
    time, which includes queueing and prompt processing under the real load.
    """

    def __init__(self) -> None:
        self.probe: float | None = None
        self.concurrency = 1
        self.samples: list[float] = []

    def add(self, tokens: int, seconds: float) -> None:
        if tokens > 0 and seconds > 0:
            self.samples.append(tokens / seconds)
            del self.samples[:-64]  # the recent load

    def per_request(self) -> float | None:
        if len(self.samples) >= 3:
            return sorted(self.samples)[len(self.samples) // 2]
        if self.probe:
            return self.probe / self.concurrency
        return None

    def timeout(self, max_tokens: int, attempt: int = 1) -> float:
        """Seconds to wait for an answer of up to ``max_tokens``, doubled on each retry."""
        speed = self.per_request()
        if speed is None:
            return PROBE_TIMEOUT * 2 ** (attempt - 1)
        t = TIMEOUT_FLOOR + TIMEOUT_MARGIN * max_tokens / speed
        return min(TIMEOUT_CEILING, t * 2 ** (attempt - 1))


def close_truncated(content: str) -> str | None:
    """``content`` completed by closing its open brackets, when that is all it lacks; else None.

    Trailing whitespace and one trailing comma may go. An answer cut off
    inside a string or after a key is not repaired: closing it would invent
    or cut a value.
    """
    stack: list[str] = []
    in_string = escaped = False
    for ch in content:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}" and (not stack or stack.pop() != ch):
            return None
    if in_string or not stack:
        return None
    body = content.rstrip()
    if body.endswith(","):
        body = body[:-1]
    candidate = body + "".join(reversed(stack))
    try:
        json.loads(candidate)
    except json.JSONDecodeError:
        return None
    return candidate


@dataclass
class NoteAnswer:
    id: str
    mentions: list[Mention] | None  # None when the note failed
    error: str | None = (
        None  # malformed_json, schema_violation, http_NNN, timeout, connection, bad_response
    )
    detail: str = ""
    cached: bool = False
    attempts: int = 0
    examples: tuple[str, ...] = ()
    repaired: bool = False  # cut off at max_tokens and closed (see close_truncated)


class _Transport(Exception):
    def __init__(self, kind: str, detail: str, attempts: int = 1) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.attempts = kind, detail, attempts


class LLMClient:
    """Annotates notes through an OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(
        self,
        endpoint: str,
        egress: EgressPolicy,
        settings: LLMSettings,
        prompts: PromptBuilder,
        cache: AnswerCache | None = None,
    ) -> None:
        self.base = base_url(endpoint, egress)  # raises EgressDenied before anything else
        self.settings = settings
        self.prompts = prompts
        self.cache = cache
        self.labels = list(prompts.schema.labels)
        # The schema without its note-sized list bound (each request adds maxItems).
        self.schema = response_schema(self.labels)
        import jsonschema  # type: ignore[import-untyped]

        self._validator = jsonschema.Draft202012Validator(self.schema)
        self.speed = Speed()
        self._probing = asyncio.Lock()
        self.stats: dict[str, int] = {
            "requests": 0,
            "retries": 0,
            "cache_hits": 0,
            "repaired": 0,
            "completion_tokens": 0,
        }

    def params(self) -> dict[str, Any]:
        return {
            "annotator": "llm",
            "endpoint": self.base,
            **self.settings.request_params(),
            **self.prompts.params(),
            "response_format": "json_schema",
        }

    def _key(
        self, text_sha: str, examples: tuple[str, ...], schema: dict[str, Any], max_tokens: int
    ) -> str:
        p = self.prompts.params()
        return cache_key(
            note=text_sha,
            prompt_version=p["prompt_version"],
            prompt=p["prompt"],
            model=self.settings.model,
            schema=schema,
            definitions=p["schema"],
            examples_sha256=p.get("examples_sha256"),
            examples=list(examples),
            temperature=self.settings.temperature,
            max_tokens=max_tokens,
        )

    def limits(self, text: str) -> tuple[int, int]:
        """``(maxItems, max_tokens)`` of the answer about ``text``."""
        return max_entities(text), min(self.settings.max_tokens, answer_budget(text, self.labels))

    def parse(self, content: Any, max_items: int | None = None) -> list[Mention]:
        """Mentions from an answer's message content; raises ``_Transport`` on a bad answer."""
        if not isinstance(content, str):
            raise _Transport("bad_response", "the answer has no message content")
        try:
            obj = json.loads(content)
        except json.JSONDecodeError as exc:
            raise _Transport("malformed_json", f"answer is not JSON: {exc.msg}") from None
        error = next(iter(self._validator.iter_errors(obj)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise _Transport(
                "schema_violation",
                f"answer does not match the schema at {where}: {error.message[:120]}",
            )
        if max_items is not None and len(obj["entities"]) > max_items:
            raise _Transport(
                "schema_violation",
                f"answer lists {len(obj['entities'])} entities, more than the {max_items} allowed",
            )
        return [Mention(e["text"], e["label"], e.get("context") or None) for e in obj["entities"]]

    def _timeout(self, max_tokens: int, attempt: int) -> float:
        if self.settings.timeout is not None:
            return self.settings.timeout
        return self.speed.timeout(max_tokens, attempt)

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> Any:
        s = self.settings
        if s.timeout is None and self.speed.per_request() is None:
            async with self._probing:  # one probe, before the first request (cache hits need none)
                if self.speed.per_request() is None:
                    await self.probe(client)
        attempt = 0
        while True:
            attempt += 1
            self.stats["requests"] += 1
            retry_after: float | None = None
            wait = self._timeout(int(body["max_tokens"]), attempt)
            started = time.perf_counter()
            try:
                resp = await client.post(
                    "/chat/completions",
                    json=body,
                    timeout=httpx.Timeout(wait, connect=min(10.0, wait)),
                )
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                    except ValueError:
                        raise _Transport(
                            "bad_response", "the server's reply is not JSON", attempt
                        ) from None
                    tokens = _completion_tokens(data)
                    self.stats["completion_tokens"] += tokens
                    self.speed.add(tokens, time.perf_counter() - started)
                    return data, attempt
                kind = f"http_{resp.status_code}"
                detail = f"HTTP {resp.status_code}: {resp.text[:160].strip()}"
                if resp.status_code not in RETRYABLE_STATUS:
                    raise _Transport(kind, detail, attempt)
                ra = resp.headers.get("retry-after", "")
                retry_after = float(ra) if ra.replace(".", "", 1).isdigit() else None
            except httpx.TimeoutException:
                kind, detail = "timeout", f"no answer within {wait:.0f} s"
            except httpx.TransportError as exc:
                kind, detail = "connection", f"{type(exc).__name__}: {exc}"[:200]
            if attempt > s.retries:
                raise _Transport(kind, detail, attempt)
            self.stats["retries"] += 1
            delay = s.backoff * 2 ** (attempt - 1) * (1 + random.random() / 4)
            if retry_after is not None:
                delay = max(delay, min(retry_after, 30.0))
            await asyncio.sleep(delay)

    async def _one(self, client: httpx.AsyncClient, note_id: str, text: str) -> NoteAnswer:
        prompt = self.prompts.build(text)
        max_items, max_tokens = self.limits(text)
        schema = response_schema(self.labels, max_items)
        key = self._key(
            hashlib.sha256(text.encode()).hexdigest(), prompt.examples, schema, max_tokens
        )
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats["cache_hits"] += 1
            return NoteAnswer(
                note_id, self.parse(hit, max_items), cached=True, examples=prompt.examples
            )
        body = {
            **self.settings.request_params(),
            "max_tokens": max_tokens,
            "messages": prompt.messages,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "entities", "schema": schema, "strict": True},
            },
        }
        attempts = 1
        repaired = False
        try:
            data, attempts = await self._post(client, body)
            try:
                choice = data["choices"][0]
                content = choice["message"]["content"]
            except (KeyError, IndexError, TypeError):
                raise _Transport("bad_response", "the reply has no choices[0].message") from None
            try:
                mentions = self.parse(content, max_items)
            except _Transport as exc:
                if choice.get("finish_reason") != "length" or exc.kind != "malformed_json":
                    raise
                closed = close_truncated(content)
                if closed is None:
                    raise _Transport(
                        "truncated",
                        f"answer cut off at max_tokens {max_tokens} where closing it "
                        "would not complete it",
                    ) from None
                mentions = self.parse(closed, max_items)
                content, repaired = closed, True
                self.stats["repaired"] += 1
        except _Transport as exc:
            return NoteAnswer(
                note_id,
                None,
                exc.kind,
                exc.detail,
                attempts=max(attempts, exc.attempts),
                examples=prompt.examples,
            )
        if self.cache is not None:
            self.cache.put(key, content, self.settings.model)
        return NoteAnswer(
            note_id, mentions, attempts=attempts, examples=prompt.examples, repaired=repaired
        )

    async def probe(self, client: httpx.AsyncClient) -> None:
        """Measure the endpoint's speed with one short answer (auto timeouts only).

        Raises :class:`LLMUnavailable` when the endpoint cannot give one.
        """
        body = {
            **self.settings.request_params(),
            "max_tokens": PROBE_TOKENS,
            "messages": [{"role": "user", "content": PROBE_PROMPT}],
        }
        started = time.perf_counter()
        try:
            resp = await client.post(
                "/chat/completions", json=body, timeout=httpx.Timeout(PROBE_TIMEOUT, connect=10.0)
            )
        except httpx.TimeoutException:
            raise LLMUnavailable(
                f"{self.base} gave no answer of {PROBE_TOKENS} tokens within "
                f"{PROBE_TIMEOUT:.0f} s; is the model loaded? (--timeout SECONDS skips this probe)"
            ) from None
        except httpx.TransportError as exc:
            raise LLMUnavailable(f"cannot reach {self.base}: {type(exc).__name__}: {exc}") from None
        self.stats["requests"] += 1
        if resp.status_code != 200:
            raise LLMUnavailable(
                f"{self.base} answered HTTP {resp.status_code} to a short request: "
                f"{resp.text[:160].strip()}"
            )
        try:
            tokens = _completion_tokens(resp.json())
        except ValueError:
            tokens = 0
        seconds = time.perf_counter() - started
        self.speed.probe = max(tokens, 1) / max(seconds, 1e-3)

    async def annotate(
        self,
        notes: Sequence[tuple[str, str]],
        progress: Callable[[int], None] | None = None,
    ) -> list[NoteAnswer]:
        """Answers for ``(id, text)`` notes, in their order; stops with ``LLMUnavailable``."""
        s = self.settings
        self._probing = asyncio.Lock()  # bound to this call's event loop
        results: list[NoteAnswer | None] = [None] * len(notes)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(notes)):
            queue.put_nowait(i)
        done = 0
        consecutive = 0
        stopped: list[NoteAnswer] = []
        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        # httpcore scans its whole pool for every request, which costs more
        # than the request itself at 100+ connections; several small pools
        # (one per POOL_SIZE workers) keep that cost flat.
        n_workers = max(1, min(s.max_in_flight, len(notes)))
        n_pools = -(-n_workers // POOL_SIZE)
        per_pool = -(-n_workers // n_pools)
        limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
        first = s.timeout if s.timeout is not None else PROBE_TIMEOUT
        timeout = httpx.Timeout(first, connect=min(10.0, first))
        self.speed.concurrency = n_workers
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=self.base,
                        timeout=timeout,
                        limits=limits,
                        headers=headers,
                        trust_env=False,
                    )
                )
                for _ in range(n_pools)
            ]

            async def worker(client: httpx.AsyncClient) -> None:
                nonlocal done, consecutive
                while not stopped:
                    try:
                        i = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    answer = await self._one(client, *notes[i])
                    results[i] = answer
                    done += 1
                    if answer.error in ("timeout", "connection") or (answer.error or "").startswith(
                        "http_"
                    ):
                        consecutive += 1
                        if consecutive >= s.max_consecutive_failures and not stopped:
                            stopped.append(answer)
                    elif not answer.cached:
                        consecutive = 0
                    if progress is not None:
                        progress(done)

            await asyncio.gather(*(worker(clients[w % n_pools]) for w in range(n_workers)))
        if stopped:
            last = stopped[0]
            raise LLMUnavailable(
                f"stopped after {s.max_consecutive_failures} notes in a row failed at {self.base} "
                f"(last: {last.detail}); answers received so far are cached, rerun to resume"
            )
        return [r for r in results if r is not None]


def _completion_tokens(data: Any) -> int:
    """``usage.completion_tokens`` of a reply (0 when the server does not say)."""
    try:
        return max(0, int(data["usage"]["completion_tokens"]))
    except (KeyError, TypeError, ValueError):
        return 0


def run_sync(
    client: LLMClient,
    notes: Sequence[tuple[str, str]],
    progress: Callable[[int], None] | None = None,
) -> tuple[list[NoteAnswer], float]:
    """``client.annotate`` from synchronous code; returns the answers and the wall time."""
    start = time.perf_counter()
    answers = asyncio.run(client.annotate(notes, progress))
    return answers, time.perf_counter() - start
