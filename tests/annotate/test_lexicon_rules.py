"""The lexicon annotator's rules: abbreviations, variants, head nouns, unknown words, confidences.

Each test writes a tiny lexicon and, where the rules matter, a tiny entity
schema: the rules are the schema's data, so the tests say exactly which
words they rely on.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance.annotate.abbreviations import best_long_form, find_abbreviations, valid_short_form
from appliance.annotate.annotators import AnnotatorOptions, build_members, run_members
from appliance.annotate.annotators.ensemble import combine, combine_uncertain
from appliance.annotate.lexicon import (
    ABBREVIATION,
    EXACT,
    HEAD_NOUN,
    VARIANT,
    Lexicon,
    LexiconAnnotator,
    LexiconEntry,
    LexiconRules,
)
from appliance.cli import cli
from appliance.config import load_entity_schema, load_policy
from appliance.documents import Span, Uncertain
from appliance.errors import ConfigError

SCHEMA = """
[schema]
name = "tiny"

[[entity]]
label = "DIAGNOSIS"
definition = "A disease the patient has."

[entity.lexicon.en]
head_nouns = ["syndrome", "disease", "deficiency", "tumor"]
suffixes = ["oma", "itis"]
word_order = [["deficiency of {}", "{} deficiency"], ["cancer of the {}", "{} cancer"]]

[[entity]]
label = "DRUG"
definition = "A drug given to the patient."

