"""The annotate stage on a workspace with a screened, released corpus."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance.annotate.annotators import AnnotatorOptions
from appliance.annotate.stage import run
from appliance.cli import cli
from appliance.corpus import read_annotations
from appliance.documents import Document, bio_tags, document_from_json, word_tokens
from appliance.errors import IntegrityError, WorkspaceError
from appliance.metrics import score
from tests.annotate_server import AnnotateServer


def _gold_docs(released_corpus):
    return [document_from_json(g, g["id"]) for g in released_corpus.gold.values()]


def test_lexicon_default_through_the_cli(released_corpus):
    ws = released_corpus.ws
    result = CliRunner().invoke(cli, ["annotate", "-w", str(ws.root), "--corpus", "demo"])
    assert result.exit_code == 0, result.output
    assert f"annotated {len(released_corpus.gold)} of {len(released_corpus.gold)}" in result.output

    folder = ws.annotation_dir()
    lines = [json.loads(x) for x in (folder / "annotations.jsonl").read_text().splitlines()]
    assert {x["id"] for x in lines} == set(released_corpus.gold)
    first = lines[0]
    assert first["annotator"]["kind"] == "lexicon"
    doc = document_from_json(first, "line 1")
    assert first["tags"] == bio_tags(doc) and first["tokens"] == [
        list(t) for t in word_tokens(doc.text)
    ]

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stage"] == "annotate" and manifest["corpus"] == "demo"
    assert manifest["release"]["path"].endswith("release.json")
    assert manifest["counts"]["annotated"] == len(lines) and manifest["counts"]["rejected"] == 0
    assert set(manifest["qa"]["entities_per_note"]) == {"DRUG", "PROCEDURE", "DIAGNOSIS"}

    docs = read_annotations(ws)
    s = score(_gold_docs(released_corpus), docs)
    assert s["exact"]["micro"]["f1"] >= 0.95, s["exact"]["micro"]

    entry = [e for _, e in ws.audit.entries() if e["command"] == "annotate"][-1]
    assert entry["result"] == "ok" and entry["inputs"][0]["sha256"] == manifest["release"]["sha256"]
    assert all(doc.text not in json.dumps(entry) for doc in docs)  # no note text in the log


def test_lexicon_file_through_the_cli_is_recorded_by_path(released_corpus, tmp_path):
    ws = released_corpus.ws
    terms = tmp_path / "terms.tsv"
    terms.write_text("term\tlabel\nhypertension\tDIAGNOSIS\nmetformin\tDRUG\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        [
            "annotate",
            "-w",
            str(ws.root),
            "--corpus",
            "demo",
            "--lexicon",
            str(terms),
            "--name",
            "terms",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((ws.annotation_dir("terms") / "manifest.json").read_text())
    assert manifest["parameters"]["lexicons"] == [str(terms)]
    docs = read_annotations(ws, "terms")
    # Lexicon matches have the file's types; head-noun phrases (confidence 0.6) any type of the schema.
    assert {s.label for d in docs for s in d.spans if s.confidence > 0.6} <= {"DIAGNOSIS", "DRUG"}
    assert {s.label for d in docs for s in d.spans} <= {"DIAGNOSIS", "DRUG", "PROCEDURE"}


def test_llm_run_rejects_failed_notes_and_a_rerun_asks_only_those(released_corpus):
    ws, gold = released_corpus.ws, released_corpus.gold
    docs = list(gold.values())
    options = AnnotatorOptions(
        annotators=("llm",), model="test-model", timeout=2.0, retries=1, max_in_flight=4
    )
    with AnnotateServer(docs) as server:
        server.fault(docs[0]["text"], "malformed")
        server.fault(docs[1]["text"], "schema")
        server.fault(docs[2]["text"], "invented")
        options = AnnotatorOptions(**{**options.__dict__, "endpoint": server.url})
        result = run(ws, options, corpus="demo", name="llm")
        assert result.annotated == len(docs) - 2 and result.rejected == 2
        rejected = [
            json.loads(x)
            for x in (ws.annotation_dir("llm") / "rejected.jsonl").read_text().splitlines()
        ]
        assert sorted(r["reason"] for r in rejected) == ["malformed_json", "schema_violation"]
        assert result.qa["members"][0]["invented_entities"] == 1
        ann = read_annotations(ws, "llm")
        assert ann[0].meta["annotator"]["model"] == "test-model"
        assert score(_gold_docs(released_corpus), ann)["exact"]["micro"]["precision"] == 1.0

        before = sum(server.requests.values())
        again = run(ws, options, corpus="demo", name="llm")
        assert sum(server.requests.values()) == before + 2  # only the two failed notes
        assert again.annotated == len(docs) and again.rejected == 0
        assert again.qa["members"][0]["cache_hits"] == len(docs) - 2


def test_a_run_that_annotates_no_note_exits_9_and_keeps_the_reasons(released_corpus):
    """Every answer malformed: exit 9 with the reasons in one line, rejected.jsonl kept,
    no empty annotation set for training to pick up; the audit line says why."""
    ws, gold = released_corpus.ws, released_corpus.gold
    docs = list(gold.values())
    with AnnotateServer(docs) as server:
        for doc in docs:
            server.fault(doc["text"], "malformed")
        result = CliRunner().invoke(
            cli,
            ["annotate", "-w", str(ws.root), "--corpus", "demo", "--name", "llm"]
            + [
                "--annotator",
                "llm",
                "--endpoint",
                server.url,
                "--model",
                "test-model",
                "--retries",
                "0",
            ],
        )
    assert result.exit_code == 9, result.output
    line = result.output.strip().splitlines()[-1]
    assert (
        f"no note annotated: all {len(docs)} released notes rejected ({len(docs)} malformed_json)"
        in line
    ), line
    folder = ws.annotation_dir("llm")
    assert len((folder / "rejected.jsonl").read_text().splitlines()) == len(docs)
    assert not (folder / "annotations.jsonl").exists() and not (folder / "manifest.json").exists()
    last = list(ws.audit.entries())[-1][1]
    assert last["command"] == "annotate" and last["result"].startswith("error: no note annotated")


def test_endpoint_refused_and_logged(released_corpus):
    ws = released_corpus.ws
    result = CliRunner().invoke(
        cli,
        ["annotate", "-w", str(ws.root), "--corpus", "demo", "--annotator", "llm"]
        + ["--endpoint", "http://203.0.113.7:8000/v1", "--model", "m"],
    )
    assert result.exit_code == 6 and "not loopback" in result.output
    last = list(ws.audit.entries())[-1][1]
    assert last["command"] == "annotate" and last["result"].startswith("error: ")


def test_tampered_or_stale_annotations_are_refused(released_corpus):
    ws = released_corpus.ws
    run(ws, AnnotatorOptions(), corpus="demo")
    path = ws.annotation_dir() / "annotations.jsonl"
    original = path.read_bytes()
    path.write_bytes(original.replace(b'"DRUG"', b'"DIAGNOSIS"', 1))
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        read_annotations(ws)
    path.write_bytes(original)
    assert read_annotations(ws)

    # A later screen of the corpus makes these annotations stale.
    from appliance.privacy import screen

    screen.run(ws, corpus="demo")
    with pytest.raises(WorkspaceError, match="annotations are stale; rerun appliance annotate"):
        read_annotations(ws)


def test_unscreened_corpus_is_refused(workspace):
    with pytest.raises(WorkspaceError):
        run(workspace, AnnotatorOptions(), corpus="default")


def test_ensemble_of_lexicon_and_llm(released_corpus):
    ws, docs = released_corpus.ws, list(released_corpus.gold.values())
    with AnnotateServer(docs) as server:
        options = AnnotatorOptions(
            annotators=("lexicon", "llm"),
            endpoint=server.url,
            model="test-model",
            combine="intersection",
        )
        result = run(ws, options, corpus="demo", name="ens")
    ann = read_annotations(ws, "ens")
    assert ann[0].meta["annotator"]["kind"] == "ensemble"
    assert result.annotated == len(docs)
    s = score(_gold_docs(released_corpus), ann)["exact"]["micro"]
    assert s["precision"] == 1.0 and s["recall"] >= 0.95


def test_annotations_are_documents(released_corpus):
    run(released_corpus.ws, AnnotatorOptions(), corpus="demo")
    docs = read_annotations(released_corpus.ws)
    assert all(isinstance(d, Document) and d.id in released_corpus.gold for d in docs)
