"""Gold readers and writers, word tokens and BIO tags, and the span scorer."""

from __future__ import annotations

import json

import pytest

from appliance.documents import (
    Document,
    Span,
    bio_tags,
    read_gold,
    spans_from_bio,
    word_tokens,
    write_brat,
    write_jsonl,
)
from appliance.errors import InputError
from appliance.metrics import score, seqeval_report


def _doc(doc_id, text, *ents):
    spans = []
    for surface, label in ents:
        start = text.index(surface)
        spans.append(Span(start, start + len(surface), label, surface))
    return Document(doc_id, text, spans)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("metformin 500 mg", ["metformin", "500", "mg"]),
        ("CT-angiography, 2x/day.", ["CT", "-", "angiography", ",", "2x", "/", "day", "."]),
        ("Kõhuvalu ja ägeda", ["Kõhuvalu", "ja", "ägeda"]),
        ("snake_case", ["snake", "_", "case"]),
        ("  ", []),
    ],
)
def test_word_tokens(text, words):
    assert [text[a:b] for a, b in word_tokens(text)] == words


def test_bio_roundtrip_and_overlap_rule():
    doc = _doc(
        "a",
        "Started low-dose aspirin for chest pain.",
        ("aspirin", "DRUG"),
        ("chest pain", "DIAGNOSIS"),
    )
    tags = bio_tags(doc)
    words = [doc.text[a:b] for a, b in word_tokens(doc.text)]
    assert list(zip(words, tags, strict=True))[4:8] == [
        ("aspirin", "B-DRUG"),
        ("for", "O"),
        ("chest", "B-DIAGNOSIS"),
        ("pain", "I-DIAGNOSIS"),
    ]
    assert spans_from_bio(doc.text, word_tokens(doc.text), tags) == doc.spans
    # Overlapping spans: the earlier (then longer) one keeps the words.
    nested = Document(
        "b",
        "type 2 diabetes",
        [Span(0, 15, "DIAGNOSIS", "type 2 diabetes"), Span(7, 15, "X", "diabetes")],
    )
    assert bio_tags(nested) == ["B-DIAGNOSIS", "I-DIAGNOSIS", "I-DIAGNOSIS"]


def test_spans_from_bio_iob1_and_type_change():
    text = "a b c d"
    toks = word_tokens(text)
    spans = spans_from_bio(text, toks, ["I-X", "I-X", "I-Y", "O"])
    assert [(s.text, s.label) for s in spans] == [("a b", "X"), ("c", "Y")]


def test_read_conll_sentences_and_docstart(tmp_path):
    plain = tmp_path / "g.tsv"
    plain.write_text(
        "Germline\tO\ninherited\tB-Disease\ncancer\tI-Disease\n.\tO\n\nNo\tO\nDM\tB-Disease\n",
        encoding="utf-8",
    )
    docs = read_gold(plain)
    assert [d.text for d in docs] == ["Germline inherited cancer .", "No DM"]
    assert docs[0].spans == [Span(9, 25, "Disease", "inherited cancer")]
    assert [d.id for d in docs] == ["g-1", "g-2"]

    withdoc = tmp_path / "d.conll"
    withdoc.write_text(
        "-DOCSTART- O\n\nA NN B-X\nb NN O\n\nc NN B-X\n-DOCSTART- O\nd NN O\n", encoding="utf-8"
    )
    docs = read_gold(withdoc)
    assert [d.text for d in docs] == ["A b\nc", "d"]
    assert [s.text for s in docs[0].spans] == ["A", "c"]


