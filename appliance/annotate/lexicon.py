"""The lexicon annotator: the built-in default that needs no LLM.

Lexicons come from files:

* TSV/CSV term lists, with a header naming a term column (``term``, ``name``,
  ``common name``...) and optionally ``label``, ``code`` and ``synonyms``
  (separated by ``|``) columns, e.g. the appliance's own demo vocabularies
  and the DrugBank vocabulary CSV; or without a header, one term per line
  (``term[<TAB>label[<TAB>code[<TAB>synonyms]]]``);
* OBO ontologies such as the Disease Ontology: each non-obsolete term's name
  and its EXACT and RELATED synonyms.

Matching is a token trie, the word-level equivalent of Aho-Corasick: the note
is split into word tokens once and every position is walked down the trie, so
the cost grows with the note's length, not the lexicon's size (18,000 Disease
Ontology strings match a note as fast as 300). Tokens are compared after
normalization: case folded (except short all-capital abbreviations such as
``CAG`` or ``ALL``, which must match exactly), typographic dashes and quotes
unified and, for English, simple plural inflection removed (``ulcers`` →
``ulcer``, ``therapies`` → ``therapy``). Since the trie works on tokens,
whitespace and line breaks between words do not matter. Optional regular
expressions per type add matches a list cannot enumerate (``\\w+mab``).
Overlapping matches are resolved like LLM mentions: longest first, then
earliest (:func:`appliance.annotate.align.resolve_overlaps`).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.annotate.align import resolve_overlaps
from appliance.demo.vocabulary import load_vocabulary, vocabulary_folder
from appliance.documents import Span, word_tokens
from appliance.errors import InputError, UsageError

__all__ = [
    "Lexicon",
    "LexiconAnnotator",
    "LexiconEntry",
    "demo_lexicon",
    "load_lexicon",
]

_TERM_COLUMNS = ("term", "name", "common name", "preferred term", "preferred name", "string")
_LABEL_COLUMNS = ("label", "type", "category", "entity")
_CODE_COLUMNS = ("code", "id", "drugbank id", "concept", "cui")
_SYNONYM_COLUMNS = ("synonyms", "synonym", "aliases", "alias")
_DASHES = str.maketrans({c: "-" for c in "‐‑‒–—―−"} | {c: "'" for c in "’‘`´"})
# Single words that name no particular condition; an ontology lists them as
# terms (DOID:4 is "disease") but a mention of them alone is not an entity.
GENERIC_TERMS = frozenset({"disease", "disorder", "syndrome", "condition", "finding", "drug"})


@dataclass(frozen=True)
class LexiconEntry:
    surface: str
    label: str
    code: str = ""


@dataclass
class Lexicon:
    """Surface strings with their type, and where they came from."""

    entries: list[LexiconEntry] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Lexicon) -> None:
        self.entries.extend(other.entries)
        self.sources.extend(other.sources)

    @property
    def labels(self) -> list[str]:
        return sorted({e.label for e in self.entries})


# ---------------------------------------------------------------------------
# Loading


def demo_lexicon() -> Lexicon:
    """The appliance's demo vocabularies (appliance/demo/data/vocab): DRUG, PROCEDURE, DIAGNOSIS."""
    lex = Lexicon()
    for entry in load_vocabulary().values():
        for surface in entry.surfaces:
            lex.entries.append(LexiconEntry(surface, entry.label, entry.code))
    folder = vocabulary_folder()
    digest = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.name.endswith(".tsv")):
        digest.update((folder / name).read_bytes())
    lex.sources.append(
        {
            "path": "appliance/demo/data/vocab",
            "sha256": digest.hexdigest(),
            "entries": len(lex.entries),
        }
    )
    return lex


