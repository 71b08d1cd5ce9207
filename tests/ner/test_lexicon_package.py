"""The lexicon inside the package: packed, signed, encrypted in the real zone, combined at inference.

One tiny model is trained on lexicon annotations of the released demo
corpus and exported three ways: with the training annotations' lexicon (the
default), with ``--no-lexicon`` (a package as they were before they carried
one) and with ``--lexicon FILE``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.annotate.lexicon import (
    Lexicon,
    LexiconAnnotator,
    LexiconEntry,
    demo_lexicon,
    load_lexicon,
)
from appliance.annotate.lexicon_tsv import from_tsv, to_tsv
from appliance.cli import cli
from appliance.documents import Span, read_gold
from appliance.errors import IntegrityError, WorkspaceError
from appliance.ner import lexicon as lx
from appliance.ner import train as train_mod
from appliance.ner.encoding import Entity
from appliance.ner.package import verify_package
from appliance.ner.runtime import onnx_tagger
from appliance.security.crypto import FILE_MAGIC
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace whose model was trained on demo-lexicon annotations, exported with and without it."""
    from appliance.annotate.annotators import AnnotatorOptions
    from appliance.annotate.stage import run as annotate
    from appliance.workspace import Workspace
    from tests import conftest

    if "root" not in conftest._RELEASED_TEMPLATE:
        root, corpus, gold = conftest._released_template(tmp_path_factory.mktemp("released"))
        conftest._RELEASED_TEMPLATE.update(root=root, corpus=corpus, gold=gold)
    base = tmp_path_factory.mktemp("lexpkg")
    shutil.copytree(conftest._RELEASED_TEMPLATE["root"], base / "ws")
    ws = Workspace.open(base / "ws")
    annotate(ws, AnnotatorOptions(), corpus=conftest._RELEASED_TEMPLATE["corpus"])
    # No term held out: these packages test the union (the held-out check has its own model below).
    train_mod.run(ws, settings=tiny_settings(term_holdout=0.0))
    root = ws.models_dir / "ner" / "default"
    exported = _invoke("export", "-w", ws.root)
    plain = base / "plain"
    _invoke("export", "-w", ws.root, "--no-lexicon", "--out", plain)
    export = demo_export(base / "ex", "jsonl", notes=12)
    return {
        "ws": ws,
        "root": root,
        "package": root / "package",
        "plain": plain,
        "export": export,
        "gold": export.parent / "gold.jsonl",
        "exported": exported,
        "pub": ws.signing_key_path.with_suffix(".pub"),
    }


# ---------------------------------------------------------------------------
# The serialization and the rule, without a model


def test_lexicon_tsv_round_trip_keeps_order_and_odd_characters():
    lex = Lexicon(
        [
            LexiconEntry("heart attack", "DIAGNOSIS", "D1"),
            LexiconEntry('5" "quoted\tterm', "DIAGNOSIS", ""),
            LexiconEntry("two\nlines", "DRUG", "X"),
            LexiconEntry("heart attack", "DIAGNOSIS", "D1"),  # an exact duplicate is dropped
            LexiconEntry("heart attack", "DRUG", "D2"),  # the same surface typed twice is kept
        ]
    )
    back = from_tsv(to_tsv(lex), "lexicon.tsv")
    assert back.entries == [lex.entries[i] for i in (0, 1, 2, 4)]
    demo = demo_lexicon()
    again = from_tsv(to_tsv(demo), "lexicon.tsv")
    text = "Started metformin for type 2 diabetes mellitus; colonoscopy planned. Aspirin."
    assert LexiconAnnotator(again).annotate_text(text) == LexiconAnnotator(demo).annotate_text(text)
    with pytest.raises(Exception, match="not a lexicon TSV"):
        from_tsv(b"a\tb\n", "x.tsv")


def _e(start, end, label, conf=0.9):
    return Entity(start, end, label, "x" * (end - start), conf)


def _s(start, end, label):
    return Span(start, end, label, "x" * (end - start))


