"""The demo data generator: the export contract, gold spans, identifiers, variety."""

from __future__ import annotations

import base64
import csv
import json
import re
import unicodedata
from collections import Counter
from datetime import date
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from appliance import demo
from appliance.errors import UsageError
from appliance.identifiers.national_ids import isikukood_birth_info

NOTES = 300
SEED = 11
LABELS = {"DRUG", "PROCEDURE", "DIAGNOSIS"}
IDENTIFIER_TYPES = (
    "PERSON",
    "NATIONAL_ID",
    "PHONE_NUMBER",
    "ADDRESS",
    "DATE_OF_BIRTH",
    "MEDICAL_RECORD_NUMBER",
)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, demo.DemoResult]:
    """The same seed written in every format (each in its own folder)."""
    root = tmp_path_factory.mktemp("demo")
    return {fmt: demo.run(root / fmt, notes=NOTES, fmt=fmt, seed=SEED) for fmt in demo.FORMATS}


@pytest.fixture(scope="module")
def gold(exports: dict[str, demo.DemoResult]) -> list[dict[str, Any]]:
    return read_jsonl(exports["jsonl"].gold_path)


@pytest.fixture(scope="module")
def records(exports: dict[str, demo.DemoResult]) -> list[dict[str, Any]]:
    return read_jsonl(exports["jsonl"].export_path)


# --- the clinical tables and vocabularies ------------------------------------------


def test_knowledge_tables_are_consistent() -> None:
    assert demo.check_knowledge() == []


@pytest.mark.parametrize(
    ("name", "label", "code_re", "lo", "hi"),
    [
        ("drugs.tsv", "DRUG", r"[A-Z]\d\d[A-Z]{2}\d\d", 60, 130),
        ("procedures.tsv", "PROCEDURE", r"PX\d{3}", 50, 80),
        ("diagnoses.tsv", "DIAGNOSIS", r"[A-Z]\d\d(\.\d{1,2})?", 60, 120),
    ],
)
def test_vocab_files_are_clean(name: str, label: str, code_re: str, lo: int, hi: int) -> None:
    from importlib import resources

    text = (resources.files("appliance.demo") / "data" / "vocab" / name).read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "term\tlabel\tcode\tsynonyms"
    assert lo <= len(lines) - 1 <= hi
    for line in lines[1:]:
        term, lab, code, synonyms = line.split("\t")
        assert lab == label
        assert re.fullmatch(code_re, code), line
        for surface in (term, *synonyms.split("|")) if synonyms else (term,):
            assert surface and surface == surface.strip() and "  " not in surface, line


def test_vocab_surfaces_are_unambiguous() -> None:
    # A lexicon annotator maps a surface form to exactly one concept.
    owner: dict[str, str] = {}
    for entry in demo.load_vocabulary().values():
        for surface in entry.surfaces:
            key = surface.lower()
            assert owner.setdefault(key, entry.term) == entry.term, (
                surface,
                owner[key],
                entry.term,
            )


