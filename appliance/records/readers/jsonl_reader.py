"""JSONL/NDJSON exports: one JSON object a line (or a .json array of objects, or one object).

Nested objects are flattened with dots (``patient.name``); the id and text
fields are found among the top-level keys unless named (a named one may be
a dotted path). Lists of scalars under an identifier name give one
identifier per element; identifiers inside lists of objects are not looked
for. Metadata values are strings (numbers as JSON writes them, booleans
``true``/``false``, lists JSON-encoded). Locations are ``line L``, or
``item N`` / ``document`` for a single-document .json.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance.documents import Identifier, Record, Reject
from appliance.records.readers.base import (
    Export,
    ExportFormat,
    Head,
    ReaderOptions,
    Rejected,
    clean,
    dedupe,
    identifier_specs,
    scalar_str,
    show,
    valid_id,
    valid_text,
)
from appliance.records.readers.fields import ID_FIELD_NAMES, TEXT_FIELD_NAMES, identifier_type
from appliance.records.readers.json_source import (
    Document,
    has_resource_type,
    json_document,
    json_items,
    looks_like_json,
    not_an_object,
)

_MISSING = object()


def _read_jsonl(
    path: Path, name: str, options: ReaderOptions, document: Document | None
) -> Iterator[Record | Reject]:
    specs = identifier_specs(options)
    for item in json_items(path, name, options, document):
        if isinstance(item, Reject):
            yield item
            continue
        location, value = item
        if not isinstance(value, dict):
            yield not_an_object(name, location, value)
            continue
        try:
            yield _jsonl_record(value, name, location, options, specs)
        except Rejected as exc:
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
        return f"no field {show(named)}"
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
        path = prefixes[-1] + clean(str(key))
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
        raise Rejected(f"missing id ({_absent(options.id_column, ID_FIELD_NAMES)})")
    rid = valid_id(id_value)
    if text_value is _MISSING:
        raise Rejected(f"empty text ({_absent(options.text_column, TEXT_FIELD_NAMES)})", rid)
    text = valid_text(text_value, rid, options.max_note_chars)
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
                found = None if isinstance(element, bool) else scalar_str(element)
                if found and found.strip():
                    identifiers.append(Identifier(type_, found.strip(), path))
            continue
        if options.metadata_columns is not None and not any(
            _matches(path, column) for column in options.metadata_columns
        ):
            continue
        if isinstance(value, list):
            shown = clean(json.dumps(value, ensure_ascii=False)) if value else None
        else:
            shown = scalar_str(value)
        if shown is not None and shown.strip() and path not in metadata:
            metadata[path] = shown.strip()
    return Record(rid, text, metadata, dedupe(identifiers), f"{name}:{location}")


def read_jsonl(export: Export) -> Iterator[Record | Reject]:
    """Parse a single-document .json now (InputError if it cannot be); lines stream later."""
    document = json_document(export.path, export.name, export.options)
    return _read_jsonl(export.path, export.name, export.options, document)


def _sniff_jsonl(head: Head) -> bool:
    return looks_like_json(head) and not has_resource_type(head.text)


FORMAT = ExportFormat("jsonl", read_jsonl, sniff=_sniff_jsonl, aliases=("ndjson",))