def test_union_rule():
    model = [_e(0, 5, "DRUG"), _e(10, 15, "DIAGNOSIS"), _e(20, 24, "DRUG", 0.3), _e(30, 34, "DRUG")]
    lexicon = [
        _s(0, 5, "DRUG"),  # the same entity: both
        _s(10, 22, "DIAGNOSIS"),  # longer, but also overlaps a dropped (low-confidence) entity
        _s(30, 40, "DRUG"),  # longer, same type, covers it: the lexicon match wins
        _s(50, 55, "PROCEDURE"),  # the model missed it: added
    ]
    got = lx.combine(model, lexicon, "union", 0.5)
    assert [(e.start, e.end, e.label, e.source) for e in got] == [
        (0, 5, "DRUG", "both"),
        (10, 22, "DIAGNOSIS", "lexicon"),
        (30, 40, "DRUG", "lexicon"),
        (50, 55, "PROCEDURE", "lexicon"),
    ]
    assert got[0].confidence == 0.9 and got[1].confidence == 1.0
    # A low-confidence model entity the lexicon confirms is kept, found by both.
    got = lx.combine([_e(0, 5, "DRUG", 0.2)], [_s(0, 5, "DRUG"), _s(6, 9, "DRUG")], "union", 0.5)
    assert [(e.start, e.source, e.confidence) for e in got] == [
        (0, "both", 0.2),
        (6, "lexicon", 1.0),
    ]
    # A lexicon match overlapping a confident model entity it does not strictly contain
    # with the same type is dropped: the model wins.
    model = [_e(0, 10, "DIAGNOSIS"), _e(20, 25, "DRUG")]
    lexicon = [_s(5, 15, "DIAGNOSIS"), _s(18, 30, "PROCEDURE"), _s(40, 45, "DRUG")]
    got = lx.combine(model, lexicon, "union", 0.5)
    assert [(e.start, e.end, e.label, e.source) for e in got] == [
        (0, 10, "DIAGNOSIS", "model"),
        (20, 25, "DRUG", "model"),
        (40, 45, "DRUG", "lexicon"),
    ]
    # Same offsets, other type: the model's stays.
    got = lx.combine([_e(0, 5, "DRUG")], [_s(0, 5, "DIAGNOSIS")], "union", 0.5)
    assert [(e.label, e.source) for e in got] == [("DRUG", "model")]
    # A longer match must cover every model entity it overlaps, each of its type.
    model = [_e(0, 4, "DRUG"), _e(5, 9, "DIAGNOSIS")]
    got = lx.combine(model, [_s(0, 9, "DRUG")], "union", 0.5)
    assert [(e.start, e.end, e.source) for e in got] == [(0, 4, "model"), (5, 9, "model")]
    got = lx.combine([_e(0, 4, "DRUG"), _e(5, 9, "DRUG")], [_s(0, 9, "DRUG")], "union", 0.5)
    assert [(e.start, e.end, e.source) for e in got] == [(0, 9, "lexicon")]
    # model and lexicon alone.
    assert lx.combine(model, [_s(0, 9, "DRUG")], "model") == model
    assert [e.source for e in lx.combine(model, [_s(0, 9, "DRUG")], "lexicon")] == ["lexicon"]


def test_a_changed_training_lexicon_file_is_refused(tmp_path):
    terms = tmp_path / "terms.tsv"
    terms.write_text("term\tlabel\nquorvatinib\tDRUG\n")
    params = LexiconAnnotator(load_lexicon(terms)).params()
    source = {"kind": "annotations", "name": "default", "annotator": {"members": [params]}}
    packed, why = lx.training_lexicon(source, None, tmp_path)
    assert packed is not None and why == ""
    assert [e.surface for e in packed.lexicon.entries] == ["quorvatinib"]
    terms.write_text("term\tlabel\nquorvatinib\tDRUG\nother\tDRUG\n")
    with pytest.raises(WorkspaceError, match="changed since"):
        lx.training_lexicon(source, None, tmp_path)
    terms.unlink()
    with pytest.raises(WorkspaceError, match="is gone"):
        lx.training_lexicon(source, None, tmp_path)
    none, why = lx.training_lexicon({"kind": "gold file"}, None, tmp_path)
    assert none is None and "gold file" in why
    llm_only = {"kind": "annotations", "name": "x", "annotator": {"members": [{"annotator": "x"}]}}
    assert lx.training_lexicon(llm_only, None, tmp_path)[0] is None


