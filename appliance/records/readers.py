"""Export readers: CSV/TSV, JSONL/NDJSON, a folder of .txt files, FHIR R4 DocumentReferences.

``read_export(path, fmt, options)`` streams ``Record`` and ``Reject`` objects
in file order with bounded memory: files are read line by line (a physical
line is capped at ``8 * max_note_chars + 2**20`` characters), never whole. The
one exception is a ``.json`` file holding a single pretty-printed document
(a FHIR Bundle or an array of objects), which has to be parsed whole and is
capped at 512 MiB.

An export that cannot be read at all raises ``InputError`` when
``read_export`` is called (before anything is yielded): missing or
unreadable path, unknown format or encoding, a CSV without an id or text
column, a named column missing from the header, a folder without .txt files,
an unparsable single-document .json. A bad row yields a ``Reject`` and
reading goes on; no input bytes end in a traceback. Blank input (an empty
or whitespace-only JSON line, a CSV row of only delimiters and whitespace)
yields nothing.

Locations are 1-based human positions: ``row N`` (CSV; the header is row 1
and blank rows count, as in a spreadsheet; ``row N (line L)`` when the row
starts on another physical line), ``line L`` (JSONL/NDJSON), ``line L entry E`` (an
entry of a Bundle on line L), ``item N`` / ``entry E`` / ``document`` (a
single-document .json), ``file sub/a.txt``. FHIR element paths in reasons
are 0-based as in FHIRPath (``content[0].attachment.data``).

Reject reasons (the part before " (" or ":" is stable, so reports can group
by it; no reason ever contains note text):

    missing id                                  id absent, null, empty or whitespace; JSON adds
                                                "(no field named note_id, id, ...)" when absent
    id has the wrong type (number; ...)         not a string or an integer (12.0 counts as 12)
    id too long (300 characters > 256)
    id contains control or invalid characters   C0/C1 controls, line separators, lone surrogates
    empty text                                  text absent, null, empty or whitespace
    text has the wrong type (number; ...)
    text too long (N characters > M)            M is max_note_chars
    text contains NUL bytes                     binary content
    text contains invalid characters (...)      lone surrogates from JSON escapes
    bad encoding: invalid utf-8 at byte offset N                    offset in the file
    bad encoding: invalid utf-16 (offset unknown)
    bad encoding: invalid utf-16 data; the rest of the file was not read   decoder gave up
    wrong number of fields (row has N fields but header has M)      CSV
    field too long (over N characters)          CSV field beyond the csv module's limit
    malformed CSV row (...)                     any other csv module error
    row too long / line too long (more than N characters)
    invalid JSON (Expecting value at column 1)
    JSON line is not an object (got array)      also "JSON item ..." / "JSON document ..."
    not a DocumentReference (resourceType=Patient)                   FHIR
    unsupported Bundle type (type=document)     accepted: collection, batch, searchset, transaction
    Bundle has no entries / Bundle entry has no resource
    no content attachment
    unsupported contentType (application/pdf; only text/plain is read)
    attachment has no inline data (only a url)
    bad base64 in content[0].attachment.data
    bad encoding: invalid utf-8 in content[0].attachment.data at byte offset N
    unsupported charset (x-foo in content[0].attachment.contentType)
    cannot read file (Permission denied) / cannot read folder (...)  txt

Mapping choices:

- Records carry ``source="<export>:<location>"`` (ingest splits at the last
  colon). Rejects carry ``source`` = the export path as given, or the path
  relative to the folder for txt.
- Metadata values are always strings (numbers as JSON writes them, booleans
  ``true``/``false``, lists JSON-encoded); empty values are left out.
  Identifier values are stripped strings; empty ones are left out.
- ``identifier_columns`` entries are column names or dotted JSON paths,
  optionally with a type: ``"guardian=PERSON"``; a name without ``=TYPE``
  must be one ``identifier_type`` knows. Given explicitly, they replace the
  automatic choice, and every other column becomes metadata.
- JSON: nested objects are flattened with dots (``patient.name``); the id and
  text fields are found among the top-level keys unless named (a named one
  may be a dotted path). Lists of scalars under an identifier name give one
  identifier per element; identifiers inside lists of objects are not looked
  for.
- txt: ``*.txt`` files (any case of the suffix) found recursively, each
  folder's entries in name order; hidden files and folders (a leading dot)
  and other files are ignored and yield nothing; symlinked folders are not
  followed. id = relative path without the suffix, metadata ``{"file": rel}``.
- FHIR: the mapping is fixed, so ``id_column``, ``text_column`` and
  ``identifier_columns`` do not apply; ``metadata_columns`` filters the
  metadata keys (note_type, loinc_code, date, status, diagnosis_code,
  department, sex, language).
- Encodings: "utf-8" also accepts a UTF-8 BOM, and a file starting with a
  UTF-16/32 BOM is read in that encoding. Undecodable bytes make their row a
  "bad encoding" reject and reading goes on (the byte offset is given for
  ASCII-compatible encodings such as utf-8, cp1252, latin-1).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import csv
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from appliance.documents import Identifier, Record, Reject
from appliance.errors import InputError
from appliance.records.model import ID_FIELD_NAMES, TEXT_FIELD_NAMES, identifier_type

__all__ = ["FORMATS", "MAX_ID_CHARS", "ReaderOptions", "detect_format", "read_export"]

FORMATS = ("csv", "jsonl", "txt", "fhir")
MAX_ID_CHARS = 256

_FORMAT_HINT = "--format csv|jsonl|txt|fhir"
_CHUNK = 1 << 16
_HEAD_BYTES = 1 << 16  # how much detect_format looks at
_MAX_JSON_DOCUMENT_BYTES = 512 << 20
_SURROGATES = re.compile("[\ud800-\udfff]")
# Control characters (C0, DEL, C1), line/paragraph separators and lone surrogates:
# an id is shown on one line in reports and must encode as UTF-8.
_BAD_ID_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_TYPE_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
# A JSON key "resourceType" (not an escaped one inside a string value).
_RESOURCE_TYPE_KEY = re.compile(r'(?<!\\)"resourceType"\s*:')
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class ReaderOptions:
    """How to read an export; every field has a default that suits the demo export."""

    # Column / field holding the note id; None: the first of ID_FIELD_NAMES present.
    id_column: str | None = None
    # Column / field holding the note text; None: the first of TEXT_FIELD_NAMES present.
    text_column: str | None = None
    # Identifier columns ("patient.name", "guardian=PERSON"); None: by identifier_type(name).
    identifier_columns: tuple[str, ...] | None = None
    # Metadata columns; None: every column that is not the id, the text or an identifier.
    metadata_columns: tuple[str, ...] | None = None
    # Legacy exports are often "cp1252" or "latin-1"; "utf-8" also accepts a BOM.
    encoding: str = "utf-8"
    # CSV only; None: tab for .tsv, otherwise sniffed from the header (",", tab, ";", "|").
    delimiter: str | None = None
    # Longer notes are rejected (the policy's ingest.max_note_chars).
    max_note_chars: int = 1_000_000


_DEFAULT_OPTIONS = ReaderOptions()


# --------------------------------------------------------------------------- public API


def detect_format(path: Path) -> str:
    """The export format of ``path``: "csv", "jsonl", "txt" or "fhir".

    A folder is "txt"; otherwise the suffix decides (.csv/.tsv, .txt), and for
    .jsonl/.ndjson/.json and unknown suffixes the first 64 KiB are sniffed.
    Raises ``InputError`` when the path cannot be read or the format not told.
    """
    path = Path(path)
    name = str(path)
    st = _stat(path)
    if stat.S_ISDIR(st.st_mode):
        return "txt"
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{name}: not a regular file or folder; point ingest at the export file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".txt":
        return "txt"
    head = _head_text(_read_head(path, name))
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _json_kind(head)
    if head.lstrip(" \t\r\n").startswith(("{", "[")):
        return _json_kind(head)
    if _looks_like_csv(head):
        return "csv"
    raise InputError(
        f"{name}: cannot tell the export format from its name or content; pass {_FORMAT_HINT}"
    )


def read_export(
    path: Path, fmt: str = "auto", options: ReaderOptions = _DEFAULT_OPTIONS
) -> Iterator[Record | Reject]:
    """Stream the records and rejects of an export, in file order.

    Everything that makes the export unreadable as a whole is checked here,
    before the iterator is returned, and raised as ``InputError``.
    """
    path = Path(path)
    name = str(path)
    _check_options(options, name)
    if fmt == "auto":
        fmt = detect_format(path)
    elif fmt == "ndjson":
        fmt = "jsonl"
    elif fmt not in FORMATS:
        raise InputError(
            f"{name}: unknown export format {fmt!r}; use --format auto|csv|jsonl|txt|fhir"
        )
    st = _stat(path)
    is_dir = stat.S_ISDIR(st.st_mode)
    if fmt == "txt":
        if is_dir:
            if not _has_txt(path):
                raise InputError(
                    f"{name}: no .txt files in this folder (hidden files and other suffixes "
                    "are ignored); point ingest at a folder of .txt notes or pass --format"
                )
            return _read_txt_folder(path, options)
        _check_regular(path, name, st, fmt)
        _read_head(path, name)  # fails early if unreadable
        return _read_txt_file(path, name, options)
    _check_regular(path, name, st, fmt)
    if fmt == "csv":
        plan = _csv_plan(path, name, options)
        return _read_csv(path, name, options, plan)
    document = _json_document(path, name, options)
    if fmt == "jsonl":
        return _read_jsonl(path, name, options, document)
    return _read_fhir(path, name, options, document)


# --------------------------------------------------------------------------- checks and helpers


class _Rejected(Exception):
    """Internal: this row becomes a Reject with ``reason``."""

    def __init__(self, reason: str, record_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.record_id = record_id


class _LineTooLong(Exception):
    """Internal: a physical line exceeded the cap; it has been skipped."""


class _Undecodable(Exception):
    """Internal: the decoder gave up (e.g. UTF-16 without a BOM); nothing after it can be read."""


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or folder; check the path") from None
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read ({exc.strerror}); check the path and its permissions"
        ) from exc


def _check_regular(path: Path, name: str, st: os.stat_result, fmt: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise InputError(
            f"{name}: is a folder; --format {fmt} needs a file (a folder is read as --format txt)"
        )
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{name}: not a regular file; point ingest at the export file")


def _read_head(path: Path, name: str) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror}); check its permissions") from exc


def _check_options(options: ReaderOptions, name: str) -> None:
    """Reject option values that no export could satisfy."""
    if not _is_text_encoding(options.encoding):
        raise InputError(
            f"{name}: unknown encoding {options.encoding!r} (--encoding); use e.g. utf-8, cp1252, latin-1"
        )
    if options.max_note_chars < 1:
        raise InputError(f"{name}: max_note_chars must be at least 1, not {options.max_note_chars}")
    if options.delimiter is not None:
        delimiter = _delimiter(options.delimiter)
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise InputError(
                f"{name}: delimiter {options.delimiter!r} (--delimiter) must be one character "
                "other than a quote or line break, or 'tab'"
            )
    try:
        _identifier_specs(options)
    except InputError as exc:
        raise InputError(f"{name}: {exc.message}") from None


def _delimiter(value: str) -> str:
    # "\t" typed on a command line arrives as backslash-t.
    return "\t" if value in ("\\t", "tab", "TAB") else value


def _identifier_specs(options: ReaderOptions) -> list[tuple[str, str]] | None:
    """Explicit identifier columns as (name, type), or None for the automatic choice."""
    if options.identifier_columns is None:
        return None
    specs = []
    for entry in options.identifier_columns:
        column, sep, type_ = entry.partition("=")
        column, type_ = column.strip(), type_.strip()
        if sep:
            if not _TYPE_NAME.fullmatch(type_):
                raise InputError(
                    f"identifier column {entry!r} (--identifier-column): the type must be an "
                    "upper-case name such as PERSON or NATIONAL_ID"
                )
        else:
            found = identifier_type(column)
            if found is None:
                raise InputError(
                    f"identifier column {entry!r} (--identifier-column): its type cannot be told "
                    f"from the name; write it as {column}=PERSON (or another identifier type)"
                )
            type_ = found
        specs.append((column, type_))
    return specs


def _show(value: object, limit: int = 40) -> str:
    """A user-controlled name for a one-line message: printable as is, else repr; truncated."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text if text.isprintable() and text.strip() == text and text else repr(text)


