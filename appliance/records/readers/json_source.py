"""JSON sources shared by the JSONL and FHIR readers: one value per line, or one document.

A ``.json`` file is one document when its first non-blank character is "["
or its first non-blank line is a lone "{"; it is parsed whole (capped at 512
MiB) when ``read_export`` is called, so an unparsable one raises
``InputError``. Every other file is read line by line, each non-blank line
one JSON value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.documents import Reject
from appliance.errors import InputError
from appliance.records.readers.base import (
    Head,
    ReaderOptions,
    has_surrogates,
    json_type,
    open_lines,
    read_head,
    undecodable_reason,
)
from appliance.records.readers.decoding import (
    LineTooLong,
    Undecodable,
    error_start,
    head_text,
    resolve_encoding,
)

_MAX_JSON_DOCUMENT_BYTES = 512 << 20
# Suffixes whose files are JSON whatever they start with.
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")

# A JSON key "resourceType" (not an escaped one inside a string value).
_RESOURCE_TYPE_KEY = re.compile(r'(?<!\\)"resourceType"\s*:')

# One JSON value and where it was: ("line 3", obj); or a Reject for a line that is not JSON.
_JsonItem = tuple[str, Any] | Reject


@dataclass(frozen=True)
class Document:
    """A .json file parsed whole (pretty-printed), as opposed to one value per line."""

    value: Any


def json_document(path: Path, name: str, options: ReaderOptions) -> Document | None:
    """Parse a pretty-printed single-document .json now (so errors raise); None for JSON lines.

    A .json file is one document when its first non-blank character is "[" or
    its first non-blank line is a lone "{"; every other file is JSON lines.
    """
    if path.suffix.lower() != ".json":
        return None
    head = head_text(read_head(path, name)).lstrip(" \t\r\n")
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
    encoding, bom = resolve_encoding(data[:4], options.encoding)
    try:
        text = data[bom:].decode(encoding).lstrip("\ufeff")
    except UnicodeError as exc:
        raise InputError(
            f"{name}: not valid {encoding} at byte offset {bom + error_start(exc)}; "
            "pass the export's encoding with --encoding"
        ) from None
    try:
        return Document(json.loads(text))
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
    with open_lines(path, name, options, universal=False) as lines:
        while True:
            try:
                text = next(lines)
            except StopIteration:
                return
            except LineTooLong:
                yield Reject(
                    name,
                    f"line {lines.number}",
                    f"line too long (more than {lines.max_chars} characters)",
                )
                continue
            except Undecodable:
                yield Reject(name, f"line {lines.number}", undecodable_reason(lines))
                return
            location = f"line {lines.number}"
            if not text.strip(" \t\r\n"):
                continue
            if has_surrogates(text):
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


def json_items(
    path: Path, name: str, options: ReaderOptions, document: Document | None
) -> Iterator[_JsonItem]:
    if document is None:
        yield from _json_lines(path, name, options)
    elif isinstance(document.value, list):
        for number, value in enumerate(document.value, 1):
            yield f"item {number}", value
    else:
        yield "document", document.value


def not_an_object(name: str, location: str, value: object) -> Reject:
    noun = location.split(" ", 1)[0]
    noun = {"line": "line", "item": "item"}.get(noun, "document")
    return Reject(name, location, f"JSON {noun} is not an object (got {json_type(value)})")


def has_resource_type(head: str) -> bool:
    """True when the first JSON value in ``head`` has a resourceType (FHIR), else False (JSONL)."""
    stripped = head.lstrip(" \t\r\n\ufeff")
    first = stripped.partition("\n")[0]
    try:
        value = json.loads(first)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, dict):
        return "resourceType" in value
    # The first value is cut off or spans lines: look for the key anywhere in the head.
    return _RESOURCE_TYPE_KEY.search(head) is not None


def looks_like_json(head: Head) -> bool:
    """A JSON suffix, or a file of another suffix that starts like JSON."""
    return head.suffix in _JSON_SUFFIXES or head.text.lstrip(" \t\r\n").startswith(("{", "["))
