"""A keyed index of real notes' word n-grams: find verbatim copies without keeping text.

The index stores, for every k-gram of word tokens of every real note, a
64-bit value computed from *keyed* hashes of its tokens (BLAKE2b with a
workspace-derived key), with the note number and token position. Without
the key nobody can test whether a given phrase is in it, so the index can
sit on disk beside the encrypted store. A candidate note's k-grams are
looked up in bulk (sorted arrays, ``numpy.searchsorted``); hits on the same
diagonal (real position minus candidate position) of the same note are
chained into runs, and each run is then confirmed, and extended, against
the real note's actual tokens, which the caller decrypts on demand: a hash
collision can never produce a finding, and the reported span is exact.

    index = NgramIndex(key, k=8)
    for i, text in enumerate(real_texts):
        index.add(i, text)
    index.freeze()
    span = index.longest_shared(candidate_text, real_text=lambda i: real_texts[i])
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_TOKEN = re.compile(r"\w+", re.UNICODE)
# Odd 64-bit multiplier for the polynomial combination of token hashes.
_P = np.uint64(0x9E3779B97F4A7C15)


def tokenize(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Lower-cased word tokens and their character spans (any script; punctuation ignored)."""
    tokens, spans = [], []
    for m in _TOKEN.finditer(text):
        tokens.append(m.group().lower())
        spans.append(m.span())
    return tokens, spans


@dataclass(frozen=True)
class SharedSpan:
    """The longest run of tokens a candidate shares with one real note."""

    record: int  # the real note's number in the index
    tokens: int  # length of the shared run, in word tokens
    start: int  # character offsets in the candidate
    end: int
    real_start_token: int