_HEADER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_ .\-]{0,39}")


def _show_columns(header: list[str]) -> str:
    # Error messages reach terminals, service logs and tickets. A file without
    # a header row puts a patient's data where column names should be, so
    # names are shown only when every one of them looks like a column name.
    if not header or not all(_HEADER_NAME.fullmatch(h) for h in header):
        return f"{len(header)} columns whose names do not look like a header (is the header row missing?)"
    shown = ", ".join(header[:30])
    return shown + (f", ... ({len(header) - 30} more)" if len(header) > 30 else "")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _valid_id(value: object) -> str:
    """The id as a clean string, or _Rejected; integers (also 12.0) are accepted and converted."""
    if value is None:
        raise _Rejected("missing id")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # pandas writes integer ids of a column with gaps as 12.0
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Rejected(
            f"id has the wrong type ({_json_type(value)}; expected a string or an integer)"
        )
    rid = str(value).strip()
    if not rid:
        raise _Rejected("missing id")
    if len(rid) > MAX_ID_CHARS:
        raise _Rejected(f"id too long ({len(rid)} characters > {MAX_ID_CHARS})")
    if _BAD_ID_CHARS.search(rid):
        raise _Rejected("id contains control or invalid characters")
    return rid


def _quiet_id(value: object) -> str | None:
    """The id for a Reject's record_id when it is valid, else None."""
    try:
        return _valid_id(value)
    except _Rejected:
        return None


