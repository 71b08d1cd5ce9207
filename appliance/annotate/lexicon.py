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
unified, and inflections folded away (``ulcers`` → ``ulcer``). Since the trie
works on tokens, whitespace and line breaks between words do not matter.
Optional regular expressions per type add matches a list cannot enumerate
(``\\w+mab``). Overlapping matches are resolved like LLM mentions: longest
first, then earliest (:func:`appliance.annotate.align.resolve_overlaps`).

Everything that depends on a language is data: the entity schema's
``[lexicon.LANG]`` table (inflections, spelling variants, optional tokens,
generic terms, stop words, where a phrase has its head) and, per type,
``[entity.lexicon.LANG]`` (head nouns, suffixes, word orders); see
:class:`LexiconRules`. A workspace gets its own language's rules only. On top
of plain matching, each switchable:

* **abbreviations** (:mod:`appliance.annotate.abbreviations`, Schwartz–Hearst):
  a short form the note defines, whose long form is a match (or a strong
  head-noun phrase), is labelled with that type everywhere in the note;
* **variants**: spelling variants (``tumour``/``tumor``), hyphen, space or
  nothing between two parts, optional tokens (``Alzheimer's``/``Alzheimer``)
  and word orders (``deficiency of X``/``X deficiency``), all folded into the
  trie's keys, so they cost no extra lookups;
* **head nouns**: a phrase ending in a head noun of a type, with a modifier
  before it, that the lexicon did not match is a span of that type; a head
  noun alone, or a word with a type's suffix, is left undecided, and so are
  the modifiers before a match that the match did not take;
* **unknown words** (off by default): words no rule decided that look like
  names (letters with digits, two capitals, a capital mid-sentence).

Every span has a confidence: ``EXACT`` (1.0) for the lexicon's words,
``VARIANT`` (0.95) when an inflection or variant was needed, ``PATTERN`` (0.9)
for a regex rule, ``ABBREVIATION`` (0.9, at most the long form's) and
``HEAD_NOUN`` (0.6). Undecided ranges are ``Uncertain`` with a reason
(``head_noun``, ``modifier``, ``abbreviation``, ``unknown_word``): partial-label
training leaves them out of the loss rather than teach them as no entity.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.annotate.abbreviations import Abbreviation, find_abbreviations
from appliance.annotate.align import Intervals, resolve_overlaps
from appliance.config import (
    EntitySchema,
    Inflection,
    LanguageLexiconRules,
    TypeLexiconRules,
    default_policy_path,
    load_policy,
)
from appliance.demo.vocabulary import DEMO_SYSTEMS, load_vocabulary, vocabulary_folder
from appliance.documents import Span, Uncertain, word_tokens
from appliance.errors import InputError, UsageError, WorkspaceError

__all__ = [
    "ABBREVIATION",
    "EXACT",
    "HEAD_NOUN",
    "PATTERN",
    "VARIANT",
    "Lexicon",
    "LexiconAnnotator",
    "LexiconEntry",
    "LexiconResult",
    "LexiconRules",
    "demo_lexicon",
    "load_lexicon",
]

_TERM_COLUMNS = ("term", "name", "common name", "preferred term", "preferred name", "string")
_LABEL_COLUMNS = ("label", "type", "category", "entity")
_CODE_COLUMNS = ("code", "id", "drugbank id", "concept", "cui")
_SYNONYM_COLUMNS = ("synonyms", "synonym", "aliases", "alias")
_XREF_COLUMNS = ("xrefs", "xref", "cross-references", "mappings")
_SYSTEM_COLUMNS = ("system", "code system", "terminology")
_DASHES = str.maketrans({c: "-" for c in "‐‑‒–—―−"} | {c: "'" for c in "’‘`´"})


@dataclass(frozen=True)
class LexiconEntry:
    """One surface string of a concept.

    ``preferred`` marks the concept's own name (a table's term column, an
    OBO ``name:``), the rest being synonyms; ``xrefs`` are the concept's codes
    in other terminologies (``MESH:D003924``); ``system`` is the code
    system's URI where the file names it.
    """

    surface: str
    label: str
    code: str = ""
    preferred: bool = False
    xrefs: tuple[str, ...] = ()
    system: str = ""


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
        system = DEMO_SYSTEMS.get(entry.label, "")
        for i, surface in enumerate(entry.surfaces):
            lex.entries.append(LexiconEntry(surface, entry.label, entry.code, i == 0, (), system))
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


def reload_source(source: dict[str, Any], ws_root: Path, hint: str) -> Lexicon:
    """One lexicon source an annotation set recorded, read again and checked against its hash.

    ``hint`` ends the error message when the file is gone or changed.
    """
    path = str(source.get("path", ""))
    demo = demo_lexicon()
    if path == demo.sources[0]["path"]:
        lex = demo
    else:
        candidates = [Path(path)]
        if not Path(path).is_absolute():
            candidates.append(ws_root / path)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise WorkspaceError(
                f"{path}: the lexicon file the annotations were made with is gone; {hint}"
            )
        lex = load_lexicon(found, source.get("label"))
    if lex.sources[0].get("sha256") != source.get("sha256"):
        raise WorkspaceError(
            f"{path}: the lexicon changed since the annotations were made with it "
            f"(sha256 {str(source.get('sha256'))[:16]}, now {lex.sources[0].get('sha256', '')[:16]}); {hint}"
        )
    return lex


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
        xrefs = tuple(
            line[5:].split()[0]
            for line in lines
            if line.startswith("xref:") and len(line.split()) > 1
        )
        for line in lines:
            m = _OBO_NAME.match(line) or _OBO_SYNONYM.match(line)
            # Names, and EXACT or RELATED synonyms (NARROW/BROAD name other concepts).
            if m is not None and (m.re is _OBO_NAME or m[2] in ("EXACT", "RELATED")):
                entries.append(
                    LexiconEntry(_unescape_obo(m[1]), label, code, m.re is _OBO_NAME, xrefs)
                )
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
    xref_col = system_col = None
    if term_col is not None:
        label_col, code_col, syn_col = (
            col(_LABEL_COLUMNS),
            col(_CODE_COLUMNS),
            col(_SYNONYM_COLUMNS),
        )
        xref_col, system_col = col(_XREF_COLUMNS), col(_SYSTEM_COLUMNS)
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
        xrefs = tuple(x.strip() for x in cell(xref_col).split("|") if x.strip())
        system = cell(system_col)
        surfaces = [term, *(s.strip() for s in cell(syn_col).split("|"))]
        for i, surface in enumerate(surfaces):
            if surface:
                entries.append(LexiconEntry(surface, row_label, code, i == 0, xrefs, system))
    return entries


# ---------------------------------------------------------------------------
# Language rules


@dataclass(frozen=True)
class LexiconRules:
    """One language's rules for the lexicon annotator, as an entity schema declares them.

    ``types`` maps an entity type to its head nouns, suffixes and word-order
    patterns. Built by :meth:`from_schema`; :meth:`none` has no rule at all.
    """

    language: str
    inflections: tuple[Inflection, ...] = ()
    variants: tuple[tuple[str, str], ...] = ()
    optional_tokens: tuple[str, ...] = ()
    generic_terms: frozenset[str] = frozenset()
    stop_words: frozenset[str] = frozenset()
    head: str = "last"
    max_modifiers: int = 3
    min_suffix_word: int = 6
    types: Mapping[str, TypeLexiconRules] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def none(cls, language: str) -> LexiconRules:
        return cls(language)

    @classmethod
    def from_schema(cls, schema: EntitySchema, language: str) -> LexiconRules:
        """The rules ``schema`` declares for ``language``.

        A schema that declares no lexicon rules at all (one written before
        they existed) gets the built-in schema's, for the types it defines.
        """
        labels = set(schema.labels)
        if not schema.has_lexicon_rules:
            schema = _builtin_schema()
        lang = schema.lexicon.get(language, LanguageLexiconRules())
        return cls(
            language=language,
            inflections=lang.inflections,
            variants=lang.variants,
            optional_tokens=lang.optional_tokens,
            generic_terms=frozenset(t.casefold() for t in lang.generic_terms),
            stop_words=frozenset(w.casefold() for w in lang.stop_words),
            head=lang.head,
            max_modifiers=lang.max_modifiers,
            min_suffix_word=lang.min_suffix_word,
            types={
                e.label: e.lexicon[language]
                for e in schema.entities
                if language in e.lexicon and e.label in labels
            },
            source=str(schema.path),
        )

    @classmethod
    def builtin(cls, language: str) -> LexiconRules:
        """The built-in schema's rules (policies/entities/clinical.toml) for ``language``."""
        return cls.from_schema(_builtin_schema(), language)

    def to_json(self) -> dict[str, Any]:
        """Every rule, as JSON (a model package carries them to match as annotation did)."""
        return {
            "language": self.language,
            "source": self.source,
            "inflections": [dataclasses.asdict(i) for i in self.inflections],
            "variants": [list(v) for v in self.variants],
            "optional_tokens": list(self.optional_tokens),
            "generic_terms": sorted(self.generic_terms),
            "stop_words": sorted(self.stop_words),
            "head": self.head,
            "max_modifiers": self.max_modifiers,
            "min_suffix_word": self.min_suffix_word,
            "types": {
                label: {
                    "head_nouns": list(t.head_nouns),
                    "suffixes": list(t.suffixes),
                    "word_order": [list(w) for w in t.word_order],
                }
                for label, t in sorted(self.types.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LexiconRules:
        """The rules :meth:`to_json` wrote; ValueError/KeyError/TypeError on anything else."""
        return cls(
            language=str(data["language"]),
            source=str(data.get("source", "")),
            inflections=tuple(
                Inflection(
                    str(i["suffix"]),
                    str(i.get("replace", "")),
                    int(i.get("min_length", 1)),
                    tuple(str(u) for u in i.get("unless", ())),
                )
                for i in data["inflections"]
            ),
            variants=tuple((str(a), str(b)) for a, b in data["variants"]),
            optional_tokens=tuple(str(t) for t in data["optional_tokens"]),
            generic_terms=frozenset(str(t) for t in data["generic_terms"]),
            stop_words=frozenset(str(w) for w in data["stop_words"]),
            head=str(data["head"]),
            max_modifiers=int(data["max_modifiers"]),
            min_suffix_word=int(data["min_suffix_word"]),
            types={
                str(label): TypeLexiconRules(
                    tuple(str(h) for h in t["head_nouns"]),
                    tuple(str(x) for x in t["suffixes"]),
                    tuple((str(a), str(b)) for a, b in t["word_order"]),
                )
                for label, t in data["types"].items()
            },
        )

    def summary(self) -> dict[str, Any]:
        """What the manifest records: where the rules came from, their hash and sizes."""
        canonical = {
            "inflections": [dataclasses.astuple(i) for i in self.inflections],
            "variants": self.variants,
            "optional_tokens": self.optional_tokens,
            "generic_terms": sorted(self.generic_terms),
            "stop_words": sorted(self.stop_words),
            "head": self.head,
            "max_modifiers": self.max_modifiers,
            "min_suffix_word": self.min_suffix_word,
            "types": {k: dataclasses.astuple(v) for k, v in sorted(self.types.items())},
        }
        digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
        return {
            "language": self.language,
            "source": self.source,
            "sha256": digest,
            "inflections": len(self.inflections),
            "variants": len(self.variants),
            "optional_tokens": len(self.optional_tokens),
            "generic_terms": len(self.generic_terms),
            "stop_words": len(self.stop_words),
            "head": self.head,
            "max_modifiers": self.max_modifiers,
            "types": {
                label: {
                    "head_nouns": len(r.head_nouns),
                    "suffixes": len(r.suffixes),
                    "word_order": len(r.word_order),
                }
                for label, r in self.types.items()
            },
        }


@functools.lru_cache(maxsize=1)
def _builtin_schema() -> EntitySchema:
    return load_policy(default_policy_path()).entity_schema()


# ---------------------------------------------------------------------------
# Matching

# Confidence of a span by the rule that made it.
EXACT = 1.0  # the lexicon's words, case folded
VARIANT = 0.95  # inflection, spelling variant, hyphenation, optional token or word order
PATTERN = 0.9  # a --regex rule
ABBREVIATION = 0.9  # a short form the note defines, its long form an entity
HEAD_NOUN = 0.6  # a phrase ending in a declared head noun, with a modifier


@dataclass
class LexiconResult:
    """What the lexicon annotator made of one note."""

    spans: list[Span]
    uncertain: list[Uncertain]
    counts: Counter[str] = field(default_factory=Counter)  # spans by rule, uncertain by reason


def _is_abbreviation(surface: str) -> bool:
    letters = [c for c in surface if c.isalpha()]
    return bool(letters) and len(surface) <= 5 and all(c.isupper() for c in letters)


class _Entry:
    __slots__ = ("code", "exact", "folds", "label")

    def __init__(self, label: str, code: str, exact: tuple[str, ...] | None) -> None:
        self.label = label
        self.code = code
        self.exact = exact  # the surface's tokens when only this case matches
        self.folds: set[tuple[str, ...]] = set()  # case-folded surfaces: their match is exact


class _Node:
    __slots__ = ("children", "entries")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.entries: list[_Entry] = []


def _add_layer(kept: list[Span], taken: Intervals, new: Iterable[Span]) -> list[Span]:
    """Add the spans of ``new`` (longest, then earliest first) that overlap nothing taken."""
    added = []
    for span in sorted(new, key=lambda s: (-(s.end - s.start), s.start, s.label)):
        if not taken.overlaps(span.start, span.end):
            kept.append(span)
            taken.add(span.start, span.end)
            added.append(span)
    return added


@dataclass
class _Words:
    """A note's words: letter/digit tokens joined by touching hyphens or apostrophes."""

    first: list[int]  # token index of each word's first token
    last: list[int]  # ... and last
    start: list[int]  # character offsets
    end: list[int]
    folds: list[str]  # the word case-folded
    content: list[bool]  # not a stop word, has a letter
    adjacent: list[bool]  # word w and w + 1 are separated by spaces only (no line break)


class LexiconAnnotator:
    """Marks lexicon terms (and regex rule matches) in text; see the module docstring.

    ``language_rules`` are the entity schema's rules for the workspace
    language (the built-in schema's when None). ``abbreviations``,
    ``variants``, ``head_nouns`` and ``unknown_words`` switch those rules on.
    """

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
        language_rules: LexiconRules | None = None,
        abbreviations: bool = True,
        variants: bool = True,
        head_nouns: bool = True,
        unknown_words: bool = False,
    ) -> None:
        self.lexicon = lexicon
        self.language = language
        self.lang = language_rules if language_rules is not None else LexiconRules.builtin(language)
        self.case_insensitive = case_insensitive
        self.inflections = self.lang.inflections if inflection and case_insensitive else ()
        self.inflection = bool(self.inflections)
        self.skip_generic = skip_generic
        self.abbreviations = abbreviations
        self.variants = variants
        self.head_nouns = head_nouns
        self.unknown_words = unknown_words
        self._variant_re: re.Pattern[str] | None = None
        self._variant_to: list[str] = []
        if variants and case_insensitive and self.lang.variants:
            parts = []
            for i, (src, dst) in enumerate(self.lang.variants):
                head = "^" if src.startswith("^") else ""
                tail = "$" if src.endswith("$") and len(src) > 1 else ""
                core = src[len(head) : len(src) - len(tail)].casefold()
                parts.append(f"(?P<v{i}>{head}{re.escape(core)}{tail})")
                self._variant_to.append(dst.casefold())
            self._variant_re = re.compile("|".join(parts))
        self._cache: dict[str, str] = {}
        self._folds: dict[str, str] = {}
        self._head_cache: dict[str, tuple[str, bool] | None] = {}
        self.rules: list[tuple[str, re.Pattern[str]]] = []
        for label, pattern in rules:
            try:
                self.rules.append((label, re.compile(pattern)))
            except re.error as exc:
                raise UsageError(
                    f"--regex {label}={pattern}: not a valid regular expression ({exc})"
                ) from None
        self._optional = (
            [tuple(self.normalize(t) for t in _tokens(o)) for o in self.lang.optional_tokens]
            if variants
            else []
        )
        self._optional = [o for o in self._optional if o]
        self.generic = self.lang.generic_terms if skip_generic else frozenset()
        self._stop = self.lang.stop_words
        # Head nouns and suffixes by type, in schema order.
        self._heads: list[tuple[str, frozenset[str], tuple[str, ...]]] = [
            (
                label,
                frozenset(self.normalize(h) for h in r.head_nouns),
                tuple(x.casefold() for x in r.suffixes),
            )
            for label, r in self.lang.types.items()
            if r.head_nouns or r.suffixes
        ]
        self.root = _Node()
        self.size = 0
        self.variant_keys = 0  # extra trie paths: joined hyphens and word orders
        self.conflicts = 0  # surfaces listed with two different types: the first wins
        self._seen: dict[tuple[tuple[str, ...], tuple[str, ...] | None], _Entry] = {}
        orders = self._word_orders() if variants else {}
        for entry in lexicon.entries:
            surface = " ".join(entry.surface.split())
            if len(surface) < 2 or surface.isdigit():
                continue
            if surface.casefold() in self.generic:
                continue
            spans = word_tokens(surface)
            raw = tuple(surface[a:b] for a, b in spans)
            exact = raw if (not case_insensitive or _is_abbreviation(surface)) else None
            key, joined = self._keys(surface, spans)
            fold = tuple(self._fold(t) for t in raw)
            self.size += self._add(key, entry.label, entry.code, exact, fold)
            if exact is not None:
                continue
            alternatives = [joined] if joined else []
            for prefix, suffix, other in orders.get(entry.label, ()):
                rest = len(key) - len(prefix) - len(suffix)
                if (
                    rest > 0
                    and key[: len(prefix)] == prefix
                    and key[len(key) - len(suffix) :] == suffix
                ):
                    middle = key[len(prefix) : len(key) - len(suffix)]
                    alternatives.append(other[0] + middle + other[1])
            for alt in alternatives:
                if alt and alt != key:
                    self.variant_keys += self._add(alt, entry.label, entry.code, None, None)
        del self._seen

    # -- normalization -------------------------------------------------------

    def _fold(self, token: str) -> str:
        out = self._folds.get(token)
        if out is None:
            out = token.translate(_DASHES)
            out = out.casefold() if self.case_insensitive else out
            self._folds[token] = out
        return out

    def _inflect(self, token: str) -> str:
        for rule in self.inflections:
            if (
                token.endswith(rule.suffix)
                and len(token) >= rule.min_length
                and not token.endswith(rule.unless)
            ):
                return token[: len(token) - len(rule.suffix)] + rule.replace
        return token

    def normalize(self, token: str) -> str:
        """A token as the trie compares it: folded, its inflection removed, variants unified."""
        out = self._cache.get(token)
        if out is None:
            out = self._inflect(self._fold(token))
            if self._variant_re is not None:
                to = self._variant_to
                out = self._variant_re.sub(lambda m: to[int(m.lastgroup[1:])], out)  # type: ignore[index]
            self._cache[token] = out
        return out

    def _keys(
        self, text: str, spans: Sequence[tuple[int, int]]
    ) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
        """The trie key of a term; with variants, also the key with its hyphens closed up."""
        raw = [text[a:b] for a, b in spans]
        norm = [self.normalize(t) for t in raw]
        if not self.variants:
            return tuple(norm), None
        skip = self._skips(raw, norm, spans)
        key: list[str] = []
        joined: list[str] = []
        j = 0
        hyphen = False
        while j < len(norm):
            if skip[j]:
                if norm[j] == "-":
                    hyphen = True
                    joined[-1] += raw[j + 1]
                    key.append(norm[j + 1])
                    j += 2
                    continue
                j += skip[j]
                continue
            key.append(norm[j])
            joined.append(raw[j])
            j += 1
        joined_key = tuple(self.normalize(t) for t in joined) if hyphen else None
        return tuple(key), joined_key

    def _skips(
        self, raw: Sequence[str], norm: Sequence[str], spans: Sequence[tuple[int, int]]
    ) -> list[int]:
        """Per token: how many tokens a match may pass over there (joining hyphens, optional tokens)."""
        n = len(raw)
        skip = [0] * n
        for j in range(1, n):
            if spans[j - 1][1] != spans[j][0] or not raw[j - 1][0].isalnum():
                continue  # only right after a word, touching it
            if (
                norm[j] == "-"
                and j + 1 < n
                and spans[j][1] == spans[j + 1][0]
                and raw[j + 1][0].isalnum()
            ):
                skip[j] = 1
                continue
            for seq in self._optional:
                if tuple(norm[j : j + len(seq)]) == seq and all(
                    spans[k - 1][1] == spans[k][0] for k in range(j + 1, j + len(seq))
                ):
                    end = j + len(seq)
                    if end == n or spans[end - 1][1] != spans[end][0]:
                        skip[j] = len(seq)
                        break
        return skip

    def _word_orders(
        self,
    ) -> dict[
        str, list[tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]]]]
    ]:
        """Per type: (prefix, suffix) of one side of a word-order pair, and the other side's."""
        out: dict[str, list[Any]] = {}

        def sides(pattern: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
            before, after = pattern.split("{}")
            return (
                self._keys(before, word_tokens(before))[0],
                self._keys(after, word_tokens(after))[0],
            )

        for label, r in self.lang.types.items():
            for a, b in r.word_order:
                sa, sb = sides(a), sides(b)
                out.setdefault(label, []).extend([(*sa, sb), (*sb, sa)])
        return out

    def _add(
        self,
        key: tuple[str, ...],
        label: str,
        code: str,
        exact: tuple[str, ...] | None,
        fold: tuple[str, ...] | None,
    ) -> int:
        if not key:
            return 0
        entry = self._seen.get((key, exact))
        if entry is not None:
            if entry.label != label:
                self.conflicts += fold is not None
                return 0
            if fold is not None:
                entry.folds.add(fold)
            return 0
        entry = _Entry(label, code, exact)
        if fold is not None:
            entry.folds.add(fold)
        self._seen[(key, exact)] = entry
        node = self.root
        for tok in key:
            node = node.children.setdefault(tok, _Node())
        node.entries.append(entry)
        return 1

    # -- parameters ----------------------------------------------------------

    def params(self) -> dict[str, Any]:
        return {
            "annotator": self.kind,
            "sources": self.lexicon.sources,
            "terms": self.size,
            "variant_keys": self.variant_keys,
            "labels": self.lexicon.labels,
            "language": self.language,
            "case_insensitive": self.case_insensitive,
            "inflection": self.inflection,
            "skip_generic": self.skip_generic,
            "abbreviations": self.abbreviations,
            "variants": self.variants,
            "head_nouns": self.head_nouns,
            "unknown_words": self.unknown_words,
            "language_rules": self.lang.summary(),
            "rules": [[label, p.pattern] for label, p in self.rules],
        }

    # -- annotation ----------------------------------------------------------

    def annotate_text(self, text: str) -> list[Span]:
        return self.annotate(text).spans

    def annotate(self, text: str) -> LexiconResult:
        """Spans and undecided ranges of one note: lexicon, abbreviations, head nouns, unknown words."""
        tokens = word_tokens(text)
        raw = [text[a:b] for a, b in tokens]
        norm = [self.normalize(t) for t in raw]
        counts: Counter[str] = Counter()
        pairs = find_abbreviations(text) if self.abbreviations else []
        groups = _definition_groups(text, tokens, pairs)
        candidates = self._lexicon_matches(text, tokens, raw, norm, groups)
        for label, pattern in self.rules:
            for m in pattern.finditer(text):
                if m.end() > m.start():
                    candidates.append((Span(m.start(), m.end(), label, m.group(), PATTERN), 1))
        spans, _ = resolve_overlaps(candidates)
        uncertain: list[Uncertain] = []
        words = (
            self._words(text, tokens, raw, groups)
            if (self.head_nouns or self.unknown_words)
            else None
        )
        if self.head_nouns and self._heads and words is not None:
            uncertain.extend(self._modifiers(text, words, spans))
        taken = Intervals()
        for s in spans:
            taken.add(s.start, s.end)
            counts[
                "exact"
                if s.confidence == EXACT
                else "variant"
                if s.confidence == VARIANT
                else "pattern"
            ] += 1
        phrases: list[Span] = []
        if self.head_nouns and self._heads and words is not None:
            phrases, weak = self._head_phrases(text, raw, norm, words, spans, taken)
            uncertain.extend(weak)
        if self.abbreviations:
            short, unsure = self._abbreviations(
                text, tokens, raw, pairs, spans + phrases, uncertain
            )
            uncertain.extend(unsure)
        else:
            short = []
        # Short forms and head-noun phrases together, longest first: "VHL disease" over "VHL".
        added = _add_layer(spans, taken, short + phrases)
        counts["abbreviation"] += sum(1 for x in added if x.confidence != HEAD_NOUN)
        counts["head_noun"] += sum(1 for x in added if x.confidence == HEAD_NOUN)
        if self.unknown_words and words is not None:
            uncertain.extend(self._unknown_words(text, tokens, words, taken))
        spans.sort(key=lambda s: (s.start, s.end))
        kept: list[Uncertain] = []
        seen: set[tuple[int, int]] = set()
        for u in sorted(uncertain, key=lambda u: (u.start, u.end)):
            if (u.start, u.end) in seen or taken.overlaps(u.start, u.end):
                continue
            seen.add((u.start, u.end))
            kept.append(u)
            counts[f"uncertain_{u.reason}"] += 1
        return LexiconResult(spans, kept, +counts)

    def _lexicon_matches(
        self,
        text: str,
        tokens: Sequence[tuple[int, int]],
        raw: Sequence[str],
        norm: Sequence[str],
        groups: Mapping[int, int],
    ) -> list[tuple[Span, int]]:
        n = len(tokens)
        skip = self._skips(raw, norm, tokens) if self.variants else [0] * n
        for j, length in groups.items():
            skip[j] = length  # "von Hippel-Lindau (VHL) disease" is the term with its definition
        joins: dict[int, str] = {}
        if self.variants:
            for j in range(n - 2):
                if skip[j + 1] == 1 and norm[j + 1] == "-":
                    joins[j] = self.normalize(raw[j] + raw[j + 2])
        root = self.root
        out: list[tuple[Span, int]] = []
        for i in range(n):
            if norm[i] not in root.children and i not in joins:
                continue
            best_end = -1
            best: list[_Entry] = []  # the entries of the longest match (by any path)
            stack = [(root, i)]
            while stack:
                node, j = stack.pop()
                if j >= n:
                    continue
                steps = []
                child = node.children.get(norm[j])
                if child is not None:
                    steps.append((child, j + 1))
                if j in joins and (child := node.children.get(joins[j])) is not None:
                    steps.append((child, j + 3))
                for child, end in steps:
                    if child.entries and end >= best_end:
                        entry = next(
                            (
                                e
                                for e in child.entries
                                if e.exact is None or tuple(raw[i:end]) == e.exact
                            ),
                            None,
                        )
                        if entry is not None:
                            if end > best_end:
                                best_end, best = end, []
                            best.append(entry)
                    if child.children:
                        stack.append((child, end))
                if j > i and skip[j]:
                    stack.append((node, j + skip[j]))
            if best:
                start, end = tokens[i][0], tokens[best_end - 1][1]
                fold = tuple(self._fold(t) for t in raw[i:best_end])
                entry = next((e for e in best if fold in e.folds), None)
                conf = EXACT if entry is not None else VARIANT
                label = (entry or best[0]).label
                out.append((Span(start, end, label, text[start:end], conf), 0))
        return out

    # -- words, head nouns, abbreviations, unknown words ----------------------

    def _words(
        self,
        text: str,
        tokens: Sequence[tuple[int, int]],
        raw: Sequence[str],
        groups: Mapping[int, int],
    ) -> _Words:
        """The note's words; a defined short form in parentheses is passed over, so
        "dehydrogenase (G6PD) deficiency" has "dehydrogenase" right before "deficiency"."""
        n = len(tokens)
        first: list[int] = []
        last: list[int] = []
        j = 0
        while j < n:
            if j in groups:
                j += groups[j]
                continue
            if not raw[j][0].isalnum():
                j += 1
                continue
            k = j
            while (
                k + 2 < n
                and raw[k + 1].translate(_DASHES) in _JOINERS
                and tokens[k][1] == tokens[k + 1][0]
                and tokens[k + 1][1] == tokens[k + 2][0]
                and raw[k + 2][0].isalnum()
            ):
                k += 2
            first.append(j)
            last.append(k)
            j = k + 1
        start = [tokens[j][0] for j in first]
        end = [tokens[k][1] for k in last]
        folds = [self._fold(text[a:b]) for a, b in zip(start, end, strict=True)]
        content = [
            len(f) > 1 and f not in self._stop and any(c.isalpha() for c in f) for f in folds
        ]
        adjacent = [
            (
                first[w + 1] == last[w] + 1
                or last[w] + 1 + groups.get(last[w] + 1, -n) == first[w + 1]
            )
            and text.find("\n", end[w], start[w + 1]) < 0
            for w in range(len(first) - 1)
        ]
        return _Words(first, last, start, end, folds, content, adjacent)

    def _modifiers(self, text: str, words: _Words, spans: Sequence[Span]) -> list[Uncertain]:
        """Modifiers a lexicon match leaves out, undecided: "X-linked" before "retinoschisis".

        The content words right before a match (after it for ``head =
        "first"``), as a head-noun phrase would take them, and the rest of a
        hyphenated word the match starts (ends) inside: part of the name or
        not, the lexicon cannot say (reason ``modifier``).
        """
        last = self.lang.head == "last"
        count = len(words.first)
        out: list[Uncertain] = []
        for idx, s in enumerate(spans):
            if s.confidence not in (EXACT, VARIANT):
                continue
            if last:
                w = bisect.bisect_right(words.start, s.start) - 1
                if w < 0 or words.end[w] <= s.start:
                    continue
                limit = spans[idx - 1].end if idx else 0
                k, n_mod = w, int(words.start[w] < s.start)
                while (
                    n_mod < self.lang.max_modifiers
                    and k > 0
                    and words.content[k - 1]
                    and words.adjacent[k - 1]
                    and words.start[k - 1] >= limit
                ):
                    k -= 1
                    n_mod += 1
                while k < w and not any(c.isalpha() for c in words.folds[k]):
                    k += 1  # no phrase starts with a number
                if words.start[k] < s.start:
                    out.append(
                        Uncertain(words.start[k], _trim(text, words.start[k], s.start), "modifier")
                    )
            else:
                w = bisect.bisect_left(words.end, s.end)
                if w >= count or words.start[w] >= s.end:
                    continue
                limit = spans[idx + 1].start if idx + 1 < len(spans) else len(text)
                k, n_mod = w, int(words.end[w] > s.end)
                while (
                    n_mod < self.lang.max_modifiers
                    and k + 1 < count
                    and words.content[k + 1]
                    and words.adjacent[k]
                    and words.end[k + 1] <= limit
                ):
                    k += 1
                    n_mod += 1
                if words.end[k] > s.end:
                    out.append(
                        Uncertain(_skip_space(text, s.end, words.end[k]), words.end[k], "modifier")
                    )
        return [u for u in out if u.end > u.start]

    def _head_of(self, raw_token: str, norm_token: str) -> tuple[str, bool] | None:
        """The type a word is a head of, and whether by a head noun (else by a suffix)."""
        if raw_token in self._head_cache:
            return self._head_cache[raw_token]
        head = self._find_head(raw_token, norm_token)
        self._head_cache[raw_token] = head
        return head

    def _find_head(self, raw_token: str, norm_token: str) -> tuple[str, bool] | None:
        for label, heads, _ in self._heads:
            if norm_token in heads:
                return label, True
        plain = self._inflect(self._fold(raw_token))
        if len(plain) >= self.lang.min_suffix_word:
            for label, _, suffixes in self._heads:
                if plain.endswith(suffixes):
                    return label, False
        return None

    def _head_phrases(
        self,
        text: str,
        raw: Sequence[str],
        norm: Sequence[str],
        words: _Words,
        spans: Sequence[Span],
        taken: Intervals,
    ) -> tuple[list[Span], list[Uncertain]]:
        """Noun phrases ending in a head noun or suffix: strong ones are spans, weak ones undecided.

        A phrase is a head word and up to ``max_modifiers`` content words
        (not stop words, with a letter) right before it (after it for
        ``head = "first"``), separated by whitespace only; the head must end
        the phrase (the next word is no content word) and the phrase does not
        start with a number. Strong: a head noun with at least one modifier.
        A phrase overlapping a lexicon match is no candidate, but modifiers
        the match left out before its head are left undecided.
        """
        strong: list[Span] = []
        weak: list[Uncertain] = []
        last = self.lang.head == "last"
        count = len(words.first)
        content, adjacent = words.content, words.adjacent
        for w in range(count):
            if not content[w]:
                continue
            head = self._head_of(raw[words.last[w]], norm[words.last[w]])
            if head is None:
                continue
            label, by_noun = head
            after = w + 1 if last else w - 1
            if 0 <= after < count and content[after] and adjacent[min(w, after)]:
                continue  # not the end of its phrase ("tumor suppressor")
            mods: list[int] = []
            k = w
            while len(mods) < self.lang.max_modifiers:
                nxt = k - 1 if last else k + 1
                if not (0 <= nxt < count and content[nxt] and adjacent[min(k, nxt)]):
                    break
                mods.append(nxt)
                k = nxt
            while mods and not any(c.isalpha() for c in words.folds[mods[-1]]):
                mods.pop()
            lo, hi = (mods[-1] if mods else w, w) if last else (w, mods[-1] if mods else w)
            start, end = words.start[lo], words.end[hi]
            if taken.overlaps(start, end):
                inside = taken.find(words.start[w], words.end[w])
                if inside is not None and mods:
                    a, b = inside
                    if last and a > start and b >= words.end[w]:
                        weak.append(Uncertain(start, _trim(text, start, a), "head_noun"))
                    elif not last and b < end and a <= words.start[w]:
                        weak.append(Uncertain(_skip_space(text, b, end), end, "head_noun"))
                continue
            # A dash right before (after) the phrase: a part of a longer name, perhaps
            # ("Wiskott - Aldrich syndrome"); the phrase is then only weak.
            edge = words.first[lo] - 1 if last else words.last[hi] + 1
            dashed = 0 <= edge < len(raw) and raw[edge].translate(_DASHES) == "-"
            if by_noun and mods and not dashed:
                strong.append(Span(start, end, label, text[start:end], HEAD_NOUN))
            elif by_noun and not mods and words.folds[w] in self.generic:
                continue
            else:
                weak.append(Uncertain(start, end, "head_noun"))
        return strong, [u for u in weak if u.end > u.start]

    def _abbreviations(
        self,
        text: str,
        tokens: Sequence[tuple[int, int]],
        raw: Sequence[str],
        pairs: Sequence[Abbreviation],
        entities: Sequence[Span],
        undecided: Sequence[Uncertain],
    ) -> tuple[list[Span], list[Uncertain]]:
        """Short forms whose long form (Schwartz–Hearst) is an entity, everywhere in the note.

        The long form is an entity when a span ends where it ends (starts where
        it starts for ``head = "first"``) and the long form's words before it
        are content words (modifiers), or when a span runs from the long form
        over its definition ("von Hippel-Lindau (VHL) disease"). The short form
        gets that span's type, with confidence at most ``ABBREVIATION``. A long
        form that is only undecided (a weak head-noun phrase) leaves its short
        form undecided too. An occurrence that is the head part of a hyphenated
        word covers the word ("X-ALD"); one that is its modifier part is none.
        """
        if not pairs:
            return [], []
        last = self.lang.head == "last"
        ordered = sorted(entities, key=lambda s: (s.start, s.end))
        starts = [s.start for s in ordered]
        unsure = sorted(undecided, key=lambda u: (u.start, u.end))
        unsure_starts = [u.start for u in unsure]
        defined: dict[str, tuple[str, float] | None] = {}
        for pair in pairs:
            if pair.short in defined:
                continue  # the first definition holds
            best: Span | None = None
            k = bisect.bisect_left(starts, pair.lf_start)
            if k and ordered[k - 1].end > pair.lf_start:
                k -= 1
            for s in ordered[k:]:
                if s.start >= pair.lf_end:
                    break
                if self._names_long_form(text, s, pair, last) and (
                    best is None or s.end - s.start > best.end - best.start
                ):
                    best = s
            if best is not None:
                defined[pair.short] = (best.label, min(ABBREVIATION, best.confidence))
                continue
            for u in unsure[bisect.bisect_left(unsure_starts, pair.lf_start) :]:
                if u.start >= pair.lf_end:
                    break
                if (u.end if last else u.start) == (pair.lf_end if last else pair.lf_start):
                    defined[pair.short] = None
                    break
        if not defined:
            return [], []
        by_first: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for short in defined:
            toks = _tokens(short)
            if toks:
                by_first.setdefault(toks[0], []).append((short, toks))
        found: list[Span] = []
        weak: list[Uncertain] = []
        n = len(tokens)

        def joined(a: int, b: int) -> bool:  # tokens a and b = a + 2 joined by a hyphen
            return (
                a >= 0
                and b < n
                and raw[a + 1].translate(_DASHES) in _JOINERS
                and tokens[a][1] == tokens[a + 1][0]
                and tokens[a + 1][1] == tokens[b][0]
                and raw[a][0].isalnum()
                and raw[b][0].isalnum()
            )

        for i, tok in enumerate(raw):
            for short, toks in by_first.get(tok, ()):
                end = i + len(toks)
                if tuple(raw[i:end]) != toks:
                    continue
                a, b = tokens[i][0], tokens[end - 1][1]
                if text[a:b] != short:
                    continue
                first_tok, last_tok = i, end - 1
                if joined(last_tok, last_tok + 2) if last else joined(first_tok - 2, first_tok):
                    continue  # "ALD-related": the short form modifies another word
                if last:
                    while joined(first_tok - 2, first_tok):
                        first_tok -= 2
                else:
                    while joined(last_tok, last_tok + 2):
                        last_tok += 2
                a, b = tokens[first_tok][0], tokens[last_tok][1]
                what = defined[short]
                if what is None:
                    weak.append(Uncertain(a, b, "abbreviation"))
                else:
                    found.append(Span(a, b, what[0], text[a:b], what[1]))
        return found, weak

    def _names_long_form(self, text: str, span: Span, pair: Abbreviation, last: bool) -> bool:
        """Whether ``span`` names the long form of ``pair`` (see :meth:`_abbreviations`)."""
        if (span.start <= pair.lf_start and span.end == pair.lf_end and last) or (
            span.end >= pair.lf_end and span.start == pair.lf_start and not last
        ):
            return True  # the long form with modifiers of its own ("X-linked ALD")
        if span.start < pair.lf_start or span.end > pair.lf_end:
            return False
        if last:
            rest, ok = text[pair.lf_start : span.start], span.end == pair.lf_end
        else:
            rest, ok = text[span.end : pair.lf_end], span.start == pair.lf_start
        if not ok:
            return False
        # The rest of the long form: modifiers only (no stop word, no punctuation but hyphens).
        for a, b in word_tokens(rest):
            piece = rest[a:b]
            if piece.translate(_DASHES) in _JOINERS:
                continue
            if not piece[0].isalnum() or self._fold(piece) in self._stop:
                return False
        return True

    def _unknown_words(
        self,
        text: str,
        tokens: Sequence[tuple[int, int]],
        words: _Words,
        taken: Intervals,
    ) -> list[Uncertain]:
        """Words no rule decided that look like names: letters with digits, two capitals, or
        a capital initial mid-sentence; stop words never."""
        out: list[Uncertain] = []
        for w in range(len(words.first)):
            if not words.content[w]:
                continue
            start, end = words.start[w], words.end[w]
            if taken.overlaps(start, end):
                continue
            word = text[start:end]
            biomedical = any(c.isdigit() for c in word) or sum(c.isupper() for c in word) >= 2
            capital = False
            if not biomedical and word[0].isupper():
                j = words.first[w]
                before = text[tokens[j - 1][1] : start] if j else "\n"
                capital = j > 0 and "\n" not in before and text[tokens[j - 1][0]] not in _ENDS
            if biomedical or capital:
                out.append(Uncertain(start, end, "unknown_word"))
        return out


_JOINERS = frozenset({"-", "'"})
_ENDS = frozenset(".!?:;\"'“”")


def _definition_groups(
    text: str, tokens: Sequence[tuple[int, int]], pairs: Sequence[Abbreviation]
) -> dict[int, int]:
    """Token index of each "(" that opens a short form's definition -> tokens through its ")"."""
    starts = [a for a, _ in tokens]
    groups: dict[int, int] = {}
    for pair in pairs:
        if pair.sf_start < pair.lf_end:
            continue  # "SF (long form)": the parenthesis holds the long form
        open_at = text.rfind("(", pair.lf_end, pair.sf_start)
        close_at = text.find(")", pair.sf_end)
        if open_at < 0 or close_at < 0:
            continue
        j = bisect.bisect_left(starts, open_at)
        k = bisect.bisect_left(starts, close_at)
        if j < len(tokens) and k < len(tokens) and starts[j] == open_at and starts[k] == close_at:
            groups[j] = k - j + 1
    return groups


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(text[a:b] for a, b in word_tokens(text))


def _trim(text: str, start: int, end: int) -> int:
    """``end`` moved left over whitespace (not before ``start``)."""
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def _skip_space(text: str, start: int, end: int) -> int:
    while start < end and text[start].isspace():
        start += 1
    return start
