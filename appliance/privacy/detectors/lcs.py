"""Copies with small edits: the longest common subsequence of word tokens with the closest real notes.

The closest real notes are those with most rare k-gram hits (:mod:`.grams`)
and the near-duplicate detector's candidates; the ratio is the LCS length
over the note's length, for notes of at least ``lcs_min_tokens`` tokens.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from appliance.privacy.detectors.base import Candidate, Context, Detector, Finding, Outcome
from appliance.privacy.detectors.grams import gram_hits


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, O(|a|·|b|/w))."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for tok in a:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


class LcsRatioDetector(Detector):
    name = "lcs_ratio"
    description = "longest common subsequence with the closest real notes, over the note's length"

    def __init__(self, closest: int = 3) -> None:
        self.closest = closest

    def _pairs(self, batch: Sequence[Candidate], ctx: Context) -> list[list[tuple[int, int]]]:
        """Per note: (record, diagonal) of the closest real notes (most rare k-gram hits)."""
        cached = ctx.cache.get("lcs_pairs")
        if isinstance(cached, list):
            return cached
        h = gram_hits(batch, ctx)
        out: list[list[tuple[int, int]]] = [[] for _ in batch]
        if len(h.note):
            per: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
            for n, r, d in zip(
                h.note.tolist(), h.record.tolist(), (h.rpos - h.cpos).tolist(), strict=True
            ):
                per[n][r].append(d)
            for n, recs in per.items():
                best = sorted(recs.items(), key=lambda kv: -len(kv[1]))[: self.closest]
                out[n] = [(r, int(np.median(ds))) for r, ds in best]
        for n, near in ctx.cache.get("near_records", {}).items():
            have = {r for r, _ in out[n]}
            out[n] += [(r, 0) for r in near if r not in have]
        ctx.cache["lcs_pairs"] = out
        return out

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]:
        return {r for pairs in self._pairs(batch, ctx) for r, _ in pairs}

    def check(self, batch: Sequence[Candidate], ctx: Context) -> list[Outcome]:
        lk = ctx.policy.leakage
        out = []
        for cand, pairs in zip(batch, self._pairs(batch, ctx), strict=True):
            n = len(cand.tokens)
            if n < lk.lcs_min_tokens or not pairs:
                out.append(Outcome(score=0.0 if n >= lk.lcs_min_tokens else None))
                continue
            best, best_rec = 0.0, None
            for record, diag in pairs:
                real = ctx.real[record]
                # Only the part of the real note the candidate could be a copy of: a short
                # text is a subsequence of almost any long one.
                lo = max(0, diag - n // 2)
                window = real[lo : diag + n + n // 2] if len(real) > 2 * n else real
                ratio = lcs_length(cand.tokens, window) / n
                if ratio > best:
                    best, best_rec = ratio, record
            outcome = Outcome(score=best)
            if best >= lk.lcs_ratio_max:
                outcome.findings.append(
                    Finding(
                        self.name,
                        f"{best:.0%} of the note's words appear in order in one real note "
                        f"(limit {lk.lcs_ratio_max:.0%}): a copy with small edits",
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
        return f"≥ {lk['lcs_ratio_max']} (notes ≥ {lk['lcs_min_tokens']} tokens)"

    @classmethod
    def threshold_value(cls, report: dict[str, Any]) -> float | None:
        return float(report["policy"]["leakage"]["lcs_ratio_max"])