def _valid_text(value: object, rid: str, max_chars: int) -> str:
    """The text unchanged, or _Rejected (carrying ``rid``)."""
    if value is None:
        raise _Rejected("empty text", rid)
    if not isinstance(value, str):
        raise _Rejected(f"text has the wrong type ({_json_type(value)}; expected a string)", rid)
    if not value or value.isspace():
        raise _Rejected("empty text", rid)
    if len(value) > max_chars:
        raise _Rejected(f"text too long ({len(value)} characters > {max_chars})", rid)
    if "\x00" in value:
        raise _Rejected("text contains NUL bytes", rid)
    if _has_surrogates(value):
        raise _Rejected("text contains invalid characters (lone surrogates)", rid)
    return value


def _has_surrogates(value: str) -> bool:
    """Lone surrogates: undecodable bytes (surrogateescape) or \\udxxx escapes in JSON."""
    return not value.isascii() and _SURROGATES.search(value) is not None  # isascii is the fast path


def _clean(value: str) -> str:
    # Lone surrogates (from JSON escapes) would not encode as UTF-8 later on.
    return _SURROGATES.sub("\ufffd", value) if _has_surrogates(value) else value


def _scalar_str(value: object) -> str | None:
    """A JSON scalar as a metadata / identifier string; None for null and containers."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)
    return None


def _error_start(exc: UnicodeError) -> int:
    # A plain UnicodeError (utf-16 "stream does not start with BOM") has no position.
    start = getattr(exc, "start", 0)
    return start if isinstance(start, int) else 0


def _bad_offset(raw: bytes, encoding: str, base: int) -> str:
    """Where ``raw`` (starting at file offset ``base``) stops decoding, as text for a reason."""
    try:
        raw.decode(encoding)
    except UnicodeError as exc:
        return f"at byte offset {base + _error_start(exc)}"
    return "(offset unknown)"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: each undecodable byte becomes a lone surrogate, like surrogateescape,
    but also for bytes below 0x80 (a cut-off UTF-16 unit), so the row is rejected, not the file."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(chr(0xDC00 + byte) for byte in exc.object[exc.start : exc.end]), exc.end


_MARK_UNDECODABLE = "appliance.readers.mark"
codecs.register_error(_MARK_UNDECODABLE, _mark_undecodable)


def _is_text_encoding(encoding: object) -> bool:
    """True for a known bytes-to-text codec (not rot13, base64 and other transforms)."""
    try:
        codecs.lookup(encoding)  # type: ignore[arg-type]
        # Decoding real bytes is what refuses transforms; "ignore" forgives a cut-off utf-16 unit.
        b"a".decode(encoding, "ignore")  # type: ignore[arg-type]
    except (LookupError, TypeError, ValueError):
        return False
    return True


def _encoding_name(encoding: str) -> str:
    return codecs.lookup(encoding).name


def _ascii_compatible(encoding: str) -> bool:
    """True when ASCII is itself (utf-8, cp1252, latin-1...): a line then maps back to its bytes."""
    probe = 'ab,;|\t"\r\n'
    try:
        return probe.encode(encoding) == probe.encode("ascii")
    except (UnicodeError, LookupError):
        return False


def _resolve_encoding(head: bytes, encoding: str) -> tuple[str, int]:
    """(encoding to use, BOM bytes to skip) given the first bytes of the file."""
    name = _encoding_name(encoding)
    if name in ("utf-8", "utf-8-sig"):
        for bom, bom_encoding in _BOMS:
            if head.startswith(bom):
                if bom_encoding == "utf-8":
                    return "utf-8", len(bom)
                return bom_encoding, 0  # the utf-16/32 codecs consume their BOM
        return "utf-8", 0
    return encoding, 0


# --------------------------------------------------------------------------- physical lines


class _Lines:
    """Physical lines of a file, decoded, in bounded memory (each line capped at ``max_chars``).

    A TextIOWrapper splits the lines (in C). Undecodable bytes become lone
    surrogates, so they spoil only their own row, which is rejected, and
    reading goes on. In ASCII-compatible encodings (utf-8, cp1252, latin-1...)
    surrogateescape makes each line map back to its bytes, so the reject can
    name the byte offset; in utf-16/32 the offset is not tracked. An error the
    codec cannot hand to its error handler (utf-16 without a BOM) ends the file
    (_Undecodable).
    ``universal`` splits at \\r, \\n and \\r\\n like ``open(newline="")`` (what
    the csv module expects); otherwise only at \\n (JSON lines).
    """

    def __init__(
        self, fh: BinaryIO, name: str, encoding: str, *, universal: bool, max_chars: int
    ) -> None:
        self.name = name
        self.max_chars = max_chars
        self.number = 0  # 1-based number of the line last returned (or skipped)
        self.offset: int | None = None  # byte offset where that line starts, when known
        try:
            head = fh.read(4)
            self.encoding, bom = _resolve_encoding(head, encoding)
            fh.seek(bom)
        except OSError as exc:
            raise InputError(f"{name}: read failed ({exc.strerror})") from exc
        self.exact = _ascii_compatible(self.encoding)
        # Byte offset of the next line; counted only where lines map back to bytes exactly.
        self._consumed: int | None = bom if self.exact else None
        self._ends = ("\n", "\r") if universal else ("\n",)
        self._text: io.TextIOWrapper | None = io.TextIOWrapper(
            fh,
            encoding=self.encoding,
            errors="surrogateescape" if self.exact else _MARK_UNDECODABLE,
            newline="" if universal else "\n",
        )

    def __iter__(self) -> _Lines:
        return self

    def close(self) -> None:
        """Let go of the TextIOWrapper without closing the file twice (its owner closes it)."""
        if self._text is not None:
            self._text.detach()
            self._text = None

    def __next__(self) -> str:
        line = self._read(self.max_chars + 1)
        if not line:
            raise StopIteration
        self.number += 1
        self.offset = self._consumed
        self._count(line)
        if len(line) > self.max_chars and not line.endswith(self._ends):
            # Skip the rest of the overlong line without holding it.
            while True:
                more = self._read(_CHUNK)
                self._count(more)
                if not more or more.endswith(self._ends):
                    break
            raise _LineTooLong
        if self.number == 1 and line.startswith("\ufeff"):
            line = line[1:]  # a BOM the codec did not consume (e.g. --encoding utf-16-le)
        return line

    def raw(self, text: str) -> bytes:
        """The bytes ``text`` (read from this file) came from; exact for ASCII-compatible encodings."""
        return text.encode(self.encoding, "surrogateescape")

    def where_bad(self, text: str, offset: int | None) -> str:
        """Where the undecodable bytes in ``text`` (lines starting at ``offset``) are, for a reason."""
        if not self.exact or offset is None:
            return "(offset unknown)"
        return _bad_offset(self.raw(text), self.encoding, offset)

    def _count(self, text: str) -> None:
        if self._consumed is not None:
            self._consumed += len(text) if text.isascii() else len(self.raw(text))

    def _read(self, limit: int) -> str:
        assert self._text is not None
        try:
            return self._text.readline(limit)
        except UnicodeError as exc:
            # Strict decoding failed, or surrogateescape could not stand in for an ASCII byte.
            self.number += 1
            raise _Undecodable from exc
        except OSError as exc:
            raise InputError(f"{self.name}: read failed ({exc.strerror})") from exc


@contextmanager
def _open_lines(
    path: Path, name: str, options: ReaderOptions, *, universal: bool
) -> Iterator[_Lines]:
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror}); check its permissions") from exc
    with fh:
        lines = _Lines(
            fh, name, options.encoding, universal=universal, max_chars=_line_cap(options)
        )
        try:
            yield lines
        finally:
            lines.close()


def _line_cap(options: ReaderOptions) -> int:
    # Room for a maximal note written as \uXXXX escapes (6 characters each) plus other fields.
    return 8 * options.max_note_chars + (1 << 20)


def _undecodable_reason(lines: _Lines) -> str:
    return f"bad encoding: invalid {lines.encoding} data; the rest of the file was not read"


# --------------------------------------------------------------------------- CSV


@dataclass(frozen=True)
class _CsvPlan:
    delimiter: str
    columns: int
    id_index: int
    text_index: int
    identifiers: tuple[tuple[int, str, str], ...]  # (index, column name, type)
    metadata: tuple[tuple[int, str], ...]  # (index, key)


class _RowFeed:
    """Feeds lines to csv.reader and remembers where the current row started and its bytes."""

    def __init__(self, lines: _Lines) -> None:
        self.lines = lines
        self.first_line = 0
        self.offset: int | None = None
        self.texts: list[str] = []  # the lines of the current row, to find a bad byte

    def start_row(self) -> None:
        self.first_line = 0
        self.offset = None
        self.texts.clear()

    def __iter__(self) -> _RowFeed:
        return self

    def __next__(self) -> str:
        text = next(self.lines)
        if not self.first_line:
            self.first_line = self.lines.number
            self.offset = self.lines.offset
        if self.lines.exact:
            self.texts.append(text)
        return text


def _field_limit(options: ReaderOptions) -> int:
    # Room to read a note somewhat over the limit, so it is rejected with its exact length.
    limit = 2 * options.max_note_chars + 1024
    # The limit is process-wide: only ever raise it.
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)
    return max(limit, csv.field_size_limit())


def _is_blank_row(row: list[str]) -> bool:
    # Spreadsheets export empty rows as ",,,,"; they hold nothing to store or
    # report. A row with anything in it, even only spaces, is a record or a reject.
    return all(not value for value in row)


def _sniff_delimiter(path: Path, name: str, options: ReaderOptions) -> str:
    if options.delimiter is not None:
        return _delimiter(options.delimiter)
    if path.suffix.lower() == ".tsv":
        return "\t"
    first = ""
    with _open_lines(path, name, options, universal=True) as lines:
        try:
            for line in lines:
                if line.strip():
                    first = line
                    break
        except (_LineTooLong, _Undecodable):
            return ","
    best, best_count = ",", 0
    for candidate in (",", "\t", ";", "|"):
        header = next(csv.reader([first], delimiter=candidate), [])
        names = {h.strip().lstrip("\ufeff").lower() for h in header}
        wanted_id = (options.id_column or "").lower()
        wanted_text = (options.text_column or "").lower()
        has_id = wanted_id in names if wanted_id else bool(names & set(ID_FIELD_NAMES))
        has_text = wanted_text in names if wanted_text else bool(names & set(TEXT_FIELD_NAMES))
        if has_id and has_text:
            return candidate
        if first.count(candidate) > best_count:
            best, best_count = candidate, first.count(candidate)
    return best


def _read_header(reader: Iterator[list[str]], feed: _RowFeed, name: str) -> tuple[list[str], int]:
    """The header (names stripped) and how many rows it and the blank rows before it took."""
    rows = 0
    encoding = feed.lines.encoding
    while True:
        feed.start_row()
        try:
            row = next(reader)
        except StopIteration:
            raise InputError(f"{name}: empty file; a CSV export starts with a header row") from None
        except _LineTooLong:
            raise InputError(
                f"{name}: the first line is longer than {feed.lines.max_chars} characters; "
                f"is this a CSV export? (else pass {_FORMAT_HINT})"
            ) from None
        except _Undecodable as exc:
            raise InputError(
                f"{name}: cannot decode the header as {encoding} ({exc.__cause__}); "
                "pass the export's encoding with --encoding"
            ) from None
        except csv.Error as exc:
            raise InputError(f"{name}: cannot parse the header row ({exc})") from exc
        rows += 1
        if _is_blank_row(row):
            continue
        if any(_has_surrogates(h) for h in row):
            where = feed.lines.where_bad("".join(feed.texts), feed.offset)
            raise InputError(
                f"{name}: the header is not valid {encoding} ({where}); "
                "pass the export's encoding with --encoding, e.g. --encoding cp1252"
            )
        header = [h.strip() for h in row]
        header[0] = header[0].lstrip("\ufeff").strip()
        return header, rows


def _find_column(header: list[str], wanted: str) -> int | None:
    if wanted in header:
        return header.index(wanted)
    lowered = [h.lower() for h in header]
    return lowered.index(wanted.lower()) if wanted.lower() in lowered else None


def _csv_plan(path: Path, name: str, options: ReaderOptions) -> _CsvPlan:
    """Read the header and decide which column is what; InputError when it cannot be done."""
    _field_limit(options)
    delimiter = _sniff_delimiter(path, name, options)
    with _open_lines(path, name, options, universal=True) as lines:
        feed = _RowFeed(lines)
        header, _ = _read_header(csv.reader(feed, delimiter=delimiter), feed, name)
    found = _show_columns(header)
    hint = "; it looks like UTF-16, try --encoding utf-16" if "\x00" in "".join(header) else ""

    def named(column: str, option: str) -> int:
        index = _find_column(header, column)
        if index is None:
            raise InputError(
                f"{name}: no column {_show(column)} ({option}); found columns {found}{hint}"
            )
        return index

    def automatic(names: tuple[str, ...], what: str, option: str) -> int:
        lowered = [h.lower() for h in header]
        for candidate in names:
            if candidate in lowered:
                return lowered.index(candidate)
        raise InputError(
            f"{name}: no {what} column; found columns {found}; name it with {option}{hint}"
        )

    id_index = (
        named(options.id_column, "--id-column")
        if options.id_column
        else automatic(ID_FIELD_NAMES, "id", "--id-column")
    )
    text_index = (
        named(options.text_column, "--text-column")
        if options.text_column
        else automatic(TEXT_FIELD_NAMES, "text", "--text-column")
    )
    if id_index == text_index:
        raise InputError(
            f"{name}: the id and text columns are the same column ({_show(header[id_index])})"
        )
    taken = {id_index, text_index}
    specs = _identifier_specs(options)
    identifiers: list[tuple[int, str, str]] = []
    if specs is None:
        for index, column in enumerate(header):
            type_ = identifier_type(column)
            if index not in taken and type_ is not None:
                identifiers.append((index, column, type_))
    else:
        for column, type_ in specs:
            index = named(column, "--identifier-column")
            identifiers.append((index, header[index], type_))
    taken |= {index for index, _, _ in identifiers}

    def key(index: int) -> str:
        return header[index] or f"column {index + 1}"

    if options.metadata_columns is None:
        metadata = [(i, key(i)) for i in range(len(header)) if i not in taken]
    else:
        metadata = [
            (i, key(i)) for i in (named(c, "--metadata-column") for c in options.metadata_columns)
        ]
    return _CsvPlan(
        delimiter, len(header), id_index, text_index, tuple(identifiers), tuple(metadata)
    )


def _read_csv(
    path: Path, name: str, options: ReaderOptions, plan: _CsvPlan
) -> Iterator[Record | Reject]:
    field_limit = _field_limit(options)
    with _open_lines(path, name, options, universal=True) as lines:
        feed = _RowFeed(lines)
        reader = csv.reader(feed, delimiter=plan.delimiter)
        _, row_number = _read_header(reader, feed, name)
        while True:
            feed.start_row()
            row_number += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except _LineTooLong:
                yield Reject(
                    name,
                    _row_location(row_number, feed.first_line or lines.number),
                    f"row too long (a line of more than {lines.max_chars} characters)",
                )
                continue
            except _Undecodable:
                yield Reject(
                    name, _row_location(row_number, lines.number), _undecodable_reason(lines)
                )
                return
            except csv.Error as exc:
                message = str(exc)
                reason = (
                    f"field too long (over {field_limit} characters)"
                    if "field limit" in message
                    else f"malformed CSV row ({message})"
                )
                yield Reject(
                    name, _row_location(row_number, feed.first_line or lines.number), reason
                )
                continue
            if _is_blank_row(row):
                continue
            location = _row_location(row_number, feed.first_line)
            try:
                yield _csv_record(row, plan, feed, name, location, options)
            except _Rejected as exc:
                yield Reject(name, location, exc.reason, exc.record_id)


def _row_location(row: int, line: int) -> str:
    return f"row {row}" if line in (row, 0) else f"row {row} (line {line})"


def _csv_record(
    row: list[str], plan: _CsvPlan, feed: _RowFeed, name: str, location: str, options: ReaderOptions
) -> Record:
    rid_known = _quiet_id(row[plan.id_index]) if plan.id_index < len(row) else None
    # Undecodable bytes first: they may be why the fields do not line up.
    if any(_has_surrogates(value) for value in row):
        where = feed.lines.where_bad("".join(feed.texts), feed.offset)
        raise _Rejected(f"bad encoding: invalid {feed.lines.encoding} {where}", rid_known)
    if len(row) != plan.columns:
        raise _Rejected(
            f"wrong number of fields (row has {len(row)} fields but header has {plan.columns})",
            rid_known,
        )
    rid = _valid_id(row[plan.id_index])
    text = _valid_text(row[plan.text_index], rid, options.max_note_chars)
    identifiers = []
    for index, column, type_ in plan.identifiers:
        value = row[index].strip()
        if value:
            identifiers.append(Identifier(type_, value, column))
    metadata: dict[str, Any] = {}
    for index, key in plan.metadata:
        value = row[index].strip()
        if value and key not in metadata:
            metadata[key] = value
    return Record(rid, text, metadata, _dedupe(identifiers), f"{name}:{location}")


def _dedupe(identifiers: list[Identifier]) -> tuple[Identifier, ...]:
    seen: set[tuple[str, str]] = set()
    out = []
    for ident in identifiers:
        if (ident.type, ident.value) not in seen:
            seen.add((ident.type, ident.value))
            out.append(ident)
    return tuple(out)


# --------------------------------------------------------------------------- JSON sources

# One JSON value and where it was: ("line 3", obj); or a Reject for a line that is not JSON.
_JsonItem = tuple[str, Any] | Reject


@dataclass(frozen=True)
class _Document:
    """A .json file parsed whole (pretty-printed), as opposed to one value per line."""

    value: Any


def _json_document(path: Path, name: str, options: ReaderOptions) -> _Document | None:
    """Parse a pretty-printed single-document .json now (so errors raise); None for JSON lines.

    A .json file is one document when its first non-blank character is "[" or
    its first non-blank line is a lone "{"; every other file is JSON lines.
    """
    if path.suffix.lower() != ".json":
        return None
    head = _head_text(_read_head(path, name)).lstrip(" \t\r\n")
    first_line = head.split("\n", 1)[0].strip()
    if not (head.startswith("[") or first_line == "{"):
        return None
    size = path.stat().st_size
    if size > _MAX_JSON_DOCUMENT_BYTES:
        raise InputError(
            f"{name}: a single JSON document of {size} bytes is too large to read (the limit is "
            f"{_MAX_JSON_DOCUMENT_BYTES >> 20} MiB); export one object per line (JSONL/NDJSON)"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror}); check its permissions") from exc
    encoding, bom = _resolve_encoding(data[:4], options.encoding)
    try:
        text = data[bom:].decode(encoding).lstrip("\ufeff")
    except UnicodeError as exc:
        raise InputError(
            f"{name}: not valid {encoding} at byte offset {bom + _error_start(exc)}; "
            "pass the export's encoding with --encoding"
        ) from None
    try:
        return _Document(json.loads(text))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "fix the file or export one object per line"
        ) from None
    except (ValueError, RecursionError):
        raise InputError(
            f"{name}: not valid JSON (nested too deeply or a number too long)"
        ) from None


def _json_lines(path: Path, name: str, options: ReaderOptions) -> Iterator[_JsonItem]:
    """Each non-blank line parsed as JSON; whitespace-only lines are skipped."""
    with _open_lines(path, name, options, universal=False) as lines:
        while True:
            try:
                text = next(lines)
            except StopIteration:
                return
            except _LineTooLong:
                yield Reject(
                    name,
                    f"line {lines.number}",
                    f"line too long (more than {lines.max_chars} characters)",
                )
                continue
            except _Undecodable:
                yield Reject(name, f"line {lines.number}", _undecodable_reason(lines))
                return
            location = f"line {lines.number}"
            if not text.strip(" \t\r\n"):
                continue
            if _has_surrogates(text):
                where = lines.where_bad(text, lines.offset)
                yield Reject(name, location, f"bad encoding: invalid {lines.encoding} {where}")
                continue
            try:
                yield location, json.loads(text)
            except json.JSONDecodeError as exc:
                yield Reject(name, location, f"invalid JSON ({exc.msg} at column {exc.colno})")
            except RecursionError:
                yield Reject(name, location, "invalid JSON (nested too deeply)")
            except ValueError:
                yield Reject(name, location, "invalid JSON (a number too long)")


def _json_items(
    path: Path, name: str, options: ReaderOptions, document: _Document | None
) -> Iterator[_JsonItem]:
    if document is None:
        yield from _json_lines(path, name, options)
    elif isinstance(document.value, list):
        for number, value in enumerate(document.value, 1):
            yield f"item {number}", value
    else:
        yield "document", document.value


def _not_an_object(name: str, location: str, value: object) -> Reject:
    noun = location.split(" ", 1)[0]
    noun = {"line": "line", "item": "item"}.get(noun, "document")
    return Reject(name, location, f"JSON {noun} is not an object (got {_json_type(value)})")


# --------------------------------------------------------------------------- JSONL


_MISSING = object()


def _read_jsonl(
    path: Path, name: str, options: ReaderOptions, document: _Document | None
) -> Iterator[Record | Reject]:
    specs = _identifier_specs(options)
    for item in _json_items(path, name, options, document):
        if isinstance(item, Reject):
            yield item
            continue
        location, value = item
        if not isinstance(value, dict):
            yield _not_an_object(name, location, value)
            continue
        try:
            yield _jsonl_record(value, name, location, options, specs)
        except _Rejected as exc:
            yield Reject(name, location, exc.reason, exc.record_id)


def _json_get(obj: dict[str, Any], path: str) -> tuple[str, Any]:
    """(key path found, value) for a named field: a literal key, else a dotted path, else any case."""
    if path in obj:
        return path, obj[path]
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            break
        node = node[part]
    else:
        return path, node
    lowered = {k.lower(): k for k in reversed(list(obj))}
    key = lowered.get(path.lower())
    return (key, obj[key]) if key is not None else (path, _MISSING)


def _json_pick(
    obj: dict[str, Any], named: str | None, names: tuple[str, ...]
) -> tuple[str | None, Any]:
    if named:
        return _json_get(obj, named)
    lowered = {k.lower(): k for k in reversed(list(obj))}
    for candidate in names:
        key = lowered.get(candidate)
        if key is not None:
            return key, obj[key]
    return None, _MISSING


def _absent(named: str | None, names: tuple[str, ...]) -> str:
    if named:
        return f"no field {_show(named)}"
    return f"no field named {', '.join(names)}"


def _flatten(obj: dict[str, Any], skip: set[str]) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) for every non-object value, in document order; no recursion."""
    stack: list[Iterator[tuple[str, Any]]] = [iter(obj.items())]
    prefixes = [""]
    while stack:
        try:
            key, value = next(stack[-1])
        except StopIteration:
            stack.pop()
            prefixes.pop()
            continue
        path = prefixes[-1] + _clean(str(key))
        if path in skip:
            continue
        if isinstance(value, dict):
            stack.append(iter(value.items()))
            prefixes.append(path + ".")
        else:
            yield path, value


