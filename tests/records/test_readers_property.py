"""Property tests: no input bytes crash a reader, and every input row is accounted for."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.documents import Record, Reject
from appliance.errors import InputError
from appliance.records.readers import ReaderOptions, read_export

# READERS_EXAMPLES=5000 for a longer fuzzing run; the default keeps each test to a few seconds.
FAST = settings(
    max_examples=int(os.environ.get("READERS_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Module-scoped: hypothesis reruns the test body many times within one function call.
    return tmp_path_factory.mktemp("readers-property")


def consume(path: Path, fmt: str, options: ReaderOptions) -> list[Record | Reject] | None:
    """Everything a reader yields, or None if it refused the export with InputError."""
    try:
        items = list(read_export(path, fmt, options))
    except InputError as exc:
        assert "\n" not in exc.message
        return None
    for item in items:
        assert isinstance(item, Record | Reject), item
        if isinstance(item, Reject):
            assert item.reason and "\n" not in item.reason
        else:
            assert item.id and item.text.strip()
            assert len(item.text) <= options.max_note_chars
            item.text.encode("utf-8")  # storable: no lone surrogates
            json.dumps(item.as_dict(), ensure_ascii=False).encode("utf-8")
    return items


# Pieces that steer random bytes toward the parsers' interesting paths.
FRAGMENTS = [
    b"note_id,text\n",
    b"note_id\ttext\r\n",
    b"note_id;text\n",
    b",",
    b";",
    b"\t",
    b'"',
    b'""',
    b"\n",
    b"\r",
    b"\r\n",
    b" ",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b'"note_id"',
    b'"id"',
    b'"text"',
    b'"resourceType"',
    b'"DocumentReference"',
    b'"Bundle"',
    b'"entry"',
    b'"resource"',
    b'"content"',
    b'"attachment"',
    b'"data"',
    b'"contentType"',
    b'"text/plain"',
    b"1",
    b"null",
    b"\\u0000",
    b"\\ud800",
]
RANDOM_BYTES = st.one_of(
    st.binary(max_size=400),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=6)), max_size=60).map(
        b"".join
    ),
)
OPTIONS = st.builds(
    ReaderOptions,
    encoding=st.sampled_from(["utf-8", "cp1252", "latin-1", "utf-16"]),
    max_note_chars=st.sampled_from([3, 50, 1_000_000]),
)


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("auto", "export.csv"),
        ("auto", "export.tsv"),
        ("auto", "export.jsonl"),
        ("auto", "export.json"),
        ("auto", "export.txt"),
        ("auto", "export.dat"),
        ("csv", "export.dat"),
        ("jsonl", "export.dat"),
        ("fhir", "export.ndjson"),
        ("fhir", "export.json"),
    ],
)
@FAST
@given(data=RANDOM_BYTES, options=OPTIONS)
def test_random_bytes_never_crash(
    scratch: Path, fmt: str, name: str, data: bytes, options: ReaderOptions
) -> None:
    path = scratch / name
    path.write_bytes(data)
    consume(path, fmt, options)


@FAST
@given(
    files=st.dictionaries(
        st.sampled_from(["a.txt", "b.TXT", "sub/c.txt", ".h.txt", "d.md", "sub/.x/e.txt"]),
        RANDOM_BYTES,
    ),
    options=OPTIONS,
)
def test_txt_folder_every_visible_txt_file_is_one_item(
    scratch: Path, files: dict[str, bytes], options: ReaderOptions
) -> None:
    root = scratch / f"notes-{len(list(scratch.iterdir()))}"
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    root.mkdir(exist_ok=True)
    items = consume(root, "auto", options)
    visible = [rel for rel in files if rel.lower().endswith(".txt") and "/." not in "/" + rel]
    if not visible:
        assert items is None
        return
    assert items is not None
    assert len(items) == len(visible)


# --------------------------------------------------------------------------- accounting

IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=8)
# Any text, including quotes, delimiters, CR/LF, NUL and whitespace-only strings.
TEXTS = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "\r\n", 'a "b", c\r\nd', "\x00"]))
# Garbage lines stay on one physical line: no line breaks and no quotes that could open a field.
GARBAGE = st.text(
    alphabet=st.characters(blacklist_characters='"\r\n', blacklist_categories=("Cs",)), max_size=30
)


def expected_outcome(rid: str, text: str) -> tuple[str, str] | None:
    """The record a well-formed row must become, or None when it must be a reject."""
    if not text or text.isspace() or "\x00" in text:
        return None
    return rid, text


@FAST
@given(
    rows=st.lists(st.one_of(st.tuples(IDS, TEXTS), GARBAGE), max_size=25),
    terminator=st.sampled_from(["\n", "\r\n"]),
)
def test_csv_accounts_for_every_row(
    scratch: Path, rows: list[tuple[str, str] | str], terminator: str
) -> None:
    out = io.StringIO()
    # QUOTE_MINIMAL only quotes the characters of the line terminator, so with "\n" a lone
    # "\r" would be written bare and read (by any reader) as a line break: quote everything.
    quoting = csv.QUOTE_MINIMAL if terminator == "\r\n" else csv.QUOTE_ALL
    writer = csv.writer(out, lineterminator=terminator, quoting=quoting)
    writer.writerow(["note_id", "text"])
    expected: list[tuple[str, str] | str | None] = []
    for row in rows:
        if isinstance(row, tuple):
            writer.writerow(row)
            expected.append(expected_outcome(*row))
        else:
            out.write(row + terminator)
            blank = all(not field for field in row.split(","))
            if not blank:
                expected.append("garbage")
    path = scratch / "rows.csv"
    path.write_bytes(out.getvalue().encode("utf-8"))
    items = consume(path, "csv", ReaderOptions())
    assert items is not None
    assert len(items) == len(expected)
    for item, want in zip(items, expected, strict=True):
        if want == "garbage":
            continue
        if want is None:
            assert isinstance(item, Reject)
        else:
            assert isinstance(item, Record)
            assert (item.id, item.text) == want


@FAST
@given(
    lines=st.lists(
        st.one_of(
            st.tuples(IDS, TEXTS, st.booleans()),
            st.text(
                alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
                max_size=30,
            ),
        ),
        max_size=25,
    ),
    terminator=st.sampled_from(["\n", "\r\n"]),
)
def test_jsonl_accounts_for_every_line(
    scratch: Path, lines: list[tuple[str, str, bool] | str], terminator: str
) -> None:
    chunks = []
    expected: list[tuple[str, str] | str | None] = []
    for line in lines:
        if isinstance(line, tuple):
            rid, text, ascii_only = line
            chunks.append(json.dumps({"note_id": rid, "text": text}, ensure_ascii=ascii_only))
            expected.append(expected_outcome(rid, text))
        else:
            # A BOM at the very start of the file is not content.
            visible = line[1:] if not chunks and line.startswith("\ufeff") else line
            chunks.append(line)
            if visible.strip(" \t\r"):
                expected.append("garbage")
    path = scratch / "lines.jsonl"
    path.write_bytes("".join(c + terminator for c in chunks).encode("utf-8"))
    items = consume(path, "jsonl", ReaderOptions())
    assert items is not None
    assert len(items) == len(expected)
    for item, want in zip(items, expected, strict=True):
        if want == "garbage":
            continue
        if want is None:
            assert isinstance(item, Reject)
        else:
            assert isinstance(item, Record)
            assert (item.id, item.text) == want


# --------------------------------------------------------------------------- FHIR

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
DOC_PATHS = [
    ("id",),
    ("resourceType",),
    ("content",),
    ("content", 0),
    ("content", 0, "attachment"),
    ("content", 0, "attachment", "data"),
    ("content", 0, "attachment", "contentType"),
    ("subject",),
    ("subject", "reference"),
    ("contained",),
    ("contained", 0, "name"),
    ("contained", 0, "identifier"),
    ("contained", 0, "telecom"),
    ("contained", 0, "address"),
    ("type",),
    ("context",),
    ("context", "event"),
]

BUNDLE_PATHS = [("type",), ("entry",), ("entry", 0), ("entry", 1, "resource")]


def base_doc(text: str) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": "n1",
        "subject": {"reference": "Patient/p1", "display": "A B"},
        "contained": [
            {
                "resourceType": "Patient",
                "name": [{"text": "A B"}],
                "identifier": [{"system": "urn:x", "value": "1"}],
                "telecom": [{"system": "phone", "value": "5"}],
                "address": [{"text": "Street 1"}],
            }
        ],
        "type": {"text": "note"},
        "context": {"event": [{"coding": [{"code": "I10"}]}]},
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "data": base64.b64encode(text.encode()).decode(),
                }
            }
        ],
    }


def mutate(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    node = doc
    for step in path[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return
    with contextlib.suppress(IndexError, TypeError):
        node[path[-1]] = value


@FAST
@given(
    docs=st.lists(
        st.tuples(
            st.text(max_size=20),
            st.lists(st.tuples(st.sampled_from(DOC_PATHS), JSON_VALUES), max_size=3),
            st.booleans(),
            st.lists(st.tuples(st.sampled_from(BUNDLE_PATHS), JSON_VALUES), max_size=2),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_fhir_mutated_documents_never_crash(scratch: Path, docs: list[Any]) -> None:
    lines = []
    expected = 0
    for text, mutations, in_bundle, bundle_mutations in docs:
        doc = base_doc(text)
        for path, value in mutations:
            mutate(doc, path, value)
        if in_bundle:
            bundle: dict[str, Any] = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": doc}, {"resource": doc}],
            }
            for path, value in bundle_mutations:
                mutate(bundle, path, value)
            accepted = ("collection", "batch", "searchset", "transaction")
            intact = bundle["type"] in accepted and isinstance(bundle["entry"], list)
            # A Bundle yields one item per entry, or one reject for the whole Bundle.
            expected += len(bundle["entry"]) if intact and bundle["entry"] else 1
            doc = bundle
        else:
            expected += 1
        lines.append(json.dumps(doc))
    path = scratch / "docs.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = consume(path, "fhir", ReaderOptions())
    assert items is not None
    assert len(items) == expected
