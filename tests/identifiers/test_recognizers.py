"""Identifier recognizers: tables of text -> expected (type, span text), presidio style.

Everything here runs under the suite's network guard (conftest.py): the
e-mail cases would fail if anything reached for the public-suffix list.
"""

from __future__ import annotations

from datetime import date

import pytest
import regex
from presidio_analyzer import Pattern, PatternRecognizer

from appliance.config import IdentifierPolicy
from appliance.documents import Identifier
from appliance.identifiers.recognizers import (
    DateStyle,
    DenyListPhoneRecognizer,
    DenyListRecognizer,
    Finding,
    build_recognizers,
    date_variants,
    deny_list_recognizers,
    find_identifiers,
    format_date,
    parse_dates,
    phone_parts,
    split_person_name,
)

PATTERNS = build_recognizers(IdentifierPolicy())


def spans(text: str, recognizers, types=None) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in find_identifiers(text, recognizers, types)]


# --------------------------------------------------------------------------- pattern recognizers

NID = "NATIONAL_ID"
PHONE = "PHONE_NUMBER"
EMAIL = "EMAIL_ADDRESS"
MRN = "MEDICAL_RECORD_NUMBER"
DOB = "DATE_OF_BIRTH"


PATTERN_CASES = [
    # Estonian isikukood: checksum and date decide.
    ("Isikukood 37605030299.", [(NID, "37605030299")]),
    ("Isikukood 37605030298.", []),
    ("ID code: 49403136526, seen today", [(NID, "49403136526")]),
    ("x 37613030296 (month 13)", []),
    ("a decimal 12.37605030299 is no code", []),
    ("glued A37605030299 or 376050302991", []),
    # Swedish personnummer, 10 and 12 digits, '-' or '+', bare.
    ("pnr 811228-9874", [(NID, "811228-9874")]),
    ("pnr 811228+9874 (over 100)", [(NID, "811228+9874")]),
    ("pnr 19811228-9874", [(NID, "19811228-9874")]),
    ("pnr 198112289874", [(NID, "198112289874")]),
    ("pnr 8112289874", [(NID, "8112289874")]),
    ("pnr 811228-9875", []),
    # Finnish HETU.
    ("HETU 131052-308T", [(NID, "131052-308T")]),
    ("HETU 131052-308U", []),
    ("HETU 010594Y9032 (new sign)", [(NID, "010594Y9032")]),
    # US SSN: rules, not a checksum; placeholders and void numbers out.
    ("SSN 536-22-1234", [(NID, "536-22-1234")]),
    ("SSN 666-12-3456", []),
    ("SSN 078-05-1120", []),
    ("SSN 111-11-1111", []),
    # Phones in several spacings, with and without the country code.
    ("Call +372 5141 3739.", [(PHONE, "+372 5141 3739")]),
    ("Call 5141 3739.", [(PHONE, "5141 3739")]),
    ("Call 5141-3739 today", [(PHONE, "5141-3739")]),
    ("Call 51413739", [(PHONE, "51413739")]),
    ("Call 0037251413739", [(PHONE, "0037251413739")]),
    ("Call +372 612 3456", [(PHONE, "+372 612 3456")]),
    ("Call +44 20 7946 0018", [(PHONE, "+44 20 7946 0018")]),
    ("Call (020) 7946 0018", [(PHONE, "(020) 7946 0018")]),
    ("Call +46 70 123 45 67", [(PHONE, "+46 70 123 45 67")]),
    ("Call 070-123 45 67", [(PHONE, "070-123 45 67")]),
    ("Call +358 40 123 4567", [(PHONE, "+358 40 123 4567")]),
    ("Call +1 202 555 0143", [(PHONE, "+1 202 555 0143")]),
    ("Tel.5141 3739", [(PHONE, "5141 3739")]),
    ("Call +372 5141 3739 12 times", [(PHONE, "+372 5141 3739")]),
    # Clinical numbers are not phones.
    ("BP 134/90, HR 87, on 08.01.2018 and 2018-01-04", []),
    ("stored as 20180104; Hb 127 g/l; 1000 mg 1-0-1", []),
    ("Kasekivi tn 107, 12118 Tallinn; WBC 14.3 x10^9/L", []),
    # E-mail, offline (no public-suffix list).
    ("Mail mari.tamm@example.ee.", [(EMAIL, "mari.tamm@example.ee")]),
    (
        "Mail Mari.Tamm+clinic@Haigla.Kliinik.EE",
        [(EMAIL, "Mari.Tamm+clinic@Haigla.Kliinik.EE")],
    ),
    ("not e-mail: a@b, foo@bar.c, user@localhost, x@y..ee", []),
    # Record numbers and birth dates only after their label.
    ("MRN: P230163", [(MRN, "P230163")]),
    ("Case no. 2023-004512 admitted", [(MRN, "2023-004512")]),
    ("Hospital ID P657924; MRN pending", [(MRN, "P657924")]),
    ("P230163 alone is not enough", []),
    ("DOB: 03.01.1994", [(DOB, "03.01.1994")]),
    ("Date of birth 3 January 1994", [(DOB, "3 January 1994")]),
    ("born 1994-01-03 in Tartu", [(DOB, "1994-01-03")]),
    ("DOB: 31.02.1994", []),
    ("seen 03.01.1994", []),
]


