"""Export readers: each case writes a tiny real file and checks exactly what comes out.

Expected items are written compactly: ``("R", id, text)`` for a Record and
``("X", location, reason substring)`` for a Reject. Note texts of rows that
should be rejected contain "SECRET", and no reject reason may ever show it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from appliance.documents import Identifier, Record, Reject
from appliance.errors import InputError
from appliance.records.readers import ReaderOptions, detect_format, read_export

SECRET = "SECRET"


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def read(path: Path, fmt: str = "auto", **options: Any) -> list[Record | Reject]:
    items = list(read_export(path, fmt, ReaderOptions(**options)))
    for item in items:
        assert isinstance(item, Record | Reject)
        if isinstance(item, Reject):
            assert SECRET not in item.reason, item
            assert "\n" not in item.reason and "\r" not in item.reason
    return items


def compact(items: list[Record | Reject]) -> list[tuple[str, str, str]]:
    return [
        ("R", i.id, i.text) if isinstance(i, Record) else ("X", i.location, i.reason) for i in items
    ]


def check(items: list[Record | Reject], expected: list[tuple[str, str, str]]) -> None:
    got = compact(items)
    assert len(got) == len(expected), got
    for (kind, a, b), (want_kind, want_a, want_b) in zip(got, expected, strict=True):
        assert kind == want_kind, (got, expected)
        assert a == want_a, (got, expected)
        if kind == "R":
            assert b == want_b, (got, expected)
        else:
            assert want_b in b, (got, expected)


def fhir_doc(
    id: Any = "n1", text: str = "Patient stable.", content: Any = None, **extra: Any
) -> dict[str, Any]:
    """A DocumentReference shaped like the demo export's."""
    if content is None:
        content = [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "language": "en",
                    "title": "Progress note",
                    "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                }
            }
        ]
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": id,
        "status": "current",
        "type": {
            "coding": [
                {"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}
            ],
            "text": "progress_note",
        },
        "subject": {"reference": "Patient/P-0001", "display": "Mari Tamm"},
        "date": "2024-03-01T10:00:00Z",
        "contained": [
            {
                "resourceType": "Patient",
                "id": "patient",
                "identifier": [
                    {"system": "urn:oid:1.3.6.1.4.1.28284.6.2.2.1", "value": "49001010000"},
                    {"system": "urn:appliance:demo:mrn", "value": "P-0001"},
                ],
                "name": [{"text": "Mari Tamm", "family": "Tamm", "given": ["Mari"]}],
                "gender": "female",
                "birthDate": "1990-01-01",
                "telecom": [{"system": "phone", "value": "+372 5123 4567"}],
                "address": [{"text": "Pikk 1, Tallinn"}],
            }
        ],
        "context": {
            "event": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]}],
            "practiceSetting": {"text": "Cardiology"},
        },
        "content": content,
    }
    if id is None:
        del doc["id"]
    doc.update(extra)
    return doc


def b64(text: str | bytes) -> str:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def attachment(**fields: Any) -> list[dict[str, Any]]:
    return [{"attachment": fields}]


def ndjson(*objects: Any) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


# --------------------------------------------------------------------------- CSV

