"""The demo vocabularies: drugs, procedures and diagnoses with codes and synonyms.

They live in ``data/vocab/*.tsv`` (columns term, label, code, synonyms;
synonyms separated by ``|``). The note generator draws its mentions from
them and the lexicon annotator uses them as its built-in lexicon, so both
read them through ``load_vocabulary``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "DEMO_SYSTEMS",
    "VOCAB_FILES",
    "VOCAB_HEADER",
    "VocabEntry",
    "load_vocabulary",
    "vocabulary_folder",
    "write_term_list",
]

VOCAB_FILES = ("drugs.tsv", "procedures.tsv", "diagnoses.tsv")
VOCAB_HEADER = ("term", "label", "code", "synonyms")
# The demo vocabularies' code systems: ICD-10 diagnoses, ATC drugs, made-up procedure codes.
DEMO_SYSTEMS = {
    "DIAGNOSIS": "http://hl7.org/fhir/sid/icd-10",
    "DRUG": "http://www.whocc.no/atc",
    "PROCEDURE": "urn:appliance:demo:procedure",
}


@dataclass(frozen=True)
class VocabEntry:
    """One concept: its preferred term, label, code and other surface forms."""

    term: str
    label: str  # DRUG, PROCEDURE or DIAGNOSIS
    code: str  # ATC for drugs, ICD-10 for diagnoses, a local PX code for procedures
    synonyms: tuple[str, ...] = ()

    @property
    def surfaces(self) -> tuple[str, ...]:
        """The term followed by its synonyms: every form a note may use."""
        return (self.term, *self.synonyms)


def vocabulary_folder() -> Traversable:
    """The packaged folder holding the vocabulary TSV files."""
    return resources.files("appliance.demo") / "data" / "vocab"


@functools.cache
def load_vocabulary() -> Mapping[str, VocabEntry]:
    """All packaged vocabulary entries (drugs, procedures, diagnoses), keyed by term.

    Read once and shared (read-only), so the lexicon annotator and the
    generator always agree on terms, synonyms and codes.
    """
    vocab: dict[str, VocabEntry] = {}
    folder = vocabulary_folder()
    for name in VOCAB_FILES:
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        if not lines or tuple(lines[0].split("\t")) != VOCAB_HEADER:
            raise ValueError(f"vocab/{name}: the header must be the columns {VOCAB_HEADER}")
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            term, label, code, synonyms = line.split("\t")
            if term in vocab:
                raise ValueError(f"vocab/{name} line {lineno}: duplicate term {term!r}")
            syns = tuple(s for s in synonyms.split("|") if s)
            vocab[term] = VocabEntry(term, label, code, syns)
    return MappingProxyType(vocab)


def write_term_list(path: Path, share: float = 0.6, seed: int = 1) -> dict[str, dict[str, int]]:
    """Write a hospital-like term list: a seeded ``share`` of each type's concepts.

    A hospital's term lists never cover everything its notes mention, so the
    demo annotates with this partial list (all surface forms of each chosen
    concept, as a TSV the lexicon annotator reads) while the demo notes and
    their gold spans use the whole vocabulary: the notes mention concepts the
    list lacks, which a model can learn to find and the list cannot. Returns
    ``{label: {"concepts": n, "kept": k}}``.
    """
    if not 0 < share <= 1:
        raise ValueError("share must be in (0, 1]")
    by_label: dict[str, list[VocabEntry]] = {}
    for entry in load_vocabulary().values():
        by_label.setdefault(entry.label, []).append(entry)
    rng = random.Random(seed)
    kept: list[VocabEntry] = []
    counts: dict[str, dict[str, int]] = {}
    for label in sorted(by_label):
        entries = sorted(by_label[label], key=lambda e: e.term)
        n = max(1, round(share * len(entries)))
        chosen = rng.sample(entries, n)
        kept.extend(sorted(chosen, key=lambda e: e.term))
        counts[label] = {"concepts": len(entries), "kept": n}
    lines = ["\t".join((*VOCAB_HEADER, "system"))]
    lines += [
        f"{e.term}\t{e.label}\t{e.code}\t{'|'.join(e.synonyms)}\t{DEMO_SYSTEMS.get(e.label, '')}"
        for e in kept
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return counts