@pytest.mark.parametrize(("text", "expected"), PATTERN_CASES)
def test_pattern_recognizers(text: str, expected: list[tuple[str, str]]) -> None:
    assert spans(text, PATTERNS) == expected


def test_prefilter_never_skips_a_text_a_pattern_matches() -> None:
    """``REQUIRES`` lets find_identifiers skip a recognizer; any raw pattern match must imply it."""
    texts = [t for t, _ in PATTERN_CASES]
    texts += [t.upper() for t in texts] + [t.lower() for t in texts]
    texts += [
        "mrn:P230163",
        "record no 123456",
        "d.o.b. 3 jan 1994",
        "BIRTH DATE: 1994-01-03",
        "(020)79460018",
        "+3725141373912",
        "x@y.ee",
        "010594A9032",
    ]
    checked = 0
    for recognizer in PATTERNS:
        assert recognizer.requires is not None, recognizer.name
        for pattern in recognizer.patterns:
            compiled = regex.compile(pattern.regex, recognizer.global_regex_flags)
            for text in texts:
                if compiled.search(text):
                    checked += 1
                    assert recognizer.requires.search(text), (recognizer.name, pattern.name, text)
    assert checked > 40
    # and the skip is real: a note without digits or labels runs no pattern at all
    assert [r for r in PATTERNS if r.requires.search("Patient seen today, no complaints.")] == [
        r for r in PATTERNS if r.name == "MRN_LABELLED"
    ]


def test_policy_selects_recognizers() -> None:
    only_ee = build_recognizers(IdentifierPolicy(national_id_schemes=["EE_ISIKUKOOD"]))
    assert spans("pnr 811228-9874, IK 37605030299", only_ee) == [(NID, "37605030299")]
    phones = build_recognizers(IdentifierPolicy(types=["PHONE_NUMBER"]))
    assert [r.name for r in phones] == ["PHONE"]
    assert spans("IK 37605030299, tel 5141 3739", phones) == [(PHONE, "5141 3739")]
    assert build_recognizers(IdentifierPolicy(types=["PERSON", "ADDRESS"])) == []


def test_recognizers_are_presidio_pattern_recognizers() -> None:
    for r in PATTERNS:
        assert isinstance(r, PatternRecognizer)
        assert r.patterns  # class-level PATTERNS, presidio style
    names = [r.name for r in PATTERNS]
    assert names == [
        "EE_ISIKUKOOD",
        "FI_HETU",
        "SE_PERSONNUMMER",
        "US_SSN",
        "PHONE",
        "EMAIL",
        "MRN_LABELLED",
        "DOB_LABELLED",
    ]


# --------------------------------------------------------------------------- deny lists