CSV_CASES: list[tuple[str, str, bytes | str, dict[str, Any], list[tuple[str, str, str]]]] = [
    (
        "good",
        "n.csv",
        "note_id,text\n1,first note\n2,second note\n",
        {},
        [("R", "1", "first note"), ("R", "2", "second note")],
    ),
    (
        "crlf inside quoted field kept",
        "n.csv",
        'note_id,text\r\n1,"line one\r\nline two"\r\n2,x\r\n',
        {},
        [("R", "1", "line one\r\nline two"), ("R", "2", "x")],
    ),
    (
        "text kept exactly (spaces, quotes)",
        "n.csv",
        'note_id,text\n1,"  He said ""no"".  "\n',
        {},
        [("R", "1", '  He said "no".  ')],
    ),
    (
        "utf-8 BOM is not part of the header",
        "n.csv",
        b"\xef\xbb\xbfnote_id,text\n1,caf\xc3\xa9\n",
        {},
        [("R", "1", "café")],
    ),
    (
        "empty text",
        "n.csv",
        "note_id,text\n1,\n2,ok\n",
        {},
        [("X", "row 2", "empty text"), ("R", "2", "ok")],
    ),
    (
        "whitespace-only text",
        "n.csv",
        'note_id,text\n1," \t "\n',
        {},
        [("X", "row 2", "empty text")],
    ),
    (
        "missing id",
        "n.csv",
        "note_id,text\n,SECRET note\n  ,SECRET note\n",
        {},
        [("X", "row 2", "missing id"), ("X", "row 3", "missing id")],
    ),
    (
        "text too long",
        "n.csv",
        "note_id,text\n1,SECRET-and-more\n2,short\n",
        {"max_note_chars": 10},
        [("X", "row 2", "text too long (15 characters; limit 10)"), ("R", "2", "short")],
    ),
    (
        "bad encoding rejects one row, others survive",
        "n.csv",
        b"note_id,text\n1,ok\n2,SECRET caf\xe9\n3,fine\n",
        {},
        # "note_id,text\n1,ok\n2,SECRET caf" is 30 bytes: the bad byte is at offset 30.
        [
            ("R", "1", "ok"),
            ("X", "row 3", "bad encoding: invalid utf-8 at byte offset 30"),
            ("R", "3", "fine"),
        ],
    ),
    (
        "wrong number of fields",
        "n.csv",
        "note_id,text\n1,SECRET,extra\n2\n3,ok\n",
        {},
        [
            ("X", "row 2", "wrong number of fields (row has 3 fields but header has 2)"),
            ("X", "row 3", "row has 1 fields but header has 2"),
            ("R", "3", "ok"),
        ],
    ),
    (
        "NUL in text",
        "n.csv",
        "note_id,text\n1,SECRET\x00binary\n",
        {},
        [("X", "row 2", "text contains NUL bytes")],
    ),
    (
        "id with control characters",
        "n.csv",
        "note_id,text\na\x01b,SECRET\n",
        {},
        [("X", "row 2", "id contains control or invalid characters")],
    ),
    (
        "id too long",
        "n.csv",
        "note_id,text\n" + "i" * 300 + ",SECRET\n",
        {},
        [("X", "row 2", "id too long (300 characters > 256)")],
    ),
    (
        "id whitespace stripped, leading zeros kept",
        "n.csv",
        "note_id,text\n  007 ,x\n",
        {},
        [("R", "007", "x")],
    ),
    (
        "empty and delimiter-only rows skipped but counted; a row of spaces is reported",
        "n.csv",
        'note_id,text\n\n1,"a\nb"\n,\n  \n2,\n',
        {},
        [
            ("R", "1", "a\nb"),
            ("X", "row 5 (line 6)", "wrong number of fields (row has 1 fields but header has 2)"),
            ("X", "row 6 (line 7)", "empty text"),
        ],
    ),
    (
        "tsv by suffix",
        "n.tsv",
        "note_id\ttext\n1\thas, commas\n",
        {},
        [("R", "1", "has, commas")],
    ),
    (
        "semicolon delimiter sniffed from the header",
        "n.csv",
        "note_id;text\n1;a, b\n",
        {},
        [("R", "1", "a, b")],
    ),
    (
        "explicit delimiter",
        "n.csv",
        "note_id|text\n1|x\n",
        {"delimiter": "|"},
        [("R", "1", "x")],
    ),
    (
        "cp1252 export",
        "n.csv",
        "note_id,text\n1,naïve café – “quoted”\n".encode("cp1252"),
        {"encoding": "cp1252"},
        [("R", "1", "naïve café – “quoted”")],
    ),
    (
        "cp1252 byte with no character",
        "n.csv",
        b"note_id,text\n1,ok\n2,SECRET\x81\n",
        {"encoding": "cp1252"},
        [("R", "1", "ok"), ("X", "row 3", "bad encoding: invalid cp1252 at byte offset 26")],
    ),
    (
        "utf-16 cut off mid-character: the last row is rejected, not the file",
        "n.tsv",
        "note_id\ttext\r\n1\tfine\r\n2\tSECRET".encode("utf-16") + b"\x00",
        {},
        [("R", "1", "fine"), ("X", "row 3", "bad encoding: invalid utf-16 (offset unknown)")],
    ),
    (
        "utf-16-le without BOM, named",
        "n.csv",
        "note_id,text\n1,a\n".encode("utf-16-le"),
        {"encoding": "utf-16-le"},
        [("R", "1", "a")],
    ),
    (
        "old Mac line endings (lone CR)",
        "n.csv",
        'note_id,text\r1,a\r2,"b\rc"\r',
        {},
        [("R", "1", "a"), ("R", "2", "b\rc")],
    ),
    (
        "utf-16 with BOM (spreadsheet 'Unicode text')",
        "n.tsv",
        "note_id\ttext\r\n1\tõnnelik\r\n".encode("utf-16"),
        {},
        [("R", "1", "õnnelik")],
    ),
    (
        "explicit id and text columns, case-insensitive",
        "n.csv",
        "DocID,Body,note_id,text\nd1,the body,x,y\n",
        {"id_column": "docid", "text_column": "Body"},
        [("R", "d1", "the body")],
    ),
    (
        "no trailing newline",
        "n.csv",
        "note_id,text\n1,last",
        {},
        [("R", "1", "last")],
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "options", "expected"),
    [c[1:] for c in CSV_CASES],
    ids=[c[0] for c in CSV_CASES],
)
def test_csv(
    tmp_path: Path, name: str, content: str | bytes, options: dict[str, Any], expected: list[Any]
) -> None:
    path = write(tmp_path, name, content)
    items = read(path, **options)
    check(items, expected)
    for item in items:
        assert item.source.startswith(str(path))


def test_csv_identifiers_and_metadata(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "n.csv",
        "note_id,patient_id,patient_name,national_id,phone,sex,department,text\n"
        "1,P1,Mari Tamm,,+372 555,F,,note one\n",
    )
    (record,) = read(path)
    assert isinstance(record, Record)
    assert record.identifiers == (
        Identifier("MEDICAL_RECORD_NUMBER", "P1", "patient_id"),
        Identifier("PERSON", "Mari Tamm", "patient_name"),
        Identifier("PHONE_NUMBER", "+372 555", "phone"),
    )
    assert record.metadata == {"sex": "F"}  # empty values are left out
    assert record.source == f"{path}:row 2"