# ---------------------------------------------------------------------------
# Export


def test_package_carries_the_training_lexicon_under_the_signature(trained, tmp_path):
    pkg = trained["package"]
    assert (
        "lexicon of" in trained["exported"]
        and "training annotations 'default'" in (trained["exported"])
    )
    signed = verify_package(pkg, load_public_key(trained["pub"]))
    assert {"lexicon.tsv", "lexicon.json"} <= set(signed["files"])
    assert signed["lexicon"]["files"] == ["lexicon.tsv", "lexicon.json"]
    runtime = json.loads((pkg / "ner.json").read_text())
    info = runtime["lexicon"]
    assert info["origin"]["kind"] == "training annotations"
    assert info["combine"] == {"default": "union", "min_confidence": 0.9, "chosen": "default"}
    demo = demo_lexicon()
    packed = from_tsv((pkg / "lexicon.tsv").read_bytes(), "lexicon.tsv")
    assert info["entries"] == len(packed.entries) == len(set(demo.entries))
    assert info["terms"] == LexiconAnnotator(demo).size
    settings = json.loads((pkg / "lexicon.json").read_text())
    assert settings["annotator"]["language"] == "en" and settings["annotator"]["rules"] == []
    card = (pkg / "MODEL_CARD.md").read_text()
    assert "## Lexicon" in card and "training annotations (`default`)" in card
    assert "strictly longer" in card and "`--combine model`" in card
    # A changed lexicon is refused like any other changed file, and so is an added one.
    for name, change in (("lexicon.tsv", b"zzz\tDRUG\t\n"), ("lexicon.json", b" ")):
        copy = tmp_path / name
        shutil.copytree(pkg, copy)
        with open(copy / name, "ab") as fh:
            fh.write(change)
        with pytest.raises(IntegrityError, match=name):
            verify_package(copy, load_public_key(trained["pub"]))
        r = CliRunner().invoke(
            cli,
            ["infer", str(trained["export"]), "--model", str(copy), "--public-key",
             str(trained["pub"]), "--out", str(tmp_path / f"{name}.jsonl")],
        )  # fmt: skip
        assert r.exit_code == 6 and name in r.output and "Traceback" not in r.output
    plain = tmp_path / "plain-plus"
    shutil.copytree(trained["plain"], plain)
    shutil.copyfile(pkg / "lexicon.tsv", plain / "lexicon.tsv")
    with pytest.raises(IntegrityError, match="lexicon.tsv is not part of the signed package"):
        verify_package(plain, load_public_key(trained["pub"]))


def test_no_lexicon_gives_a_package_as_before(trained, tmp_path):
    plain = trained["plain"]
    assert not (plain / "lexicon.tsv").exists() and not (plain / "lexicon.json").exists()
    assert "lexicon" not in json.loads((plain / "ner.json").read_text())
    assert verify_package(plain, load_public_key(trained["pub"]))["lexicon"] is None
    assert "No lexicon" in (plain / "MODEL_CARD.md").read_text()
    out = tmp_path / "o.jsonl"
    _invoke("infer", trained["export"], "-w", trained["ws"].root, "--model", plain, "--out", out)
    assert not any("source" in e for note in _entities(out) for e in note)
    r = CliRunner().invoke(
        cli,
        ["infer", str(trained["export"]), "-w", str(trained["ws"].root), "--model", str(plain),
         "--out", str(tmp_path / "u.jsonl"), "--combine", "union"],
    )  # fmt: skip
    assert r.exit_code == 2 and "carries no lexicon" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(
        cli, ["export", "-w", str(trained["ws"].root), "--no-lexicon", "--lexicon", "x.tsv"]
    )
    assert r.exit_code == 2 and "exclude each other" in r.output
    r = CliRunner().invoke(cli, ["export", "-w", str(trained["ws"].root), "--label", "DRUG"])
    assert r.exit_code == 2 and "--label types --lexicon files" in r.output


# ---------------------------------------------------------------------------
# Inference and evaluation


def _entities(path: Path) -> list[list[dict]]:
    return [json.loads(line)["entities"] for line in path.read_text().splitlines()]