KNOWN = [
    Identifier("PERSON", "Mari Tamm", "patient.name"),
    Identifier("PERSON", "Thomas Henry Fletcher", "patient.name"),
    Identifier("PERSON", "Ingrid-Ene Mets", "patient.name"),
    Identifier("PERSON", "Bo Ek", "patient.name"),
    Identifier("DATE_OF_BIRTH", "1994-01-03", "patient.birth_date"),
    Identifier("PHONE_NUMBER", "+372 5141 3739", "patient.phone"),
    Identifier("ADDRESS", "Kasekivi tn 107, 12118 Tallinn", "patient.address"),
    Identifier("NATIONAL_ID", "49401030000", "patient.national_id"),
    Identifier("MEDICAL_RECORD_NUMBER", "P230163", "patient.patient_id"),
    Identifier("EMAIL_ADDRESS", "mari.tamm@example.ee", "patient.email"),
]
DENY = deny_list_recognizers(KNOWN)
P = "PERSON"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Names: both orders, "FAMILY, Given", parts alone, any case, whole words.
        ("Patient: Mari Tamm", [(P, "Mari Tamm")]),
        ("Patient: TAMM, Mari", [(P, "TAMM, Mari")]),
        ("Patient: Tamm Mari", [(P, "Tamm Mari")]),
        ("Patient name: TAMM Mari", [(P, "TAMM Mari")]),
        ("seen by mari tamm", [(P, "mari tamm")]),
        ("Results given to Mrs. Tamm.", [(P, "Tamm")]),
        ("Mari was seen; Tamm's daughter called", [(P, "Mari"), (P, "Tamm")]),
        ("Tammsaare street, Marit", []),
        ("Fletcher, Thomas Henry", [(P, "Fletcher, Thomas Henry")]),
        ("Thomas Fletcher and Henry", [(P, "Thomas Fletcher"), (P, "Henry")]),
        ("Ingrid-Ene Mets, Ingrid, Ene", [(P, "Ingrid-Ene Mets"), (P, "Ingrid"), (P, "Ene")]),
        ("Bo Ek; Ek alone is too short; so is Bo", [(P, "Bo Ek")]),
        # Dates of birth in common formats.
        ("DOB 1994-01-03", [(DOB, "1994-01-03")]),
        ("DOB 03.01.1994", [(DOB, "03.01.1994")]),
        ("DOB 3.1.1994", [(DOB, "3.1.1994")]),
        ("DOB 03/01/1994", [(DOB, "03/01/1994")]),
        ("DOB 03.01.94", [(DOB, "03.01.94")]),
        ("born 3 January 1994", [(DOB, "3 January 1994")]),
        ("born January 3, 1994", [(DOB, "January 3, 1994")]),
        ("born Jan 3, 1994", [(DOB, "Jan 3, 1994")]),
        ("seen 04.01.1994 and 03.01.1995", []),
        # Phones by digits: any spacing or dashes, +372 / 00372 / none.
        ("tel +372 5141 3739", [(PHONE, "+372 5141 3739")]),
        ("tel 5141 3739", [(PHONE, "5141 3739")]),
        ("tel 51413739", [(PHONE, "51413739")]),
        ("tel 514-13-739", [(PHONE, "514-13-739")]),
        ("tel +372-5141-3739", [(PHONE, "+372-5141-3739")]),
        ("tel 00372 5141 3739", [(PHONE, "00372 5141 3739")]),
        ("tel 372 51 41 37 39", [(PHONE, "372 51 41 37 39")]),
        ("tel 5141 3738 or 15141 3739", []),
        # Addresses as given and the street part; ids and numbers as given.
        (
            "Lives at Kasekivi tn 107, 12118 Tallinn.",
            [("ADDRESS", "Kasekivi tn 107, 12118 Tallinn")],
        ),
        ("Lives at kasekivi tn 107.", [("ADDRESS", "kasekivi tn 107")]),
        ("Lives at Kasekivi tn 10.", []),
        ("IK 49401030000, MRN P230163", [(NID, "49401030000"), (MRN, "P230163")]),
        ("IK 494010300001, P2301634", []),
        ("write to Mari.Tamm@example.ee", [(EMAIL, "Mari.Tamm@example.ee")]),
    ],
)
def test_deny_list_variants(text: str, expected: list[tuple[str, str]]) -> None:
    assert spans(text, DENY) == expected


def test_deny_list_without_name_parts() -> None:
    rs = deny_list_recognizers(KNOWN[:1], name_parts=False)
    assert spans("Mrs Tamm; Mari Tamm; TAMM, Mari", rs) == [
        (P, "Mari Tamm"),
        (P, "TAMM, Mari"),
    ]


def test_deny_list_is_two_recognizers_however_many_values() -> None:
    many = [
        Identifier(t, v, "f")
        for k in range(3000)
        for t, v in (
            ("PERSON", f"Given{k} Family{k}"),
            ("PHONE_NUMBER", f"+372 5{k % 1000:03d} {k:04d}"),
            ("MEDICAL_RECORD_NUMBER", f"P{k:06d}"),
        )
    ]
    rs = deny_list_recognizers(many)
    assert [type(r) for r in rs] == [DenyListRecognizer, DenyListPhoneRecognizer]
    text = "Family2999, Given2999 (P002999) and +372 5999 2999; not Family3000"
    assert spans(text, rs) == [
        (P, "Family2999, Given2999"),
        (MRN, "P002999"),
        (PHONE, "+372 5999 2999"),
    ]


def test_deny_list_and_patterns_together() -> None:
    text = "Mrs Tamm (IK 37605030299) phone 5141 3739, other 5508 5160."
    found = find_identifiers(text, [*DENY, *PATTERNS])
    assert [(f.type, text[f.start : f.end], f.source) for f in found] == [
        (P, "Tamm", "deny-list"),
        (NID, "37605030299", "EE_ISIKUKOOD"),
        (PHONE, "5141 3739", "deny-list-phone"),  # equal spans: the first recognizer wins
        (PHONE, "5508 5160", "PHONE"),
    ]


