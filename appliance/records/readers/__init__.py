"""Export readers: CSV/TSV, JSONL/NDJSON, a folder of .txt files, FHIR R4 DocumentReferences.

This module is the registry: ``REGISTRY`` lists the formats, one module each
(``csv_reader``, ``jsonl_reader``, ``txt_reader``, ``fhir_reader``), and
``FORMATS``, ``detect_format`` and ``read_export`` are derived from it.
What the readers share lives in ``base`` (options, plug-in types, id/text
validation, Reject helpers), ``decoding`` (encodings, bounded lines),
``json_source`` (JSON lines or one document) and ``fields`` (the id, text
and identifier field names).

Adding an export format is one new module and one registry line:

    # appliance/records/readers/hl7_reader.py
    from appliance.records.readers.base import Export, ExportFormat, Head

    def read_hl7(export: Export) -> Iterator[Record | Reject]:
        ...  # raise InputError now if the export cannot be read at all,
        return _records(export)  # then return a generator of Records and Rejects

    def _sniff(head: Head) -> bool:  # optional: claim files of other suffixes
        return head.text.startswith("MSH|")

    FORMAT = ExportFormat("hl7", read_hl7, suffixes=(".hl7",), sniff=_sniff)

    # here, in REGISTRY (its place sets the order of FORMATS):
    hl7_reader.FORMAT,

Detection (``detect_format``): a folder is the format with ``folders=True``;
a file whose suffix one format lists is that format; any other file is
offered, by its first 64 KiB, to each format's ``sniff`` in registry order
(``sniff_last`` ones after the rest), and the first that claims it wins.
Sniffers of formats that could both claim a file must exclude each other
(JSONL claims JSON without a resourceType, FHIR JSON with one). The CLI's
``--format`` choices are built from ``FORMATS``, so the new name appears
there by itself.

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
    text too long (N characters; limit M)       M is max_note_chars
    text contains NUL bytes                     binary content
    text contains invalid characters (...)      lone surrogates from JSON escapes
    bad encoding: invalid utf-8 at byte offset N                    offset in the file
    bad encoding: invalid utf-16 (offset unknown)
    bad encoding: invalid utf-16 data; the rest of the file was not read   decoder gave up
    wrong number of fields (row has N fields but header has M)      CSV
    field too long (over N characters)          CSV quoted field spanning lines beyond the line cap
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
- Each format module's docstring gives its own mapping (JSON flattening,
  the txt folder walk, the fixed FHIR mapping).
- Encodings: "utf-8" also accepts a UTF-8 BOM, and a file starting with a
  UTF-16/32 BOM is read in that encoding. Undecodable bytes make their row a
  "bad encoding" reject and reading goes on (the byte offset is given for
  ASCII-compatible encodings such as utf-8, cp1252, latin-1).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from appliance.documents import Record, Reject
from appliance.errors import InputError
from appliance.records.readers import csv_reader, fhir_reader, jsonl_reader, txt_reader
from appliance.records.readers.base import (
    MAX_ID_CHARS,
    Export,
    ExportFormat,
    Head,
    ReaderOptions,
    check_options,
    read_head,
)
from appliance.records.readers.decoding import head_text

__all__ = ["FORMATS", "MAX_ID_CHARS", "ReaderOptions", "detect_format", "read_export"]

# The export formats, one line each; the order is that of FORMATS and of sniffing.
REGISTRY: tuple[ExportFormat, ...] = (
    csv_reader.FORMAT,
    jsonl_reader.FORMAT,
    txt_reader.FORMAT,
    fhir_reader.FORMAT,
)

FORMATS = tuple(f.name for f in REGISTRY)

_BY_NAME = {name: f for f in REGISTRY for name in (f.name, *f.aliases)}
_FOLDER_FORMAT = next((f for f in REGISTRY if f.folders), None)
# (name, sniff) in the order detect_format tries them: registry order, weak guesses last.
_SNIFFERS = tuple(
    (f.name, f.sniff) for f in sorted(REGISTRY, key=lambda f: f.sniff_last) if f.sniff is not None
)
_FORMAT_HINT = "--format " + "|".join(FORMATS)
_DEFAULT_OPTIONS = ReaderOptions()


def detect_format(path: Path) -> str:
    """The export format of ``path``: "csv", "jsonl", "txt" or "fhir".

    A folder is "txt"; otherwise the suffix decides (.csv/.tsv, .txt), and for
    .jsonl/.ndjson/.json and unknown suffixes the first 64 KiB are sniffed.
    Raises ``InputError`` when the path cannot be read or the format not told.
    """
    path = Path(path)
    name = str(path)
    st = _stat(path)
    if stat.S_ISDIR(st.st_mode) and _FOLDER_FORMAT is not None:
        return _FOLDER_FORMAT.name
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{name}: not a regular file or folder; point ingest at the export file")
    suffix = path.suffix.lower()
    for fmt in REGISTRY:
        if suffix in fmt.suffixes:
            return fmt.name
    head = Head(suffix, head_text(read_head(path, name)))
    for fmt_name, sniff in _SNIFFERS:
        if sniff(head):
            return fmt_name
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
    check_options(options, name)
    if fmt == "auto":
        fmt = detect_format(path)
    elif fmt not in _BY_NAME:
        raise InputError(
            f"{name}: unknown export format {fmt!r}; use --format auto|{'|'.join(FORMATS)}"
        )
    export_format = _BY_NAME[fmt]
    st = _stat(path)
    is_dir = stat.S_ISDIR(st.st_mode)
    if not (is_dir and export_format.folders):
        _check_regular(name, st, export_format.name)
    return export_format.read(Export(path, name, options, is_dir, _FORMAT_HINT))


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or folder; check the path") from None
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read ({exc.strerror}); check the path and its permissions"
        ) from exc


def _check_regular(name: str, st: os.stat_result, fmt: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        folders = f" (a folder is read as --format {_FOLDER_FORMAT.name})" if _FOLDER_FORMAT else ""
        raise InputError(f"{name}: is a folder; --format {fmt} needs a file{folders}")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{name}: not a regular file; point ingest at the export file")