def test_infer_union_adds_what_the_model_missed_and_model_mode_is_unchanged(trained, tmp_path):
    ws, pkg, export = trained["ws"], trained["package"], trained["export"]
    outs = {}
    for fmt in ("jsonl", "csv"):
        for mode in ("model", "union", "old"):
            out = tmp_path / f"{mode}.{fmt}"
            args = ["infer", export, "-w", ws.root, "--out", out, "--format", fmt]
            if mode == "old":
                args += ["--model", trained["plain"]]  # a package without a lexicon
            else:
                args += ["--combine", mode] if mode == "model" else []
            printed = _invoke(*args)
            outs[(mode, fmt)] = out.read_bytes()
            if mode == "union":
                assert (
                    "combined with the package's lexicon by union (min confidence 0.9)" in printed
                )
    # --combine model writes exactly what a package without a lexicon writes.
    for fmt in ("jsonl", "csv"):
        assert outs[("model", fmt)] == outs[("old", fmt)]
    assert outs[("model", "csv")].startswith(b"note_id,start,end,label,text,confidence\n")
    assert outs[("union", "csv")].startswith(b"note_id,start,end,label,text,confidence,source\n")
    # Union is the rule applied to the model's entities and the lexicon's matches.
    texts = [json.loads(line)["text"] for line in export.read_text().splitlines()]
    tagger = onnx_tagger(pkg, device="cpu")
    lexicon = lx.load_package_lexicon(pkg)
    assert lexicon is not None
    expected = lx.predict(tagger, lexicon, texts, "union", 0.9)
    union = _entities(tmp_path / "union.jsonl")
    assert union == [[e.as_dict() for e in note] for note in expected]
    sources = [e["source"] for note in union for e in note]
    assert {"lexicon"} <= set(sources) and set(sources) <= {"model", "lexicon", "both"}
    assert "both" in sources or "model" in sources
    # Every lexicon-sourced entity is a lexicon match the model did not find as such.
    model = _entities(tmp_path / "model.jsonl")
    added = 0
    for m, u, text in zip(model, union, texts, strict=True):
        spans = {(m_["start"], m_["end"], m_["label"]) for m_ in m}
        for e in u:
            if e["source"] == "lexicon":
                assert (e["start"], e["end"], e["label"]) not in spans
                assert e["text"] == text[e["start"] : e["end"]] and 0 < e["confidence"] <= 1.0
                added += 1
            elif e["source"] == "model":
                assert (e["start"], e["end"], e["label"]) in spans and e["confidence"] >= 0.9
            else:
                assert (e["start"], e["end"], e["label"]) in spans
    assert added > 0
    # Lexicon alone is the annotator's output.
    out = tmp_path / "lex.jsonl"
    _invoke("infer", export, "-w", ws.root, "--out", out, "--combine", "lexicon")
    annotator = LexiconAnnotator(demo_lexicon())
    assert [[(e["start"], e["end"], e["label"]) for e in n] for n in _entities(out)] == [
        [(s.start, s.end, s.label) for s in annotator.annotate_text(t)] for t in texts
    ]
    r = CliRunner().invoke(
        cli,
        ["infer", str(export), "-w", str(ws.root), "--out", str(tmp_path / "b.jsonl"),
         "--min-confidence", "1.5"],
    )  # fmt: skip
    assert r.exit_code == 2 and "between 0 and 1" in r.output


