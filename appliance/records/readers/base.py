"""What every export reader shares: options, the plug-in types, validation and Reject helpers.

A reader turns a bad row into a ``Reject`` by raising ``Rejected(reason,
record_id)`` from the code that builds the ``Record`` and catching it where
the row's location is known. ``valid_id`` / ``valid_text`` give the reasons
for ids and texts the same wording in every format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance.documents import Identifier, Record, Reject
from appliance.errors import InputError
from appliance.records.readers.decoding import Lines, is_text_encoding
from appliance.records.readers.fields import identifier_type

MAX_ID_CHARS = 256

_HEAD_BYTES = 1 << 16  # how much detect_format looks at

# Control characters (C0, DEL, C1), line/paragraph separators and lone surrogates:
# an id is shown on one line in reports and must encode as UTF-8.
_BAD_ID_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_TYPE_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_SURROGATES = re.compile("[\ud800-\udfff]")


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


# --------------------------------------------------------------------------- plug-in types


@dataclass(frozen=True)
class Export:
    """What a format's ``read`` is handed: the export and how to read it."""

    path: Path
    name: str  # the path as given; messages and Reject sources use it
    options: ReaderOptions
    is_dir: bool  # a folder (only for a format with folders=True)
    format_hint: str  # "--format csv|jsonl|...", for a message that suggests another format


@dataclass(frozen=True)
class Head:
    """The start of a file whose suffix did not decide its format, for ``sniff``."""

    suffix: str  # lower-case with the dot (".json"); "" when there is none
    text: str  # the first 64 KiB, decoded leniently (BOM-aware; U+FFFD for bad bytes)


@dataclass(frozen=True)
class ExportFormat:
    """One export format as the registry knows it (see ``appliance.records.readers``)."""

    # The --format value.
    name: str
    # Checks everything that makes the export unreadable as a whole (raising
    # InputError) and returns an iterator of Records and Rejects in file order.
    read: Callable[[Export], Iterator[Record | Reject]]
    # A file with one of these suffixes (lower-case) is this format, unsniffed.
    suffixes: tuple[str, ...] = ()
    # True when the start of a file of any other suffix is in this format.
    sniff: Callable[[Head], bool] | None = None
    # A weak guess: tried after every other format's sniff.
    sniff_last: bool = False
    # True when a folder is read as this format (one format at most).
    folders: bool = False
    # Other --format values that mean this format.
    aliases: tuple[str, ...] = ()


# --------------------------------------------------------------------------- checks and helpers


class Rejected(Exception):
    """Internal: this row becomes a Reject with ``reason``."""

    def __init__(self, reason: str, record_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.record_id = record_id


def read_head(path: Path, name: str) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror}); check its permissions") from exc


def check_options(options: ReaderOptions, name: str) -> None:
    """Reject option values that no export could satisfy."""
    if not is_text_encoding(options.encoding):
        raise InputError(
            f"{name}: unknown encoding {options.encoding!r} (--encoding); use e.g. utf-8, cp1252, latin-1"
        )
    if options.max_note_chars < 1:
        raise InputError(f"{name}: max_note_chars must be at least 1, not {options.max_note_chars}")
    if options.delimiter is not None:
        delimiter = delimiter_of(options.delimiter)
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise InputError(
                f"{name}: delimiter {options.delimiter!r} (--delimiter) must be one character "
                "other than a quote or line break, or 'tab'"
            )
    try:
        identifier_specs(options)
    except InputError as exc:
        raise InputError(f"{name}: {exc.message}") from None


def delimiter_of(value: str) -> str:
    # "\t" typed on a command line arrives as backslash-t.
    return "\t" if value in ("\\t", "tab", "TAB") else value


def identifier_specs(options: ReaderOptions) -> list[tuple[str, str]] | None:
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


def show(value: object, limit: int = 40) -> str:
    """A user-controlled name for a one-line message: printable as is, else repr; truncated."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def json_type(value: object) -> str:
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


def valid_id(value: object) -> str:
    """The id as a clean string, or Rejected; integers (also 12.0) are accepted and converted."""
    if value is None:
        raise Rejected("missing id")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # pandas writes integer ids of a column with gaps as 12.0
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Rejected(
            f"id has the wrong type ({json_type(value)}; expected a string or an integer)"
        )
    rid = str(value).strip()
    if not rid:
        raise Rejected("missing id")
    if len(rid) > MAX_ID_CHARS:
        raise Rejected(f"id too long ({len(rid)} characters > {MAX_ID_CHARS})")
    if _BAD_ID_CHARS.search(rid):
        raise Rejected("id contains control or invalid characters")
    return rid


def quiet_id(value: object) -> str | None:
    """The id for a Reject's record_id when it is valid, else None."""
    try:
        return valid_id(value)
    except Rejected:
        return None


def valid_text(value: object, rid: str, max_chars: int) -> str:
    """The text unchanged, or Rejected (carrying ``rid``)."""
    if value is None:
        raise Rejected("empty text", rid)
    if not isinstance(value, str):
        raise Rejected(f"text has the wrong type ({json_type(value)}; expected a string)", rid)
    if not value or value.isspace():
        raise Rejected("empty text", rid)
    if len(value) > max_chars:
        raise Rejected(f"text too long ({len(value)} characters; limit {max_chars})", rid)
    if "\x00" in value:
        raise Rejected("text contains NUL bytes", rid)
    if has_surrogates(value):
        raise Rejected("text contains invalid characters (lone surrogates)", rid)
    return value


def has_surrogates(value: str) -> bool:
    """Lone surrogates: undecodable bytes (surrogateescape) or \\udxxx escapes in JSON."""
    return not value.isascii() and _SURROGATES.search(value) is not None  # isascii is the fast path


def clean(value: str) -> str:
    # Lone surrogates (from JSON escapes) would not encode as UTF-8 later on.
    return _SURROGATES.sub("\ufffd", value) if has_surrogates(value) else value


def scalar_str(value: object) -> str | None:
    """A JSON scalar as a metadata / identifier string; None for null and containers."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)
    return None


@contextmanager
def open_lines(
    path: Path, name: str, options: ReaderOptions, *, universal: bool
) -> Iterator[Lines]:
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror}); check its permissions") from exc
    with fh:
        lines = Lines(fh, name, options.encoding, universal=universal, max_chars=line_cap(options))
        try:
            yield lines
        finally:
            lines.close()


def line_cap(options: ReaderOptions) -> int:
    # Room for a maximal note written as \uXXXX escapes (6 characters each) plus other fields.
    return 8 * options.max_note_chars + (1 << 20)


def undecodable_reason(lines: Lines) -> str:
    return f"bad encoding: invalid {lines.encoding} data; the rest of the file was not read"


def dedupe(identifiers: list[Identifier]) -> tuple[Identifier, ...]:
    seen: set[tuple[str, str]] = set()
    out = []
    for ident in identifiers:
        if (ident.type, ident.value) not in seen:
            seen.add((ident.type, ident.value))
            out.append(ident)
    return tuple(out)
