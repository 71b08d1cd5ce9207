"""The LLM annotator against a local OpenAI-compatible test server that injects real faults."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from appliance.annotate.annotators import AnnotatorOptions, LLMMember, build_members
from appliance.annotate.cache import AnswerCache
from appliance.annotate.client import (
    PROBE_TOKENS,
    TIMEOUT_FLOOR,
    TIMEOUT_MARGIN,
    LLMClient,
    LLMSettings,
    LLMUnavailable,
    Speed,
    close_truncated,
)
from appliance.annotate.prompts import (
    MAX_CONTEXT_CHARS,
    MAX_TEXT_CHARS,
    PromptBuilder,
    answer_budget,
    max_entities,
    response_schema,
)
from appliance.cli import cli
from appliance.config import EgressPolicy, load_policy
from appliance.errors import EgressDenied
from tests.annotate_server import INVENTED, AnnotateServer

POLICY = load_policy()
SCHEMA = POLICY.entity_schema()


@pytest.fixture(scope="module")
def gold(tmp_path_factory):
    from appliance import demo

    out = tmp_path_factory.mktemp("demo")
    result = demo.run(out / "export", notes=24, fmt="jsonl", seed=4)
    lines = [json.loads(line) for line in result.gold_path.read_text().splitlines()]
    return result.gold_path, lines


def _client(server, cache=None, strategy="zero-shot", **settings):
    defaults = {
        "model": "test-model",
        "max_in_flight": 4,
        "timeout": 1.0,
        "backoff": 0.02,
        "retries": 2,
    }
    return LLMClient(
        server.url,
        POLICY.egress,
        LLMSettings(**{**defaults, **settings}),
        PromptBuilder(SCHEMA, strategy),
        cache,
    )


def _spans(entities):
    return sorted((e["start"], e["end"], e["label"]) for e in entities)


def test_faults_are_survived_and_counted(gold):
    _, docs = gold
    faults = ["malformed", "schema", "case", "invented", "500", "timeout", "slow", "drop"]
    with AnnotateServer(docs, timeout_delay=1.5) as server:
        for doc, fault in zip(docs, faults, strict=False):
            server.fault(doc["text"], fault)
        server.fault(docs[4]["text"], "500")  # two 500s in a row for this note
        member = LLMMember(_client(server))
        result = member.run([(d["id"], d["text"]) for d in docs], None)
        # requests run concurrently: the first note's is not necessarily the first to arrive
        body = next(b for b in server.bodies if b["messages"][-1]["content"] == docs[0]["text"])

    assert result.failures == {
        docs[0]["id"]: ("malformed_json", result.failures[docs[0]["id"]][1]),
        docs[1]["id"]: ("schema_violation", result.failures[docs[1]["id"]][1]),
    }
    assert result.qa["parse_failures"] == 2
    assert result.qa["invented_entities"] == 1 and result.qa["invented_examples"] == [INVENTED]
    # 500, 500 / timeout / drop: each retried until it worked
    assert result.qa["retries"] == 4
    for d in docs[2:]:
        assert _spans(
            {"start": s.start, "end": s.end, "label": s.label} for s in result.spans[d["id"]]
        ) == _spans(d["entities"]), d["id"]
    # The request asks for JSON-schema output with the schema's types
    assert body["response_format"]["type"] == "json_schema"
    # with the note's own bounds: the list (maxItems) and the answer's tokens
    first = docs[0]["text"]
    assert body["response_format"]["json_schema"]["schema"] == response_schema(
        SCHEMA.labels, max_entities(first)
    )
    assert body["max_tokens"] == min(2048, answer_budget(first, SCHEMA.labels)) < 2048
    assert body["model"] == "test-model" and body["temperature"] == 0.0
    assert result.record["model"] == "test-model" and result.record["prompt_version"]


def test_every_answer_is_bounded_by_the_schema_and_the_note():
    schema = response_schema(["DRUG", "DIAGNOSIS"], max_entities("x" * 400))
    entities = schema["properties"]["entities"]
    assert entities["maxItems"] == 400 // 20 + 1
    assert entities["items"]["properties"]["text"]["maxLength"] == MAX_TEXT_CHARS
    assert entities["items"]["properties"]["context"]["maxLength"] == MAX_CONTEXT_CHARS
    # short notes still allow a handful of entities; huge ones are capped
    assert max_entities("") == 8 and max_entities("x" * 10**6) == 200
    # the budget grows with the note and covers an answer naming every word of it
    short, long = "Aspirin for headache.", "Aspirin for headache. " * 40
    assert answer_budget(short, ["DRUG"]) < answer_budget(long, ["DRUG"])
    words = long.split()[:200]
    answer = json.dumps(
        {"entities": [{"text": w, "label": "DRUG"} for w in words[: max_entities(long)]]}
    )
    assert len(answer) / 3 <= answer_budget(long, ["DRUG"])


@pytest.mark.parametrize(
    ("content", "closed"),
    [
        (
            '{"entities": [{"text": "a", "label": "DRUG"}, ',
            '{"entities": [{"text": "a", "label": "DRUG"}]}',
        ),
        (
            '{"entities": [{"text": "a", "label": "DRUG"}',
            '{"entities": [{"text": "a", "label": "DRUG"}]}',
        ),
        ('{"entities": [', '{"entities": []}'),
        (
            '{"entities": [{"text": "a \\" b", "label": "DRUG"}',
            '{"entities": [{"text": "a \\" b", "label": "DRUG"}]}',
        ),
        ('{"entities": [{"text": "asth', None),  # inside a string: closing would cut a value
        ('{"entities": [{"text": "a", "label": ', None),  # after a key
        ('{"entities": [{"text": "a", "label"', None),
        ('{"entities": []}', None),  # nothing open: not truncated
        ('{"entities": [}', None),
    ],
)
def test_a_cut_off_answer_is_closed_only_where_closing_is_all_it_lacks(content, closed):
    assert close_truncated(content) == closed


def test_cut_off_and_oversized_answers(gold):
    _, docs = gold
    with AnnotateServer(docs) as server:
        server.fault(docs[0]["text"], "cut")
        server.fault(docs[1]["text"], "cut_string")
        server.fault(docs[2]["text"], "too_many")
        member = LLMMember(_client(server))
        result = member.run([(d["id"], d["text"]) for d in docs[:4]], None)
    # cut between entities: closed, the first entity kept, counted
    assert [s.text for s in result.spans[docs[0]["id"]]] == [
        docs[0]["text"][s.start : s.end] for s in result.spans[docs[0]["id"]]
    ]
    assert len({s.text.lower() for s in result.spans[docs[0]["id"]]}) == 1
    assert result.qa["repaired_truncated"] == 1
    assert result.failures[docs[1]["id"]][0] == "truncated"
    assert "max_tokens" in result.failures[docs[1]["id"]][1]
    assert result.failures[docs[2]["id"]][0] == "schema_violation"
    assert docs[3]["id"] in result.spans


def test_timeouts_follow_the_measured_speed(gold):
    speed = Speed()
    assert speed.per_request() is None
    speed.probe, speed.concurrency = 40.0, 4  # 40 tokens/s alone, four requests at once
    assert speed.per_request() == 10.0
    assert speed.timeout(200) == pytest.approx(TIMEOUT_FLOOR + TIMEOUT_MARGIN * 200 / 10.0)
    assert speed.timeout(200, attempt=2) == pytest.approx(2 * speed.timeout(200))
    for tokens_per_s in (20.0, 25.0, 30.0):  # measured under load: the median wins
        speed.add(int(tokens_per_s * 2), 2.0)
    assert speed.per_request() == 25.0

    _, docs = gold
    with AnnotateServer(docs, latency=0.05) as server:
        client = _client(server, timeout=None)
        answers = asyncio.run(client.annotate([(d["id"], d["text"]) for d in docs[:6]]))
        probe = server.bodies[0]
    assert all(a.mentions is not None for a in answers)
    # one probe before the first note, then the notes' answers measured
    assert "response_format" not in probe and probe["max_tokens"] == PROBE_TOKENS
    assert sum(1 for b in server.bodies if "response_format" not in b) == 1
    assert len(client.speed.samples) == 6 and client.speed.per_request() > 0
    assert client.stats["completion_tokens"] > 0


def test_auto_timeout_reports_an_unreachable_endpoint_in_one_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    client = LLMClient(
        f"http://127.0.0.1:{port}/v1",
        POLICY.egress,
        LLMSettings(model="m"),
        PromptBuilder(SCHEMA, "zero-shot"),
    )
    with pytest.raises(LLMUnavailable, match="cannot reach"):
        asyncio.run(client.annotate([("n1", "Aspirin for headache.")]))


def test_cache_and_resume_after_a_crash_ask_nothing_twice(gold, tmp_path):
    _, docs = gold
    notes = [(d["id"], d["text"]) for d in docs]
    cache = AnswerCache(tmp_path / "cache.sqlite")
    with AnnotateServer(docs) as server:
        server.hold_after(10)

        async def crash() -> None:
            task = asyncio.ensure_future(_client(server, cache).annotate(notes))
            while sum(server.requests.values()) < 10 + 4:  # ten answered, four in flight and held
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            task.cancel()  # the process dies here
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(crash())
        server.release(abandon=True)
        first = dict(server.answered)
        assert sum(first.values()) == 10 and len(cache) == 10

        client = _client(server, cache)
        answers = asyncio.run(client.annotate(notes))
        assert all(a.mentions is not None for a in answers)
        assert client.stats["cache_hits"] == 10
        assert all(n == 1 for n in server.answered.values())
        assert len(server.answered) == len(docs)

        # A third run asks nothing at all; another prompt strategy is a different key.
        before = sum(server.requests.values())
        asyncio.run(_client(server, cache).annotate(notes))
        assert sum(server.requests.values()) == before
        asyncio.run(_client(server, cache, strategy="few-shot").annotate(notes[:2]))
        assert sum(server.requests.values()) == before + 2
    cache.close()


def test_stops_after_repeated_failures(gold):
    _, docs = gold
    with AnnotateServer(docs) as server:
        server.fault_all("500")
        client = _client(server, retries=1, max_consecutive_failures=3, max_in_flight=2)
        with pytest.raises(LLMUnavailable, match="3 notes in a row failed") as err:
            asyncio.run(client.annotate([(d["id"], d["text"]) for d in docs]))
        assert "HTTP 500" in err.value.message
        # It stopped early: at most (3 failures + 2 in flight) notes × 2 attempts
        assert sum(server.requests.values()) <= 10


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://llm.example.org:8000/v1",
        "http://10.1.2.3:8000/v1",
        "http://localhost.localdomain:8000",
        "http://user@127.0.0.1:8000",
    ],
)
def test_non_loopback_endpoint_is_refused_before_any_lookup_or_connection(monkeypatch, endpoint):
    from tests.conftest import attempts

    calls = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda *a, **k: calls.append(a) or real_getaddrinfo(*a, **k)
    )
    monkeypatch.setattr(
        socket.socket, "connect", lambda s, a: calls.append(a) or real_connect(s, a)
    )
    before = len(attempts)
    options = AnnotatorOptions(annotators=("llm",), endpoint=endpoint, model="m")
    with pytest.raises(EgressDenied):
        build_members(options, SCHEMA, POLICY.egress)
    assert calls == [] and len(attempts) == before


def test_policy_listed_host_is_allowed():
    egress = EgressPolicy(allowed_hosts=["llm.hospital.internal:8000"])
    client = LLMClient(
        "http://llm.hospital.internal:8000/v1",
        egress,
        LLMSettings(model="m"),
        PromptBuilder(SCHEMA),
    )
    assert client.base == "http://llm.hospital.internal:8000/v1"


def test_prompt_strategies():
    zero = PromptBuilder(SCHEMA, "zero-shot").build("Metformin for diabetes.")
    assert len(zero.messages) == 2 and "DRUG:" in zero.messages[0]["content"]
    few = PromptBuilder(SCHEMA, "few-shot", k=2).build("Metformin for diabetes.")
    assert [m["role"] for m in few.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    json.loads(few.messages[2]["content"])
    retrieval = PromptBuilder(SCHEMA, "retrieval", k=1)
    chosen = retrieval.build(
        "Colonoscopy showed a polyp; biopsy taken. Anaemia from iron deficiency."
    )
    assert "Colonoscopy" in chosen.messages[1]["content"]
    chosen = retrieval.build("Apixaban for atrial fibrillation, rate control with metoprolol.")
    assert "Apixaban" in chosen.messages[1]["content"]


def test_evaluate_llm_ensemble_through_the_cli(gold, tmp_path):
    path, docs = gold
    with AnnotateServer(docs) as server:
        result = CliRunner().invoke(
            cli,
            [
                "annotate",
                "evaluate",
                "--gold",
                str(path),
                "--annotator",
                "llm",
                "--endpoint",
                server.url,
                "--model",
                "test-model",
                "--prompt",
                "zero-shot",
                "--prompt",
                "retrieval",
                "--combine",
                "intersection",
                "--json",
            ],
        )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["exact"]["micro"]["f1"] == 1.0
    assert [m["prompt"] for m in report["annotator"]["members"]] == ["zero-shot", "retrieval"]
    assert report["seqeval"]["micro"]["f1"] == 1.0


def test_killed_run_resumes_without_asking_again(gold, tmp_path):
    """A real process is killed mid-run; the rerun re-asks nothing already answered."""
    from appliance.workspace import init

    path, docs = gold
    ws = init(tmp_path / "ws")
    env = {**os.environ}
    env.pop("APPLIANCE_WORKSPACE", None)
    with AnnotateServer(docs) as server:
        args = [
            sys.executable,
            "-m",
            "appliance",
            "annotate",
            "evaluate",
            "-w",
            str(ws.root),
            "--gold",
            str(path),
            "--annotator",
            "llm",
            "--endpoint",
            server.url,
            "--model",
            "test-model",
            "--max-in-flight",
            "2",
            "--json",
        ]
        server.hold_after(8)  # the speed probe, then seven notes answered
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 60
        while sum(server.requests.values()) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        server.release(abandon=True)
        assert sum(server.answered.values()) == 7

        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["qa"][0]["cache_hits"] == 7
        assert len(server.answered) == len(docs) and set(server.answered.values()) == {1}
        assert report["exact"]["micro"]["f1"] == 1.0
