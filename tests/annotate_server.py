"""An OpenAI-compatible test server on loopback that answers from gold annotations.

It speaks the part of the protocol the annotator uses (``GET /health``,
``GET /v1/models``, ``POST /v1/chat/completions`` with a JSON-schema
``response_format``), finds the note in the last user message, and answers
with the note's gold entities as a model would name them (each string and
type once). Fault knobs make it behave like real servers do:

    malformed   content that is not JSON
    schema      JSON that violates the response schema (an entity without a label)
    case        entity strings in other case and with doubled spaces
    invented    an extra entity that is not in the note
    500         HTTP 500
    timeout     answers only after ``timeout_delay`` seconds
    slow        answers after ``slow_delay`` seconds (within the client's timeout)
    drop        closes the connection without answering
    cut         the answer cut off between two entities (``finish_reason: length``)
    cut_string  the answer cut off inside an entity's text (``finish_reason: length``)
    too_many    more entities than the request's ``maxItems``

Every answer reports ``usage.completion_tokens`` (about 4 characters a token),
and a request without ``response_format`` (the client's speed probe) gets a
short plain answer.

``fault(text, "500", "500")`` applies the listed faults to the first requests
for that note, one per request, then answers normally; ``fault_all`` applies
one fault to every note. ``hold_after(n)`` makes every request after the
first ``n`` wait until ``release()`` (to kill a client mid-run).

Used by the tests and by benchmarks/annotate.py.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from appliance.annotate.client import PROBE_PROMPT

INVENTED = "unobtainium toxicity"
PROBE = PROBE_PROMPT  # the client's speed probe


def ideal_answer(entities: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []
    for e in sorted(entities, key=lambda e: e["start"]):
        item = {"text": e["text"], "label": e["label"]}
        if item not in seen:
            seen.append(item)
    return seen


class AnnotateServer:
    def __init__(
        self,
        gold: Iterable[dict[str, Any]],
        *,
        latency: float = 0.0,
        model: str = "test-model",
        timeout_delay: float = 3.0,
        slow_delay: float = 0.3,
    ) -> None:
        self.answers = {g["text"]: ideal_answer(g["entities"]) for g in gold}
        self.latency = latency
        self.model = model
        self.timeout_delay = timeout_delay
        self.slow_delay = slow_delay
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.fault_every: str | None = None
        self.requests: Counter[str] = Counter()  # note text -> chat requests received
        self.answered: Counter[str] = Counter()  # note text -> valid answers sent
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._hold_after: int | None = None
        self._released = threading.Event()
        self._abandon = False
        self._total = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once, as real servers do

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, payload: Any, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._send(200, {})
                elif self.path == "/v1/models":
                    self._send(
                        200, {"object": "list", "data": [{"id": server.model, "object": "model"}]}
                    )
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": "not found"})
                    return
                server.handle_chat(self, body)

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # many clients connect at once

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- control -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def fault(self, text: str, *kinds: str) -> None:
        self.faults[text].extend(kinds)

    def fault_all(self, kind: str | None) -> None:
        self.fault_every = kind

    def hold_after(self, n: int) -> None:
        self._hold_after = n
        self._released.clear()

    def release(self, abandon: bool = False) -> None:
        self._abandon = abandon
        self._hold_after = None
        self._released.set()

    def __enter__(self) -> AnnotateServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release(abandon=True)
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- answering -------------------------------------------------------------

    def handle_chat(self, h: Any, body: dict[str, Any]) -> None:
        messages = body.get("messages") or []
        text = messages[-1]["content"] if messages else ""
        rf = body.get("response_format") or {}
        with self.lock:
            self.bodies.append(body)
            self.requests[text] += 1
            self._total += 1
            n = self._total
            fault = self.faults[text].pop(0) if self.faults.get(text) else self.fault_every
        if not rf and body.get("model") == self.model and text == PROBE:
            if self.latency:
                time.sleep(self.latency)
            self._reply(h, n, "ready", "stop")
            return
        if rf.get("type") != "json_schema" or body.get("model") != self.model:
            h._send(400, {"error": "expected response_format json_schema and the served model"})
            return
        if text not in self.answers:
            h._send(400, {"error": "unknown note"})
            return
        if self._hold_after is not None and n > self._hold_after:
            self._released.wait(timeout=30)
            if self._abandon:
                h.close_connection = True
                return
        if self.latency:
            time.sleep(self.latency)
        entities: list[dict[str, Any]] = [dict(e) for e in self.answers[text]]
        content: str
        if fault == "500":
            h._send(500, {"error": "internal error"})
            return
        if fault == "drop":
            h.close_connection = True
            return
        if fault == "timeout":
            time.sleep(self.timeout_delay)
        elif fault == "slow":
            time.sleep(self.slow_delay)
        if fault == "malformed":
            content = '{"entities": [{"text": "unterminated'
        elif fault == "schema":
            content = json.dumps(
                {"entities": [{"text": e["text"]} for e in entities] or [{"text": "x"}]}
            )
        elif fault == "too_many":
            limit = rf["json_schema"]["schema"]["properties"]["entities"].get("maxItems", 100)
            content = json.dumps(
                {"entities": (entities or [{"text": "x", "label": "DRUG"}]) * (limit + 1)}
            )
        elif fault in ("cut", "cut_string"):
            full = json.dumps({"entities": entities})
            if fault == "cut":  # after the first entity's closing brace
                content = full[: full.index("}") + 1] + ", "
            else:  # inside the first entity's text
                content = full[: full.index('"text": "') + len('"text": "') + 2]
            self._reply(h, n, content, "length")
            return
        else:
            if fault == "case":
                entities = [
                    {**e, "text": e["text"].upper().replace(" ", "  ")}
                    if i % 2 == 0
                    else {**e, "text": e["text"].lower()}
                    for i, e in enumerate(entities)
                ]
            if fault == "invented":
                label = entities[0]["label"] if entities else "DIAGNOSIS"
                entities.append({"text": INVENTED, "label": label})
            content = json.dumps({"entities": entities})
            with self.lock:
                self.answered[text] += 1
        self._reply(h, n, content, "stop")

    def _reply(self, h: Any, n: int, content: str, finish: str) -> None:
        tokens = max(1, len(content) // 4)
        reply = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens},
        }
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            h._send(200, reply)


def main() -> None:
    """Serve gold annotations from a JSONL file until killed (used by benchmarks/annotate.py)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("gold")
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args()
    with open(args.gold, encoding="utf-8") as fh:
        gold = [json.loads(line) for line in fh if line.strip()]
    with AnnotateServer(gold, latency=args.latency) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


if __name__ == "__main__":
    main()
