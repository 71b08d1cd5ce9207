"""CSV/TSV exports: one note a row, under a header row that names the columns.

The delimiter is tab for .tsv, else sniffed from the header ("," tab ";"
"|") unless given. The id and text columns are the first of
``ID_FIELD_NAMES`` / ``TEXT_FIELD_NAMES`` in the header unless named;
identifier columns are those ``identifier_type`` knows unless named; every
other column is metadata. Locations are ``row N`` (the header is row 1 and
blank rows count, as in a spreadsheet), ``row N (line L)`` when the row
starts on another physical line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.documents import Identifier, Record, Reject
from appliance.errors import InputError
from appliance.records.readers.base import (
    Export,
    ExportFormat,
    Head,
    ReaderOptions,
    Rejected,
    dedupe,
    delimiter_of,
    has_surrogates,
    identifier_specs,
    line_cap,
    open_lines,
    quiet_id,
    show,
    undecodable_reason,
    valid_id,
    valid_text,
)
from appliance.records.readers.decoding import Lines, LineTooLong, Undecodable
from appliance.records.readers.fields import ID_FIELD_NAMES, TEXT_FIELD_NAMES, identifier_type

_HEADER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_ .\-]{0,39}")


def _show_columns(header: list[str]) -> str:
    # Error messages reach terminals, service logs and tickets. A file without
    # a header row puts a patient's data where column names should be, so
    # names are shown only when every one of them looks like a column name.
    if not header or not all(_HEADER_NAME.fullmatch(h) for h in header):
        return f"{len(header)} columns whose names do not look like a header (is the header row missing?)"
    shown = ", ".join(header[:30])
    return shown + (f", ... ({len(header) - 30} more)" if len(header) > 30 else "")


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

    def __init__(self, lines: Lines) -> None:
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
    # As long as a line may be: a note of any length that fits on a line is read
    # whole and rejected with its id and exact length ("text too long").
    limit = line_cap(options)
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
        return delimiter_of(options.delimiter)
    if path.suffix.lower() == ".tsv":
        return "\t"
    first = ""
    with open_lines(path, name, options, universal=True) as lines:
        try:
            for line in lines:
                if line.strip():
                    first = line
                    break
        except (LineTooLong, Undecodable):
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


def _read_header(
    reader: Iterator[list[str]], feed: _RowFeed, name: str, hint: str
) -> tuple[list[str], int]:
    """The header (names stripped) and how many rows it and the blank rows before it took."""
    rows = 0
    encoding = feed.lines.encoding
    while True:
        feed.start_row()
        try:
            row = next(reader)
        except StopIteration:
            raise InputError(f"{name}: empty file; a CSV export starts with a header row") from None
        except LineTooLong:
            raise InputError(
                f"{name}: the first line is longer than {feed.lines.max_chars} characters; "
                f"is this a CSV export? (else pass {hint})"
            ) from None
        except Undecodable as exc:
            raise InputError(
                f"{name}: cannot decode the header as {encoding} ({exc.__cause__}); "
                "pass the export's encoding with --encoding"
            ) from None
        except csv.Error as exc:
            raise InputError(f"{name}: cannot parse the header row ({exc})") from exc
        rows += 1
        if _is_blank_row(row):
            continue
        if any(has_surrogates(h) for h in row):
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


def _csv_plan(path: Path, name: str, options: ReaderOptions, hint: str) -> _CsvPlan:
    """Read the header and decide which column is what; InputError when it cannot be done."""
    _field_limit(options)
    delimiter = _sniff_delimiter(path, name, options)
    with open_lines(path, name, options, universal=True) as lines:
        feed = _RowFeed(lines)
        header, _ = _read_header(csv.reader(feed, delimiter=delimiter), feed, name, hint)
    found = _show_columns(header)
    hint = "; it looks like UTF-16, try --encoding utf-16" if "\x00" in "".join(header) else ""

    def named(column: str, option: str) -> int:
        index = _find_column(header, column)
        if index is None:
            raise InputError(
                f"{name}: no column {show(column)} ({option}); found columns {found}{hint}"
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
            f"{name}: the id and text columns are the same column ({show(header[id_index])})"
        )
    taken = {id_index, text_index}
    specs = identifier_specs(options)
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
    path: Path, name: str, options: ReaderOptions, plan: _CsvPlan, hint: str
) -> Iterator[Record | Reject]:
    field_limit = _field_limit(options)
    with open_lines(path, name, options, universal=True) as lines:
        feed = _RowFeed(lines)
        reader = csv.reader(feed, delimiter=plan.delimiter)
        _, row_number = _read_header(reader, feed, name, hint)
        while True:
            feed.start_row()
            row_number += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except LineTooLong:
                yield Reject(
                    name,
                    _row_location(row_number, feed.first_line or lines.number),
                    f"row too long (a line of more than {lines.max_chars} characters)",
                )
                continue
            except Undecodable:
                yield Reject(
                    name, _row_location(row_number, lines.number), undecodable_reason(lines)
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
            except Rejected as exc:
                yield Reject(name, location, exc.reason, exc.record_id)


def _row_location(row: int, line: int) -> str:
    return f"row {row}" if line in (row, 0) else f"row {row} (line {line})"


def _csv_record(
    row: list[str], plan: _CsvPlan, feed: _RowFeed, name: str, location: str, options: ReaderOptions
) -> Record:
    rid_known = quiet_id(row[plan.id_index]) if plan.id_index < len(row) else None
    # Undecodable bytes first: they may be why the fields do not line up.
    if any(has_surrogates(value) for value in row):
        where = feed.lines.where_bad("".join(feed.texts), feed.offset)
        raise Rejected(f"bad encoding: invalid {feed.lines.encoding} {where}", rid_known)
    if len(row) != plan.columns:
        raise Rejected(
            f"wrong number of fields (row has {len(row)} fields but header has {plan.columns})",
            rid_known,
        )
    rid = valid_id(row[plan.id_index])
    text = valid_text(row[plan.text_index], rid, options.max_note_chars)
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
    return Record(rid, text, metadata, dedupe(identifiers), f"{name}:{location}")


def _looks_like_csv(head: Head) -> bool:
    """True when the first non-blank line is a header with an id and a text column."""
    first = next((line for line in head.text.splitlines() if line.strip()), "")
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


def read_csv(export: Export) -> Iterator[Record | Reject]:
    """Decide the columns from the header now (InputError if it cannot be done); rows stream later."""
    plan = _csv_plan(export.path, export.name, export.options, export.format_hint)
    return _read_csv(export.path, export.name, export.options, plan, export.format_hint)


FORMAT = ExportFormat(
    "csv", read_csv, suffixes=(".csv", ".tsv"), sniff=_looks_like_csv, sniff_last=True
)