# --- argument checks and overwriting --------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"notes": 0}, "--notes"),
        ({"notes": 1_000_001}, "--notes"),
        ({"notes": -5}, "--notes"),
        ({"fmt": "xml"}, "unknown demo format"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        demo.run(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", demo.FORMATS)
def test_refuses_to_overwrite(tmp_path: Path, fmt: str) -> None:
    demo.run(tmp_path, notes=3, fmt=fmt)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(UsageError, match="refusing to overwrite") as info:
        demo.run(tmp_path, notes=5, fmt=fmt, seed=1)
    assert "\n" not in str(info.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_refuses_when_only_gold_exists(tmp_path: Path) -> None:
    (tmp_path / "gold.jsonl").write_text("keep me\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"gold\.jsonl"):
        demo.run(tmp_path, notes=3, fmt="csv")
    assert not (tmp_path / "notes.csv").exists()
    assert (tmp_path / "gold.jsonl").read_text(encoding="utf-8") == "keep me\n"


def test_creates_missing_output_folder(tmp_path: Path) -> None:
    result = demo.run(tmp_path / "a" / "b", notes=2, fmt="txt")
    assert result.export_path == tmp_path / "a" / "b" / "notes"
    assert sorted(p.name for p in result.export_path.iterdir()) == ["N000001.txt", "N000002.txt"]
    assert result.patients == 1 and result.notes == 2


# --- determinism -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "fhir"])
def test_same_seed_gives_identical_files(tmp_path: Path, fmt: str) -> None:
    a = demo.run(tmp_path / "a", notes=40, fmt=fmt, seed=5)
    b = demo.run(tmp_path / "b", notes=40, fmt=fmt, seed=5)
    c = demo.run(tmp_path / "c", notes=40, fmt=fmt, seed=6)
    assert a.export_path.read_bytes() == b.export_path.read_bytes()
    assert a.gold_path.read_bytes() == b.gold_path.read_bytes()
    assert a.export_path.read_bytes() != c.export_path.read_bytes()
    assert a.gold_path.read_bytes() != c.gold_path.read_bytes()


def test_texts_are_identical_in_every_format(
    exports: dict[str, demo.DemoResult], gold: list[dict[str, Any]]
) -> None:
    texts = [g["text"] for g in gold]
    assert [r["text"] for r in read_jsonl(exports["jsonl"].export_path)] == texts
    with open(exports["csv"].export_path, encoding="utf-8", newline="") as f:
        assert [row["text"] for row in csv.DictReader(f)] == texts
    txt_dir = exports["txt"].export_path
    assert [(txt_dir / f"{g['id']}.txt").read_bytes().decode("utf-8") for g in gold] == texts
    fhir = read_jsonl(exports["fhir"].export_path)
    assert [
        base64.b64decode(d["content"][0]["attachment"]["data"]).decode("utf-8") for d in fhir
    ] == texts
    for fmt in demo.FORMATS:  # the gold sidecar does not depend on the format
        assert exports[fmt].gold_path.read_bytes() == exports["jsonl"].gold_path.read_bytes()


# --- the export contract ------------------------------------------------------------


def test_csv_contract(exports: dict[str, demo.DemoResult], records: list[dict[str, Any]]) -> None:
    raw = exports["csv"].export_path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert raw.split(b"\r\n", 1)[0].decode() == ",".join(demo.CSV_HEADER)
    with open(exports["csv"].export_path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == NOTES
    for row, rec in zip(rows, records, strict=True):
        p = rec["patient"]
        assert row["note_id"] == rec["note_id"]
        assert (row["patient_id"], row["patient_name"], row["national_id"]) == (
            p["patient_id"],
            p["name"],
            p["national_id"],
        )
        assert (row["birth_date"], row["sex"], row["phone"], row["address"]) == (
            p["birth_date"],
            p["sex"],
            p["phone"],
            p["address"],
        )
        for key in ("note_type", "department", "visit_date", "diagnosis_code"):
            assert row[key] == rec[key]


def test_jsonl_contract(records: list[dict[str, Any]]) -> None:
    keys = ["note_id", "note_type", "department", "visit_date", "diagnosis_code", "patient", "text"]
    patient_keys = ["patient_id", "name", "national_id", "birth_date", "sex", "phone", "address"]
    for k, rec in enumerate(records, start=1):
        assert list(rec) == keys
        assert list(rec["patient"]) == patient_keys
        assert rec["note_id"] == f"N{k:06d}"
        assert rec["note_type"] in demo.NOTE_TYPES
        assert date(2018, 1, 1) <= date.fromisoformat(rec["visit_date"]) <= date(2025, 12, 31)
        assert re.fullmatch(r"[A-Z]\d\d(\.\d{1,2})?", rec["diagnosis_code"])
        p = rec["patient"]
        assert re.fullmatch(r"P\d{6}", p["patient_id"])
        assert p["sex"] in ("female", "male")
        assert date(1930, 1, 1) <= date.fromisoformat(p["birth_date"]) <= date(2005, 12, 31)
        assert re.fullmatch(r"\+372 5\d{3} \d{4}", p["phone"])
        assert re.fullmatch(r".+ \d+(-\d+)?, \d{5} [\w-]+", p["address"])
    # ensure_ascii=False: Estonian letters are written as themselves
    assert any(
        ch in line for line in [json.dumps(r, ensure_ascii=False) for r in records] for ch in "õäöü"
    )


def test_fhir_contract(exports: dict[str, demo.DemoResult], records: list[dict[str, Any]]) -> None:
    loinc = {
        "discharge_summary": "18842-5",
        "procedure_note": "28570-0",
        "outpatient_visit": "11506-3",
    }
    for doc, rec in zip(read_jsonl(exports["fhir"].export_path), records, strict=True):
        p = rec["patient"]
        assert doc["resourceType"] == "DocumentReference" and doc["status"] == "current"
        assert doc["id"] == rec["note_id"]
        coding = doc["type"]["coding"][0]
        assert coding["system"] == "http://loinc.org" and coding["code"] == loinc[rec["note_type"]]
        assert doc["type"]["text"] == rec["note_type"]
        assert doc["subject"] == {"reference": f"Patient/{p['patient_id']}", "display": p["name"]}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["date"])
        assert doc["date"][:10] == rec["visit_date"]
        (patient,) = doc["contained"]
        assert patient["resourceType"] == "Patient" and patient["id"] == "patient"
        assert patient["identifier"] == [
            {"system": "urn:oid:1.3.6.1.4.1.28284.6.2.2.1", "value": p["national_id"]},
            {"system": "urn:appliance:demo:mrn", "value": p["patient_id"]},
        ]
        name = patient["name"][0]
        assert name["text"] == p["name"] == " ".join([*name["given"], name["family"]])
        assert patient["gender"] == p["sex"] and patient["birthDate"] == p["birth_date"]
        assert patient["telecom"] == [{"system": "phone", "value": p["phone"]}]
        assert patient["address"] == [{"text": p["address"]}]
        event = doc["context"]["event"][0]["coding"][0]
        assert event == {"system": "http://hl7.org/fhir/sid/icd-10", "code": rec["diagnosis_code"]}
        assert doc["context"]["practiceSetting"] == {"text": rec["department"]}
        attachment = doc["content"][0]["attachment"]
        assert (
            attachment["contentType"] == "text/plain; charset=utf-8"
            and attachment["language"] == "en"
        )
        assert attachment["title"]


def test_patients_and_note_types(
    exports: dict[str, demo.DemoResult], records: list[dict[str, Any]]
) -> None:
    assert exports["csv"].patients == NOTES // 3
    by_patient: dict[str, set[tuple[str, ...]]] = {}
    for rec in records:
        p = rec["patient"]
        by_patient.setdefault(p["patient_id"], set()).add(tuple(p.values()))
    assert len(by_patient) == NOTES // 3  # every patient has at least one note
    assert all(len(v) == 1 for v in by_patient.values())  # a patient's details never change
    assert len({p for v in by_patient.values() for (_, _, p, *_) in v}) == len(by_patient)
    shares = Counter(r["note_type"] for r in records)
    for note_type, expected in (
        ("discharge_summary", 0.35),
        ("procedure_note", 0.30),
        ("outpatient_visit", 0.35),
    ):
        assert abs(shares[note_type] / NOTES - expected) < 0.1
    visits = [r["visit_date"] for r in records]
    assert visits == sorted(visits)


def test_national_ids_are_valid_and_consistent(records: list[dict[str, Any]]) -> None:
    for rec in records:
        p = rec["patient"]
        info = isikukood_birth_info(p["national_id"])
        assert info is not None, p["national_id"]
        assert info.birth == date.fromisoformat(p["birth_date"])
        assert info.female == (p["sex"] == "female")


# --- gold spans ----------------------------------------------------------------


def test_note_text_hygiene(gold: list[dict[str, Any]]) -> None:
    for g in gold:
        text = g["text"]
        assert "\r" not in text and "\t" not in text
        assert text == text.strip()
        assert all(line == line.rstrip() for line in text.split("\n"))
        assert "\n\n\n" not in text
        assert unicodedata.is_normalized("NFC", text)
        assert 250 <= len(text) <= 3500


def test_entity_spans(gold: list[dict[str, Any]]) -> None:
    vocab = demo.load_vocabulary()
    codes: dict[str, set[str]] = {}
    for entry in vocab.values():
        for surface in entry.surfaces:
            codes.setdefault(surface.lower(), set()).add(entry.code)
    per_label: Counter[str] = Counter()
    for g in gold:
        text, ents = g["text"], g["entities"]
        assert ents, g["id"]
        assert list(ents) == sorted(ents, key=lambda e: e["start"])
        for a, b in pairwise(ents):
            assert a["end"] <= b["start"], (g["id"], a, b)
        for e in ents:
            assert list(e) == ["start", "end", "label", "text", "code"]
            assert text[e["start"] : e["end"]] == e["text"]
            assert e["label"] in LABELS
            assert e["code"] in codes[e["text"].lower()], e
            per_label[e["label"]] += 1
    assert min(per_label.values()) > NOTES  # every label well represented


def test_every_vocabulary_mention_is_annotated(gold: list[dict[str, Any]]) -> None:
    """A lexicon annotator run over the notes would find exactly the gold mentions (or fewer)."""
    lower: set[str] = set()
    exact: set[str] = set()
    for entry in demo.load_vocabulary().values():
        for surface in entry.surfaces:
            (lower if surface == surface.lower() else exact).add(surface)

    def pattern(forms: set[str], flags: int = 0) -> re.Pattern[str]:
        alts = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        return re.compile(rf"(?<![\w-])(?:{alts})(?![\w-])", flags)

    patterns = (pattern(lower, re.IGNORECASE), pattern(exact))
    missed = []
    for g in gold:
        spans = [(e["start"], e["end"]) for e in g["entities"]]
        for pat in patterns:
            for m in pat.finditer(g["text"]):
                if not any(s <= m.start() and m.end() <= e for s, e in spans):
                    missed.append((g["id"], m.group(0)))
    assert missed == []


def test_identifiers(gold: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    with_text = 0
    seen_types: set[str] = set()
    for g, rec in zip(gold, records, strict=True):
        assert g["id"] == rec["note_id"]
        p = rec["patient"]
        meta = g["identifiers"][:6]
        assert [(i["type"], i["start"], i["end"]) for i in meta] == [
            (t, None, None) for t in IDENTIFIER_TYPES
        ]
        assert [i["value"] for i in meta] == [
            p["name"],
            p["national_id"],
            p["phone"],
            p["address"],
            p["birth_date"],
            p["patient_id"],
        ]
        in_text = g["identifiers"][6:]
        with_text += bool(in_text)
        for ident in in_text:
            assert g["text"][ident["start"] : ident["end"]] == ident["value"]
            kind, value = ident["type"], ident["value"]
            seen_types.add(kind)
            if kind == "NATIONAL_ID":
                assert value == p["national_id"]
            elif kind == "MEDICAL_RECORD_NUMBER":
                assert value == p["patient_id"]
            elif kind == "PHONE_NUMBER":
                assert p["phone"].endswith(value)
            elif kind == "ADDRESS":
                assert p["address"].startswith(value)
            elif kind == "DATE_OF_BIRTH":
                y, m, d = (int(x) for x in p["birth_date"].split("-"))
                assert value in (f"{d:02d}.{m:02d}.{y}", p["birth_date"]) or value.endswith(str(y))
            else:
                assert set(value.replace(",", "").lower().split()) <= set(
                    p["name"].replace("-", " ").lower().split()
                ) | {n.lower() for n in p["name"].split()}
    assert 0.15 <= with_text / NOTES <= 0.35
    assert seen_types == set(IDENTIFIER_TYPES)


# --- variety: a small GPT-2 must not be able to just copy templates --------------


def _sentences(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):
        out += [s for s in re.split(r"(?<=[.!?])\s+", line) if len(s.split()) >= 4]
    return out


def _variety(texts: list[str]) -> tuple[float, float]:
    """Share of distinct sentences (of 4+ words) and of distinct word 8-grams."""
    sentences = [s for t in texts for s in _sentences(t)]
    grams = [tuple(w[i : i + 8]) for t in texts for w in [t.split()] for i in range(len(w) - 7)]
    return len(set(sentences)) / len(sentences), len(set(grams)) / len(grams)


def test_notes_are_varied(gold: list[dict[str, Any]]) -> None:
    texts = [g["text"] for g in gold]
    sentence_share, gram_share = _variety(texts)
    # Measured: about 0.8 and 0.94; a copier of even 50 distinct notes scores below 0.2.
    assert sentence_share > 0.65
    assert gram_share > 0.85
    copier = [texts[k % 50] for k in range(len(texts))]
    copied_sentences, copied_grams = _variety(copier)
    assert copied_sentences < 0.3 and copied_grams < 0.3
    # No two notes share their wording once the numbers are masked.
    masked = {re.sub(r"\d", "0", t) for t in texts}
    assert len(masked) == len(texts)
    lengths = sorted(len(t) for t in texts)
    assert lengths[-1] > 3 * lengths[0]
