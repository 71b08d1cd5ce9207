"""Prefixes that condition generation, derived from record metadata.

The seed study conditioned its GPT-2 on a short header per note, e.g.
``procedure note, age group 7, female, C50,``. The schema (which of note
type, age group, sex and diagnosis category the records carry) is derived
from the metadata: a field is used when most records have it. With no such
metadata, generation is unconditional.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from appliance.documents import Record

FIELDS = ("note_type", "age_group", "sex", "diagnosis")

# Metadata names recognized for each prefix field, in order of preference
# (compared lower-case, on the last component of a dotted JSON path).
NOTE_TYPE_KEYS = ("note_type", "document_type", "doc_type", "type")
SEX_KEYS = ("sex", "gender")
DIAGNOSIS_KEYS = ("diagnosis_code", "icd10", "icd_10", "icd10_code", "main_diagnosis", "dx_code")
VISIT_DATE_KEYS = ("visit_date", "date", "admission_date", "encounter_date", "note_date")
AGE_KEYS = ("age", "age_years")

_SEX = {
    "f": "female", "female": "female", "woman": "female", "w": "female", "naine": "female", "kvinna": "female",
    "nainen": "female", "k": "female",
    "m": "male", "male": "male", "man": "male", "mees": "male", "mies": "male",
}  # fmt: skip


def _meta(record: Record, keys: Sequence[str]) -> str | None:
    lowered = {k.rsplit(".", 1)[-1].lower(): v for k, v in record.metadata.items()}
    for key in keys:
        value = lowered.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def _parse_date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def note_type(record: Record) -> str | None:
    value = _meta(record, NOTE_TYPE_KEYS)
    return " ".join(value.replace("_", " ").lower().split()) if value else None


def age_group(record: Record) -> str | None:
    """Age in decades at the visit ("age group 7" = 70-79), from age or date of birth and visit date."""
    age: int | None = None
    raw = _meta(record, AGE_KEYS)
    if raw is not None and raw.isdigit():
        age = int(raw)
    else:
        birth = next(
            (_parse_date(i.value) for i in record.identifiers if i.type == "DATE_OF_BIRTH"), None
        )
        visit = _parse_date(_meta(record, VISIT_DATE_KEYS))
        if birth and visit and visit >= birth:
            age = visit.year - birth.year - ((visit.month, visit.day) < (birth.month, birth.day))
    if age is None or not 0 <= age < 130:
        return None
    return f"age group {age // 10}"


def sex(record: Record) -> str | None:
    value = _meta(record, SEX_KEYS)
    return _SEX.get(value.lower()) if value else None


def diagnosis(record: Record) -> str | None:
    """The ICD-10 category (first three characters, e.g. C50 for C50.9)."""
    value = _meta(record, DIAGNOSIS_KEYS)
    if not value:
        return None
    code = value.replace(".", "").upper()
    if len(code) >= 3 and code[0].isalpha() and code[1:3].isdigit():
        return code[:3]
    return None


_EXTRACT = {"note_type": note_type, "age_group": age_group, "sex": sex, "diagnosis": diagnosis}


@dataclass(frozen=True)
class PrefixSchema:
    """Which fields make up a prefix; empty means unconditional generation."""

    fields: tuple[str, ...] = ()
    # Share of records that had each candidate field (so a user sees why one was left out).
    coverage: dict[str, float] = field(default_factory=dict)

    def render(self, record: Record) -> str:
        """The record's prefix line, or "" when unconditional."""
        if not self.fields:
            return ""
        parts = [value for f in self.fields if (value := _EXTRACT[f](record))]
        return ", ".join(parts) + "," if parts else ""

    def as_dict(self) -> dict[str, Any]:
        return {"fields": list(self.fields), "coverage": self.coverage}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrefixSchema:
        return cls(tuple(data.get("fields", ())), dict(data.get("coverage", {})))


def derive_schema(records: Sequence[Record], min_coverage: float = 0.5) -> PrefixSchema:
    """Use each field that at least ``min_coverage`` of the records carry."""
    if not records:
        return PrefixSchema()
    coverage = {
        f: round(sum(1 for r in records if _EXTRACT[f](r) is not None) / len(records), 3)
        for f in FIELDS
    }
    return PrefixSchema(tuple(f for f in FIELDS if coverage[f] >= min_coverage), coverage)


@dataclass
class PrefixSampler:
    """Draws prefixes with the frequencies seen in the training records."""

    counts: dict[str, int]

    @classmethod
    def from_prefixes(cls, prefixes: Iterable[str]) -> PrefixSampler:
        return cls(dict(Counter(prefixes)))

    def sample(self, rng: random.Random, n: int) -> list[str]:
        if not self.counts:
            return [""] * n
        values = sorted(self.counts)
        weights = [self.counts[v] for v in values]
        return rng.choices(values, weights=weights, k=n)