def _matches(path: str, column: str) -> bool:
    # A named column covers the field itself and, for an object, everything under it.
    lowered, wanted = path.lower(), column.lower()
    return lowered == wanted or lowered.startswith(wanted + ".")


def _jsonl_record(
    obj: dict[str, Any],
    name: str,
    location: str,
    options: ReaderOptions,
    specs: list[tuple[str, str]] | None,
) -> Record:
    id_key, id_value = _json_pick(obj, options.id_column, ID_FIELD_NAMES)
    text_key, text_value = _json_pick(obj, options.text_column, TEXT_FIELD_NAMES)
    # A field absent from the object says more than an empty one: the export may name it otherwise.
    if id_value is _MISSING:
        raise _Rejected(f"missing id ({_absent(options.id_column, ID_FIELD_NAMES)})")
    rid = _valid_id(id_value)
    if text_value is _MISSING:
        raise _Rejected(f"empty text ({_absent(options.text_column, TEXT_FIELD_NAMES)})", rid)
    text = _valid_text(text_value, rid, options.max_note_chars)
    skip = {k for k in (id_key, text_key) if k is not None}
    identifiers: list[Identifier] = []
    metadata: dict[str, Any] = {}
    for path, value in _flatten(obj, skip):
        if specs is None:
            type_ = identifier_type(path)
        else:
            type_ = next((t for column, t in specs if _matches(path, column)), None)
        if type_ is not None:
            for element in value if isinstance(value, list) else [value]:
                found = None if isinstance(element, bool) else _scalar_str(element)
                if found and found.strip():
                    identifiers.append(Identifier(type_, found.strip(), path))
            continue
        if options.metadata_columns is not None and not any(
            _matches(path, column) for column in options.metadata_columns
        ):
            continue
        if isinstance(value, list):
            shown = _clean(json.dumps(value, ensure_ascii=False)) if value else None
        else:
            shown = _scalar_str(value)
        if shown is not None and shown.strip() and path not in metadata:
            metadata[path] = shown.strip()
    return Record(rid, text, metadata, _dedupe(identifiers), f"{name}:{location}")