def load_lexicon(path: Path, label: str | None = None) -> Lexicon:
    """Read a TSV/CSV term list or an OBO ontology; ``label`` types files without a label column."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: lexicon file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: a lexicon is a file, not a folder") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: lexicon is not UTF-8 text (byte {exc.start})") from exc
    if path.suffix.lower() == ".obo" or text.lstrip().startswith("format-version:"):
        if not label:
            raise UsageError(f"{path}: an OBO ontology has no type column; pass --label TYPE")
        entries = _read_obo(text, label)
        kind = "obo"
    else:
        entries = _read_table(text, path, label)
        kind = "table"
    if not entries:
        raise InputError(f"{path}: no terms found in this lexicon")
    source = {
        "path": str(path),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "format": kind,
        "entries": len(entries),
    }
    if label:
        source["label"] = label
    return Lexicon(entries, [source])


_OBO_NAME = re.compile(r"name:\s*(.+?)\s*$")
_OBO_SYNONYM = re.compile(r'synonym:\s*"((?:[^"\\]|\\.)*)"\s+(EXACT|RELATED|NARROW|BROAD)\b')


def _unescape_obo(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def _read_obo(text: str, label: str) -> list[LexiconEntry]:
    entries: list[LexiconEntry] = []
    for stanza in re.split(r"\n(?=\[)", text):
        if not stanza.startswith("[Term]"):
            continue
        lines = stanza.splitlines()
        if any(line.strip() == "is_obsolete: true" for line in lines):
            continue
        code = next((line[3:].strip() for line in lines if line.startswith("id:")), "")
        for line in lines:
            m = _OBO_NAME.match(line) or _OBO_SYNONYM.match(line)
            # Names, and EXACT or RELATED synonyms (NARROW/BROAD name other concepts).
            if m is not None and (m.re is _OBO_NAME or m[2] in ("EXACT", "RELATED")):
                entries.append(LexiconEntry(_unescape_obo(m[1]), label, code))
    return entries


def _read_table(text: str, path: Path, label: str | None) -> list[LexiconEntry]:
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first or path.suffix.lower() in (".tsv", ".txt") else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]

    def col(names: Sequence[str]) -> int | None:
        return next((header.index(n) for n in names if n in header), None)

    term_col = col(_TERM_COLUMNS)
    if term_col is not None:
        label_col, code_col, syn_col = (
            col(_LABEL_COLUMNS),
            col(_CODE_COLUMNS),
            col(_SYNONYM_COLUMNS),
        )
        body, first_line = rows[1:], 2
    else:
        term_col, label_col, code_col, syn_col = 0, 1, 2, 3
        body, first_line = rows, 1
    entries: list[LexiconEntry] = []
    for lineno, row in enumerate(body, first_line):

        def cell(i: int | None, row: list[str] = row) -> str:
            return row[i].strip() if i is not None and i < len(row) else ""

        term = cell(term_col)
        row_label = cell(label_col) or label
        if not row_label:
            raise UsageError(
                f"{path} line {lineno}: no label column and no --label; pass --label TYPE for this file"
            )
        code = cell(code_col)
        surfaces = [term, *(s.strip() for s in cell(syn_col).split("|"))]
        for surface in surfaces:
            if surface:
                entries.append(LexiconEntry(surface, row_label, code))
    return entries


# ---------------------------------------------------------------------------
# Matching


def _is_abbreviation(surface: str) -> bool:
    letters = [c for c in surface if c.isalpha()]
    return bool(letters) and len(surface) <= 5 and all(c.isupper() for c in letters)


def _stem_en(tok: str) -> str:
    if len(tok) > 4 and tok.endswith("ies"):
        return tok[:-3] + "y"
    if len(tok) > 4 and tok.endswith(("sses", "xes", "zes", "ches", "shes")):
        return tok[:-2]
    if len(tok) > 3 and tok.endswith("s") and not tok.endswith(("ss", "us", "is")):
        return tok[:-1]
    return tok


class _Node:
    __slots__ = ("children", "entries")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        # (label, code, exact surface tokens or None when case-insensitive)
        self.entries: list[tuple[str, str, tuple[str, ...] | None]] = []


class LexiconAnnotator:
    """Marks lexicon terms (and regex rule matches) in text; see the module docstring."""

    kind = "lexicon"

    def __init__(
        self,
        lexicon: Lexicon,
        *,
        rules: Iterable[tuple[str, str]] = (),
        language: str = "en",
        case_insensitive: bool = True,
        inflection: bool = True,
        skip_generic: bool = True,
    ) -> None:
        self.lexicon = lexicon
        self.language = language
        self.case_insensitive = case_insensitive
        self.inflection = inflection and language == "en"
        self.skip_generic = skip_generic
        self.rules: list[tuple[str, re.Pattern[str]]] = []
        for label, pattern in rules:
            try:
                self.rules.append((label, re.compile(pattern)))
            except re.error as exc:
                raise UsageError(
                    f"--regex {label}={pattern}: not a valid regular expression ({exc})"
                ) from None
        self.root = _Node()
        self.size = 0
        self.conflicts = 0  # surfaces listed with two different types: the first wins
        seen: dict[tuple[tuple[str, ...], tuple[str, ...] | None], str] = {}
        for entry in lexicon.entries:
            surface = " ".join(entry.surface.split())
            if len(surface) < 2 or surface.isdigit():
                continue
            if skip_generic and surface.lower() in GENERIC_TERMS:
                continue
            raw = tuple(surface[a:b] for a, b in word_tokens(surface))
            key = tuple(self.normalize(t) for t in raw)
            exact = raw if (not case_insensitive or _is_abbreviation(surface)) else None
            if (key, exact) in seen:
                self.conflicts += seen[(key, exact)] != entry.label
                continue
            seen[(key, exact)] = entry.label
            node = self.root
            for tok in key:
                node = node.children.setdefault(tok, _Node())
            node.entries.append((entry.label, entry.code, exact))
            self.size += 1

    def normalize(self, token: str) -> str:
        token = token.translate(_DASHES)
        if not self.case_insensitive:
            return token
        token = token.casefold()
        return _stem_en(token) if self.inflection else token

    def params(self) -> dict[str, Any]:
        return {
            "annotator": self.kind,
            "sources": self.lexicon.sources,
            "terms": self.size,
            "labels": self.lexicon.labels,
            "language": self.language,
            "case_insensitive": self.case_insensitive,
            "inflection": self.inflection,
            "skip_generic": self.skip_generic,
            "rules": [[label, p.pattern] for label, p in self.rules],
        }

    def annotate_text(self, text: str) -> list[Span]:
        tokens = word_tokens(text)
        raw = [text[a:b] for a, b in tokens]
        norm = [self.normalize(t) for t in raw]
        candidates: list[tuple[Span, int]] = []
        for i in range(len(tokens)):
            node = self.root
            best: tuple[int, str] | None = None
            j = i
            while j < len(tokens) and (child := node.children.get(norm[j])) is not None:
                node = child
                j += 1
                for label, _code, exact in node.entries:
                    if exact is None or tuple(raw[i:j]) == exact:
                        best = (j, label)
                        break
            if best is not None:
                start, end = tokens[i][0], tokens[best[0] - 1][1]
                candidates.append((Span(start, end, best[1], text[start:end]), 0))
        for label, pattern in self.rules:
            for m in pattern.finditer(text):
                if m.end() > m.start():
                    candidates.append((Span(m.start(), m.end(), label, m.group()), 1))
        spans, _ = resolve_overlaps(candidates)
        return spans
