"""A folder of .txt notes (or one .txt file): one note a file.

``*.txt`` files (any case of the suffix) are found recursively, each
folder's entries in name order; hidden files and folders (a leading dot)
and other files are ignored and yield nothing; symlinked folders are not
followed. id = relative path without the suffix, metadata ``{"file": rel}``.
Locations are ``file sub/a.txt``; Rejects carry the path relative to the
folder as ``source``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from appliance.documents import Record, Reject
from appliance.errors import InputError
from appliance.records.readers.base import (
    Export,
    ExportFormat,
    ReaderOptions,
    Rejected,
    clean,
    read_head,
    valid_id,
    valid_text,
)
from appliance.records.readers.decoding import error_start, resolve_encoding


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
        rid = valid_id(rid_raw)
        text = valid_text(_read_note_file(path, rid, options), rid, options.max_note_chars)
    except Rejected as exc:
        return Reject(source, location, exc.reason, exc.record_id)
    return Record(rid, text, {"file": clean(rel)}, (), f"{source}:{location}")


def _read_note_file(path: Path, rid: str, options: ReaderOptions) -> str:
    try:
        with path.open("rb") as fh:
            # No encoding needs more than 4 bytes a character (plus a BOM): anything larger is too long.
            limit = 4 * options.max_note_chars + 4
            data = fh.read(limit + 1)
    except OSError as exc:
        raise Rejected(f"cannot read file ({exc.strerror})", rid) from None
    if len(data) > limit:
        raise Rejected(
            f"text too long (file of more than {limit} bytes; max_note_chars is {options.max_note_chars})",
            rid,
        )
    encoding, bom = resolve_encoding(data[:4], options.encoding)
    try:
        text = data[bom:].decode(encoding)
    except UnicodeError as exc:
        raise Rejected(
            f"bad encoding: invalid {encoding} at byte offset {bom + error_start(exc)}", rid
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def read_txt(export: Export) -> Iterator[Record | Reject]:
    """A folder must hold a .txt file, a file must be readable (else InputError); notes stream later."""
    path, name, options = export.path, export.name, export.options
    if export.is_dir:
        if not _has_txt(path):
            raise InputError(
                f"{name}: no .txt files in this folder (hidden files and other suffixes "
                "are ignored); point ingest at a folder of .txt notes or pass --format"
            )
        return _read_txt_folder(path, options)
    read_head(path, name)  # fails early if unreadable
    return _read_txt_file(path, name, options)


FORMAT = ExportFormat("txt", read_txt, suffixes=(".txt",), folders=True)