# --------------------------------------------------------------------------- FHIR

# Identifier systems that hold national person numbers; every other identifier
# of the patient is treated as a medical record number.
NATIONAL_ID_SYSTEMS = frozenset(
    {
        "urn:oid:1.3.6.1.4.1.28284.6.2.2.1",  # Estonia, isikukood
        "http://hl7.org/fhir/sid/us-ssn",  # United States, SSN
        "urn:oid:2.16.840.1.113883.4.1",  # United States, SSN (OID)
        "urn:oid:1.2.752.129.2.1.3.1",  # Sweden, personnummer
        "urn:oid:1.2.246.21",  # Finland, henkilötunnus
        "urn:oid:2.16.578.1.12.4.1.4.1",  # Norway, fødselsnummer
        "urn:oid:1.2.208.176.1.2",  # Denmark, CPR
        "http://fhir.nl/fhir/NamingSystem/bsn",  # Netherlands, BSN
        "urn:oid:2.16.840.1.113883.2.4.6.3",  # Netherlands, BSN (OID)
    }
)
# HL7 v2 table 0203 identifier type codes for national person identifiers.
_NATIONAL_ID_TYPE_CODES = frozenset({"NI", "SS", "NN", "SB"})
_BUNDLE_TYPES = frozenset({"collection", "batch", "searchset", "transaction"})
_PATIENT_REFERENCE = re.compile(r"(?:^|/)Patient/([^/]+)")
_CHARSET_ALIASES = {"latin1": "latin-1", "iso8859-1": "latin-1", "utf8": "utf-8"}