def test_label_mapping_renames_and_filters(tmp_path):
    path = tmp_path / "g.tsv"
    path.write_text("x\tB-Disease\ny\tB-Gene\n", encoding="utf-8")
    docs = read_gold(path, labels={"Disease": "DIAGNOSIS"})
    assert [(s.text, s.label) for s in docs[0].spans] == [("x", "DIAGNOSIS")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.tsv", "ok\tO\nlonely\n", "line 2"),
        ("bad.tsv", "ok\tO\nx\tQ-Disease\n", "line 2"),
        ("bad.jsonl", '{"id": "a", "text": "abc", "entities": []}\n{oops\n', "line 2"),
        (
            "bad.jsonl",
            '{"id": "a", "text": "abc", "entities": [{"start": 1, "end": 9, "label": "X"}]}\n',
            "line 1",
        ),
        (
            "bad.jsonl",
            '{"id": "a", "text": "abc", "entities": [{"start": 0, "end": 1, "label": "X", "text": "b"}]}\n',
            "does not match",
        ),
        ("dup.jsonl", '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "duplicate"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_gold(path)
    assert str(path) in err.value.message and message in err.value.message


def test_jsonl_and_brat_roundtrip(tmp_path):
    docs = [
        _doc(
            "n1",
            "Metformin for type 2 diabetes.\nCT of the chest done.",
            ("Metformin", "DRUG"),
            ("type 2 diabetes", "DIAGNOSIS"),
            ("CT of the chest", "PROCEDURE"),
        ),
        _doc(
            "n/2",
            "Nothing here.",
        ),
    ]
    write_jsonl(docs, tmp_path / "out.jsonl")
    back = read_gold(tmp_path / "out.jsonl")
    assert [(d.id, d.text, d.spans) for d in back] == [(d.id, d.text, d.spans) for d in docs]

    write_brat(docs, tmp_path / "brat")
    assert sorted(p.name for p in (tmp_path / "brat").iterdir()) == [
        "n1.ann",
        "n1.txt",
        "n_2.ann",
        "n_2.txt",
    ]
    back = {d.id: d for d in read_gold(tmp_path / "brat")}
    assert back["n1"].spans == docs[0].spans and back["n1"].text == docs[0].text
    one = read_gold(tmp_path / "brat" / "n1.ann")
    assert one[0].spans == docs[0].spans


def test_brat_discontinuous_and_bad_offsets(tmp_path):
    (tmp_path / "a.txt").write_text("left and right lung", encoding="utf-8")
    (tmp_path / "a.ann").write_text(
        "T1\tSite 0 4;15 19\tleft lung\nR1\tRel Arg1:T1 Arg2:T1\n#1\tNote T1\tx\n", encoding="utf-8"
    )
    doc = read_gold(tmp_path / "a.ann")[0]
    assert doc.spans == [Span(0, 19, "Site", "left and right lung")]
    (tmp_path / "a.ann").write_text("T1\tSite 0 40\tleft\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 1: offsets"):
        read_gold(tmp_path / "a.ann")


def test_demo_gold_reads(tmp_path):
    from appliance import demo

    result = demo.run(tmp_path / "export", notes=20, fmt="jsonl", seed=3)
    docs = read_gold(result.gold_path)
    assert len(docs) == 20
    assert sum(len(d.spans) for d in docs) == result.entities
    assert {s.label for d in docs for s in d.spans} == {"DRUG", "PROCEDURE", "DIAGNOSIS"}
    assert all(d.text[s.start : s.end] == s.text for d in docs for s in d.spans)


def test_score_exact_and_partial():
    text = "Aspirin and metoprolol for atrial fibrillation and heart failure."
    gold = [
        _doc(
            "1",
            text,
            ("Aspirin", "DRUG"),
            ("metoprolol", "DRUG"),
            ("atrial fibrillation", "DIAGNOSIS"),
            ("heart failure", "DIAGNOSIS"),
        )
    ]
    fib = text.index("fibrillation")
    pred = [
        Document(
            "1",
            text,
            [
                Span(0, 7, "DRUG", "Aspirin"),  # exact
                Span(fib, fib + 12, "DIAGNOSIS", "fibrillation"),  # partial only
                Span(12, 22, "DIAGNOSIS", "metoprolol"),  # wrong type
            ],
        ),
        Document("other", "x", [Span(0, 1, "DRUG", "x")]),  # not in gold: ignored
    ]
    s = score(gold, pred)
    assert (
        s["exact"]["micro"]["tp"] == 1
        and s["exact"]["micro"]["fp"] == 2
        and s["exact"]["micro"]["fn"] == 3
    )
    assert s["exact"]["per_type"]["DRUG"] == pytest.approx(
        {
            "precision": 1.0,
            "recall": 0.5,
            "f1": 0.6667,
            "gold": 2,
            "pred": 1,
            "tp": 1,
            "fp": 0,
            "fn": 1,
        }
    )
    assert s["partial"]["per_type"]["DIAGNOSIS"]["precision"] == 0.5
    assert s["partial"]["per_type"]["DIAGNOSIS"]["recall"] == 0.5
    assert s["partial"]["micro"]["tp"] == 2
    assert s["counts"]["predicted_documents_not_in_gold"] == 1
    json.dumps(s)  # plain data


def test_score_missing_prediction_counts_as_nothing():
    gold = [_doc("1", "metformin", ("metformin", "DRUG"))]
    s = score(gold, [])
    assert s["exact"]["micro"]["recall"] == 0.0 and s["counts"]["documents_without_prediction"] == 1


def test_seqeval_report_matches_strict_spans():
    text = "Aspirin and metoprolol for atrial fibrillation ."
    gold = [
        _doc(
            "1",
            text,
            ("Aspirin", "DRUG"),
            ("metoprolol", "DRUG"),
            ("atrial fibrillation", "DIAGNOSIS"),
        )
    ]
    fib = text.index("fibrillation")
    pred = [
        Document(
            "1",
            text,
            [Span(0, 7, "DRUG", "Aspirin"), Span(fib, fib + 12, "DIAGNOSIS", "fibrillation")],
        )
    ]
    rep = seqeval_report(gold, pred)
    assert rep["per_type"]["DRUG"]["recall"] == 0.5 and rep["per_type"]["DRUG"]["precision"] == 1.0
    assert rep["per_type"]["DIAGNOSIS"]["f1"] == 0.0
    assert rep["micro"]["support"] == 3
    with pytest.raises(InputError, match="text differs"):
        seqeval_report(gold, [Document("1", "other", [])])


def test_ncbi_devel_reads(shared_corpora):
    docs = read_gold(shared_corpora / "ncbi-disease" / "conll" / "devel.tsv")
    assert len(docs) == 923
    assert sum(len(d.spans) for d in docs) == 787  # SOURCE.txt's count
    assert all([d.text[a:b] for a, b in word_tokens(d.text)] == d.text.split(" ") for d in docs)


def test_confidence_and_uncertain_ranges_round_trip_and_do_not_change_identity():
    from appliance.documents import Document, Span, Uncertain, document_from_json, document_to_json
    from appliance.errors import InputError

    text = "Seen for gout and a painful tophus."
    doc = Document(
        "n1",
        text,
        [Span(9, 13, "DIAGNOSIS", "gout", 0.8)],
        uncertain=[Uncertain(20, 34, "head_noun")],
    )
    obj = document_to_json(doc)
    assert obj["entities"][0]["confidence"] == 0.8
    assert obj["uncertain"] == [{"start": 20, "end": 34, "reason": "head_noun"}]
    back = document_from_json(obj, "x")
    assert back.spans[0].confidence == 0.8 and back.uncertain == doc.uncertain
    assert back.spans[0] == Span(9, 13, "DIAGNOSIS", "gout")  # confidence is not identity
    plain = document_to_json(Document("n2", text, [Span(9, 13, "DIAGNOSIS", "gout")]))
    assert "confidence" not in plain["entities"][0] and "uncertain" not in plain
    for bad in ({"confidence": 2}, {"confidence": "high"}):
        with pytest.raises(InputError, match="confidence"):
            document_from_json({**obj, "entities": [{**obj["entities"][0], **bad}]}, "x")
    with pytest.raises(InputError, match="outside the text"):
        document_from_json({**obj, "uncertain": [{"start": 30, "end": 99}]}, "x")
