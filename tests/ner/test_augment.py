"""Mention replacement keeps every label on the right characters."""

from __future__ import annotations

from appliance.documents import Document, Span, Uncertain
from appliance.ner.augment import replace_mentions

TERMS = {"DRUG": ["metformin", "warfarin", "insulin glargine"], "DIAGNOSIS": ["gout", "asthma"]}


def _doc() -> Document:
    text = "Metformin for gout; odd rash near the knee; aspirin given."
    spans = [
        Span(0, 9, "DRUG", "Metformin"),
        Span(14, 18, "DIAGNOSIS", "gout"),
        Span(44, 51, "DRUG", "aspirin", 0.6),  # doubtful: never replaced
    ]
    return Document("n1", text, spans, {"k": 1}, [Uncertain(20, 29, "head_noun")])


def test_copies_move_labels_and_uncertain_ranges_with_the_text():
    copies, stats = replace_mentions([_doc()], TERMS, share=1.0, copies=3, seed=4)
    assert len(copies) == 3 and stats.copies == 3
    assert [c.id for c in copies] == ["n1~mr1", "n1~mr2", "n1~mr3"]
    for c in copies:
        for s in c.spans:
            assert c.text[s.start : s.end] == s.text
        first, second, doubtful = c.spans
        assert first.text in ("Warfarin", "Insulin glargine")  # capitalized like the mention
        assert second.text == "asthma"
        assert doubtful.text == "aspirin" and doubtful.confidence == 0.6
        (u,) = c.uncertain
        assert c.text[u.start : u.end] == "odd rash " and c.meta == {"k": 1}
    assert stats.replaced == 6 and stats.kept == 3


def test_seeded_share_and_nothing_to_replace():
    a, _ = replace_mentions([_doc()], TERMS, share=0.5, copies=4, seed=1)
    b, _ = replace_mentions([_doc()], TERMS, share=0.5, copies=4, seed=1)
    assert [(d.id, d.text) for d in a] == [(d.id, d.text) for d in b]
    none, stats = replace_mentions([_doc()], {"PROCEDURE": ["ECG"]}, share=1.0)
    assert none == [] and stats.copies == 0
    unchanged, _ = replace_mentions([_doc()], TERMS, share=0.0)
    assert unchanged == []