def _read_fhir(
    path: Path, name: str, options: ReaderOptions, document: _Document | None
) -> Iterator[Record | Reject]:
    for item in _json_items(path, name, options, document):
        if isinstance(item, Reject):
            yield item
            continue
        location, value = item
        if not isinstance(value, dict):
            yield _not_an_object(name, location, value)
        elif value.get("resourceType") == "Bundle":
            yield from _fhir_bundle(
                value, name, "" if location == "document" else location, options
            )
        else:
            yield _fhir_item(value, name, location, options)


def _fhir_bundle(
    bundle: dict[str, Any], name: str, location: str, options: ReaderOptions
) -> Iterator[Record | Reject]:
    where = location or "document"
    kind = bundle.get("type")
    if not isinstance(kind, str) or kind not in _BUNDLE_TYPES:
        yield Reject(name, where, f"unsupported Bundle type (type={_show(kind)})")
        return
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        yield Reject(name, where, "Bundle has no entries")
        return
    for number, entry in enumerate(entries, 1):
        entry_location = f"{location} entry {number}".strip()
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            yield Reject(name, entry_location, "Bundle entry has no resource")
        else:
            yield _fhir_item(resource, name, entry_location, options)


def _fhir_item(
    resource: dict[str, Any], name: str, location: str, options: ReaderOptions
) -> Record | Reject:
    try:
        return _fhir_record(resource, name, location, options)
    except _Rejected as exc:
        return Reject(name, location, exc.reason, exc.record_id)