[lexicon.en]
inflections = [{suffix = "s", replace = "", min_length = 4, unless = ["ss", "us", "is"]}]
variants = [["tumour", "tumor"], ["anaem", "anem"], ["ise$", "ize"], ["ised$", "ized"]]
optional_tokens = ["'s"]
generic_terms = ["disease", "syndrome"]
stop_words = ["the", "a", "of", "with", "and", "in", "is", "was", "had", "patients", "no"]
max_modifiers = 2
"""


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SCHEMA, encoding="utf-8")
    return LexiconRules.from_schema(load_entity_schema(path), "en")


def lexicon(*terms: str, label: str = "DIAGNOSIS") -> Lexicon:
    return Lexicon([LexiconEntry(t, label) for t in terms])


def found(result, text):
    return [(text[s.start : s.end], s.label, s.confidence) for s in result.spans]


def undecided(result, text):
    return [(text[u.start : u.end], u.reason) for u in result.uncertain]


# ---------------------------------------------------------------------------
# Schwartz-Hearst


def test_schwartz_hearst_both_patterns_and_the_shortest_long_form():
    text = (
        "Boys with Duchenne muscular dystrophy (DMD) were seen. "
        "We studied HNPCC (hereditary nonpolyposis colorectal cancer) here."
    )
    pairs = find_abbreviations(text)
    assert [(p.short, p.long) for p in pairs] == [
        ("DMD", "Duchenne muscular dystrophy"),  # "Boys with" is not part of it
        ("HNPCC", "hereditary nonpolyposis colorectal cancer"),
    ]
    for p in pairs:
        assert text[p.sf_start : p.sf_end] == p.short and text[p.lf_start : p.lf_end] == p.long
    # A long form ends at a comma or sentence end before it; a short form is cut at ", ".
    [p] = find_abbreviations("In cancer, adrenoleukodystrophy (ALD, OMIM 300100) is rare.")
    assert (p.short, p.long) == ("ALD", "adrenoleukodystrophy")
    [p] = find_abbreviations("In patients with ataxia-telangiectasia (A-T), cells die.")
    assert (p.short, p.long) == ("A-T", "ataxia-telangiectasia")


def test_schwartz_hearst_checks():
    # Short forms: a letter, a letter or digit first, 2 to 10 letters and digits, <= 2 words.
    assert valid_short_form("DMD") and valid_short_form("A-T") and valid_short_form("T2DM")
    assert not valid_short_form("12")  # no letter
    assert not valid_short_form("-AB")  # not a letter or digit first
    assert not valid_short_form("ABCDEFGHIJK")  # 11 letters
    assert not valid_short_form("n = 5")  # three words
    # Right to left: each character further left; the first one starts a word.
    assert best_long_form("DMD", "boys with Duchenne muscular dystrophy ") == 10
    assert best_long_form("DM", "myotonic dystrophy") is None  # D would have to precede M
    assert best_long_form("HD", "child") is None  # h inside a word does not start the form
    assert find_abbreviations("a value (n = 5) was found") == []
    # Too many words for the short form: at most min(|SF| + 5, 2 |SF|).
    assert find_abbreviations("dangerous and long winding serious bad disease (DD)") == []
    assert len(find_abbreviations("dangerous bad disease (DD)")) == 1
    # "SF (long form)" needs a capital in the short form.
    assert find_abbreviations("we saw dmd (duchenne muscular dystrophy) often") == []
    # The long form may not contain the short form as a word.
    assert find_abbreviations("the DMD gene (DMD)") == []


# ---------------------------------------------------------------------------
# Abbreviations in the annotator


def test_abbreviation_defined_either_way_labels_the_short_form_throughout_the_note(rules):
    ann = LexiconAnnotator(lexicon("Duchenne muscular dystrophy"), language_rules=rules)
    text = "Duchenne muscular dystrophy (DMD) is X-linked. Two DMD boys; a DMD-related gene."
    result = ann.annotate(text)
    assert found(result, text) == [
        ("Duchenne muscular dystrophy", "DIAGNOSIS", EXACT),
        ("DMD", "DIAGNOSIS", ABBREVIATION),
        ("DMD", "DIAGNOSIS", ABBREVIATION),  # reused; "DMD-related" modifies a word: none
    ]
    text2 = "We saw DMD (Duchenne muscular dystrophy) and DMD again."
    assert [s.text for s in ann.annotate(text2).spans] == [
        "DMD",
        "Duchenne muscular dystrophy",
        "DMD",
    ]
    # Another note has no definition: its DMD is nobody's.
    assert found(ann.annotate("The DMD gene."), "The DMD gene.") == []
    off = LexiconAnnotator(
        lexicon("Duchenne muscular dystrophy"), language_rules=rules, abbreviations=False
    )
    assert [s.text for s in off.annotate(text).spans] == ["Duchenne muscular dystrophy"]


def test_abbreviation_of_a_non_entity_or_a_head_noun_phrase(rules):
    ann = LexiconAnnotator(lexicon("colorectal cancer"), language_rules=rules)
    # The long form is a gene: the match inside it is followed by more words.
    text = "the deleted in colorectal cancer (DCC) gene; DCC again"
    assert [s.text for s in ann.annotate(text).spans] == ["colorectal cancer"]
    # The long form is a strong head-noun phrase: the short form gets its lower confidence.
    text = "Prader-Willi syndrome (PWS) is rare; PWS patients"
    assert found(ann.annotate(text), text) == [
        ("Prader-Willi syndrome", "DIAGNOSIS", HEAD_NOUN),
        ("PWS", "DIAGNOSIS", HEAD_NOUN),
        ("PWS", "DIAGNOSIS", HEAD_NOUN),
    ]
    # A weak one (a suffix word alone) leaves the short form undecided as well.
    text = "retinoblastoma (RB) is a tumour of the eye; RB cells"
    result = ann.annotate(text)
    assert undecided(result, text) == [
        ("retinoblastoma", "head_noun"),
        ("RB", "abbreviation"),
        ("tumour", "head_noun"),
        ("RB", "abbreviation"),
    ]
    # A term with its definition inside: the whole is the match, the short form is left alone.
    ann = LexiconAnnotator(lexicon("von Hippel-Lindau disease"), language_rules=rules)
    text = "von Hippel-Lindau (VHL) disease is inherited"
    assert [s.text for s in ann.annotate(text).spans] == ["von Hippel-Lindau (VHL) disease"]


# ---------------------------------------------------------------------------
# Variants


def test_variants_spelling_hyphens_optional_tokens_and_word_order(rules):
    terms = lexicon(
        "brain tumor",
        "anemia",
        "beta-thalassemia",
        "Alzheimer's disease",
        "G6PD deficiency",
        "breast cancer",
        "hospitalized",
    )
    ann = LexiconAnnotator(terms, language_rules=rules)
    text = (
        "Brain tumours and anaemia. Beta thalassemia, betathalassemia, beta-thalassemia. "
        "Alzheimer disease, Alzheimer's disease. Deficiency of G6PD; cancer of the breast. "
        "Patients hospitalised."
    )
    assert found(ann.annotate(text), text) == [
        ("Brain tumours", "DIAGNOSIS", VARIANT),
        ("anaemia", "DIAGNOSIS", VARIANT),
        ("Beta thalassemia", "DIAGNOSIS", VARIANT),
        ("betathalassemia", "DIAGNOSIS", VARIANT),
        ("beta-thalassemia", "DIAGNOSIS", EXACT),
        ("Alzheimer disease", "DIAGNOSIS", VARIANT),
        ("Alzheimer's disease", "DIAGNOSIS", EXACT),
        ("Deficiency of G6PD", "DIAGNOSIS", VARIANT),
        ("cancer of the breast", "DIAGNOSIS", VARIANT),
        ("hospitalised", "DIAGNOSIS", VARIANT),
    ]
    off = LexiconAnnotator(terms, language_rules=rules, variants=False, head_nouns=False)
    assert found(off.annotate(text), text) == [
        ("beta-thalassemia", "DIAGNOSIS", EXACT),
        ("Alzheimer's disease", "DIAGNOSIS", EXACT),
    ]
    # Word order both ways: the lexicon's "deficiency of X" also matches "X deficiency".
    ann = LexiconAnnotator(lexicon("deficiency of factor V"), language_rules=rules)
    assert [s.text for s in ann.annotate("factor V deficiency").spans] == ["factor V deficiency"]


def test_plural_is_a_variant_and_case_folding_is_exact(rules):
    ann = LexiconAnnotator(lexicon("gastric ulcer"), language_rules=rules, head_nouns=False)
    text = "Gastric Ulcers, gastric ulcer."
    assert found(ann.annotate(text), text) == [
        ("Gastric Ulcers", "DIAGNOSIS", VARIANT),
        ("gastric ulcer", "DIAGNOSIS", EXACT),
    ]


# ---------------------------------------------------------------------------
# Head nouns


def test_head_noun_phrases_spans_and_undecided_ranges(rules):
    ann = LexiconAnnotator(lexicon("breast cancer"), language_rules=rules)
    text = (
        "Prader-Willi syndrome was seen. The tumor was small; a tumor suppressor gene. "
        "No disease. Patients with meningitis had the Wilson disease. Familial breast cancer."
    )
    result = ann.annotate(text)
    assert found(result, text) == [
        ("Prader-Willi syndrome", "DIAGNOSIS", HEAD_NOUN),  # head noun + modifier: a span
        ("Wilson disease", "DIAGNOSIS", HEAD_NOUN),
        ("breast cancer", "DIAGNOSIS", EXACT),
    ]
    assert undecided(result, text) == [
        ("tumor", "head_noun"),  # a head noun alone is weak; "tumor suppressor" is no phrase end
        ("meningitis", "head_noun"),  # a suffix word: weak
        ("Familial", "modifier"),  # before a lexicon match: part of the name or not
    ]
    # "disease" alone is generic: neither a span nor undecided.
    off = LexiconAnnotator(lexicon("breast cancer"), language_rules=rules, head_nouns=False)
    assert [s.text for s in off.annotate(text).spans] == ["breast cancer"]
    assert off.annotate(text).uncertain == []


def test_head_noun_phrase_takes_at_most_max_modifiers_and_stops_at_punctuation(rules):
    ann = LexiconAnnotator(lexicon("x"), language_rules=rules)
    text = "severe combined immune deficiency; (recessive) storage disease"
    assert [s.text for s in ann.annotate(text).spans] == [
        "combined immune deficiency",
        "storage disease",
    ]


def test_unknown_words_are_undecided_only_when_asked(rules):
    terms = lexicon("asthma")
    text = "Asthma since 2001. Mutations in BRCA1 were found by Dr Smith in Tallinn."
    assert LexiconAnnotator(terms, language_rules=rules).annotate(text).uncertain == []
    ann = LexiconAnnotator(terms, language_rules=rules, unknown_words=True)
    assert undecided(ann.annotate(text), text) == [
        ("BRCA1", "unknown_word"),
        ("Dr", "unknown_word"),
        ("Smith", "unknown_word"),
        ("Tallinn", "unknown_word"),
    ]


def test_a_language_gets_only_its_own_rules(tmp_path):
    schema_path = tmp_path / "tiny.toml"
    schema_path.write_text(SCHEMA + '\n[lexicon.sv]\nvariants = [["ph", "f"]]\n', encoding="utf-8")
    schema = load_entity_schema(schema_path)
    sv = LexiconRules.from_schema(schema, "sv")
    assert sv.types == {} and sv.inflections == () and sv.stop_words == frozenset()
    ann = LexiconAnnotator(lexicon("astma", "difteri"), language_rules=sv)
    text = "Astman och diphteri. Wilson disease."
    # No English plural folding or head nouns; only the Swedish variant.
    assert found(ann.annotate(text), text) == [("diphteri", "DIAGNOSIS", VARIANT)]
    assert ann.annotate(text).uncertain == []
    # A language the schema has no table for: no rules at all.
    assert LexiconRules.from_schema(schema, "et") == LexiconRules("et", source=str(schema_path))
    # The built-in schema declares English only.
    builtin = load_policy().entity_schema()
    assert set(builtin.lexicon) == {"en"}
    assert LexiconRules.from_schema(builtin, "sv").types == {}


def test_a_schema_without_lexicon_rules_gets_the_built_in_ones(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text(
        '[schema]\nname = "old"\n[[entity]]\nlabel = "DIAGNOSIS"\ndefinition = "a disease they have"\n',
        encoding="utf-8",
    )
    rules = LexiconRules.from_schema(load_entity_schema(path), "en")
    assert rules.inflections and set(rules.types) == {"DIAGNOSIS"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[lexicon.en]\ncolour = 1\n", "unknown key 'colour'"),
        ('[lexicon.en]\nhead = "middle"\n', "head: expected 'last' or 'first'"),
        ('[lexicon.en]\nvariants = ["ae"]\n', "variants: expected a list of \\[from, to\\]"),
        ('[lexicon.en]\ninflections = [{suffix = "s", min_length = 0}]\n', "min_length"),
        ("[lexicon.english]\n", "not an ISO 639-1"),
        ("[lexicon.en]\nmax_modifiers = 0\n", "max_modifiers: expected an integer from 1"),
    ],
)
def test_schema_lexicon_rules_are_validated(tmp_path, extra, message):
    path = tmp_path / "bad.toml"
    path.write_text(
        '[schema]\nname = "s"\n[[entity]]\nlabel = "DRUG"\ndefinition = "a drug given to them"\n'
        + extra,
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=message):
        load_entity_schema(path)


def test_schema_type_rules_are_validated(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        '[schema]\nname = "s"\n[[entity]]\nlabel = "DRUG"\ndefinition = "a drug given to them"\n'
        '[entity.lexicon.en]\nword_order = [["deficiency of", "{} deficiency"]]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"\[entity.lexicon.en\] \(DRUG\) word_order"):
        load_entity_schema(path)


def test_lexicon_rules_stay_out_of_the_llm_prompt_schema():
    schema = load_policy().entity_schema()
    assert schema.has_lexicon_rules
    assert all(set(e) == {"label", "definition", "examples"} for e in schema.as_dict()["entities"])


# ---------------------------------------------------------------------------
# Members and ensembles


def test_lexicon_member_returns_uncertain_ranges_and_rule_counts(tmp_path):
    terms = tmp_path / "terms.tsv"
    terms.write_text("term\tlabel\nDuchenne muscular dystrophy\tDIAGNOSIS\n", encoding="utf-8")
    policy = load_policy()
    notes = [
        ("n1", "Duchenne muscular dystrophy (DMD) and retinoblastoma; DMD."),
        ("n2", "Prader-Willi syndrome."),
    ]
    members = build_members(
        AnnotatorOptions(lexicons=(terms,)), policy.entity_schema(), policy.egress
    )
    combined = run_members(members, notes, "union")
    assert [s.confidence for s in combined.spans["n1"]] == [EXACT, ABBREVIATION, ABBREVIATION]
    assert [(u.reason, notes[0][1][u.start : u.end]) for u in combined.uncertain["n1"]] == [
        ("head_noun", "retinoblastoma")
    ]
    assert "n2" not in combined.uncertain
    qa = combined.members[0].qa
    assert qa["spans_by_rule"] == {"exact": 1, "abbreviation": 2, "head_noun": 1}
    assert qa["uncertain_by_reason"] == {"head_noun": 1}
    assert members[0].params()["head_nouns"] is True
    off = build_members(
        AnnotatorOptions(lexicons=(terms,), abbreviations=False, variants=False, head_nouns=False),
        policy.entity_schema(),
        policy.egress,
    )
    combined = run_members(off, notes, "union")
    assert [s.text for s in combined.spans["n1"]] == ["Duchenne muscular dystrophy"]
    assert combined.uncertain == {} and combined.spans["n2"] == []


def test_ensemble_keeps_the_highest_confidence_and_unites_uncertain_ranges():
    a = [Span(0, 5, "DRUG", "aspir", 0.6), Span(10, 14, "DRUG", "abcd", 1.0)]
    b = [Span(0, 5, "DRUG", "aspir", 0.9)]
    kept = combine([a, b], "union")
    assert [(s.start, s.confidence) for s in kept] == [(0, 0.9), (10, 1.0)]
    assert [s.confidence for s in combine([a, b], "intersection")] == [0.9]
    ranges = combine_uncertain(
        [[Uncertain(20, 25, "head_noun"), Uncertain(3, 8, "head_noun")], [Uncertain(20, 25, "x")]],
        kept,
    )
    assert ranges == [Uncertain(20, 25, "head_noun")]  # (3, 8) overlaps a kept span


# ---------------------------------------------------------------------------
# Command line and the annotate stage


def test_evaluate_switches_on_the_command_line(tmp_path):
    gold = tmp_path / "gold.jsonl"
    text = "Duchenne muscular dystrophy (DMD) is X-linked. DMD boys."
    gold.write_text(
        json.dumps(
            {
                "id": "1",
                "text": text,
                "entities": [
                    {"start": 0, "end": 27, "label": "DIAGNOSIS"},
                    {"start": 29, "end": 32, "label": "DIAGNOSIS"},
                    {
                        "start": text.rindex("DMD"),
                        "end": text.rindex("DMD") + 3,
                        "label": "DIAGNOSIS",
                    },
                ],
            }
        )
        + "\n",
        encoding="utf-8",
    )
    terms = tmp_path / "terms.tsv"
    terms.write_text("term\tlabel\nDuchenne muscular dystrophy\tDIAGNOSIS\n", encoding="utf-8")
    base = ["annotate", "evaluate", "--gold", str(gold), "--lexicon", str(terms), "--json"]
    on = CliRunner().invoke(cli, base)
    assert on.exit_code == 0, on.output
    assert json.loads(on.output)["exact"]["micro"]["recall"] == 1.0
    off = CliRunner().invoke(cli, [*base, "--no-abbreviations"])
    assert off.exit_code == 0, off.output
    report = json.loads(off.output)
    assert report["exact"]["micro"]["tp"] == 1
    assert report["annotator"]["members"][0]["abbreviations"] is False


def test_confidences_and_uncertain_ranges_land_in_annotations_jsonl(released_corpus, tmp_path):
    """Hand-written notes, screened into the workspace, annotated by the stage."""
    from appliance.corpus import read_annotations, released_notes
    from appliance.privacy import screen

    ws = released_corpus.ws
    notes = tmp_path / "notes.jsonl"
    texts = {
        "R1": "Seen for Duchenne muscular dystrophy (DMD); DMD confirmed by muscle biopsies.",
        "R2": "Known retinoblastoma. Brain tumours were not found; Wilson disease suspected.",
    }
    notes.write_text(
        "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()),
        encoding="utf-8",
    )
    screen.run(ws, input_path=notes, import_as="rules")
    released = {n.id for n in released_notes(ws, "rules")}
    assert released == set(texts)
    terms = tmp_path / "terms.tsv"
    terms.write_text(
        "term\tlabel\nDuchenne muscular dystrophy\tDIAGNOSIS\nbrain tumor\tDIAGNOSIS\n",
        encoding="utf-8",
    )
    args = ["annotate", "-w", str(ws.root), "--corpus", "rules", "--lexicon", str(terms)]
    result = CliRunner().invoke(cli, [*args, "--name", "rules"])
    assert result.exit_code == 0, result.output
    folder = ws.annotation_dir("rules")
    lines = {
        x["id"]: x for x in map(json.loads, (folder / "annotations.jsonl").read_text().splitlines())
    }
    r1, r2 = lines["R1"], lines["R2"]
    assert [(e["text"], e.get("confidence")) for e in r1["entities"]] == [
        ("Duchenne muscular dystrophy", None),  # 1.0 is left out
        ("DMD", ABBREVIATION),
        ("DMD", ABBREVIATION),
        ("muscle biopsies", HEAD_NOUN),  # PROCEDURE: "biopsy" is a head noun of the schema
    ]
    assert [(e["text"], e.get("confidence")) for e in r2["entities"]] == [
        ("Brain tumours", VARIANT),
        ("Wilson disease", HEAD_NOUN),
    ]
    assert r2["uncertain"] == [
        {"start": 6, "end": 20, "reason": "head_noun"}  # retinoblastoma
    ]
    assert "uncertain" not in r1
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["qa"]["uncertain_by_reason"] == {"head_noun": 1}
    assert manifest["counts"]["uncertain"] == 1
    assert manifest["annotator"]["members"][0]["language_rules"]["language"] == "en"
    docs = {d.id: d for d in read_annotations(ws, "rules")}
    assert [(u.start, u.end) for u in docs["R2"].uncertain] == [(6, 20)]
    assert docs["R1"].spans[1].confidence == ABBREVIATION

    off = CliRunner().invoke(
        cli,
        [*args, "--name", "plain", "--no-abbreviations", "--no-variants", "--no-head-nouns"],
    )
    assert off.exit_code == 0, off.output
    plain = [
        json.loads(x)
        for x in (ws.annotation_dir("plain") / "annotations.jsonl").read_text().splitlines()
    ]
    assert all("uncertain" not in x for x in plain)
    assert [e["text"] for x in plain for e in x["entities"]] == ["Duchenne muscular dystrophy"]
    record = plain[0]["annotator"]
    assert record["kind"] == "lexicon" and record["rules"] == []
