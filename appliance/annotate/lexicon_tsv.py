"""A :class:`~appliance.annotate.lexicon.Lexicon` as one plain TSV (``term``, ``label``, ``code``), and back.

The form a model package carries its lexicon in: one entry per line, in the
lexicon's order (the order decides which type a surface listed twice gets),
exact duplicates dropped. Fields are written with the ``csv`` module's
minimal quoting, so a term holding a tab, a quote or a line break reads back
unchanged. It is also a valid ``--lexicon`` file for ``appliance annotate``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from appliance.annotate.lexicon import Lexicon, LexiconEntry
from appliance.errors import InputError

HEADER = ("term", "label", "code")


def to_tsv(lexicon: Lexicon) -> bytes:
    """The entries as UTF-8 TSV with a ``term<TAB>label<TAB>code`` header."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(HEADER)
    seen: set[tuple[str, str, str]] = set()
    for entry in lexicon.entries:
        row = (entry.surface, entry.label, entry.code)
        if row in seen:
            continue
        seen.add(row)
        writer.writerow(row)
    return buf.getvalue().encode("utf-8")


def from_tsv(data: bytes, where: str, sources: list[dict[str, Any]] | None = None) -> Lexicon:
    """Read what :func:`to_tsv` wrote; ``where`` names the file in error messages."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    rows = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    header = next(rows, None)
    if header is None or tuple(header) != HEADER:
        raise InputError(f"{where}: not a lexicon TSV (expected the header term, label, code)")
    entries: list[LexiconEntry] = []
    for lineno, row in enumerate(rows, 2):
        if len(row) != len(HEADER) or not row[0] or not row[1]:
            raise InputError(f"{where} row {lineno}: expected a term, a label and a code")
        entries.append(LexiconEntry(row[0], row[1], row[2]))
    return Lexicon(entries, list(sources or []))
