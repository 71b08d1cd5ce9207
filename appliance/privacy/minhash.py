"""Near-duplicate notes: MinHash over keyed word shingles, with LSH to find candidates.

Each note becomes the set of its word ``w``-shingles, hashed with the same
keyed token hashes as the n-gram index (nothing readable is kept). A
signature of ``permutations`` minimum values (multiply-shift hashing of the
shingle hashes, vectorized with numpy) estimates the Jaccard similarity of
two notes; LSH splits the signature into ``bands`` and only notes that agree
on a whole band become candidates, so a query does not compare against every
real note. Candidates are then decided on their exact Jaccard similarity,
computed from the real note's text, which the caller decrypts on demand.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from appliance.privacy.ngram_index import NgramIndex, tokenize


@dataclass(frozen=True)
class NearDuplicate:
    record: int
    jaccard: float  # exact, over word shingles
    estimate: float  # MinHash estimate that made it a candidate


class MinHashIndex:
    def __init__(
        self, key: bytes, *, shingle: int = 5, permutations: int = 128, bands: int = 32
    ) -> None:
        if permutations % bands:
            raise ValueError("permutations must be a multiple of bands")
        self.shingle = shingle
        self.bands = bands
        self.rows = permutations // bands
        # The shingle hashes come from the n-gram index's keyed scheme, with k = shingle size.
        self._hasher = NgramIndex(key, k=shingle)
        rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
        self._a = rng.integers(1, 2**63, size=permutations, dtype=np.uint64) | np.uint64(1)  # odd
        self._b = rng.integers(0, 2**63, size=permutations, dtype=np.uint64)
        self._buckets: list[dict[bytes, list[int]]] = [defaultdict(list) for _ in range(bands)]
        self._signatures: dict[int, np.ndarray] = {}

    def shingles(self, text: str) -> np.ndarray:
        tokens, _ = tokenize(text)
        if len(tokens) < self.shingle:
            tokens = tokens + [""] * (self.shingle - len(tokens))  # short notes: one padded shingle
        return np.unique(self._hasher.gram_hashes(tokens))

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            # (permutations, shingles): multiply-shift hash of every shingle under every permutation.
            hashed = (self._a[:, None] * shingles[None, :] + self._b[:, None]) >> np.uint64(32)
        return hashed.min(axis=1)

    def _band_keys(self, sig: np.ndarray) -> list[bytes]:
        return [sig[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def add(self, record: int, text: str) -> None:
        sig = self.signature(self.shingles(text))
        self._signatures[record] = sig
        for band, key in enumerate(self._band_keys(sig)):
            self._buckets[band][key].append(record)

    def candidates(self, text: str) -> dict[int, float]:
        """Indexed notes that share at least one band with ``text``, with their MinHash estimate."""
        sig = self.signature(self.shingles(text))
        found: set[int] = set()
        for band, key in enumerate(self._band_keys(sig)):
            found.update(self._buckets[band].get(key, ()))
        return {r: float(np.mean(self._signatures[r] == sig)) for r in found}

    def near_duplicates(
        self, text: str, real_text: Callable[[int], str], threshold: float
    ) -> list[NearDuplicate]:
        """Indexed notes whose exact shingle Jaccard with ``text`` is at least ``threshold``, best first."""
        mine = set(self.shingles(text).tolist())
        out = []
        for record, estimate in self.candidates(text).items():
            theirs = set(self.shingles(real_text(record)).tolist())
            jaccard = len(mine & theirs) / len(mine | theirs) if mine | theirs else 0.0
            if jaccard >= threshold:
                out.append(NearDuplicate(record, jaccard, estimate))
        return sorted(out, key=lambda d: -d.jaccard)