def parse_prefix(prefix: str, schema: PrefixSchema) -> dict[str, str]:
    """Best-effort metadata from a prefix line, for the synthetic note's record."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in prefix.rstrip(",").split(",")):
        if not part:
            continue
        if part.startswith("age group "):
            out["age_group"] = part
        elif part in ("female", "male"):
            out["sex"] = part
        elif len(part) == 3 and part[0].isalpha() and part[1:].isdigit():
            out["diagnosis"] = part
        elif "note_type" in schema.fields and "note_type" not in out:
            out["note_type"] = part
    return out


# ---------------------------------------------------------------------------
# Entity conditioning: a second prefix line naming the note's entity terms

ENTITY_LINE = "entities: "
MAX_TERMS = 8  # terms named per note (the first ones in the note, distinct)
TermFinder = Callable[[str], list[tuple[str, str]]]  # text -> (label, term) in text order


@dataclass
class EntityTerms:
    """What entity conditioning needs from a term list (built above this layer).

    ``find`` names the terms a (pseudonymized) training note mentions, as the
    annotator would; ``vocabulary`` is the whole term list per type (public
    vocabulary, never note text), what generation draws from; ``sources``
    says which files, with their hashes, for the generator's manifest.
    """

    find: TermFinder
    vocabulary: dict[str, list[str]]
    sources: list[dict[str, Any]] = field(default_factory=list)

    def line(self, text: str) -> tuple[str, Counter[str]]:
        """The entity line of a training note ("" when it names none) and its terms per type."""
        seen: set[str] = set()
        terms: list[str] = []
        per_type: Counter[str] = Counter()
        for label, term in self.find(text):
            key = term.casefold()
            if key in seen or len(terms) >= MAX_TERMS:
                continue
            seen.add(key)
            terms.append(term)
            per_type[label] += 1
        return entity_line(terms), per_type


def entity_line(terms: Sequence[str]) -> str:
    """``entities: a; b`` (whitespace inside a term collapsed, so the line stays one line)."""
    return ENTITY_LINE + "; ".join(" ".join(t.split()) for t in terms) if terms else ""


def join_prefix(meta: str, entities: str) -> str:
    """The prompt's prefix: the metadata line, then the entity line (each only if any)."""
    return "\n".join(p for p in (meta, entities) if p)


@dataclass
class EntitySampler:
    """Entity lines for generation that cover the term list.

    How many terms of each type a note names follows the training notes
    (``per_note``: type -> {count: notes}); which terms, a seeded permutation
    of each type's vocabulary walked in order by note number, so that
    ``count`` notes name about ``count`` x (mean terms) distinct terms and
    every term comes round before any repeats. The walk depends only on the
    note number, so a resumed generation draws what an uninterrupted one did.
    """

    vocabulary: dict[str, list[str]]
    per_note: dict[str, dict[str, int]]
    seed: int = 0
    _orders: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def _order(self, label: str) -> list[str]:
        if label not in self._orders:
            terms = sorted(set(self.vocabulary.get(label, ())))
            random.Random(f"{self.seed}:{label}").shuffle(terms)
            self._orders[label] = terms
        return self._orders[label]

    def line(self, note: int, rng: random.Random) -> str:
        """The entity line of synthetic note number ``note`` (0-based)."""
        terms: list[str] = []
        for label in sorted(self.per_note):
            hist = {int(k): n for k, n in self.per_note[label].items() if n > 0}
            order = self._order(label)
            if not hist or not order:
                continue
            counts = sorted(hist)
            k = rng.choices(counts, weights=[hist[c] for c in counts])[0]
            slots = max(counts)
            terms += [order[(note * slots + t) % len(order)] for t in range(k)]
        rng.shuffle(terms)
        return entity_line(terms[:MAX_TERMS])

    def as_dict(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary, "per_note": self.per_note, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EntitySampler:
        return cls(
            {str(k): list(v) for k, v in data.get("vocabulary", {}).items()},
            {str(k): dict(v) for k, v in data.get("per_note", {}).items()},
            int(data.get("seed", 0)),
        )


def per_note_counts(
    counts: Sequence[Counter[str]], labels: Iterable[str]
) -> dict[str, dict[str, int]]:
    """{type: {terms named: notes}} over the training notes (zeros included)."""
    out: dict[str, dict[str, int]] = {}
    for label in sorted(labels):
        hist = Counter(str(c.get(label, 0)) for c in counts)
        out[label] = dict(sorted(hist.items(), key=lambda kv: int(kv[0])))
    return out