def test_csv_explicit_identifier_and_metadata_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "n.csv",
        "note_id,guardian,patient_name,ward,sex,text\n1,Jaan Tamm,Mari Tamm,W3,F,note\n",
    )
    (record,) = read(path, identifier_columns=("guardian=PERSON",), metadata_columns=("ward",))
    assert isinstance(record, Record)
    assert record.identifiers == (Identifier("PERSON", "Jaan Tamm", "guardian"),)
    assert record.metadata == {"ward": "W3"}
    (record,) = read(path, identifier_columns=("guardian=PERSON", "patient_name"))
    assert isinstance(record, Record)
    assert [i.field for i in record.identifiers] == ["guardian", "patient_name"]
    assert record.metadata == {"ward": "W3", "sex": "F"}


def test_csv_line_too_long_is_one_reject(tmp_path: Path) -> None:
    # max_note_chars=10 caps a physical line at 8 * 10 bytes + 1 MiB.
    long_line = "2," + "S" * (2 << 20) + "\n"
    path = write(tmp_path, "n.csv", "note_id,text\n1,a\n" + long_line + "3,c\n")
    check(
        read(path, max_note_chars=10),
        [("R", "1", "a"), ("X", "row 3", "row too long"), ("R", "3", "c")],
    )


@pytest.mark.parametrize("name", ["n.csv", "n.tsv"])
def test_csv_note_far_over_the_limit_is_named_with_its_length(tmp_path: Path, name: str) -> None:
    """A note many times the limit (but on one line) is read whole, so its reject names
    the record and its length instead of a parser's "field too long"."""
    sep = "\t" if name.endswith(".tsv") else ","
    text = "S" * 3_000_000  # three times the default limit
    path = write(tmp_path, name, f"note_id{sep}text\nbig{sep}{text}\nok{sep}fine\n")
    items = read(path)
    check(
        items,
        [("X", "row 2", "text too long (3000000 characters; limit 1000000)"), ("R", "ok", "fine")],
    )
    assert isinstance(items[0], Reject) and items[0].record_id == "big"


# --------------------------------------------------------------------------- JSONL

JSONL_CASES: list[tuple[str, str, bytes | str, dict[str, Any], list[tuple[str, str, str]]]] = [
    (
        "good, int id converted",
        "n.jsonl",
        ndjson(
            {"note_id": 7, "text": "a"}, {"id": "b", "text": "bb"}, {"note_id": 12.0, "text": "c"}
        ),
        {},
        [("R", "7", "a"), ("R", "b", "bb"), ("R", "12", "c")],
    ),
    (
        "whitespace-only lines skipped silently",
        "n.jsonl",
        '\n   \n{"note_id": "1", "text": "a"}\n\t\n{"note_id": "2", "text": "b"}\n',
        {},
        [("R", "1", "a"), ("R", "2", "b")],
    ),
    (
        "CRLF line ends, text kept",
        "n.ndjson",
        '{"note_id": "1", "text": "a\\r\\nb "}\r\n{"note_id": "2", "text": "c"}\r\n',
        {},
        [("R", "1", "a\r\nb "), ("R", "2", "c")],
    ),
    (
        "BOM before the first line",
        "n.jsonl",
        b'\xef\xbb\xbf{"note_id": "1", "text": "a"}\n',
        {},
        [("R", "1", "a")],
    ),
    (
        "invalid JSON",
        "n.jsonl",
        '{"note_id": "1", "text": "SECRET\n{"note_id": "2", "text": "ok"}\n',
        {},
        [("X", "line 1", "invalid JSON ("), ("R", "2", "ok")],
    ),
    (
        "not an object",
        "n.jsonl",
        '["SECRET"]\n"SECRET"\n12\nnull\n',
        {},
        [
            ("X", "line 1", "JSON line is not an object (got array)"),
            ("X", "line 2", "JSON line is not an object (got string)"),
            ("X", "line 3", "(got number)"),
            ("X", "line 4", "(got null)"),
        ],
    ),
    (
        "missing id",
        "n.jsonl",
        ndjson(
            {"text": "SECRET"},
            {"note_id": None, "text": "SECRET"},
            {"note_id": "  ", "text": "SECRET"},
        ),
        {},
        [
            ("X", "line 1", "missing id (no field named note_id, id, document_id"),
            ("X", "line 2", "missing id"),
            ("X", "line 3", "missing id"),
        ],
    ),
    (
        "id of the wrong type",
        "n.jsonl",
        ndjson(
            {"note_id": 1.5, "text": "SECRET"},
            {"note_id": True, "text": "SECRET"},
            {"note_id": {"v": 1}, "text": "SECRET"},
        ),
        {},
        [
            ("X", "line 1", "id has the wrong type (number;"),
            ("X", "line 2", "id has the wrong type (boolean;"),
            ("X", "line 3", "id has the wrong type (object;"),
        ],
    ),
    (
        "text of the wrong type",
        "n.jsonl",
        ndjson({"note_id": "1", "text": 42}, {"note_id": "2", "text": ["SECRET"]}),
        {},
        [
            ("X", "line 1", "text has the wrong type (number; expected a string)"),
            ("X", "line 2", "text has the wrong type (array;"),
        ],
    ),
    (
        "empty or missing text",
        "n.jsonl",
        ndjson({"note_id": "1"}, {"note_id": "2", "text": None}, {"note_id": "3", "text": " \n "}),
        {},
        [
            ("X", "line 1", "empty text (no field named text, note_text"),
            ("X", "line 2", "empty text"),
            ("X", "line 3", "empty text"),
        ],
    ),
    (
        "text too long",
        "n.jsonl",
        ndjson({"note_id": "1", "text": "SECRET SECRET"}),
        {"max_note_chars": 5},
        [("X", "line 1", "text too long (13 characters; limit 5)")],
    ),
    (
        "NUL in text",
        "n.jsonl",
        ndjson({"note_id": "1", "text": "SECRET\x00"}),
        {},
        [("X", "line 1", "text contains NUL bytes")],
    ),
    (
        "lone surrogate escape in text",
        "n.jsonl",
        '{"note_id": "1", "text": "SECRET \\ud800"}\n',
        {},
        [("X", "line 1", "text contains invalid characters")],
    ),
    (
        "bad encoding",
        "n.jsonl",
        b'{"note_id": "1", "text": "a"}\n{"note_id": "2", "text": "SECRET \xff"}\n',
        {},
        # Line 1 is 30 bytes; the bad byte is 33 bytes into line 2.
        [("R", "1", "a"), ("X", "line 2", "bad encoding: invalid utf-8 at byte offset 63")],
    ),
    (
        "latin-1 export",
        "n.jsonl",
        '{"note_id": "1", "text": "Jürgen"}\n'.encode("latin-1"),
        {"encoding": "latin-1"},
        [("R", "1", "Jürgen")],
    ),
    (
        "explicit dotted id and text fields",
        "n.jsonl",
        ndjson({"doc": {"id": "d1"}, "body": {"text": "hello"}, "note_id": "no", "text": "no"}),
        {"id_column": "doc.id", "text_column": "body.text"},
        [("R", "d1", "hello")],
    ),
    (
        "a named field absent from a line",
        "n.jsonl",
        ndjson({"id": "1", "body": "SECRET"}, {"doc_id": "2", "text": "SECRET"}),
        {"id_column": "doc_id", "text_column": "body"},
        [
            ("X", "line 1", "missing id (no field doc_id)"),
            ("X", "line 2", "empty text (no field body)"),
        ],
    ),
    (
        ".json with one object per line",
        "n.json",
        ndjson({"note_id": "1", "text": "a"}, {"note_id": "2", "text": "b"}),
        {},
        [("R", "1", "a"), ("R", "2", "b")],
    ),
    (
        ".json holding an array",
        "n.json",
        json.dumps([{"note_id": "1", "text": "a"}, "SECRET", {"text": "SECRET"}], indent=2),
        {},
        [
            ("R", "1", "a"),
            ("X", "item 2", "JSON item is not an object (got string)"),
            ("X", "item 3", "missing id"),
        ],
    ),
    (
        ".json holding one pretty-printed object",
        "n.json",
        json.dumps({"note_id": "1", "text": "a"}, indent=2),
        {},
        [("R", "1", "a")],
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "options", "expected"),
    [c[1:] for c in JSONL_CASES],
    ids=[c[0] for c in JSONL_CASES],
)
def test_jsonl(
    tmp_path: Path, name: str, content: str | bytes, options: dict[str, Any], expected: list[Any]
) -> None:
    path = write(tmp_path, name, content)
    assert detect_format(path) == "jsonl"
    check(read(path, **options), expected)