class NgramIndex:
    def __init__(self, key: bytes, k: int = 8, max_postings: int = 200) -> None:
        if k < 2:
            raise ValueError("k must be at least 2")
        self.key = key
        self.k = k
        # A k-gram in more notes than this is boilerplate ("the patient was
        # admitted to the hospital"): too common to identify anyone, and
        # following every posting would make screening quadratic.
        self.max_postings = max_postings
        self._token_cache: dict[str, np.uint64] = {}
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.keys = np.empty(0, dtype=np.uint64)
        self.records = np.empty(0, dtype=np.uint32)
        self.positions = np.empty(0, dtype=np.uint32)
        self.documents = 0

    # -- hashing -----------------------------------------------------------

    def _token_hashes(self, tokens: list[str]) -> np.ndarray:
        cache = self._token_cache
        out = np.empty(len(tokens), dtype=np.uint64)
        for i, tok in enumerate(tokens):
            h = cache.get(tok)
            if h is None:
                digest = hashlib.blake2b(tok.encode(), key=self.key[:64], digest_size=8).digest()
                h = cache[tok] = np.uint64(int.from_bytes(digest, "little"))
            out[i] = h
        return out

    def gram_hashes(self, tokens: list[str]) -> np.ndarray:
        """One keyed 64-bit value per k-gram (polynomial over token hashes, mod 2**64)."""
        n = len(tokens) - self.k + 1
        if n <= 0:
            return np.empty(0, dtype=np.uint64)
        th = self._token_hashes(tokens)
        acc = np.zeros(n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(self.k):
                acc = acc * _P + th[j : j + n]
        return acc

    # -- building ----------------------------------------------------------

    def add(self, record: int, text: str) -> None:
        tokens, _ = tokenize(text)
        grams = self.gram_hashes(tokens)
        if len(grams):
            self._parts.append(
                (
                    grams,
                    np.full(len(grams), record, dtype=np.uint32),
                    np.arange(len(grams), dtype=np.uint32),
                )
            )
        self.documents += 1

    def freeze(self) -> None:
        """Sort the postings for lookup (call once after the last ``add``)."""
        if self._parts:
            keys = np.concatenate([self.keys, *(p[0] for p in self._parts)])
            records = np.concatenate([self.records, *(p[1] for p in self._parts)])
            positions = np.concatenate([self.positions, *(p[2] for p in self._parts)])
            order = np.argsort(keys, kind="stable")
            self.keys, self.records, self.positions = keys[order], records[order], positions[order]
            self._parts = []

    # -- querying ----------------------------------------------------------

    def _runs(self, grams: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Diagonal runs of hits, longest first: (length in grams, record, candidate start, real start)."""
        lo = np.searchsorted(self.keys, grams, side="left")
        hi = np.searchsorted(self.keys, grams, side="right")
        counts = hi - lo
        counts[counts > self.max_postings] = 0
        total = int(counts.sum())
        if total == 0:
            return []
        # Expand every (candidate gram, posting) pair without a Python loop.
        cpos = np.repeat(np.arange(len(grams), dtype=np.int64), counts)
        first = np.repeat(lo, counts)
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        post = first + within
        record = self.records[post].astype(np.int64)
        diag = self.positions[post].astype(np.int64) - cpos
        order = np.lexsort((cpos, diag, record))
        record, diag, cpos = record[order], diag[order], cpos[order]
        # A run breaks where the note or diagonal changes or the positions are not consecutive.
        breaks = np.ones(total, dtype=bool)
        breaks[1:] = (
            (record[1:] != record[:-1]) | (diag[1:] != diag[:-1]) | (cpos[1:] != cpos[:-1] + 1)
        )
        starts = np.flatnonzero(breaks)
        lengths = np.diff(np.append(starts, total))
        best = np.argsort(-lengths, kind="stable")
        return [
            (
                int(lengths[i]),
                int(record[starts[i]]),
                int(cpos[starts[i]]),
                int(cpos[starts[i]] + diag[starts[i]]),
            )
            for i in best
        ]

    def longest_shared(
        self, text: str, real_text: Callable[[int], str], *, confirm: int = 8
    ) -> SharedSpan | None:
        """The longest run of word tokens ``text`` shares with any indexed note (confirmed), or None.

        Runs are confirmed longest first, and the search stops once no
        remaining run can be longer than the best confirmed one (or after
        ``confirm`` confirmed runs).
        """
        tokens, spans = tokenize(text)
        grams = self.gram_hashes(tokens)
        if not len(grams) or not len(self.keys):
            return None
        best: SharedSpan | None = None
        real_cache: dict[int, list[str]] = {}
        checked = 0
        for grams_in_run, record, c0, r0 in self._runs(grams):
            if best is not None and (grams_in_run + self.k - 1 < best.tokens or checked >= confirm):
                break
            if record not in real_cache:
                real_cache[record] = tokenize(real_text(record))[0]
            span = self._confirm(tokens, real_cache[record], c0, r0)
            if span is None:
                continue  # a hash collision, not a copy
            checked += 1
            c, length, r = span
            if best is None or length > best.tokens:
                best = SharedSpan(record, length, spans[c][0], spans[c + length - 1][1], r)
        return best

    def _confirm(
        self, cand: list[str], real: list[str], c: int, r: int
    ) -> tuple[int, int, int] | None:
        """Check a hit against the real tokens and extend it both ways; None for a hash collision."""
        if r < 0 or r + self.k > len(real) or cand[c : c + self.k] != real[r : r + self.k]:
            return None
        while c > 0 and r > 0 and cand[c - 1] == real[r - 1]:
            c, r = c - 1, r - 1
        length = 0
        while (
            c + length < len(cand)
            and r + length < len(real)
            and cand[c + length] == real[r + length]
        ):
            length += 1
        return c, length, r

    # -- persistence -------------------------------------------------------

    def save(self, path: str) -> None:
        """Keyed hashes, note numbers and positions only: no token, no text."""
        np.savez(
            path,
            keys=self.keys,
            records=self.records,
            positions=self.positions,
            k=np.array([self.k]),
        )

    @classmethod
    def load(cls, path: str, key: bytes, max_postings: int = 200) -> NgramIndex:
        data = np.load(path)
        index = cls(key, int(data["k"][0]), max_postings)
        index.keys, index.records, index.positions = (
            data["keys"],
            data["records"],
            data["positions"],
        )
        index.documents = int(index.records.max()) + 1 if len(index.records) else 0
        return index
