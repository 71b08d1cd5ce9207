"""``records stats``: what the store holds, without showing any note text.

Only counts and distributions leave this module. Metadata values are shown
only for fields on an allow-list of non-identifying fields (note type, sex,
department...), only when they have few distinct values, and only values
seen at least ``min_count`` times: an identifying column that was not
recognized as one (a "next_of_kin" name list) never has its values printed.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from appliance.records.ingest import open_store
from appliance.records.readers.fields import normalize_field_name
from appliance.workspace import Workspace, read_manifest

# Very common function words per language: enough to tell the languages a
# hospital is likely to have apart, with no model to download.
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        [
            "the",
            "and",
            "of",
            "to",
            "in",
            "with",
            "was",
            "is",
            "for",
            "on",
            "no",
            "patient",
            "at",
            "as",
            "by",
            "from",
            "were",
            "has",
            "had",
            "not",
            "be",
            "this",
        ]
    ),
    "et": frozenset(
        [
            "ja",
            "on",
            "ei",
            "et",
            "see",
            "oli",
            "ka",
            "kui",
            "mis",
            "aga",
            "nagu",
            "või",
            "siis",
            "veel",
            "tema",
            "patsient",
            "ning",
            "kuid",
            "pärast",
        ]
    ),
    "sv": frozenset(
        [
            "och",
            "att",
            "det",
            "som",
            "en",
            "på",
            "är",
            "av",
            "för",
            "med",
            "till",
            "den",
            "har",
            "inte",
            "var",
            "ett",
            "om",
            "ska",
            "vid",
            "patienten",
        ]
    ),
    "fi": frozenset(
        [
            "ja",
            "on",
            "ei",
            "että",
            "se",
            "oli",
            "myös",
            "kun",
            "mutta",
            "tai",
            "potilas",
            "joka",
            "ovat",
            "sekä",
            "jälkeen",
            "kanssa",
        ]
    ),
    "de": frozenset(
        [
            "und",
            "der",
            "die",
            "das",
            "ist",
            "nicht",
            "mit",
            "von",
            "zu",
            "den",
            "im",
            "für",
            "auf",
            "ein",
            "eine",
            "des",
            "patient",
            "wurde",
        ]
    ),
    "no": frozenset(
        [
            "og",
            "er",
            "det",
            "som",
            "en",
            "på",
            "av",
            "for",
            "med",
            "til",
            "ikke",
            "var",
            "har",
            "jeg",
            "pasienten",
            "skal",
            "ved",
        ]
    ),
    "da": frozenset(
        [
            "og",
            "er",
            "det",
            "som",
            "en",
            "på",
            "af",
            "for",
            "med",
            "til",
            "ikke",
            "var",
            "har",
            "jeg",
            "patienten",
            "skal",
            "ved",
        ]
    ),
    "fr": frozenset(
        [
            "le",
            "la",
            "les",
            "et",
            "des",
            "du",
            "un",
            "une",
            "est",
            "pas",
            "pour",
            "dans",
            "avec",
            "sur",
            "patient",
            "au",
            "qui",
        ]
    ),
    "es": frozenset(
        [
            "el",
            "la",
            "los",
            "las",
            "y",
            "de",
            "del",
            "que",
            "en",
            "un",
            "una",
            "es",
            "no",
            "con",
            "por",
            "para",
            "paciente",
        ]
    ),
    "nl": frozenset(
        [
            "de",
            "het",
            "een",
            "en",
            "van",
            "is",
            "niet",
            "met",
            "voor",
            "op",
            "dat",
            "patiënt",
            "werd",
            "zijn",
            "bij",
        ]
    ),
}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)

# Metadata fields whose values may be shown (compared after normalization).
SHOWN_VALUE_FIELDS = frozenset(
    {"note_type", "document_type", "doc_type", "type", "sex", "gender", "department", "specialty",
     "practice_setting", "setting", "language", "status", "loinc_code", "encounter_type", "ward"}
)  # fmt: skip


def guess_language(text: str) -> str:
    """ISO code of the most likely language, or "und" (undetermined) when unsure."""
    words = [w.lower() for w in _WORD.findall(text[:5000])]
    if len(words) < 5:
        return "und"
    counts = {lang: sum(w in sw for w in words) for lang, sw in _STOPWORDS.items()}
    best, hits = max(counts.items(), key=lambda kv: kv[1])
    return best if hits >= max(2, len(words) // 50) else "und"


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "mean": round(statistics.fmean(ordered), 1),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


@dataclass
class RecordStats:
    records: int = 0
    shards: int = 0
    chars: dict[str, float] = field(default_factory=dict)
    words: dict[str, float] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    identifiers: dict[str, int] = field(default_factory=dict)
    records_with_identifiers: int = 0
    metadata_fields: dict[str, int] = field(default_factory=dict)
    metadata_values: dict[str, dict[str, int]] = field(default_factory=dict)
    ingests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        langs = ", ".join(f"{k} {v}" for k, v in self.languages.items()) or "none"
        median = self.chars.get("median", 0)
        return f"{self.records} records in {self.shards} shards; median {median:g} characters; languages: {langs}"


def run(ws: Workspace, *, max_values: int = 20, min_count: int = 5) -> RecordStats:
    """Read every record (authenticating every shard) and summarize."""
    store = open_store(ws)
    stats = RecordStats(shards=len(store.shards))
    chars: list[int] = []
    words: list[int] = []
    langs: Counter[str] = Counter()
    id_types: Counter[str] = Counter()
    fields: Counter[str] = Counter()
    values: dict[str, Counter[str]] = defaultdict(Counter)
    for record in store:
        stats.records += 1
        chars.append(len(record.text))
        words.append(len(record.text.split()))
        langs[guess_language(record.text)] += 1
        if record.identifiers:
            stats.records_with_identifiers += 1
        for ident in record.identifiers:
            id_types[ident.type] += 1
        for key, value in record.metadata.items():
            fields[key] += 1
            showable = normalize_field_name(key.rsplit(".", 1)[-1]) in SHOWN_VALUE_FIELDS
            if showable and len(values[key]) <= max_values:
                values[key][str(value)] += 1
    stats.chars = _summary(chars)
    stats.words = _summary(words)
    stats.languages = dict(langs.most_common())
    stats.identifiers = dict(id_types.most_common())
    stats.metadata_fields = dict(fields.most_common())
    for key, counter in values.items():
        # More distinct values than max_values means a free-form or identifying field.
        if len(counter) <= max_values:
            shown = {v: n for v, n in counter.most_common() if n >= min_count}
            if shown:
                stats.metadata_values[key] = shown

    stats.ingests = len((read_manifest(ws.records_dir) or {}).get("ingests", []))
    ws.log("records stats", outputs=[], details={"records": stats.records, "shards": stats.shards})
    return stats