def _fhir_record(
    resource: dict[str, Any], name: str, location: str, options: ReaderOptions
) -> Record:
    kind = resource.get("resourceType")
    if kind != "DocumentReference":
        shown = "no resourceType" if kind is None else f"resourceType={_show(kind)}"
        raise _Rejected(f"not a DocumentReference ({shown})", _quiet_id(resource.get("id")))
    rid = _valid_id(resource.get("id"))
    raw_text, attachment = _fhir_text(resource, rid)
    text = _valid_text(raw_text, rid, options.max_note_chars)
    metadata = _fhir_metadata(resource, attachment)
    if options.metadata_columns is not None:
        wanted = {c.lower() for c in options.metadata_columns}
        metadata = {k: v for k, v in metadata.items() if k.lower() in wanted}
    return Record(rid, text, metadata, _fhir_identifiers(resource), f"{name}:{location}")


def _media_type(content_type: object) -> tuple[str, dict[str, str]]:
    """("text/plain", {"charset": "utf-8"}) from a contentType value; ("", {}) when absent."""
    if not isinstance(content_type, str):
        return "", {}
    media, *params = content_type.split(";")
    parsed = {}
    for param in params:
        key, _, value = param.partition("=")
        parsed[key.strip().lower()] = value.strip().strip('"').strip()
    return media.strip().lower(), parsed


def _fhir_text(resource: dict[str, Any], rid: str) -> tuple[str, dict[str, Any]]:
    """The note text from the first text/plain attachment with inline data, and that attachment."""
    content = resource.get("content")
    attachments = [
        (index, entry["attachment"])
        for index, entry in enumerate(content if isinstance(content, list) else [])
        if isinstance(entry, dict) and isinstance(entry.get("attachment"), dict)
    ]
    if not attachments:
        raise _Rejected("no content attachment", rid)
    plain = []
    for index, attachment in attachments:
        media, params = _media_type(attachment.get("contentType"))
        if media == "text/plain":
            plain.append((index, attachment, params))
    if not plain:
        given = attachments[0][1].get("contentType")
        shown = _show(given) if isinstance(given, str) and given.strip() else "none given"
        raise _Rejected(f"unsupported contentType ({shown}; only text/plain is read)", rid)
    inline = [(i, a, p) for i, a, p in plain if a.get("data") is not None]
    if not inline:
        if any(a.get("url") for _, a, _ in plain):
            raise _Rejected("attachment has no inline data (only a url)", rid)
        raise _Rejected("attachment has no inline data", rid)
    index, attachment, params = inline[0]
    path = f"content[{index}].attachment"
    data = attachment["data"]
    try:
        if not isinstance(data, str):
            raise ValueError("not a string")
        # Some systems wrap base64 at 76 characters; whitespace is not data.
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _Rejected(f"bad base64 in {path}.data", rid) from None
    charset = params.get("charset", "utf-8").lower()
    charset = _CHARSET_ALIASES.get(charset, charset)
    if not _is_text_encoding(charset):
        raise _Rejected(f"unsupported charset ({_show(charset)} in {path}.contentType)", rid)
    encoding = _encoding_name(charset)
    encoding, bom = _resolve_encoding(raw[:4], encoding)
    try:
        text = raw[bom:].decode(encoding)
    except UnicodeError as exc:
        raise _Rejected(
            f"bad encoding: invalid {encoding} in {path}.data at byte offset {bom + _error_start(exc)}",
            rid,
        ) from None
    return (text[1:] if text.startswith("\ufeff") else text), attachment


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _codings(concept: object) -> list[dict[str, Any]]:
    return [c for c in _as_list(_as_dict(concept).get("coding")) if isinstance(c, dict)]


def _concept_text(concept: object) -> object:
    text = _as_dict(concept).get("text")
    if isinstance(text, str) and text.strip():
        return text
    return next((c.get("display") for c in _codings(concept) if c.get("display")), None)


def _identifier_kind(identifier: dict[str, Any]) -> str:
    system = identifier.get("system")
    if isinstance(system, str) and system.strip() in NATIONAL_ID_SYSTEMS:
        return "NATIONAL_ID"
    for coding in _codings(identifier.get("type")):
        code = coding.get("code")
        if isinstance(code, str) and (
            code in _NATIONAL_ID_TYPE_CODES or re.fullmatch(r"NN[A-Z]{3}", code)
        ):
            return "NATIONAL_ID"
    return "MEDICAL_RECORD_NUMBER"


