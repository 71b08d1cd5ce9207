"""Concepts: a lexicon's codes with their names, synonyms, cross-references and code system.

A :class:`Terminology` is built from one or more lexicons
(:func:`appliance.annotate.lexicon.load_lexicon`: TSV/CSV with a code
column, OBO ontologies, the demo vocabularies). Every surface of a code
becomes one of that concept's names; the entry marked ``preferred`` (a
table's term column, an OBO ``name:``) is its display name.

Refused with a one-line error: a lexicon with no code at all, and a code
that two rows give different preferred names or different entity types.
Terms without a code in an otherwise coded lexicon are skipped and counted.

The terminology's hash (:meth:`Terminology.sha256`) is recorded in every
normalizer built on it, so a normalizer is never used with concepts other
than those it was trained for.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.annotate.lexicon import Lexicon
from appliance.errors import InputError

# Code systems recognized from the code's own shape, for FHIR codings. A lexicon
# file may name its system in a ``system`` column instead.
_SYSTEMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"DOID:\d+"), "http://purl.obolibrary.org/obo/doid.owl"),
    (re.compile(r"DB\d{5}"), "http://www.drugbank.ca"),
    (re.compile(r"(MESH:)?[CD](\d{6}|\d{9})"), "http://id.nlm.nih.gov/mesh"),
    (re.compile(r"OMIM:\d+"), "http://omim.org"),
    (re.compile(r"[A-Z]\d\d[A-Z]{2}\d\d"), "http://www.whocc.no/atc"),
    (re.compile(r"[A-TV-Z]\d[0-9AB](\.[0-9A-TV-Z]{1,4})?"), "http://hl7.org/fhir/sid/icd-10"),
    (re.compile(r"HP:\d{7}"), "http://purl.obolibrary.org/obo/hp.owl"),
    (re.compile(r"C\d{7}"), "http://www.nlm.nih.gov/research/umls"),
)
LOCAL_SYSTEM = "urn:appliance:terminology:"


class NoConceptCodes(InputError):
    """A lexicon none of whose terms has a code: nothing to normalize to."""


def guess_system(code: str, label: str) -> str:
    """The code system URI for ``code``: a known code shape, else a local URN per type."""
    for pattern, uri in _SYSTEMS:
        if pattern.fullmatch(code):
            return uri
    return LOCAL_SYSTEM + label.lower()


def xref_key(code: str) -> str:
    """A cross-reference compared without case or a MeSH prefix: ``MESH:D003924`` = ``d003924``."""
    code = code.strip()
    if code.upper().startswith("MESH:"):
        code = code[5:]
    return code.casefold()


@dataclass
class Concept:
    code: str
    label: str  # the entity type it normalizes
    name: str  # display name
    system: str
    synonyms: list[str] = field(default_factory=list)
    xrefs: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [self.name, *self.synonyms]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "label": self.label,
            "name": self.name,
            "system": self.system,
        }
        if self.synonyms:
            out["synonyms"] = self.synonyms
        if self.xrefs:
            out["xrefs"] = self.xrefs
        return out


@dataclass
class Terminology:
    concepts: list[Concept]
    sources: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # lexicon terms without a code

    def __post_init__(self) -> None:
        self.by_code = {c.code: c for c in self.concepts}
        self._xrefs: dict[str, list[str]] | None = None

    @property
    def labels(self) -> list[str]:
        return sorted({c.label for c in self.concepts})

    @property
    def surfaces(self) -> int:
        return sum(len(c.names) for c in self.concepts)

    def resolve(self, code: str) -> list[str]:
        """The concept codes ``code`` names: itself, or the concepts listing it as a cross-reference.

        Both compare without case or a ``MESH:`` prefix (``doid:9352`` is ``DOID:9352``).
        """
        if code in self.by_code:
            return [code]
        if self._xrefs is None:
            self._xrefs = {}
            for c in self.concepts:
                for x in dict.fromkeys([c.code, *c.xrefs]):
                    self._xrefs.setdefault(xref_key(x), []).append(c.code)
        return list(dict.fromkeys(self._xrefs.get(xref_key(code), [])))

    # -- files ---------------------------------------------------------------

    def to_jsonl(self) -> bytes:
        lines = (json.dumps(c.as_json(), ensure_ascii=False, sort_keys=True) for c in self.concepts)
        return ("\n".join(lines) + "\n").encode("utf-8")

    def sha256(self) -> str:
        return hashlib.sha256(self.to_jsonl()).hexdigest()

    @classmethod
    def from_jsonl(cls, data: bytes, where: str) -> Terminology:
        concepts = []
        lineno = 0
        try:
            for line in data.decode("utf-8").splitlines():
                lineno += 1
                if not line.strip():
                    continue
                obj = json.loads(line)
                concepts.append(
                    Concept(
                        str(obj["code"]),
                        str(obj["label"]),
                        str(obj["name"]),
                        str(obj["system"]),
                        [str(s) for s in obj.get("synonyms", [])],
                        [str(x) for x in obj.get("xrefs", [])],
                    )
                )
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{where} line {lineno}: not a concept line ({exc})") from None
        if not concepts:
            raise InputError(f"{where}: no concepts")
        return cls(concepts)

    # -- building ------------------------------------------------------------

    @classmethod
    def from_lexicon(cls, lexicon: Lexicon, where: str = "the lexicon") -> Terminology:
        """Concepts from a lexicon's coded entries; see the module docstring for what is refused."""
        concepts: dict[str, Concept] = {}
        named: dict[str, str] = {}  # code -> the preferred name that set it
        seen: dict[str, set[str]] = {}
        skipped = 0
        for e in lexicon.entries:
            surface = " ".join(e.surface.split())
            if not surface:
                continue
            if not e.code:
                skipped += 1
                continue
            if any(ch.isspace() for ch in e.code):
                raise InputError(
                    f"{where}: code {e.code!r} (for {surface!r}) has a space; a concept code is one "
                    "token"
                )
            c = concepts.get(e.code)
            if c is None:
                c = concepts[e.code] = Concept(
                    e.code, e.label, surface, e.system or guess_system(e.code, e.label)
                )
                seen[e.code] = {surface.casefold()}
                if e.preferred:
                    named[e.code] = surface
            else:
                if c.label != e.label:
                    raise InputError(
                        f"{where}: code {e.code} is given two types, {c.label} and {e.label} "
                        f"({c.name!r}, {surface!r}); one code names one concept"
                    )
                if e.preferred:
                    if e.code in named and named[e.code].casefold() != surface.casefold():
                        raise InputError(
                            f"{where}: code {e.code} is given two names, {named[e.code]!r} and "
                            f"{surface!r}; list the second as a synonym or give it its own code"
                        )
                    if e.code not in named:
                        named[e.code] = surface
                        if c.name.casefold() != surface.casefold():
                            c.synonyms.insert(0, c.name)
                            c.name = surface
                if surface.casefold() not in seen[e.code]:
                    seen[e.code].add(surface.casefold())
                    c.synonyms.append(surface)
            for x in e.xrefs:
                if x not in c.xrefs:
                    c.xrefs.append(x)
        if not concepts:
            raise NoConceptCodes(
                f"{where}: no term has a concept code ({skipped} terms); normalization needs a "
                "code column (TSV/CSV 'code' or 'id', OBO 'id:')"
            )
        return cls(list(concepts.values()), list(lexicon.sources), skipped)

    def describe(self) -> str:
        skipped = f", {self.skipped} terms without a code skipped" if self.skipped else ""
        return (
            f"{len(self.concepts)} concepts ({', '.join(self.labels)}), "
            f"{self.surfaces} names{skipped}"
        )


def load_terminology(paths: Sequence[Path], labels: Sequence[str | None]) -> Terminology:
    """A terminology from lexicon files, each typed by its label column or ``labels[i]``."""
    from appliance.annotate.lexicon import load_lexicon

    lex = Lexicon()
    for path, label in zip(paths, labels, strict=True):
        lex.extend(load_lexicon(path, label))
    where = ", ".join(str(p) for p in paths)
    return Terminology.from_lexicon(lex, where)
