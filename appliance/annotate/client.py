"""The OpenAI-compatible chat client that asks a local LLM (vLLM) for entities.

Per note: build the prompt, look the answer up in the cache, else POST
``/v1/chat/completions`` with ``response_format`` ``{"type": "json_schema"}``.
vLLM dropped the older ``guided_json`` field and ignores unknown fields
silently, so the schema is never trusted to have been applied: every answer
is parsed and validated here, and one that is not JSON or does not match the
schema is a failure of that note (``malformed_json`` / ``schema_violation``),
never cached, and asked again on the next run.

Requests run concurrently with at most ``max_in_flight`` outstanding, each
with a timeout. Connection errors, timeouts, HTTP 429 and 5xx are retried
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
from appliance.annotate.prompts import PromptBuilder, response_schema
from appliance.config import EgressPolicy
from appliance.errors import ApplianceError
from appliance.security.egress import check_endpoint

__all__ = ["LLMClient", "LLMSettings", "LLMUnavailable", "NoteAnswer", "base_url"]

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
    max_tokens: int = 1024
    max_in_flight: int = 8
    timeout: float = 120.0  # seconds per request
    retries: int = 4  # extra attempts after a retryable failure
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    max_consecutive_failures: int = 10
    api_key: str | None = field(default=None, repr=False)

    def request_params(self) -> dict[str, Any]:
        return {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens}


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
        self.schema = response_schema(prompts.schema.labels)
        import jsonschema  # type: ignore[import-untyped]

        self._validator = jsonschema.Draft202012Validator(self.schema)
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "cache_hits": 0}

    def params(self) -> dict[str, Any]:
        return {
            "annotator": "llm",
            "endpoint": self.base,
            **self.settings.request_params(),
            **self.prompts.params(),
            "response_format": "json_schema",
        }

    def _key(self, text_sha: str, examples: tuple[str, ...]) -> str:
        p = self.prompts.params()
        return cache_key(
            note=text_sha,
            prompt_version=p["prompt_version"],
            prompt=p["prompt"],
            model=self.settings.model,
            schema=self.schema,
            definitions=p["schema"],
            examples_sha256=p.get("examples_sha256"),
            examples=list(examples),
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
        )

    def parse(self, content: Any) -> list[Mention]:
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
        return [Mention(e["text"], e["label"], e.get("context") or None) for e in obj["entities"]]

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> Any:
        s = self.settings
        attempt = 0
        while True:
            attempt += 1
            self.stats["requests"] += 1
            retry_after: float | None = None
            try:
                resp = await client.post("/chat/completions", json=body)
                if resp.status_code == 200:
                    try:
                        return resp.json(), attempt
                    except ValueError:
                        raise _Transport(
                            "bad_response", "the server's reply is not JSON", attempt
                        ) from None
                kind = f"http_{resp.status_code}"
                detail = f"HTTP {resp.status_code}: {resp.text[:160].strip()}"
                if resp.status_code not in RETRYABLE_STATUS:
                    raise _Transport(kind, detail, attempt)
                ra = resp.headers.get("retry-after", "")
                retry_after = float(ra) if ra.replace(".", "", 1).isdigit() else None
            except httpx.TimeoutException:
                kind, detail = "timeout", f"no answer within {s.timeout:g} s"
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
        key = self._key(hashlib.sha256(text.encode()).hexdigest(), prompt.examples)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats["cache_hits"] += 1
            return NoteAnswer(note_id, self.parse(hit), cached=True, examples=prompt.examples)
        body = {
            **self.settings.request_params(),
            "messages": prompt.messages,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "entities", "schema": self.schema, "strict": True},
            },
        }
        attempts = 1
        try:
            data, attempts = await self._post(client, body)
            try:
                content = data["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                raise _Transport("bad_response", "the reply has no choices[0].message") from None
            mentions = self.parse(content)
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
        return NoteAnswer(note_id, mentions, attempts=attempts, examples=prompt.examples)

    async def annotate(
        self,
        notes: Sequence[tuple[str, str]],
        progress: Callable[[int], None] | None = None,
    ) -> list[NoteAnswer]:
        """Answers for ``(id, text)`` notes, in their order; stops with ``LLMUnavailable``."""
        s = self.settings
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
        timeout = httpx.Timeout(s.timeout, connect=min(10.0, s.timeout))
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


def run_sync(
    client: LLMClient,
    notes: Sequence[tuple[str, str]],
    progress: Callable[[int], None] | None = None,
) -> tuple[list[NoteAnswer], float]:
    """``client.annotate`` from synchronous code; returns the answers and the wall time."""
    start = time.perf_counter()
    answers = asyncio.run(client.annotate(notes, progress))
    return answers, time.perf_counter() - start