def test_jsonl_nested_identifiers_and_metadata(tmp_path: Path) -> None:
    line = {
        "note_id": "n1",
        "visit": {"date": "2024-01-02", "ward": 3, "urgent": False},
        "patient": {"name": "Mari Tamm", "phone": ["555 1", "555 2"], "sex": "F", "email": ""},
        "tags": ["a", "b"],
        "empty": None,
        "text": "t",
    }
    (record,) = read(write(tmp_path, "n.jsonl", ndjson(line)))
    assert isinstance(record, Record)
    assert record.identifiers == (
        Identifier("PERSON", "Mari Tamm", "patient.name"),
        Identifier("PHONE_NUMBER", "555 1", "patient.phone"),
        Identifier("PHONE_NUMBER", "555 2", "patient.phone"),
    )
    # Metadata values are always strings; lists are JSON-encoded; null and "" left out.
    assert record.metadata == {
        "visit.date": "2024-01-02",
        "visit.ward": "3",
        "visit.urgent": "false",
        "patient.sex": "F",
        "tags": '["a", "b"]',
    }
    assert record.source.endswith(":line 1")


def test_jsonl_explicit_metadata_and_identifier_paths(tmp_path: Path) -> None:
    line = {
        "note_id": "n1",
        "patient": {"name": "A", "kin": "B"},
        "visit": {"ward": "W"},
        "x": 1,
        "text": "t",
    }
    path = write(tmp_path, "n.jsonl", ndjson(line))
    (record,) = read(path, identifier_columns=("patient.kin=PERSON",), metadata_columns=("visit",))
    assert isinstance(record, Record)
    assert record.identifiers == (Identifier("PERSON", "B", "patient.kin"),)
    assert record.metadata == {"visit.ward": "W"}


def test_jsonl_line_too_long(tmp_path: Path) -> None:
    long_line = json.dumps({"note_id": "2", "text": "S" * (2 << 20)}) + "\n"
    path = write(
        tmp_path,
        "n.jsonl",
        ndjson({"note_id": "1", "text": "a"}) + long_line + ndjson({"note_id": "3", "text": "c"}),
    )
    check(
        read(path, max_note_chars=10),
        [("R", "1", "a"), ("X", "line 2", "line too long (more than"), ("R", "3", "c")],
    )