def test_evaluate_reports_model_lexicon_and_union(trained):
    ws, gold = trained["ws"], trained["gold"]
    out = _invoke("ner", "evaluate", "-w", ws.root, "--gold", gold)
    lines = out.splitlines()
    assert any(line.startswith("model alone ") for line in lines)
    assert any(line.startswith("lexicon alone ") for line in lines)
    assert any(line.startswith("union (min conf 0.9)") and line.endswith(" *") for line in lines)
    assert "+ lexicon (union)" in lines[-1]
    report = json.loads(_invoke("ner", "evaluate", "-w", ws.root, "--gold", gold, "--json"))
    assert report["combine"] == "union" and set(report["comparison"]) == {
        "model",
        "lexicon",
        "union",
    }
    assert report["seqeval"] == report["comparison"]["union"]["seqeval"]
    # The lexicon row is the annotator scored on the same gold.
    from appliance.metrics import seqeval_report

    docs = read_gold(gold)
    annotator = LexiconAnnotator(demo_lexicon())
    lex_docs = [type(d)(d.id, d.text, annotator.annotate_text(d.text)) for d in docs]
    assert report["comparison"]["lexicon"]["seqeval"] == json.loads(
        json.dumps(seqeval_report(docs, lex_docs))
    )
    model_only = json.loads(
        _invoke("ner", "evaluate", "-w", ws.root, "--gold", gold, "--json", "--combine", "model")
    )
    assert model_only["seqeval"] == report["comparison"]["model"]["seqeval"]
    # A package without a lexicon: one model, no comparison.
    plain = json.loads(
        _invoke(
            "ner", "evaluate", "-w", ws.root, "--gold", gold, "--model", trained["plain"], "--json"
        )
    )
    assert "comparison" not in plain and plain["combine"] == "model"
    assert plain["seqeval"] == model_only["seqeval"]
    text = _invoke("ner", "evaluate", "-w", ws.root, "--gold", gold, "--model", trained["plain"])
    assert "lexicon alone" not in text and "+ lexicon" not in text
    # A trained model folder (PyTorch) carries no lexicon.
    folder = ["ner", "evaluate", "-w", str(ws.root), "--gold", str(gold), "--model"]
    folder.append(str(trained["root"] / "model"))
    assert "comparison" not in json.loads(_invoke(*folder, "--json"))
    r = CliRunner().invoke(cli, [*folder, "--combine", "union"])
    assert r.exit_code == 2 and "carries no lexicon" in r.output and "Traceback" not in r.output


def test_lexicon_files_given_at_export(trained, tmp_path):
    ws = trained["ws"]
    terms = tmp_path / "hospital-terms.tsv"
    terms.write_text("term\tcode\nquorvatinib\tH1\n")
    out = tmp_path / "given"
    printed = _invoke("export", "-w", ws.root, "--out", out, "--lexicon", f"DRUG={terms}")
    assert "--lexicon hospital-terms.tsv" in printed
    info = json.loads((out / "ner.json").read_text())["lexicon"]
    assert info["origin"]["kind"] == "files" and info["labels"] == ["DRUG"]
    assert info["origin"]["sources"][0]["name"] == "hospital-terms.tsv"
    export = tmp_path / "notes.jsonl"
    export.write_text(json.dumps({"id": "n1", "text": "Started quorvatinib today."}) + "\n")
    res = tmp_path / "o.jsonl"
    _invoke("infer", export, "-w", ws.root, "--model", out, "--out", res)
    [ents] = _entities(res)
    assert {(e["text"], e["label"], e["source"]) for e in ents} >= {
        ("quorvatinib", "DRUG", "lexicon")
    } or any(e["text"] == "quorvatinib" and e["source"] == "both" for e in ents)