def _patients(resource: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [
        (index, c)
        for index, c in enumerate(_as_list(resource.get("contained")))
        if isinstance(c, dict) and c.get("resourceType") == "Patient"
    ]


def _fhir_identifiers(resource: dict[str, Any]) -> tuple[Identifier, ...]:
    found: list[Identifier] = []

    def add(type_: str, value: object, field: str) -> None:
        text = None if isinstance(value, bool) else _scalar_str(value)
        if text and text.strip():
            found.append(Identifier(type_, text.strip(), field))

    subject = _as_dict(resource.get("subject"))
    add("PERSON", subject.get("display"), "subject.display")
    reference = subject.get("reference")
    if isinstance(reference, str) and (match := _PATIENT_REFERENCE.search(reference)):
        add("MEDICAL_RECORD_NUMBER", match.group(1), "subject.reference")
    logical = _as_dict(subject.get("identifier"))
    if logical:
        add(_identifier_kind(logical), logical.get("value"), "subject.identifier.value")
    for index, patient in _patients(resource):
        at = f"contained[{index}]"
        for n, entry in enumerate(_as_list(patient.get("name"))):
            name = _as_dict(entry)
            full = name.get("text")
            if not (isinstance(full, str) and full.strip()):
                parts = [g for g in _as_list(name.get("given")) if isinstance(g, str)]
                if isinstance(name.get("family"), str):
                    parts.append(name["family"])
                full = " ".join(p.strip() for p in parts if p.strip())
            add("PERSON", full, f"{at}.name[{n}]")
        for n, entry in enumerate(_as_list(patient.get("identifier"))):
            if isinstance(entry, dict):
                add(_identifier_kind(entry), entry.get("value"), f"{at}.identifier[{n}].value")
        add("DATE_OF_BIRTH", patient.get("birthDate"), f"{at}.birthDate")
        for n, entry in enumerate(_as_list(patient.get("telecom"))):
            telecom = _as_dict(entry)
            system = telecom.get("system")
            if system in ("phone", "sms", "fax"):
                add("PHONE_NUMBER", telecom.get("value"), f"{at}.telecom[{n}].value")
            elif system == "email":
                add("EMAIL_ADDRESS", telecom.get("value"), f"{at}.telecom[{n}].value")
        for n, entry in enumerate(_as_list(patient.get("address"))):
            address = _as_dict(entry)
            full = address.get("text")
            if not (isinstance(full, str) and full.strip()):
                parts = [line for line in _as_list(address.get("line")) if isinstance(line, str)]
                if isinstance(address.get("city"), str):
                    parts.append(address["city"])
                full = ", ".join(p.strip() for p in parts if p.strip())
            add("ADDRESS", full, f"{at}.address[{n}]")
    return _dedupe(found)


def _fhir_metadata(resource: dict[str, Any], attachment: dict[str, Any]) -> dict[str, Any]:
    context = _as_dict(resource.get("context"))
    patients = _patients(resource)
    candidates: dict[str, object] = {
        "note_type": _concept_text(resource.get("type")),
        "loinc_code": next(
            (
                c.get("code")
                for c in _codings(resource.get("type"))
                if c.get("system") == "http://loinc.org"
            ),
            None,
        ),
        "date": resource.get("date"),
        "status": resource.get("status"),
        "diagnosis_code": next(
            (
                c.get("code")
                for event in _as_list(context.get("event"))
                for c in _codings(event)
                if c.get("code")
            ),
            None,
        ),
        "department": _concept_text(context.get("practiceSetting")),
        "sex": patients[0][1].get("gender") if patients else None,
        "language": attachment.get("language") or resource.get("language"),
    }
    metadata: dict[str, Any] = {}
    for key, value in candidates.items():
        text = None if isinstance(value, bool) else _scalar_str(value)
        if text and text.strip():
            metadata[key] = text.strip()
    return metadata


# --------------------------------------------------------------------------- txt


def _has_txt(root: Path) -> bool:
    return any(not isinstance(item, Reject) for item in _walk_txt(root, ""))


def _walk_txt(folder: Path, prefix: str) -> Iterator[tuple[str, Path] | Reject]:
    """(relative path, path) of every visible .txt file under ``folder``, each folder in name order."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        where = prefix.rstrip("/") or "."
        yield Reject(where, f"folder {where}", f"cannot read folder ({exc.strerror})")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        rel = prefix + entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)  # symlinked folders could loop
            is_file = not is_dir and entry.is_file()
        except OSError:
            continue
        if is_dir:
            yield from _walk_txt(Path(entry.path), rel + "/")
        elif is_file and entry.name.lower().endswith(".txt"):
            yield rel, Path(entry.path)


def _read_txt_folder(root: Path, options: ReaderOptions) -> Iterator[Record | Reject]:
    for item in _walk_txt(root, ""):
        if isinstance(item, Reject):
            yield item
        else:
            rel, path = item
            yield _txt_item(path, rel, rel[:-4], rel, options)


def _read_txt_file(path: Path, name: str, options: ReaderOptions) -> Iterator[Record | Reject]:
    stem = path.name[:-4] if path.name.lower().endswith(".txt") else path.name
    yield _txt_item(path, name, stem, path.name, options)


def _txt_item(
    path: Path, source: str, rid_raw: str, rel: str, options: ReaderOptions
) -> Record | Reject:
    location = f"file {rel}"
    try:
        rid = _valid_id(rid_raw)
        text = _valid_text(_read_note_file(path, rid, options), rid, options.max_note_chars)
    except _Rejected as exc:
        return Reject(source, location, exc.reason, exc.record_id)
    return Record(rid, text, {"file": _clean(rel)}, (), f"{source}:{location}")


def _read_note_file(path: Path, rid: str, options: ReaderOptions) -> str:
    try:
        with path.open("rb") as fh:
            # No encoding needs more than 4 bytes a character (plus a BOM): anything larger is too long.
            limit = 4 * options.max_note_chars + 4
            data = fh.read(limit + 1)
    except OSError as exc:
        raise _Rejected(f"cannot read file ({exc.strerror})", rid) from None
    if len(data) > limit:
        raise _Rejected(
            f"text too long (file of more than {limit} bytes; max_note_chars is {options.max_note_chars})",
            rid,
        )
    encoding, bom = _resolve_encoding(data[:4], options.encoding)
    try:
        text = data[bom:].decode(encoding)
    except UnicodeError as exc:
        raise _Rejected(
            f"bad encoding: invalid {encoding} at byte offset {bom + _error_start(exc)}", rid
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


# --------------------------------------------------------------------------- sniffing


def _head_text(head: bytes) -> str:
    """The first bytes of a file as text for sniffing (BOM-aware, lenient)."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            # The utf-16/32 codecs read their BOM; a cut-off last character becomes U+FFFD.
            return head.decode("utf-8-sig" if encoding == "utf-8" else encoding, "replace")
    return head.decode("utf-8", "replace")


def _json_kind(head: str) -> str:
    """ "fhir" when the first JSON value has a resourceType, else "jsonl"."""
    stripped = head.lstrip(" \t\r\n\ufeff")
    first = stripped.partition("\n")[0]
    try:
        value = json.loads(first)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, dict):
        return "fhir" if "resourceType" in value else "jsonl"
    # The first value is cut off or spans lines: look for the key anywhere in the head.
    return "fhir" if _RESOURCE_TYPE_KEY.search(head) else "jsonl"


def _looks_like_csv(head: str) -> bool:
    first = next((line for line in head.splitlines() if line.strip()), "")
    for delimiter in (",", "\t", ";", "|"):
        try:
            names = {
                h.strip().lstrip("\ufeff").lower()
                for h in next(csv.reader([first], delimiter=delimiter), [])
            }
        except csv.Error:
            continue
        if names & set(ID_FIELD_NAMES) and names & set(TEXT_FIELD_NAMES):
            return True
    return False
