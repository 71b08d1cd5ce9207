"""Span alignment of LLM mentions, and the lexicon annotator."""

from __future__ import annotations

import pytest

from appliance.annotate.align import Mention, align
from appliance.annotate.annotators import combine
from appliance.annotate.lexicon import LexiconAnnotator, demo_lexicon, load_lexicon
from appliance.documents import Document, Span, read_gold
from appliance.errors import InputError, UsageError
from appliance.metrics import score


def _placed(text, mentions):
    result = align(text, [Mention(*m) for m in mentions])
    return [(text[s.start : s.end], s.label) for s in result.spans], result


@pytest.mark.parametrize(
    ("text", "mentions", "expected"),
    [
        # every occurrence, case-insensitive
        (
            "Metformin stopped. Restart metformin later.",
            [("metformin", "DRUG")],
            [("Metformin", "DRUG"), ("metformin", "DRUG")],
        ),
        # whitespace tolerant: a line break and double spaces inside the note
        (
            "Known atrial\nfibrillation  since 2019.",
            [("Atrial  Fibrillation", "DIAGNOSIS")],
            [("atrial\nfibrillation", "DIAGNOSIS")],
        ),
        # punctuation spacing: "CT-guided" finds "CT - guided"
        (
            "A CT - guided biopsy.",
            [("CT-guided biopsy", "PROCEDURE")],
            [("CT - guided biopsy", "PROCEDURE")],
        ),
        # word boundaries: ACE is not inside ACEI
        ("ACEI given; ACE level normal.", [("ACE", "DRUG")], [("ACE", "DRUG")]),
        # longest wins on overlap
        (
            "type 2 diabetes and diabetes insipidus",
            [("diabetes", "DIAGNOSIS"), ("type 2 diabetes", "DIAGNOSIS")],
            [("type 2 diabetes", "DIAGNOSIS"), ("diabetes", "DIAGNOSIS")],
        ),
        # same characters, two types: the first named wins
        ("Insulin pump.", [("Insulin", "DRUG"), ("insulin", "PROCEDURE")], [("Insulin", "DRUG")]),
        # trailing punctuation and quotes are tried off
        ('Started "apixaban".', [('"apixaban."', "DRUG")], [("apixaban", "DRUG")]),
    ],
)
def test_alignment_rules(text, mentions, expected):
    placed, _ = _placed(text, mentions)
    assert placed == expected


def test_invented_are_counted_and_dropped():
    placed, result = _placed(
        "Aspirin daily.", [("aspirin", "DRUG"), ("warfarin", "DRUG"), ("", "DRUG")]
    )
    assert placed == [("Aspirin", "DRUG")]
    assert [m.text for m in result.invented] == ["warfarin", ""]


def test_context_pins_one_occurrence():
    text = "Cold (common cold) noted. Hands cold to touch."
    result = align(text, [Mention("cold", "DIAGNOSIS", context="Cold (common cold")])
    assert [(s.start, s.end) for s in result.spans] == [(0, 4), (13, 17)]
    assert result.pinned == 1
    # A context that is not in the note falls back to every occurrence.
    result = align(text, [Mention("cold", "DIAGNOSIS", context="not in the note")])
    assert len(result.spans) == 3 and result.pinned == 0


def test_combine_modes():
    a, b, c = Span(0, 3, "X", "abc"), Span(4, 7, "X", "def"), Span(0, 7, "Y", "abc def")
    members = [[a, b], [a], [a, c]]
    assert combine(members, "intersection") == [a]
    assert combine(members, "majority") == [a]
    # union keeps the longest of overlapping spans
    assert combine(members, "union") == [c]


# ---------------------------------------------------------------------------
# Lexicon


def test_lexicon_matching_rules(tmp_path):
    path = tmp_path / "lex.tsv"
    path.write_text(
        "term\tlabel\tcode\tsynonyms\n"
        "gastric ulcer\tDIAGNOSIS\tK25\tstomach ulcer\n"
        "ulcer\tDIAGNOSIS\tL98\t\n"
        "coronary angiography\tPROCEDURE\tPX1\tCAG\n"
        "antibody therapy\tDRUG\t\t\n",
        encoding="utf-8",
    )
    ann = LexiconAnnotator(load_lexicon(path), rules=[("DRUG", r"\b[a-z]+mab\b")])
    text = (
        "Two Gastric  Ulcers seen; stomach\nulcer healed. CAG done, cag is a typo. "
        "Antibody therapies with rituximab."
    )
    found = [(text[s.start : s.end], s.label) for s in ann.annotate_text(text)]
    assert found == [
        ("Gastric  Ulcers", "DIAGNOSIS"),  # case, plural, double space
        ("stomach\nulcer", "DIAGNOSIS"),  # synonym across a line break
        ("CAG", "PROCEDURE"),  # abbreviation: exact case only
        ("Antibody therapies", "DRUG"),  # -ies plural
        ("rituximab", "DRUG"),  # regex rule
    ]
    exact = LexiconAnnotator(load_lexicon(path), case_insensitive=False, inflection=False)
    assert [s.text for s in exact.annotate_text(text)] == ["stomach\nulcer", "CAG"]


