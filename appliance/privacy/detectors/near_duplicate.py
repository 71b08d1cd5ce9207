"""Near duplicates: Jaccard similarity of word shingles with the nearest real note.

MinHash signatures and LSH bands of the reference index find the candidate
real notes; the Jaccard similarity is then computed on the actual shingles.
Its candidates also go to the LCS detector (``ctx.cache["near_records"]``),
which is why it runs first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from appliance.privacy.detectors.base import Candidate, Context, Detector, Finding, Outcome
from appliance.privacy.reference import gram_hashes


class NearDuplicateDetector(Detector):
    name = "near_duplicate"
    description = "Jaccard similarity of word shingles with the nearest real note (MinHash/LSH)"

    def _candidates(self, batch: Sequence[Candidate], ctx: Context) -> list[dict[int, float]]:
        cached = ctx.cache.get("minhash")
        if isinstance(cached, list):
            return cached
        idx = ctx.index
        sh = idx.shingle
        sigs = np.stack(
            [
                idx.minhash(
                    gram_hashes(
                        c.hashes
                        if len(c.hashes) >= sh
                        else np.concatenate([c.hashes, np.zeros(sh - len(c.hashes), np.uint64)]),
                        sh,
                    )
                )
                for c in batch
            ]
        )
        bands = idx.band_hashes(sigs)
        out: list[dict[int, float]] = [{} for _ in batch]
        threshold = ctx.policy.leakage.near_duplicate_jaccard
        found: list[set[int]] = [set() for _ in batch]
        for b in range(idx.bands):
            keys = idx.band_keys[b]
            lo = np.searchsorted(keys, bands[b], side="left")
            hi = np.searchsorted(keys, bands[b], side="right")
            for n in np.flatnonzero(hi > lo).tolist():
                found[n].update(idx.band_records[b][lo[n] : hi[n]].tolist())
        sig32 = sigs.astype(np.uint32)
        for n, recs in enumerate(found):
            if not recs:
                continue
            rl = np.fromiter(recs, dtype=np.int64, count=len(recs))
            if ctx.exclude is not None:
                rl = rl[~ctx.exclude[rl]]
            est = (idx.signatures[rl] == sig32[n][None, :]).mean(axis=1)
            keep = est >= max(0.0, threshold - 0.2)
            out[n] = dict(zip(rl[keep].tolist(), est[keep].tolist(), strict=True))
        ctx.cache["minhash"] = out
        ctx.cache["near_records"] = {n: list(c) for n, c in enumerate(out) if c}
        return out

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]:
        return {r for c in self._candidates(batch, ctx) for r in c}

    def check(self, batch: Sequence[Candidate], ctx: Context) -> list[Outcome]:
        threshold = ctx.policy.leakage.near_duplicate_jaccard
        min_tokens = ctx.policy.leakage.lcs_min_tokens
        sh = ctx.index.shingle
        out = []
        for cand, cands in zip(batch, self._candidates(batch, ctx), strict=True):
            if len(cand.tokens) < min_tokens:
                # A short note ("Unremarkable.") is the same as many real ones and says
                # nothing about any; a copied run of it is the verbatim rule's.
                out.append(Outcome(score=None))
                continue
            mine = _shingles(cand.tokens, sh)
            best, best_rec = 0.0, None
            for record in cands:
                theirs = _shingles(ctx.real[record], sh)
                union = len(mine | theirs)
                j = len(mine & theirs) / union if union else 0.0
                if j > best:
                    best, best_rec = j, record
            outcome = Outcome(score=best)
            if best >= threshold:
                outcome.findings.append(
                    Finding(
                        self.name,
                        f"near-duplicate of a real note: {best:.0%} of word {sh}-shingles shared "
                        f"(limit {threshold:.0%})",
                        best,
                        0,
                        0,
                        True,
                        best_rec,
                    )
                )
            out.append(outcome)
        return out

    @classmethod
    def threshold_text(cls, report: dict[str, Any]) -> str:
        lk = report["policy"]["leakage"]
        return f"Jaccard ≥ {lk['near_duplicate_jaccard']} (notes ≥ {lk['lcs_min_tokens']} tokens)"

    @classmethod
    def threshold_value(cls, report: dict[str, Any]) -> float | None:
        return float(report["policy"]["leakage"]["near_duplicate_jaccard"])


def _shingles(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)}
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}
