"""Training on partial labels: undecided text out of the loss, O sampling, self-training rounds."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.documents import Document, Span, Uncertain
from appliance.errors import UsageError
from appliance.metrics import partial_view, score
from appliance.ner.encoding import IGNORE, align_partial
from appliance.ner.loop import sample_outside, windows
from appliance.ner.model import describe_special, load_model, train_wordpiece
from appliance.ner.runtime import torch_tagger
from appliance.ner.selftrain import UNSURE, relabel
from appliance.ner.settings import (
    AUTO_MENTION_COPIES,
    AUTO_O_KEEP,
    AUTO_SELF_TRAINING_ROUNDS,
    AUTO_TERM_HOLDOUT,
    NerSettings,
)
from appliance.ner.train import ROUNDS_DIR, train_model
from tests.ner_helpers import one_thread, tiny_settings

LABEL2ID = {"O": 0, "B-DIAGNOSIS": 1, "I-DIAGNOSIS": 2}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


# ---------------------------------------------------------------------------
# partial labels


def test_undecided_ranges_and_unsure_spans_are_left_out_of_the_loss():
    # "acute asthma and type 2 diabetes today", "asthma" in two sub-words
    offsets = [(0, 5), (6, 9), (9, 12), (13, 16), (17, 21), (22, 23), (24, 32), (33, 38)]
    spans = [Span(6, 12, "DIAGNOSIS", "asthma"), Span(24, 32, "DIAGNOSIS", "diabetes", 0.3)]
    undecided = [Uncertain(0, 5, "head_noun"), Uncertain(10, 23, "head_noun")]
    labels = align_partial(offsets, spans, undecided, LABEL2ID, 0.5)
    # "acute" undecided; asthma keeps B/I although a range overlaps it; "and type 2"
    # undecided; "diabetes" is below the confidence: out too; "today" is O.
    assert labels == [IGNORE, 1, 2, IGNORE, IGNORE, IGNORE, IGNORE, 0]
    # A confidence at the threshold is taught; no doubts at all: the plain labels.
    assert align_partial(offsets, spans, [], LABEL2ID, 0.3)[6] == 1
    assert align_partial(offsets, [spans[0]], [], LABEL2ID, 0.5) == [0, 1, 2, 0, 0, 0, 0, 0]


def test_windows_read_doubts_only_with_partial_labels():
    doc = Document(
        "n1",
        "Seen for asthma and gout today.",
        [Span(9, 15, "DIAGNOSIS", "asthma"), Span(20, 24, "DIAGNOSIS", "gout", 0.2)],
        uncertain=[Uncertain(25, 30, "unknown_word")],
    )
    tok = train_wordpiece([doc.text] * 3, 200)
    from transformers import BertConfig

    special = describe_special(tok, BertConfig(pad_token_id=0))
    body = 30
    ((_, plain),) = windows(tok, [doc], LABEL2ID, special, body, 4)
    ((_, partial),) = windows(tok, [doc], LABEL2ID, special, body, 4, min_confidence=0.5)
    assert IGNORE not in plain[1:-1] and plain.count(1) == 2  # asthma and gout both taught
    inner = partial[1:-1]
    offsets = tok.encode(doc.text, add_special_tokens=False).offsets
    ignored = "".join(
        doc.text[s:e] for (s, e), lab in zip(offsets, inner, strict=True) if lab == IGNORE
    )
    assert ignored == "gouttoday"  # the unsure span and the undecided range
    assert inner.count(1) == 1  # only asthma is an entity


def test_partial_view_counts_undecided_text_neither_way():
    gold = [
        Document(
            "d",
            "asthma and gout and FOO",
            [Span(0, 6, "X", "asthma"), Span(11, 15, "X", "gout", 0.2)],
            uncertain=[Uncertain(20, 23, "abbreviation")],
        )
    ]
    pred = [Document("d", gold[0].text, [Span(0, 6, "X", "a"), Span(20, 23, "X", "FOO")])]
    plain = score(gold, pred)["exact"]["micro"]
    view = score(*partial_view(gold, pred, 0.5))["exact"]["micro"]
    assert (plain["precision"], plain["recall"]) == (0.5, 0.5)
    assert (view["precision"], view["recall"]) == (1.0, 1.0)


# ---------------------------------------------------------------------------
# O sampling


def test_o_keep_keeps_the_expected_share_deterministically():
    labels = [0] * 20_000 + [1, 2, IGNORE] * 100
    kept = sample_outside(labels, 0.3, seed=7, epoch=2, row=11)
    share = sum(x == 0 for x in kept[:20_000]) / 20_000
    assert 0.28 < share < 0.32
    assert kept[20_000:] == labels[20_000:]  # entity tags and IGNORE untouched
    assert set(kept[:20_000]) == {0, IGNORE}
    assert sample_outside(labels, 0.3, seed=7, epoch=2, row=11) == kept  # same draw again
    assert sample_outside(labels, 0.3, seed=7, epoch=3, row=11) != kept  # a new epoch, new draw
    assert sample_outside(labels, 0.3, seed=7, epoch=2, row=12) != kept
    assert sample_outside(labels, 1.0, seed=7, epoch=2, row=11) is labels


# ---------------------------------------------------------------------------
# a toy corpus where the annotator misses a disease

NAMES = ["Mari", "Jaan", "Anna", "Peeter", "Liis", "Karl", "Eva", "Toomas", "Kati", "Mart"]
DISEASES = ["asthma", "gout", "anemia", "migraine", "psoriasis"]
TEMPLATES = [
    "{n} was seen today for {d} and went home.",
    "History of {d}; {n} takes no medicine.",
    "{n} reports that the {d} is better this week.",
    "Follow-up for {d} planned, says {n}.",
]


def toy_corpus(notes: int = 48) -> tuple[list[Document], list[int]]:
    """Notes naming one disease each; the annotator misses 'asthma' in a few (their indexes)."""
    rng = random.Random(3)
    docs, missed = [], []
    for i in range(notes):
        d = DISEASES[i % len(DISEASES)]
        text = rng.choice(TEMPLATES).format(n=rng.choice(NAMES), d=d)
        start = text.index(d)
        spans = [Span(start, start + len(d), "DIAGNOSIS", d)]
        if d == "asthma" and i % 3 == 0:
            spans, _ = [], missed.append(i)
        docs.append(Document(f"n{i:03d}", text, spans))
    return docs, missed


def toy_settings(**overrides):
    return tiny_settings(epochs=12, max_length=32, stride=4, vocab_size=300, **overrides)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    docs, missed = toy_corpus()
    out = tmp_path_factory.mktemp("teacher") / "model"
    train_model(docs, [], base=None, out_dir=out, settings=toy_settings(o_keep=0.3))
    return docs, missed, out


def test_a_teacher_adds_a_confident_span_the_annotator_missed(teacher):
    docs, missed, model = teacher
    tagger = torch_tagger(model, device="cpu")
    new = relabel(docs, tagger, threshold=0.6, min_confidence=0.5)
    by_id = {d.id: d for d in new.docs}
    found = [i for i in missed if any(s.text == "asthma" for s in by_id[docs[i].id].spans)]
    assert found, "the teacher added no missed 'asthma'"
    assert new.added_spans >= len(found)
    added = next(s for s in by_id[docs[found[0]].id].spans if s.text == "asthma")
    assert 0.6 <= added.confidence <= 1
    # The annotator's spans are all kept.
    for old in docs:
        assert set(old.spans) <= set(by_id[old.id].spans)
    # Undecided ranges the teacher adds carry its reason; none covers an annotator span.
    for d in new.docs:
        for u in d.uncertain:
            assert u.reason == UNSURE
            assert not any(u.start < s.end and s.start < u.end for s in docs[int(d.id[1:])].spans)


def test_self_training_round_trains_a_student_and_records_the_rounds(tmp_path):
    docs, missed = toy_corpus()
    settings = toy_settings(o_keep=0.3, self_training_rounds=1, self_training_threshold=0.6)
    result = train_model(docs, [], base=None, out_dir=tmp_path / "m", settings=settings)
    assert [r["round"] for r in result.rounds] == [0, 1]
    assert result.rounds[1]["added_spans"] > 0 and result.rounds[1]["kept"]
    assert not (tmp_path / "m" / ROUNDS_DIR).exists()
    meta = json.loads((tmp_path / "m" / "ner.json").read_text())
    assert meta["self_training"]["kept"] == 1
    assert meta["self_training"]["rounds"][1]["added_spans"] == result.rounds[1]["added_spans"]
    # Recorded as run: documents given directly get no mention-replaced copies, no term withheld.
    assert NerSettings.from_dict(meta["settings"]) == replace(
        settings, mention_copies=0, term_holdout=0.0
    )
    # The student finds the disease where the annotator had missed it.
    tagger = torch_tagger(tmp_path / "m", device="cpu")
    preds = tagger.predict([docs[i].text for i in missed])
    assert sum(any(e.text == "asthma" for e in p) for p in preds) >= len(missed) // 2


@pytest.mark.parametrize(
    ("signal", "scores", "kept", "ran"),
    [
        ("partial", [0.5, 0.4, 0.9], 0, 2),  # worse student: dropped, rounds stop
        ("partial", [0.5, 0.6, 0.6], 2, 3),  # level: that student kept, rounds stop
        ("partial", [0.5, 0.6, 0.5], 1, 3),
        ("plain", [0.5, 0.6, 0.7], 2, 3),
        ("none", [0.5, 0.1, 0.2], 2, 3),  # nothing watched: every round, the last kept
        ("split", [0.5, 0.4, 0.3], 2, 3),  # a split of the annotations cannot judge a student
    ],
)
def test_rounds_stop_when_the_dev_score_stops_improving(
    tmp_path, monkeypatch, signal, scores, kept, ran
):
    from appliance.ner import train as train_mod
    from appliance.ner.selftrain import Relabelled

    docs, _ = toy_corpus(10)
    calls: list[str] = []

    def fake_train(train_docs, dev_docs, out_dir, settings, job):
        k = len(calls)
        calls.append(out_dir.name)
        out_dir.mkdir(parents=True)
        assert settings.self_training_rounds == 0 and (k == 0 or settings.partial_labels)
        return train_mod.TrainResult(
            out_dir, 4, 4, 0, False, 4, scores[k], {}, len(train_docs), len(dev_docs),
            len(train_docs), 1, 1.0, 1.0,
        )  # fmt: skip

    saved: list[str] = []
    monkeypatch.setattr(train_mod, "_train_once", fake_train)
    monkeypatch.setattr(train_mod, "torch_tagger", lambda folder, **_: folder.name)
    monkeypatch.setattr(
        train_mod, "relabel", lambda d, teacher, **_: Relabelled(list(d), len(teacher), 0)
    )
    monkeypatch.setattr(train_mod, "_save_kept", lambda folder, *a: saved.append(folder.name))
    settings = NerSettings(
        self_training_rounds=2, dev_signal="partial" if signal == "split" else signal, device="cpu"
    )
    dev_kind = "split of the training notes" if signal == "split" else "gold file"
    result = train_model(
        docs,
        docs[:2],
        base=None,
        out_dir=tmp_path / "m",
        settings=settings,
        data_info={"dev": {"kind": dev_kind}},
    )
    assert calls == [f"round-{k}" for k in range(ran)]
    assert saved == [f"round-{kept}"] and result.dev_f1 == scores[kept]
    assert [r["kept"] for r in result.rounds] == [k == kept for k in range(ran)]
    # Each student's teacher is the round before it.
    assert [r.get("added_spans") for r in result.rounds[1:]] == [7] * (ran - 1)


# ---------------------------------------------------------------------------
# settings, options and the pipeline section


def test_settings_round_trip_and_are_checked():
    s = NerSettings(
        partial_labels=False,
        min_confidence=0.7,
        o_keep=0.25,
        self_training_rounds=2,
        self_training_threshold=0.95,
        dev_signal="none",
        mention_copies=2,
        mention_share=0.4,
        term_holdout=0.1,
    )
    assert NerSettings.from_dict(json.loads(json.dumps(s.as_dict()))) == s
    # Left open, O sampling and self-training follow the labels: on for an annotator's, off for gold.
    auto = NerSettings()
    assert (auto.o_keep, auto.self_training_rounds) == (None, None)
    annotated, gold = auto.resolved(gold=False), auto.resolved(gold=True)
    assert (annotated.o_keep, annotated.self_training_rounds) == (
        AUTO_O_KEEP,
        AUTO_SELF_TRAINING_ROUNDS,
    )
    assert (gold.o_keep, gold.self_training_rounds) == (1.0, 0)
    assert (annotated.mention_copies, gold.mention_copies) == (AUTO_MENTION_COPIES, 0)
    assert (annotated.term_holdout, gold.term_holdout) == (AUTO_TERM_HOLDOUT, 0.0)
    assert s.resolved(gold=True) == s  # what was asked stays
    for bad, message in [
        ({"o_keep": 0}, "--o-keep"),
        ({"o_keep": 1.5}, "--o-keep"),
        ({"min_confidence": 2}, "--min-confidence"),
        ({"self_training_rounds": -1}, "--self-training-rounds"),
        ({"self_training_threshold": 0.3}, "--self-training-threshold"),
        ({"min_confidence": 0.95}, "not be below --min-confidence"),
        ({"dev_signal": "gold"}, "--dev-signal"),
        ({"term_holdout": 0.6}, "--term-holdout"),
        ({"term_holdout": -0.1}, "--term-holdout"),
    ]:
        with pytest.raises(UsageError, match=message):
            NerSettings(**bad)


def test_ner_train_options_reach_the_manifest(tmp_path):
    docs, _ = toy_corpus(20)
    gold = tmp_path / "gold.jsonl"
    from appliance.documents import write_jsonl

    write_jsonl(docs, gold)
    runner = CliRunner()
    ws = tmp_path / "ws"
    assert runner.invoke(cli, ["init", str(ws)]).exit_code == 0
    args = ["ner", "train", "-w", str(ws), "--train", str(gold), "--max-steps", "2",
            "--no-partial-labels", "--min-confidence", "0.6", "--o-keep", "0.4",
            "--self-training-rounds", "1", "--self-training-threshold", "0.8",
            "--dev-signal", "plain", "--mention-copies", "2", "--mention-share", "1",
            "--term-holdout", "0.5", "--device", "cpu"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "self-training round" in result.output
    manifest = json.loads((ws / "models" / "ner" / "default" / "manifest.json").read_text())
    s = manifest["settings"]
    assert (s["partial_labels"], s["min_confidence"], s["o_keep"]) == (False, 0.6, 0.4)
    assert (s["self_training_rounds"], s["self_training_threshold"], s["dev_signal"]) == (
        1,
        0.8,
        "plain",
    )
    assert [r["round"] for r in manifest["training"]["self_training"]] == [0, 1]
    # Asked for with a gold file: the terms are the notes' own mentions, two copies of each note.
    replaced = manifest["data"]["source"]["mention_replacement"]
    assert replaced["terms"] == "the training notes' own confident mentions"
    assert (s["mention_copies"], s["mention_share"], s["term_holdout"]) == (2, 1.0, 0.5)
    held = manifest["data"]["source"]["term_holdout"]
    assert (held["share"], held["seed"]) == (0.5, 0) and held["mentions"] > 0
    originals = manifest["data"]["train_notes"] - replaced["copies"]
    assert replaced["copies"] % 2 == 0 and 0 < replaced["copies"] <= 2 * originals
    bad = runner.invoke(cli, [*args[:6], "--o-keep", "0"])
    assert bad.exit_code != 0 and "--o-keep must be above 0" in bad.output
    bad = runner.invoke(cli, [*args[:6], "--term-holdout", "0.9"])
    assert bad.exit_code != 0 and "--term-holdout must be from 0 to 0.5" in bad.output
    bad = runner.invoke(cli, [*args[:6], "--mention-copies", "11"])
    assert bad.exit_code != 0 and "--mention-copies must be from 0 to 10" in bad.output


def test_pipeline_ner_section_takes_the_switches(tmp_path):
    from appliance.errors import ConfigError
    from appliance.pipeline import load_config

    path = tmp_path / "p.toml"
    path.write_text(
        '[pipeline]\nexport = "x.csv"\n[ner]\npartial_labels = false\nmin_confidence = 0.6\n'
        "o_keep = 0.3\nself_training_rounds = 1\nself_training_threshold = 0.8\n"
        'dev_signal = "none"\nmention_copies = 3\nmention_share = 0.25\nterm_holdout = 0.1\n'
    )
    n = load_config(path).ner
    assert (n.partial_labels, n.min_confidence, n.o_keep) == (False, 0.6, 0.3)
    assert (n.self_training_rounds, n.self_training_threshold, n.dev_signal) == (1, 0.8, "none")
    assert (n.mention_copies, n.mention_share, n.term_holdout) == (3, 0.25, 0.1)
    for text, message in [
        ("o_keep = 0", "ner.o_keep must be"),
        ('dev_signal = "gold"', "ner.dev_signal must be"),
        ("self_training_rounds = -1", "ner.self_training_rounds must be"),
        ('partial_labels = "yes"', "ner.partial_labels must be"),
        ("mention_copies = 11", "ner.mention_copies must be"),
        ("term_holdout = 0.7", "ner.term_holdout must be"),
    ]:
        path.write_text(f'[pipeline]\nexport = "x.csv"\n[ner]\n{text}\n')
        with pytest.raises(ConfigError, match=message):
            load_config(path)


# ---------------------------------------------------------------------------
# resume


@pytest.mark.parametrize("stop_phase", ["ner", "ner (self-training 1/1)"])
def test_interrupted_run_with_the_switches_on_resumes_to_the_same_weights(tmp_path, stop_phase):
    import torch

    docs, _ = toy_corpus(24)
    docs[0] = Document(
        docs[0].id, docs[0].text, docs[0].spans, uncertain=[Uncertain(0, 4, "head_noun")]
    )
    dev = docs[-4:]
    settings = toy_settings(
        max_steps=8,
        checkpoint_every=3,
        eval_every=4,
        o_keep=0.5,
        self_training_rounds=1,
        self_training_threshold=0.6,
        dev_signal="none",
    )

    def stop(p):
        if p.phase == stop_phase and p.step == 5:
            raise KeyboardInterrupt

    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train_model(docs[:-4], dev, base=None, out_dir=a, settings=settings, progress=stop)
    rounds = a / ROUNDS_DIR
    assert any(rounds.glob("round-*/checkpoint.pt"))
    resumed = train_model(docs[:-4], dev, base=None, out_dir=a, settings=settings)
    straight = train_model(docs[:-4], dev, base=None, out_dir=b, settings=settings)
    assert resumed.rounds == straight.rounds and not rounds.exists()
    wa, wb = load_model(a).model.state_dict(), load_model(b).model.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
