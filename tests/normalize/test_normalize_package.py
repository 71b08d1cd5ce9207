"""The normalizer with an encoder, in the workspace, in the signed package and at inference.

A tiny BERT (random weights, a WordPiece vocabulary built from the
terminology) stands in for a local encoder; the workspace is the session's
released demo corpus, annotated with the demo vocabularies, with a tiny NER
model trained on it.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from appliance.annotate.lexicon import LexiconRules, demo_lexicon
from appliance.cli import cli
from appliance.errors import IntegrityError
from appliance.ner import train as train_mod
from appliance.ner.package import verify_package
from appliance.normalize import linker
from appliance.normalize.build import build
from appliance.normalize.encoder import EncoderSettings
from appliance.normalize.terminology import Terminology
from appliance.security.keys import load_public_key
from tests.ner_helpers import demo_export, one_thread, tiny_settings


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


def _invoke(*args: object) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def tiny_encoder(folder: Path, texts: list[str]) -> Path:
    from transformers import BertConfig, BertModel

    from appliance.ner.model import train_wordpiece

    folder.mkdir(parents=True, exist_ok=True)
    tok = train_wordpiece(texts, 400)
    tok.save(str(folder / "tokenizer.json"))
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def demo_terminology() -> Terminology:
    return Terminology.from_lexicon(demo_lexicon(), "the demo vocabularies")


def test_an_encoder_is_fine_tuned_exported_and_reloaded(tmp_path, demo_terminology):
    names = [n for c in demo_terminology.concepts for n in c.names]
    base = tiny_encoder(tmp_path / "enc", names)
    losses: list[float] = []
    built = build(
        demo_terminology,
        LexiconRules.builtin("en"),
        base=base,
        encoder_settings=EncoderSettings(steps=12, batch_size=16),
        progress=lambda step, total, loss: losses.append(loss),
    )
    n = built.normalizer
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert n.info["parity"]["max_abs_diff"] <= 1e-3
    assert n.embeddings is not None and n.embeddings.shape[0] == len(n.surfaces)
    norms = np.linalg.norm(n.embeddings, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4)
    built.save(tmp_path / "norm")
    again = linker.load(tmp_path / "norm")
    assert again.encoder is not None
    mentions = [("metformine", "DRUG"), ("zzq", "DIAGNOSIS"), ("PCI", "PROCEDURE")]
    assert [x.fields() for x in again.link(mentions)] == [x.fields() for x in n.link(mentions)]
    embeddings = tmp_path / "norm" / linker.EMBEDDINGS
    embeddings.write_bytes(embeddings.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(Exception, match="changed since the normalizer was built"):
        linker.load(tmp_path / "norm")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with annotations, a normalizer, a tiny model and its package."""
    from appliance.annotate.annotators import AnnotatorOptions
    from appliance.annotate.stage import run as annotate
    from appliance.workspace import Workspace
    from tests import conftest

    if "root" not in conftest._RELEASED_TEMPLATE:
        root, corpus, gold = conftest._released_template(tmp_path_factory.mktemp("released"))
        conftest._RELEASED_TEMPLATE.update(root=root, corpus=corpus, gold=gold)
    base = tmp_path_factory.mktemp("normpkg")
    shutil.copytree(conftest._RELEASED_TEMPLATE["root"], base / "ws")
    ws = Workspace.open(base / "ws")
    annotate(ws, AnnotatorOptions(), corpus=conftest._RELEASED_TEMPLATE["corpus"])
    trained_out = _invoke("normalize", "train", "-w", ws.root)
    train_mod.run(ws, settings=tiny_settings())
    exported = _invoke("export", "-w", ws.root)
    export = demo_export(base / "ex", "jsonl", notes=10)
    return {
        "ws": ws,
        "package": ws.models_dir / "ner" / "default" / "package",
        "export": export,
        "gold": export.parent / "gold.jsonl",
        "trained_out": trained_out,
        "exported": exported,
        "base": base,
    }


def test_normalize_train_takes_the_annotation_sets_lexicon_and_mentions(trained):
    out = trained["trained_out"]
    assert "built a normalizer" in out and "annotation set 'default'" in out
    norm = linker.load(trained["ws"].models_dir / "normalizer")
    assert len(norm.terminology.concepts) == len(demo_lexicon_codes())
    assert sum(norm.mentions.values()) > 0  # the released notes' mentions
    manifest = json.loads((trained["ws"].models_dir / "normalizer" / "manifest.json").read_text())
    assert manifest["terminology_sha256"] == norm.terminology.sha256()
    audit = (trained["ws"].root / "audit.log").read_text()
    assert '"normalize train"' in audit


def demo_lexicon_codes() -> set[str]:
    return {e.code for e in demo_lexicon().entries}


