"""The NER stage inside a workspace: annotations → train → export → infer / evaluate, audit and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.ner import train as train_mod
from appliance.ner.export import render_card
from tests.ner_helpers import demo_export, one_thread, tiny_settings


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


def _invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_annotations_to_signed_package_to_inference(released_corpus, tmp_path, monkeypatch):
    from appliance.annotate.annotators import AnnotatorOptions
    from appliance.annotate.stage import run as annotate

    ws = released_corpus.ws
    annotate(ws, AnnotatorOptions(), corpus=released_corpus.corpus)
    result = train_mod.run(ws, settings=tiny_settings(epochs=3))
    root = ws.models_dir / "ner" / "default"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["zone"] == "screened" and manifest["data"]["source"]["kind"] == "annotations"
    assert manifest["data"]["real_notes_seen"] is False
    assert any(i["path"].endswith("release.json") for i in manifest["inputs"])
    # Mention replacement (on by default for annotations): copies drawn from the annotator's lexicon.
    replaced = manifest["data"]["source"]["mention_replacement"]
    assert replaced["terms"] == "the lexicon of the training annotations"
    assert replaced["term_count"] > 100 and replaced["replaced"] > 0
    assert manifest["settings"]["mention_copies"] == 1
    assert result.train_docs - replaced["copies"] + result.dev_docs == len(released_corpus.gold)

    assert manifest["zone_reasons"] == [] and manifest["encrypted"] is None
    assert (root / "dev.jsonl").is_file() and not (root / "dev.jsonl.enc").exists()
    assert (root / "model" / "model.safetensors").is_file()

    out = _invoke("export", "-w", ws.root)
    assert "signed" in out and "labels identical" in out and "encrypted" not in out
    card = (root / "package" / "MODEL_CARD.md").read_text()
    assert "Annotated synthetic notes" in card and "never shown" in card
    assert "No real record reached training" in card and "Real zone" not in card
    # A screened package stays plain and portable: readable files, no key needed.
    signed = json.loads((root / "package" / "manifest.json").read_text())
    assert signed["zone"] == "screened" and signed["zone_reasons"] == []
    assert signed["encrypted"] is None
    assert {"model.onnx", "tokenizer.json"} <= set(signed["files"])
    assert json.loads((root / "package" / "tokenizer.json").read_text())["model"]["vocab"]
    assert json.loads((root / "package" / "ner.json").read_text())["zone"] == "screened"

    export = demo_export(tmp_path / "ex", "csv", notes=12)
    out = _invoke("infer", export, "-w", ws.root, "--out", tmp_path / "o.jsonl", "--threads", 1)
    assert "inferred 12 notes, 0 rejected" in out
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 12

    # Without a workspace: the trusted key is given explicitly.
    pub = ws.signing_key_path.with_suffix(".pub")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = CliRunner().invoke(
        cli,
        [
            "infer",
            str(export),
            "--model",
            str(root / "package"),
            "--public-key",
            str(pub),
            "--out",
            "x.csv",
            "--format",
            "csv",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (elsewhere / "x.csv").read_text().startswith("note_id,start,end,label,text,confidence")

    # Encrypted with the workspace key.
    _invoke("infer", export, "-w", ws.root, "--out", tmp_path / "e.jsonl", "--encrypt")
    assert b'"entities"' not in (tmp_path / "e.jsonl").read_bytes()

    report = json.loads(
        _invoke("ner", "evaluate", "-w", ws.root, "--gold", export.parent / "gold.jsonl", "--json")
    )
    assert report["model"]["backend"] == "onnx" and report["documents"] == 12
    assert set(report["seqeval"]["micro"]) >= {"precision", "recall", "f1"}

    _invoke("audit", "verify", "-w", ws.root)
    commands = [e["command"] for _, e in ws.audit.entries()]
    assert {"ner train", "export", "infer", "ner evaluate"} <= set(commands)
    assert "text" not in json.dumps([e for _, e in ws.audit.entries() if e["command"] == "infer"])

    # A tampered package is refused in a real process, with one line and exit code 6.
    with open(root / "package" / "labels.json", "a") as fh:
        fh.write(" ")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "infer",
            str(export),
            "-w",
            str(ws.root),
            "--out",
            str(tmp_path / "t.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert proc.returncode == 6, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "labels.json" in lines[0]
    assert not (tmp_path / "t.jsonl").exists()


def test_train_on_a_gold_file_says_so(workspace, tmp_path):
    gold = demo_export(tmp_path / "ex", "jsonl", notes=12).parent / "gold.jsonl"
    out = _invoke(
        "ner",
        "train",
        "-w",
        workspace.root,
        "--train",
        gold,
        "--max-steps",
        3,
        "--max-length",
        32,
        "--name",
        "upper",
    )
    assert "trained NER model: 3/3 steps" in out
    root = workspace.models_dir / "ner" / "upper"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["data"]["source"]["kind"] == "gold file"
    assert manifest["zone"] == "real" and manifest["zone_reasons"][0].startswith(
        "trained on gold notes gold.jsonl (sha256 "
    )
    meta = json.loads((root / "model" / "ner.json").read_text())
    assert meta["data"]["source"]["path"] == str(gold)
    card = render_card("upper", meta, "fp32", {"max_abs_diff": 0.0, "tokens": 1}, None)
    assert "the model saw this data" in card and str(gold) in card


def test_mlm_on_records_makes_a_real_zone_model(workspace, tmp_path):
    from appliance import demo
    from appliance.records import ingest

    real = demo.run(tmp_path / "real", notes=10, fmt="jsonl", seed=3)
    ingest.run(workspace, real.export_path)
    gold = demo_export(tmp_path / "ex", "jsonl", notes=10).parent / "gold.jsonl"
    result = train_mod.run(
        workspace,
        train_gold=gold,
        mlm_on_records=True,
        settings=tiny_settings(mlm_steps=4, max_steps=3),
    )
    assert result.mlm_steps == 4
    root = workspace.models_dir / "ner" / "default"
    assert json.loads((root / "manifest.json").read_text())["zone"] == "real"
    meta = json.loads((root / "model" / "ner.json").read_text())
    assert meta["zone"] == "real" and meta["mlm_on_records"]["notes"] == 10
    card = render_card("default", meta, "fp32", {"max_abs_diff": 0.0, "tokens": 1}, None)
    assert "real zone" in card and "never shown" not in card
    assert any(
        "store.json" in i["path"]
        for i in json.loads((root / "manifest.json").read_text())["inputs"]
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["export"], 4, "no trained NER model"),
        (["ner", "train"], 4, "no annotations"),
        (["ner", "train", "--train", "{tmp}/missing.jsonl"], 5, "not found"),
        (["infer", "{tmp}/x.csv", "--out", "{tmp}/o.jsonl"], 4, "no model package"),
        (["ner", "evaluate", "--gold", "{tmp}/g.jsonl"], 4, "no trained NER model"),
    ],
)
def test_errors_are_one_line(workspace, tmp_path, args, code, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(cli, [*args, "-w", str(workspace.root)])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