# --------------------------------------------------------------------------- txt


def test_txt_folder(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    write(root, "b.txt", "second\r\nnote\n")
    write(root, "a.txt", "first")
    write(root, "sub/c.TXT", b"\xef\xbb\xbfwith BOM")
    write(root, "sub/d.txt", b"SECRET \xff")
    write(root, "empty.txt", "  \n")
    write(root, "bin.txt", b"SECRET\x00\x01")
    write(root, "long.txt", "SECRET " * 10)
    write(root, ".hidden.txt", "x")
    write(root, ".git/e.txt", "x")
    write(root, "readme.md", "x")  # not a note: ignored, yields nothing
    items = read(root, max_note_chars=50)
    check(
        items,
        [
            ("R", "a", "first"),
            ("R", "b", "second\r\nnote\n"),
            ("X", "file bin.txt", "text contains NUL bytes"),
            ("X", "file empty.txt", "empty text"),
            ("X", "file long.txt", "text too long (70 characters; limit 50)"),
            ("R", "sub/c", "with BOM"),
            ("X", "file sub/d.txt", "bad encoding: invalid utf-8 at byte offset 7"),
        ],
    )
    first = items[0]
    assert isinstance(first, Record)
    assert first.metadata == {"file": "a.txt"}
    assert first.source == "a.txt:file a.txt"
    rejected = items[-1]
    assert isinstance(rejected, Reject)
    assert (rejected.source, rejected.record_id) == ("sub/d.txt", "sub/d")


def test_txt_single_file_and_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, "visit 1.txt", "Köhler – café".encode("cp1252"))
    assert detect_format(path) == "txt"
    (record,) = read(path, encoding="cp1252")
    assert isinstance(record, Record)
    assert (record.id, record.text, record.metadata) == (
        "visit 1",
        "Köhler – café",
        {"file": "visit 1.txt"},
    )


def test_txt_file_far_too_long_is_not_read_whole(tmp_path: Path) -> None:
    path = write(tmp_path, "big.txt", "S" * 1000)
    check(
        read(path, max_note_chars=10), [("X", "file big.txt", "text too long (file of more than")]
    )


# --------------------------------------------------------------------------- FHIR