def test_no_public_suffix_list_and_no_nlp_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    import presidio_analyzer
    import tldextract

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not be used: it loads a model or downloads a list")

    monkeypatch.setattr(tldextract.TLDExtract, "_get_tld_extractor", refuse)
    monkeypatch.setattr(presidio_analyzer.AnalyzerEngine, "__init__", refuse)
    recognizers = [*build_recognizers(IdentifierPolicy()), *deny_list_recognizers(KNOWN)]
    text = "Mari Tamm <mari.tamm@example.ee>, www.example.ee, tel 5141 3739"
    assert spans(text, recognizers) == [
        (P, "Mari Tamm"),
        (EMAIL, "mari.tamm@example.ee"),
        (PHONE, "5141 3739"),
    ]


# --------------------------------------------------------------------------- find_identifiers


def _deny(entity: str, words: list[str], score: float, name: str) -> PatternRecognizer:
    return PatternRecognizer(
        supported_entity=entity, deny_list=words, deny_list_score=score, name=name
    )


def test_merge_longest_then_score_then_order() -> None:
    text = "Mari Tamm and Kask"
    short = _deny("PERSON", ["Mari"], 0.9, "short")
    long = _deny("PERSON", ["Mari Tamm"], 0.3, "long")
    assert find_identifiers(text, [short, long]) == [Finding("PERSON", 0, 9, 0.3, "long")]
    low = _deny("PERSON", ["Kask"], 0.2, "low")
    high = _deny("PERSON", ["Kask"], 0.8, "high")
    assert find_identifiers(text, [low, high])[0].source == "high"
    first = _deny("PERSON", ["Kask"], 0.5, "first")
    second = _deny("ADDRESS", ["Kask"], 0.5, "second")
    assert find_identifiers(text, [first, second])[0].source == "first"
    assert find_identifiers(text, [second, first])[0].source == "second"


def test_types_filter_and_presidio_names() -> None:
    ssn = PatternRecognizer(
        supported_entity="US_SSN",
        name="presidio-ssn",
        patterns=[Pattern("ssn", r"\b\d{3}-\d{2}-\d{4}\b", 0.5)],
    )
    text = "SSN 536-22-1234, tel 5141 3739"
    assert spans(text, [ssn, *PATTERNS], types={"NATIONAL_ID"}) == [(NID, "536-22-1234")]
    assert spans(text, [ssn], types={"PHONE_NUMBER"}) == []
    found = find_identifiers(text, [*PATTERNS, ssn])
    assert [f.start for f in found] == sorted(f.start for f in found)
    assert {f.type for f in found} == {NID, PHONE}


def test_empty_and_unicode_text() -> None:
    assert find_identifiers("", [*DENY, *PATTERNS]) == []
    rs = deny_list_recognizers([Identifier("PERSON", "Ülle Põder", "name")])
    text = "ÜLLE PÕDER; straße ß; Põder"
    assert spans(text, rs) == [(P, "ÜLLE PÕDER"), (P, "Põder")]


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        ("Mari Tamm", "patient.name", (("Mari",), ("Tamm",))),
        ("TAMM, Mari", "name", (("Mari",), ("TAMM",))),
        ("MÄGI Taavi", "name", (("Taavi",), ("MÄGI",))),
        ("Thomas Henry Fletcher", "name", (("Thomas", "Henry"), ("Fletcher",))),
        ("Fletcher", "last_name", ((), ("Fletcher",))),
        ("Mari Liis", "patient.first_name", (("Mari", "Liis"), ())),
        ("Tamm", "name", ((), ("Tamm",))),
    ],
)
def test_split_person_name(value: str, field: str, expected: tuple) -> None:
    assert split_person_name(value, field) == expected


def test_dates_round_trip() -> None:
    d = date(1994, 1, 3)
    for text in date_variants(d):
        readings = parse_dates(text)
        assert d in [r for r, _ in readings], text
        style = next(s for r, s in readings if r == d)
        assert format_date(d, style) == text
    assert parse_dates("31.02.1994") == []
    assert len(parse_dates("03/01/1994")) == 2  # day-first and month-first
    assert format_date(date(2001, 2, 9), DateStyle("dmy", ".", False, False)) == "9.2.2001"
    assert format_date(d, DateStyle("dmy", " ", month_name="full", month_case="upper")) == (
        "03 JANUARY 1994"
    )


def test_phone_parts() -> None:
    assert phone_parts("+372 5141 3739") == ("372", "51413739")
    assert phone_parts("5141 3739") == ("372", "51413739")
    assert phone_parts("00372 5141-3739") == ("372", "51413739")
    assert phone_parts("+44 (0)20 7946 0018") == ("44", "2079460018")
    # Without a code, the first region the number is valid in decides.
    assert phone_parts("020 7946 0018", ("GB",)) == ("44", "2079460018")
    assert phone_parts("12", ("EE",)) == ("", "12")