def test_export_chooses_the_union_threshold_on_development_gold_notes(trained, tmp_path):
    from appliance.ner.lexicon import CALIBRATION_GRID, calibrate, combine

    ws, gold = trained["ws"], trained["gold"]
    out = tmp_path / "calibrated"
    printed = _invoke("export", "-w", ws.root, "--out", out, "--dev", gold)
    info = json.loads((out / "ner.json").read_text())["lexicon"]["combine"]
    cal = info["calibration"]
    assert info["chosen"] == "development gold notes" and cal["notes"] == 12
    assert set(cal["exact_f1"]) == {f"{t:g}" for t in CALIBRATION_GRID} | {"lexicon", "model"}
    best = max(v for k, v in cal["exact_f1"].items() if k not in ("lexicon", "model"))
    assert cal["exact_f1"][f"{info['min_confidence']:g}"] == best
    assert "chosen on 12 development gold notes" in printed
    # The signed manifest carries the same choice; evaluate's union uses it by default.
    signed = verify_package(out, load_public_key(trained["pub"]))
    assert signed["lexicon"]["combine"] == info
    # Fixed by hand: no calibration.
    fixed = tmp_path / "fixed"
    _invoke("export", "-w", ws.root, "--out", fixed, "--dev", gold, "--min-confidence", "0.7")
    given = json.loads((fixed / "ner.json").read_text())["lexicon"]["combine"]
    assert given == {"default": "union", "min_confidence": 0.7, "chosen": "given"}
    # Gold labels the package does not know (NCBI's "Disease" against DIAGNOSIS): no choice made.
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(
        gold.read_text()
        .replace('"DIAGNOSIS"', '"Disease"')
        .replace('"DRUG"', '"Chemical"')
        .replace('"PROCEDURE"', '"Method"')
    )
    other = tmp_path / "other"
    _invoke("export", "-w", ws.root, "--out", other, "--dev", foreign)
    skipped = json.loads((other / "ner.json").read_text())["lexicon"]["combine"]
    assert (skipped["chosen"], skipped["min_confidence"]) == ("default", 0.9)
    assert "share no type with the package" in skipped["calibration_skipped"]
    bad = CliRunner().invoke(cli, ["export", "-w", str(ws.root), "--min-confidence", "2"])
    assert bad.exit_code != 0 and "--min-confidence 2" in bad.output

    # The choice itself: ties go to the higher threshold; the table has both baselines.
    from appliance.documents import Document, Span
    from appliance.ner.encoding import Entity

    text = "gout and asthma"
    gold_docs = [Document("a", text, [Span(0, 4, "D", "gout")])]
    model = [[Entity(0, 4, "D", "gout", 0.95), Entity(9, 15, "D", "asthma", 0.75)]]
    t, table = calibrate(model, [[]], gold_docs, grid=(0.5, 0.7, 0.8, 0.9))
    assert (t, table["0.5"], table["0.8"], table["lexicon"]) == (0.9, 0.6667, 1.0, 0.0)
    assert [(e.start, e.end) for e in combine(model[0], [], "union", t)] == [(0, 4)]


def test_export_chooses_the_default_on_held_out_terms_without_gold(trained, tmp_path, monkeypatch):
    from appliance.ner import holdout

    ws = trained["ws"]
    train_mod.run(ws, name="held", settings=tiny_settings(term_holdout=0.5))
    root = ws.models_dir / "ner" / "held"
    held = json.loads((root / "manifest.json").read_text())["data"]["source"]["term_holdout"]
    assert (held["share"], held["seed"]) == (0.5, 0) and held["mentions"] > 0
    # The tiny split holds a few held-out mentions; let them decide here.
    monkeypatch.setattr(holdout, "MIN_HELD_OUT_MENTIONS", 1)
    printed = _invoke("export", "-w", ws.root, "--name", "held")
    out = root / "package"
    info = json.loads((out / "ner.json").read_text())["lexicon"]["combine"]
    found = info["held_out_terms"]
    assert info["chosen"] == "held-out terms" and found["notes"] == 6
    assert found["held_out_mentions"] > 0
    assert set(found["exact_f1"]) == {f"{t:g}" for t in lx.CALIBRATION_GRID} | {"lexicon", "model"}
    # A bootstrap share for each threshold that scored above the lexicon, and only for those.
    above = {k for k, v in found["exact_f1"].items() if k not in ("lexicon", "model")
             and v > found["exact_f1"]["lexicon"]}  # fmt: skip
    assert set(found["win_share"]) == above
    passing = {k: found["exact_f1"][k] for k, w in found["win_share"].items()
               if w >= holdout.MIN_WIN_SHARE}  # fmt: skip
    if passing:  # the best threshold among those that won beyond chance
        assert info["default"] == "union"
        assert found["exact_f1"][f"{info['min_confidence']:g}"] == max(passing.values())
        assert "of bootstrap resamples" in printed
    else:  # no threshold beats the lexicon beyond chance: the lexicon answers
        assert info["default"] == "lexicon"
        assert "the model adds nothing by default" in printed and "--combine union adds" in printed
    assert f"chosen on {found['held_out_mentions']} mentions of terms held out" in printed
    card = (out / "MODEL_CARD.md").read_text()
    assert "chosen without a human label" in card
    assert "counted as an error" in card
    assert ("In a paired bootstrap" in card) == bool(found["win_share"])
    signed = verify_package(out, load_public_key(trained["pub"]))
    assert signed["lexicon"]["combine"] == info
    # Evaluation follows the package's default.
    report = json.loads(_invoke("ner", "evaluate", "-w", ws.root, "--gold", trained["gold"],
                                "--model", out, "--json"))  # fmt: skip
    assert report["combine"] == info["default"]
    # A development gold file still decides instead.
    gold_out = tmp_path / "gold-chosen"
    _invoke("export", "-w", ws.root, "--name", "held", "--out", gold_out, "--dev", trained["gold"])
    chosen = json.loads((gold_out / "ner.json").read_text())["lexicon"]["combine"]["chosen"]
    assert chosen == "development gold notes"