def test_fhir_demo_document_reference(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.ndjson", ndjson(fhir_doc(text="BP 140/90.\nPlan: review.")))
    assert detect_format(path) == "fhir"
    (record,) = read(path)
    assert isinstance(record, Record)
    assert (record.id, record.text) == ("n1", "BP 140/90.\nPlan: review.")
    assert record.metadata == {
        "note_type": "progress_note",
        "loinc_code": "11506-3",
        "date": "2024-03-01T10:00:00Z",
        "status": "current",
        "diagnosis_code": "I10",
        "department": "Cardiology",
        "sex": "female",
        "language": "en",
    }
    assert [(i.type, i.value) for i in record.identifiers] == [
        ("PERSON", "Mari Tamm"),
        ("MEDICAL_RECORD_NUMBER", "P-0001"),
        ("NATIONAL_ID", "49001010000"),
        ("DATE_OF_BIRTH", "1990-01-01"),
        ("PHONE_NUMBER", "+372 5123 4567"),
        ("ADDRESS", "Pikk 1, Tallinn"),
    ]
    assert record.source == f"{path}:line 1"


FHIR_CASES: list[tuple[str, str, dict[str, Any], list[tuple[str, str, str]]]] = [
    (
        "not a DocumentReference",
        ndjson({"resourceType": "Patient", "id": "p1"}, {"id": "x"}),
        {},
        [
            ("X", "line 1", "not a DocumentReference (resourceType=Patient)"),
            ("X", "line 2", "not a DocumentReference (no resourceType)"),
        ],
    ),
    (
        "no content attachment",
        ndjson(fhir_doc(content=[]), fhir_doc(id="n2", content=[{"format": {}}])),
        {},
        [("X", "line 1", "no content attachment"), ("X", "line 2", "no content attachment")],
    ),
    (
        "url only",
        ndjson(fhir_doc(content=attachment(contentType="text/plain", url="http://x/SECRET"))),
        {},
        [("X", "line 1", "attachment has no inline data (only a url)")],
    ),
    (
        "unsupported contentType",
        ndjson(
            fhir_doc(content=attachment(contentType="application/pdf", data=b64("SECRET"))),
            fhir_doc(id="n2", content=attachment(data=b64("SECRET"))),
        ),
        {},
        [
            ("X", "line 1", "unsupported contentType (application/pdf; only text/plain is read)"),
            ("X", "line 2", "unsupported contentType (none given"),
        ],
    ),
    (
        "text/plain preferred over pdf; first text/plain wins",
        ndjson(
            fhir_doc(
                content=[
                    {"attachment": {"contentType": "application/pdf", "data": b64("%PDF")}},
                    {"attachment": {"contentType": "text/plain", "data": b64("first")}},
                    {"attachment": {"contentType": "text/plain", "data": b64("second")}},
                ]
            )
        ),
        {},
        [("R", "n1", "first")],
    ),
    (
        "bad base64",
        ndjson(
            fhir_doc(content=[{"attachment": {"contentType": "text/plain", "data": "SECRET!!"}}])
        ),
        {},
        [("X", "line 1", "bad base64 in content[0].attachment.data")],
    ),
    (
        "wrapped base64 is fine",
        ndjson(fhir_doc(content=attachment(contentType="text/plain", data="aGVs\nbG8=\n"))),
        {},
        [("R", "n1", "hello")],
    ),
    (
        "missing id",
        ndjson(fhir_doc(id=None), fhir_doc(id=" ")),
        {},
        [("X", "line 1", "missing id"), ("X", "line 2", "missing id")],
    ),
    (
        "charset latin-1 honoured",
        ndjson(
            fhir_doc(
                content=attachment(
                    contentType="text/plain; charset=ISO-8859-1",
                    data=b64("Jürgen".encode("latin-1")),
                )
            )
        ),
        {},
        [("R", "n1", "Jürgen")],
    ),
    (
        "undecodable attachment",
        ndjson(
            fhir_doc(
                content=attachment(contentType="text/plain;charset=utf-8", data=b64(b"SECRET \xff"))
            )
        ),
        {},
        [
            (
                "X",
                "line 1",
                "bad encoding: invalid utf-8 in content[0].attachment.data at byte offset 7",
            )
        ],
    ),
    (
        "unsupported charset",
        ndjson(
            fhir_doc(
                content=attachment(contentType="text/plain; charset=x-nope", data=b64("SECRET"))
            )
        ),
        {},
        [("X", "line 1", "unsupported charset (x-nope in content[0].attachment.contentType)")],
    ),
    (
        "a transform codec is not a charset",
        ndjson(
            fhir_doc(
                content=attachment(contentType="text/plain; charset=rot13", data=b64("SECRET"))
            )
        ),
        {},
        [("X", "line 1", "unsupported charset (rot13 in")],
    ),
    (
        "empty and too long text",
        ndjson(fhir_doc(text=""), fhir_doc(id="n2", text="SECRET SECRET")),
        {"max_note_chars": 8},
        [("X", "line 1", "empty text"), ("X", "line 2", "text too long (13 characters; limit 8)")],
    ),
    (
        "Bundle entries",
        ndjson(
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [
                    {"resource": fhir_doc(id="a", text="A")},
                    {"resource": {"resourceType": "OperationOutcome"}},
                    {"fullUrl": "x"},
                    {"resource": fhir_doc(id="b", text="B")},
                ],
            },
            {"resourceType": "Bundle", "type": "collection", "entry": []},
            {"resourceType": "Bundle", "type": "document", "entry": [{"resource": fhir_doc()}]},
            {"resourceType": "Bundle", "type": ["x"], "entry": [{"resource": fhir_doc()}]},
        ),
        {},
        [
            ("R", "a", "A"),
            ("X", "line 1 entry 2", "not a DocumentReference (resourceType=OperationOutcome)"),
            ("X", "line 1 entry 3", "Bundle entry has no resource"),
            ("R", "b", "B"),
            ("X", "line 2", "Bundle has no entries"),
            ("X", "line 3", "unsupported Bundle type (type=document)"),
            ("X", "line 4", "unsupported Bundle type (type=['x'])"),
        ],
    ),
    (
        "invalid JSON and non-object lines",
        '{"resourceType": "DocumentReference", SECRET\n[1]\n\n' + ndjson(fhir_doc(text="ok")),
        {},
        [
            ("X", "line 1", "invalid JSON"),
            ("X", "line 2", "JSON line is not an object (got array)"),
            ("R", "n1", "ok"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("content", "options", "expected"), [c[1:] for c in FHIR_CASES], ids=[c[0] for c in FHIR_CASES]
)
def test_fhir(tmp_path: Path, content: str, options: dict[str, Any], expected: list[Any]) -> None:
    check(read(write(tmp_path, "n.ndjson", content), "fhir", **options), expected)


def test_fhir_bundle_json_file(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": fhir_doc(id="a", text="A")}, {"resource": fhir_doc(id=3, text="B")}],
    }
    path = write(tmp_path, "bundle.json", json.dumps(bundle, indent=2))
    assert detect_format(path) == "fhir"
    items = read(path)
    check(items, [("R", "a", "A"), ("R", "3", "B")])
    assert items[1].source == f"{path}:entry 2"


def test_fhir_identifier_variants(tmp_path: Path) -> None:
    doc = fhir_doc(
        subject={"reference": "https://ehr.example/fhir/Patient/123/_history/2"},
        contained=[
            {
                "resourceType": "Patient",
                "identifier": [
                    {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"},
                    {"type": {"coding": [{"code": "NNSWE"}]}, "value": "19900101-1234"},
                    {"system": "urn:hospital:mrn", "value": "H-9"},
                ],
                "name": [{"family": "Virtanen", "given": ["Matti", "Olavi"]}],
                "telecom": [
                    {"system": "email", "value": "m@example.org"},
                    {"system": "url", "value": "x"},
                ],
                "address": [{"line": ["Mannerheimintie 1"], "city": "Helsinki"}],
            }
        ],
    )
    (record,) = read(write(tmp_path, "n.ndjson", ndjson(doc)))
    assert isinstance(record, Record)
    assert [(i.type, i.value) for i in record.identifiers] == [
        ("MEDICAL_RECORD_NUMBER", "123"),
        ("PERSON", "Matti Olavi Virtanen"),
        ("NATIONAL_ID", "123-45-6789"),
        ("NATIONAL_ID", "19900101-1234"),
        ("MEDICAL_RECORD_NUMBER", "H-9"),
        ("EMAIL_ADDRESS", "m@example.org"),
        ("ADDRESS", "Mannerheimintie 1, Helsinki"),
    ]
    assert "sex" not in record.metadata


def test_fhir_metadata_columns_filter(tmp_path: Path) -> None:
    (record,) = read(
        write(tmp_path, "n.ndjson", ndjson(fhir_doc())), metadata_columns=("department", "sex")
    )
    assert isinstance(record, Record)
    assert record.metadata == {"department": "Cardiology", "sex": "female"}


# --------------------------------------------------------------------------- the demo export


DEMO_HEADER = (
    "note_id,patient_id,patient_name,national_id,birth_date,sex,phone,address,"
    "note_type,department,visit_date,diagnosis_code,text"
)


def test_demo_shaped_exports_agree(tmp_path: Path) -> None:
    """The same note written as the demo's CSV, JSONL and FHIR gives the same record content."""
    note = {
        "note_id": "N000001",
        "note_type": "discharge_summary",
        "department": "Cardiology",
        "visit_date": "2024-05-02",
        "diagnosis_code": "I21.9",
        "patient": {
            "patient_id": "P000042",
            "name": "Mari Tamm",
            "national_id": "49001010000",
            "birth_date": "1990-01-01",
            "sex": "F",
            "phone": "+372 5123 4567",
            "address": "Pikk 1, Tallinn",
        },
        "text": 'Patient admitted with chest pain.\nStarted aspirin 100 mg, "as needed".',
    }
    p = note["patient"]
    quoted = '"' + note["text"].replace('"', '""') + '"'
    csv_row = ",".join(
        [note["note_id"], p["patient_id"], f'"{p["name"]}"', p["national_id"], p["birth_date"], p["sex"],
         p["phone"], f'"{p["address"]}"', note["note_type"], note["department"], note["visit_date"],
         note["diagnosis_code"], quoted]
    )  # fmt: skip
    csv_path = write(tmp_path, "demo.csv", DEMO_HEADER + "\r\n" + csv_row + "\r\n")
    jsonl_path = write(tmp_path, "demo.jsonl", ndjson(note))
    doc = fhir_doc(
        id=note["note_id"],
        text=note["text"],
        subject={"reference": f"Patient/{p['patient_id']}", "display": p["name"]},
    )
    fhir_path = write(tmp_path, "demo.ndjson", ndjson(doc))

    csv_record, jsonl_record, fhir_record = (
        read(path)[0] for path in (csv_path, jsonl_path, fhir_path)
    )
    for record in (csv_record, jsonl_record, fhir_record):
        assert isinstance(record, Record)
        assert (record.id, record.text) == (note["note_id"], note["text"])
    assert isinstance(csv_record, Record) and isinstance(jsonl_record, Record)
    expected_types = {
        "MEDICAL_RECORD_NUMBER": "P000042",
        "PERSON": "Mari Tamm",
        "NATIONAL_ID": "49001010000",
        "DATE_OF_BIRTH": "1990-01-01",
        "PHONE_NUMBER": "+372 5123 4567",
        "ADDRESS": "Pikk 1, Tallinn",
    }
    assert {i.type: i.value for i in csv_record.identifiers} == expected_types
    assert {i.type: i.value for i in jsonl_record.identifiers} == expected_types
    assert csv_record.metadata == {
        "sex": "F",
        "note_type": "discharge_summary",
        "department": "Cardiology",
        "visit_date": "2024-05-02",
        "diagnosis_code": "I21.9",
    }
    assert jsonl_record.metadata == {
        "note_type": "discharge_summary",
        "department": "Cardiology",
        "visit_date": "2024-05-02",
        "diagnosis_code": "I21.9",
        "patient.sex": "F",
    }


# --------------------------------------------------------------------------- formats and errors


DETECT_CASES: list[tuple[str, str | bytes, str]] = [
    ("a.csv", "anything", "csv"),
    ("a.TSV", "anything", "csv"),
    ("a.txt", "anything", "txt"),
    ("a.jsonl", '{"note_id": "1", "text": "x"}\n', "jsonl"),
    ("a.ndjson", '{"resourceType": "DocumentReference"}\n', "fhir"),
    ("a.jsonl", '\n\n{"resourceType": "Bundle"}\n', "fhir"),
    ("a.json", '{\n  "resourceType": "Bundle",\n  "entry": []\n}\n', "fhir"),
    ("a.json", '[\n  {"note_id": "1"}\n]\n', "jsonl"),
    ("a.jsonl", '{"note_id": "1", "text": "quoting \\"resourceType\\": x"}\n', "jsonl"),
    ("a.jsonl", "", "jsonl"),
    ("export.dat", '{"note_id": "1", "text": "x"}\n', "jsonl"),
    ("export.dat", b'\xef\xbb\xbf{"resourceType": "DocumentReference"}\n', "fhir"),
    ("export", "Note_ID;Patient_Name;Text\n1;a;b\n", "csv"),
]


@pytest.mark.parametrize(("name", "content", "expected"), DETECT_CASES)
def test_detect_format(tmp_path: Path, name: str, content: str | bytes, expected: str) -> None:
    assert detect_format(write(tmp_path, name, content)) == expected


def test_detect_format_folder(tmp_path: Path) -> None:
    assert detect_format(tmp_path) == "txt"


INPUT_ERROR_CASES: list[tuple[str, str, str | bytes | None, str, dict[str, Any], list[str]]] = [
    ("missing path", "nope.csv", None, "auto", {}, ["no such file"]),
    (
        "no text column",
        "n.csv",
        "note_id,a,b\n1,2,3\n",
        "auto",
        {},
        ["no text column", "a, b", "--text-column"],
    ),
    ("no id column", "n.csv", "text,a\nx,y\n", "auto", {}, ["no id column", "--id-column"]),
    (
        "named column missing",
        "n.csv",
        "note_id,text\n",
        "auto",
        {"text_column": "body"},
        ["no column body", "--text-column"],
    ),
    (
        "identifier column missing",
        "n.csv",
        "note_id,text\n",
        "auto",
        {"identifier_columns": ("patient_name",)},
        ["no column patient_name", "--identifier-column"],
    ),
    (
        "identifier column of unknown type",
        "n.csv",
        "note_id,text,kin\n",
        "auto",
        {"identifier_columns": ("kin",)},
        ["kin=PERSON"],
    ),
    (
        "metadata column missing",
        "n.csv",
        "note_id,text\n",
        "auto",
        {"metadata_columns": ("ward",)},
        ["no column ward"],
    ),
    ("empty csv", "n.csv", "", "auto", {}, ["empty file", "header"]),
    (
        "csv header not in the encoding",
        "n.csv",
        b"note_id,t\xe9xt\n",
        "auto",
        {},
        ["header is not valid utf-8", "--encoding"],
    ),
    (
        "utf-16 without BOM",
        "n.csv",
        "note_id,text\n".encode("utf-16-le"),
        "auto",
        {},
        ["no id column", "utf-16"],
    ),
    (
        "utf-16 named but no BOM",
        "n.csv",
        "note_id,text\n".encode("utf-16-le"),
        "auto",
        {"encoding": "utf-16"},
        ["cannot decode the header as utf-16", "--encoding"],
    ),
    (
        "unknown encoding",
        "n.csv",
        "note_id,text\n",
        "auto",
        {"encoding": "klingon"},
        ["unknown encoding", "--encoding"],
    ),
    (
        "non-text codec",
        "n.csv",
        "note_id,text\n",
        "auto",
        {"encoding": "rot13"},
        ["unknown encoding"],
    ),
    (
        "unknown format name",
        "n.csv",
        "note_id,text\n",
        "xml",
        {},
        ["unknown export format", "--format"],
    ),
    (
        "unknown content",
        "export.bin",
        b"\x89PNG\r\n\x1a\n",
        "auto",
        {},
        ["cannot tell the export format", "--format csv|jsonl|txt|fhir"],
    ),
    (
        "broken single JSON document",
        "n.json",
        '{\n  "resourceType": "Bundle",\n',
        "auto",
        {},
        ["not valid JSON", "line"],
    ),
    (
        "bad delimiter option",
        "n.csv",
        "note_id,text\n",
        "auto",
        {"delimiter": ",,"},
        ["--delimiter"],
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "fmt", "options", "message_parts"),
    [c[1:] for c in INPUT_ERROR_CASES],
    ids=[c[0] for c in INPUT_ERROR_CASES],
)
def test_input_errors(
    tmp_path: Path,
    name: str,
    content: str | bytes | None,
    fmt: str,
    options: dict[str, Any],
    message_parts: list[str],
) -> None:
    path = tmp_path / name if content is None else write(tmp_path, name, content)
    with pytest.raises(InputError) as info:
        read_export(path, fmt, ReaderOptions(**options))  # raised before iterating
    message = str(info.value)
    assert "\n" not in message
    assert name in message
    for part in message_parts:
        assert part in message, message


def test_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write(empty, "readme.md", "x")
    write(empty, ".hidden/a.txt", "x")
    with pytest.raises(InputError, match=r"empty: no \.txt files"):
        read_export(empty)
    with pytest.raises(InputError, match="is a folder"):
        read_export(empty, "csv")


def test_unreadable_file_is_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "n.csv", "note_id,text\n1,a\n")
    path.chmod(0)
    try:
        with path.open("rb"):
            pytest.skip("file permissions are not enforced for this user (root)")
    except PermissionError:
        pass
    with pytest.raises(InputError, match=r"n\.csv: cannot read"):
        read_export(path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "txt", "fhir"])
def test_reads_the_demo_generator_export(tmp_path: Path, fmt: str) -> None:
    """The demo generator's real output: no rejects, and texts equal the gold sidecar's."""
    demo = pytest.importorskip("appliance.demo")
    result = demo.run(tmp_path / fmt, notes=25, fmt=fmt, seed=7)
    assert detect_format(result.export_path) == fmt
    items = read(result.export_path)
    assert all(isinstance(i, Record) for i in items), [i for i in items if isinstance(i, Reject)]
    gold = {}
    for line in result.gold_path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        gold[entry["id"]] = entry["text"]
    assert {i.id: i.text for i in items if isinstance(i, Record)} == gold
    if fmt != "txt":
        record = items[0]
        assert isinstance(record, Record)
        kinds = {i.type for i in record.identifiers}
        assert {"PERSON", "MEDICAL_RECORD_NUMBER", "NATIONAL_ID", "DATE_OF_BIRTH"} <= kinds
