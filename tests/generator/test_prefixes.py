"""Prefix schema from metadata: table-driven field extraction, coverage rule, sampling."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from appliance.documents import Identifier, Record
from appliance.generator.prefixes import PrefixSampler, PrefixSchema, derive_schema, parse_prefix


def _record(metadata=None, dob=None):
    ids = (Identifier("DATE_OF_BIRTH", dob, "birth_date"),) if dob else ()
    return Record(id="x", text="t", metadata=metadata or {}, identifiers=ids)


ALL = PrefixSchema(("note_type", "age_group", "sex", "diagnosis"))


@pytest.mark.parametrize(
    ("metadata", "dob", "expected"),
    [
        (
            {
                "note_type": "procedure_note",
                "visit_date": "2023-05-02",
                "sex": "female",
                "diagnosis_code": "C50.9",
            },
            "1951-05-22",
            "procedure note, age group 7, female, C50,",
        ),
        # Birthday not yet reached on the visit date: still 71, not 72.
        ({"visit_date": "2023-05-21", "sex": "M"}, "1951-05-22", "age group 7, male,"),
        ({"visit_date": "2023-05-22"}, "1933-05-22", "age group 9,"),
        ({"age": "34", "gender": "naine"}, None, "age group 3, female,"),
        ({"patient.sex": "male", "type": "Discharge  Summary"}, None, "discharge summary, male,"),
        ({"diagnosis_code": "not a code"}, None, ""),
        ({"date": "2023-05-02T10:00:00Z"}, "1990-01-01", "age group 3,"),  # FHIR date-time
        ({"visit_date": "1980-01-01"}, "1990-01-01", ""),  # visit before birth: no age
        ({}, None, ""),
    ],
)
def test_render(metadata, dob, expected):
    assert ALL.render(_record(metadata, dob)) == expected


def test_schema_uses_fields_most_records_have():
    records = [_record({"note_type": "a", "sex": "f"})] * 6 + [_record({"note_type": "b"})] * 4
    schema = derive_schema(records)
    assert schema.fields == ("note_type", "sex")
    assert schema.coverage["sex"] == 0.6 and schema.coverage["diagnosis"] == 0.0
    assert derive_schema([_record()] * 3).fields == ()  # unconditional
    assert PrefixSchema().render(_record({"note_type": "a"})) == ""


def test_sampler_follows_training_frequencies():
    sampler = PrefixSampler.from_prefixes(["a,"] * 90 + ["b,"] * 10)
    draws = sampler.sample(random.Random(0), 2000)
    assert 0.85 < draws.count("a,") / 2000 < 0.95
    assert PrefixSampler({}).sample(random.Random(0), 3) == ["", "", ""]


def test_parse_prefix_round_trip():
    prefix = "outpatient visit, age group 5, male, I10,"
    assert parse_prefix(prefix, ALL) == {
        "note_type": "outpatient visit",
        "age_group": "age group 5",
        "sex": "male",
        "diagnosis": "I10",
    }


# ---------------------------------------------------------------------------
# entity lines


def test_training_entity_line_names_distinct_terms_in_text_order():
    from appliance.generator.prefixes import MAX_TERMS, EntityTerms

    found = [("DRUG", "Aspirin"), ("DIAGNOSIS", "gout"), ("DRUG", "aspirin"), ("DRUG", "insulin")]
    terms = EntityTerms(lambda text: found, {"DRUG": ["aspirin"]})
    line, per_type = terms.line("any text")
    assert line == "entities: Aspirin; gout; insulin"
    assert per_type == {"DRUG": 2, "DIAGNOSIS": 1}
    many = EntityTerms(lambda text: [("DRUG", f"d{i}") for i in range(20)], {})
    line, per_type = many.line("x")
    assert line.count(";") == MAX_TERMS - 1 and per_type["DRUG"] == MAX_TERMS
    assert EntityTerms(lambda text: [], {}).line("x") == ("", {})
    split = EntityTerms(lambda text: [("DRUG", "insulin\n  glargine")], {})
    assert split.line("x")[0] == "entities: insulin glargine"  # the line stays one line


def test_generation_entity_lines_walk_the_whole_term_list():
    from appliance.generator.prefixes import EntitySampler, join_prefix, per_note_counts

    vocab = {"DRUG": [f"drug{i}" for i in range(30)], "DIAGNOSIS": ["gout", "asthma"]}
    counts = [Counter({"DRUG": 2, "DIAGNOSIS": 1}), Counter({"DRUG": 2}), Counter()]
    per_note = per_note_counts(counts, vocab)
    assert per_note == {"DIAGNOSIS": {"0": 2, "1": 1}, "DRUG": {"0": 1, "2": 2}}
    sampler = EntitySampler(vocab, {"DRUG": {"2": 1}}, seed=3)
    rng = random.Random(0)
    lines = [sampler.line(i, rng) for i in range(15)]
    named = [t for line in lines for t in line.removeprefix("entities: ").split("; ")]
    assert sorted(named) == sorted(vocab["DRUG"])  # 15 notes x 2 slots: each term once
    # The walk depends on the note number only: a resumed run names the same terms.
    again = EntitySampler(vocab, {"DRUG": {"2": 1}}, seed=3)

    def terms(line: str) -> set[str]:
        return set(line.removeprefix("entities: ").split("; "))

    assert terms(again.line(7, random.Random(99))) == terms(lines[7])
    assert EntitySampler.from_dict(sampler.as_dict()).line(4, random.Random(0)) == sampler.line(
        4, random.Random(0)
    )
    assert join_prefix("discharge summary,", "entities: a") == "discharge summary,\nentities: a"
    assert join_prefix("", "entities: a") == "entities: a" and join_prefix("x,", "") == "x,"