def test_real_zone_package_encrypts_its_lexicon(tmp_path):
    from appliance.workspace import init

    ws = init(tmp_path / "ws")
    gold = demo_export(tmp_path / "demo", "jsonl", notes=12).parent / "gold.jsonl"
    train_mod.run(ws, train_gold=gold, name="real", settings=tiny_settings(max_steps=3))
    secret = "Quistbergh syndrome"
    terms = tmp_path / "ward-terms.tsv"
    terms.write_text(f"term\tlabel\n{secret}\tDIAGNOSIS\n")
    _invoke("export", "-w", ws.root, "--name", "real", "--lexicon", terms)
    pkg = ws.models_dir / "ner" / "real" / "package"
    signed = verify_package(pkg, load_public_key(ws.signing_key_path.with_suffix(".pub")))
    assert {"lexicon.tsv.enc", "lexicon.json.enc"} <= set(signed["files"])
    assert not (pkg / "lexicon.tsv").exists() and not (pkg / "lexicon.json").exists()
    runtime = json.loads((pkg / "ner.json").read_text())
    assert {"lexicon.tsv.enc", "lexicon.json.enc"} <= set(runtime["encrypted"]["files"])
    for p in pkg.iterdir():
        data = p.read_bytes()
        assert secret.encode() not in data and b"Quistbergh" not in data, p
        if p.name.startswith("lexicon"):
            assert data.startswith(FILE_MAGIC)
    assert "(both encrypted under workspace key" in (pkg / "MODEL_CARD.md").read_text()
    # With the key, the lexicon matches; without it, one line.
    export = tmp_path / "notes.jsonl"
    export.write_text(json.dumps({"id": "n1", "text": f"History of {secret}."}) + "\n")
    out = tmp_path / "o.jsonl"
    _invoke("infer", export, "-w", ws.root, "--name", "real", "--out", out)
    [ents] = _entities(out)
    assert any(e["text"] == secret and e["source"] in ("lexicon", "both") for e in ents)
    r = CliRunner().invoke(
        cli,
        ["infer", str(export), "--model", str(pkg), "--public-key",
         str(ws.signing_key_path.with_suffix(".pub")), "--out", str(tmp_path / "k.jsonl")],
    )  # fmt: skip
    assert r.exit_code == 6 and "real-zone" in r.output and "Traceback" not in r.output


def test_output_formats_carry_the_source_only_when_combined():
    from appliance.documents import Record
    from appliance.ner.infer import csv_rows, fhir_bundle, jsonl_line

    record = Record("n1", "Metformin daily.")
    plain = [Entity(0, 9, "DRUG", "Metformin", 0.91234)]
    combined = [Entity(0, 9, "DRUG", "Metformin", 1.0, source="lexicon")]
    assert "source" not in jsonl_line(record, plain)
    assert json.loads(jsonl_line(record, combined))["entities"][0]["source"] == "lexicon"
    assert csv_rows(record, plain) == "n1,0,9,DRUG,Metformin,0.9123\n"
    assert csv_rows(record, combined, with_source=True) == "n1,0,9,DRUG,Metformin,1.0000,lexicon\n"
    mention = fhir_bundle(record, combined)["entry"][0]["resource"]["extension"][0]["extension"]
    assert {"url": "source", "valueCode": "lexicon"} in mention
    mention = fhir_bundle(record, plain)["entry"][0]["resource"]["extension"][0]["extension"]
    assert all(x["url"] != "source" for x in mention)