def test_lexicon_formats(tmp_path):
    obo = tmp_path / "mini.obo"
    obo.write_text(
        "format-version: 1.2\n\n[Term]\nid: DOID:1\nname: heart failure\n"
        'synonym: "cardiac failure" EXACT []\nsynonym: "heart attack" NARROW []\n'
        'synonym: "weak heart" RELATED []\n\n'
        "[Term]\nid: DOID:2\nname: old thing\nis_obsolete: true\n\n[Typedef]\nid: part_of\nname: part of\n",
        encoding="utf-8",
    )
    lex = load_lexicon(obo, "DIAGNOSIS")
    assert sorted(e.surface for e in lex.entries) == [
        "cardiac failure",
        "heart failure",
        "weak heart",
    ]
    assert {e.code for e in lex.entries} == {"DOID:1"}
    with pytest.raises(UsageError, match="--label"):
        load_lexicon(obo)

    csv = tmp_path / "drugs.csv"
    csv.write_text(
        'DrugBank ID,Common name,Synonyms\nDB1,Lepirudin,"Hirudin variant-1 | R-hirudin"\n',
        encoding="utf-8",
    )
    lex = load_lexicon(csv, "DRUG")
    assert [e.surface for e in lex.entries] == ["Lepirudin", "Hirudin variant-1", "R-hirudin"]
    assert lex.entries[0].code == "DB1"

    plain = tmp_path / "terms.txt"
    plain.write_text("aspirin\nibuprofen\n", encoding="utf-8")
    with pytest.raises(UsageError, match="line 1"):
        load_lexicon(plain)
    assert len(load_lexicon(plain, "DRUG").entries) == 2
    with pytest.raises(InputError, match="not found"):
        load_lexicon(tmp_path / "missing.tsv", "DRUG")


def test_demo_vocabulary_annotates_demo_notes_well(tmp_path):
    from appliance import demo

    result = demo.run(tmp_path / "export", notes=60, fmt="jsonl", seed=11)
    gold = read_gold(result.gold_path)
    ann = LexiconAnnotator(demo_lexicon())
    pred = [Document(d.id, d.text, ann.annotate_text(d.text)) for d in gold]
    s = score(gold, pred)
    assert s["exact"]["micro"]["f1"] >= 0.95, s["exact"]["micro"]
    assert set(s["exact"]["per_type"]) == {"DRUG", "PROCEDURE", "DIAGNOSIS"}


def test_ncbi_devel_with_doid_beats_exact_match(shared_corpora):
    gold = read_gold(shared_corpora / "ncbi-disease" / "conll" / "devel.tsv")
    lex = load_lexicon(shared_corpora / "doid" / "doid.obo", "Disease")
    assert len(lex.entries) > 15_000
    off = {"abbreviations": False, "variants": False, "head_nouns": False}

    def f1(ann):
        pred = [
            Document(d.id, d.text, [s for s in ann.annotate_text(d.text) if s.label == "Disease"])
            for d in gold
        ]
        return score(gold, pred)["exact"]["micro"]

    ours = f1(LexiconAnnotator(lex, **off))
    baseline = f1(
        LexiconAnnotator(lex, case_insensitive=False, inflection=False, skip_generic=False, **off)
    )
    assert ours["f1"] > baseline["f1"] + 0.03 and ours["recall"] > baseline["recall"]
    assert ours["f1"] > 0.4


def test_ncbi_devel_abstracts_gain_from_the_lexicon_rules(shared_corpora):
    """Whole abstracts (PubTator), so an abbreviation is defined once and used throughout."""
    gold = read_gold(
        shared_corpora / "ncbi-disease" / "pubtator" / "NCBIdevelopset_corpus.txt", "pubtator"
    )
    assert len(gold) == 100 and sum(len(d.spans) for d in gold) == 787
    for d in gold:
        d.spans = [Span(s.start, s.end, "DIAGNOSIS", s.text) for s in d.spans]
    lex = load_lexicon(shared_corpora / "doid" / "doid.obo", "DIAGNOSIS")

    def f1(**switches):
        ann = LexiconAnnotator(lex, **switches)
        pred = [
            Document(d.id, d.text, [s for s in ann.annotate_text(d.text) if s.label == "DIAGNOSIS"])
            for d in gold
        ]
        return score(gold, pred)["exact"]["micro"]["f1"]

    plain = f1(abbreviations=False, variants=False, head_nouns=False)
    assert f1(abbreviations=True, variants=False, head_nouns=False) > plain + 0.05
    assert f1(abbreviations=False, variants=False, head_nouns=True) > plain + 0.03
    assert f1(abbreviations=False, variants=True, head_nouns=False) >= plain
    assert f1() > plain + 0.12
