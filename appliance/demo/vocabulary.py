"""The demo vocabularies: drugs, procedures and diagnoses with codes and synonyms.

They live in ``data/vocab/*.tsv`` (columns term, label, code, synonyms;
synonyms separated by ``|``). The note generator draws its mentions from
them and the lexicon annotator uses them as its built-in lexicon, so both
read them through ``load_vocabulary``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["VOCAB_FILES", "VOCAB_HEADER", "VocabEntry", "load_vocabulary", "vocabulary_folder"]

VOCAB_FILES = ("drugs.tsv", "procedures.tsv", "diagnoses.tsv")
VOCAB_HEADER = ("term", "label", "code", "synonyms")


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