def test_the_package_carries_and_signs_the_normalizer(trained, tmp_path):
    package = trained["package"]
    assert "normalizer:" in trained["exported"]
    pub = load_public_key(trained["ws"].signing_key_path.with_suffix(".pub"))
    manifest = verify_package(package, pub)
    assert linker.META in manifest["files"] and linker.CONCEPTS in manifest["files"]
    assert manifest["normalizer"]["concepts"] == len(demo_lexicon_codes())
    assert "This package carries a normalizer" in (package / "MODEL_CARD.md").read_text()
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    path = copy / linker.CONCEPTS
    path.write_bytes(path.read_bytes().replace(b"metformin", b"metforman"))
    with pytest.raises(IntegrityError, match="does not match the signed manifest"):
        verify_package(copy, pub)
    plain = tmp_path / "plain"
    _invoke("export", "-w", trained["ws"].root, "--no-normalizer", "--out", plain)
    assert not (plain / linker.META).exists()


def test_infer_writes_codes_in_every_format(trained, tmp_path):
    ws, export = trained["ws"], trained["export"]
    out = tmp_path / "e.jsonl"
    summary = _invoke("infer", export, "-w", ws.root, "--out", out)
    assert "given a concept code" in summary
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    entities = [e for r in rows for e in r["entities"]]
    assert entities, "the tiny model found nothing"
    coded = [e for e in entities if e["code"]]
    assert coded
    for e in entities:
        assert {"code", "code_system", "code_name", "code_score", "code_candidates"} <= set(e)
    assert all(e["code"] in demo_lexicon_codes() for e in coded)
    exact = [e for e in coded if e["code_via"] == "exact"]
    assert exact and all(e["code_score"] == 1.0 for e in exact)

    out_csv = tmp_path / "e.csv"
    _invoke("infer", export, "-w", ws.root, "--out", out_csv, "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert {"code", "code_system", "code_name", "code_score"} <= set(table[0])
    assert sum(1 for r in table if r["code"]) == len(coded)

    out_fhir = tmp_path / "e.ndjson"
    _invoke("infer", export, "-w", ws.root, "--out", out_fhir, "--format", "fhir")
    codings = [
        (res.get("code") or res.get("medicationCodeableConcept") or {}).get("coding")
        for line in out_fhir.read_text().splitlines()
        for res in (e["resource"] for e in json.loads(line)["entry"])
    ]
    systems = {c[0]["system"] for c in codings if c}
    assert systems and systems <= {
        "http://hl7.org/fhir/sid/icd-10",
        "http://www.whocc.no/atc",
        "urn:appliance:demo:procedure",
    }

    out_brat = tmp_path / "brat"
    _invoke("infer", export, "-w", ws.root, "--out", out_brat, "--format", "brat")
    ann = "".join(p.read_text() for p in out_brat.glob("*.ann"))
    assert ann.count("\tReference T") == len(coded)

    off = tmp_path / "off.jsonl"
    summary = _invoke("infer", export, "-w", ws.root, "--out", off, "--no-normalize")
    assert "concept code" not in summary
    assert all(
        "code" not in e
        for line in off.read_text().splitlines()
        for e in json.loads(line)["entities"]
    )


def test_ner_evaluate_reports_span_and_code_scores(trained):
    out = _invoke("ner", "evaluate", "-w", trained["ws"].root, "--gold", trained["gold"], "--json")
    report = json.loads(out)
    codes = report["codes"]
    assert codes["gold"] > 0 and 0 <= codes["f1"] <= 1
    assert codes["tp"] <= min(codes["pred"], codes["gold"])
    text = _invoke("ner", "evaluate", "-w", trained["ws"].root, "--gold", trained["gold"])
    assert "span + concept code (end to end" in text


def test_normalize_evaluate_on_the_package(trained):
    out = _invoke(
        "normalize", "evaluate", "--gold", trained["gold"], "--normalizer", trained["package"]
    )
    assert "normalizer all" in out
    line = next(x for x in out.splitlines() if x.startswith("normalizer all"))
    assert float(line.split()[3]) >= 0.9  # demo mentions are the vocabularies' own forms


def test_a_real_zone_package_encrypts_its_normalizer(tmp_path):
    from appliance.security.crypto import FILE_MAGIC
    from appliance.workspace import init

    ws = init(tmp_path / "ws")
    gold = demo_export(tmp_path / "demo", "jsonl", notes=12).parent / "gold.jsonl"
    train_mod.run(ws, train_gold=gold, name="real", settings=tiny_settings(max_steps=3))
    secret = "Quistbergh syndrome"
    terms = tmp_path / "ward-terms.tsv"
    terms.write_text(f"term\tlabel\tcode\n{secret}\tDIAGNOSIS\tW1\nasthma\tDIAGNOSIS\tW2\n")
    _invoke("normalize", "train", "-w", ws.root, "--lexicon", terms)
    _invoke("export", "-w", ws.root, "--name", "real", "--no-lexicon")
    pkg = ws.models_dir / "ner" / "real" / "package"
    signed = verify_package(pkg, load_public_key(ws.signing_key_path.with_suffix(".pub")))
    assert linker.CONCEPTS + linker.ENC in signed["files"]
    runtime = json.loads((pkg / "ner.json").read_text())
    assert linker.META + linker.ENC in runtime["encrypted"]["files"]
    for p in pkg.iterdir():
        data = p.read_bytes()
        assert b"Quistbergh" not in data, p
        if p.name.startswith("normalizer"):
            assert data.startswith(FILE_MAGIC)
    with pytest.raises(Exception, match="needs the workspace's data key"):
        linker.load(pkg)
    norm = linker.load(pkg, key=ws.data_key)
    (link,) = norm.link([(secret.lower(), "DIAGNOSIS")])
    assert link.code == "W1"
    export = tmp_path / "notes.jsonl"
    export.write_text(json.dumps({"id": "n1", "text": "History of asthma."}) + "\n")
    out = tmp_path / "o.jsonl"
    summary = _invoke("infer", export, "-w", ws.root, "--name", "real", "--out", out)
    assert "given a concept code" in summary


def test_normalize_train_with_llm_written_mentions(workspace, tmp_path):
    from tests.normalize.test_normalize import TERMS, _MentionServer

    terms = tmp_path / "terms.tsv"
    terms.write_text(TERMS, encoding="utf-8")
    base = tiny_encoder(tmp_path / "enc", TERMS.split())
    server = _MentionServer({"pneumonia": {"mentions": ["PNA", "chest infection"]}})
    try:
        result = CliRunner().invoke(
            cli,
            ["normalize", "train", "-w", str(workspace.root), "--lexicon", str(terms),
             "--endpoint", server.url, "--model", "m"],
        )  # fmt: skip
        assert result.exit_code == 2 and "give --base ENCODER_DIR too" in result.output
        done = CliRunner().invoke(
            cli,
            ["normalize", "train", "-w", str(workspace.root), "--lexicon", str(terms),
             "--base", str(base), "--steps", "3", "--endpoint", server.url, "--model", "m",
             "--json"],
        )  # fmt: skip
    finally:
        server.close()
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["llm_mentions"]["mentions"] == 2 and report["llm_mentions"]["answered"] == 8
    norm = linker.load(workspace.models_dir / "normalizer")
    assert norm.mentions.get("DX4") == 2 and norm.info["llm_mentions"]["mentions"] == 2
    assert norm.info["mention_sources"]["llm"] == 2


def test_the_nil_threshold_is_calibrated_on_held_out_concepts(demo_terminology):
    from appliance.normalize.build import calibrate_nil

    built = build(demo_terminology, LexiconRules.builtin("en"))
    cal = built.normalizer.info["nil_calibration"]
    assert cal["chosen"] == "held-out concepts of the terminology" and cal["queries"] >= 20
    assert 0.2 <= built.normalizer.settings.nil_threshold == cal["threshold"] <= 0.95
    assert cal["right"] > 0.5  # better than always or never answering NIL
    again, _ = calibrate_nil(built.normalizer)
    assert again == cal["threshold"]  # seeded: the same sample, the same threshold
    fixed = build(
        demo_terminology,
        LexiconRules.builtin("en"),
        settings=linker.NormalizerSettings(nil_threshold=0.3),
        calibrate=False,
    )
    assert fixed.normalizer.settings.nil_threshold == 0.3
    assert "nil_calibration" not in fixed.normalizer.info


def test_a_resumed_run_must_write_what_the_output_was_started_with(trained, tmp_path):
    from appliance.ner import infer as infer_mod

    ws, export = trained["ws"], trained["export"]
    out = tmp_path / "e.csv"
    first = infer_mod.run_ws(
        ws, export, package=None, out=out, fmt="csv", stop_after=3
    )  # interrupted after 3 notes
    assert first.notes == 3
    result = CliRunner().invoke(
        cli,
        ["infer", str(export), "-w", str(ws.root), "--out", str(out), "--format", "csv",
         "--no-normalize"],
    )  # fmt: skip
    assert result.exit_code == 2 and "codes True now False" in result.output
    assert "Traceback" not in result.output
    summary = _invoke("infer", export, "-w", ws.root, "--out", out, "--format", "csv")
    assert "3 already done (resumed)" in summary
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert len({len(r) for r in rows}) == 1  # every row has the header's columns
