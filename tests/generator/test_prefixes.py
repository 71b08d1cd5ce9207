"""Prefix schema from metadata: table-driven field extraction, coverage rule, sampling."""

from __future__ import annotations

import random

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
