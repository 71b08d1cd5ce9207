"""Verbatim copies: the longest run of word tokens a synthetic note shares with one real note.

Rare k-gram hits (:mod:`.grams`) on one diagonal of one real note anchor a
run; each anchor is confirmed against the real note's tokens and extended
both ways, so the run is exact. Tokens inside boilerplate k-grams (in the
notes of many patients) do not count unless the policy says so. The
threshold is the policy's ``verbatim_max_tokens``, raised with
``verbatim_calibrate`` to what held-out real notes already share with the
training notes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from appliance.config import Policy
from appliance.privacy.detectors.base import Candidate, Context, Detector, Finding, Outcome
from appliance.privacy.detectors.grams import gram_hits


def _alignments(
    batch: Sequence[Candidate], ctx: Context, top: int, limit: int, cap: int = 32
) -> list[list[tuple[int, list[tuple[int, int]]]]]:
    """Per note, the (record, [(candidate pos, real pos) of each hit]) diagonals worth confirming.

    The ``top`` diagonals with most rare k-gram hits (the longest shared runs),
    and every diagonal whose hits cover at least ``limit`` candidate tokens (up
    to ``cap`` of them, most covered first): the tokens of a run outside
    boilerplate k-grams all lie in its rare k-grams, which are all hits on its
    diagonal, so no run that can reach the limit is left out, however many
    longer template runs the note shares with other real notes.
    """
    key = ("align", top, limit, cap)
    cached = ctx.cache.get(key)
    if isinstance(cached, list):
        return cached
    h = gram_hits(batch, ctx)
    k = ctx.index.k
    out: list[list[tuple[int, list[tuple[int, int]]]]] = [[] for _ in batch]
    if len(h.note):
        diag = h.rpos - h.cpos
        order = np.lexsort((h.cpos, diag, h.record, h.note))
        note, rec, dg, cp = h.note[order], h.record[order], diag[order], h.cpos[order]
        new = np.ones(len(note), dtype=bool)
        new[1:] = (note[1:] != note[:-1]) | (rec[1:] != rec[:-1]) | (dg[1:] != dg[:-1])
        starts = np.flatnonzero(new)
        # Tokens covered by each diagonal's hits: k per hit, less the overlap with the previous.
        gap = np.full(len(cp), k, dtype=np.int64)
        gap[1:] = np.minimum(cp[1:] - cp[:-1], k)
        gap[new] = k
        covered = np.add.reduceat(gap, starts)
        sizes = np.diff(np.append(starts, len(note)))
        groups: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for g, (s, size, cov) in enumerate(
            zip(starts.tolist(), sizes.tolist(), covered.tolist(), strict=True)
        ):
            groups[int(note[s])].append((size, cov, g))
        ends = np.append(starts[1:], len(note))
        for n, items in groups.items():
            by_hits = sorted(items, key=lambda t: (-t[0], t[2]))[:top]
            by_cover = sorted((t for t in items if t[1] >= limit), key=lambda t: (-t[1], t[2]))
            chosen = dict.fromkeys(t[2] for t in [*by_hits, *by_cover[:cap]])
            for g in chosen:
                s, e = int(starts[g]), int(ends[g])
                out[n].append(
                    (
                        int(rec[s]),
                        list(zip(cp[s:e].tolist(), (cp[s:e] + dg[s:e]).tolist(), strict=True)),
                    )
                )
    ctx.cache[key] = out
    return out


def _extend(cand: list[str], real: list[str], c: int, r: int, k: int) -> tuple[int, int] | None:
    """Confirm a k-gram anchor against the real tokens and extend it both ways: (start, length)."""
    if r < 0 or r + k > len(real) or cand[c : c + k] != real[r : r + k]:
        return None
    while c > 0 and r > 0 and cand[c - 1] == real[r - 1]:
        c, r = c - 1, r - 1
    n = 0
    while c + n < len(cand) and r + n < len(real) and cand[c + n] == real[r + n]:
        n += 1
    return c, n


class VerbatimDetector(Detector):
    name = "verbatim"
    description = "longest run of word tokens shared with a real note"

    def __init__(self, anchors: int = 4, limit: int | None = None) -> None:
        self.anchors = anchors
        self.limit = limit  # effective threshold (None: the policy's)
        self.limit_source = "policy"  # why the threshold is what it is (see ``calibrate``)

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]:
        limit = self.limit or ctx.policy.leakage.verbatim_max_tokens
        return {r for al in _alignments(batch, ctx, self.anchors, limit) for r, _ in al}

    def check(self, batch: Sequence[Candidate], ctx: Context) -> list[Outcome]:
        lk = ctx.policy.leakage
        limit = self.limit or lk.verbatim_max_tokens
        k = ctx.index.k
        out = []
        alignments = _alignments(batch, ctx, self.anchors, limit)
        boiler = ctx.cache.get("boilerplate") or [np.zeros(0, dtype=bool)] * len(batch)
        for cand, diagonals, common in zip(batch, alignments, boiler, strict=True):
            best: tuple[int, int, int, int] | None = None  # counted, length, start, record
            for record, hits in diagonals:
                done = -1  # candidate position the last confirmed run reached
                for c, r in hits:
                    if c < done:
                        continue  # inside a run already measured
                    span = _extend(cand.tokens, ctx.real[record], c, r, k)
                    if span is None:
                        continue
                    done = span[0] + span[1]
                    counted = span[1]
                    if not lk.verbatim_counts_boilerplate:
                        counted = _rare_tokens(common, span[0], span[1], k)
                    if best is None or (counted, span[1]) > best[:2]:
                        best = (counted, span[1], span[0], record)
            outcome = Outcome(score=float(best[0]) if best else 0.0)
            if best is not None and best[0] >= limit:
                start, end = cand.char_span(best[2], best[1])
                what = (
                    f"{best[1]} consecutive word tokens copied from a real note"
                    if best[0] == best[1]
                    else f"{best[1]} consecutive word tokens copied from a real note, "
                    f"{best[0]} of them outside boilerplate"
                )
                outcome.findings.append(
                    Finding(
                        self.name,
                        f"{what} (limit {limit})",
                        float(best[0]),
                        start,
                        end,
                        True,
                        best[3],
                    )
                )
            out.append(outcome)
        return out

    # -- threshold and calibration -------------------------------------------------

    def calibrate(self, baseline: dict[str, Any], policy: Policy) -> None:
        self.limit, self.limit_source = effective_limit(policy, baseline)

    # -- report -----------------------------------------------------------------------

    def report_sections(self) -> dict[str, Any]:
        if self.limit is None:
            return {}
        return {"verbatim_threshold": {"tokens": self.limit, "source": self.limit_source}}

    @classmethod
    def threshold_text(cls, report: dict[str, Any]) -> str:
        return f"≥ {report['verbatim_threshold']['tokens']} tokens ({report['verbatim_threshold']['source']})"

    @classmethod
    def threshold_value(cls, report: dict[str, Any]) -> float | None:
        return float(report["verbatim_threshold"]["tokens"])


def effective_limit(policy: Policy, baseline: dict[str, Any]) -> tuple[int, str]:
    """The effective verbatim threshold and why."""
    lk = policy.leakage
    runs = baseline.get("verbatim") or []
    if not lk.verbatim_calibrate or len(runs) < 20:
        return lk.verbatim_max_tokens, "policy"
    q = float(np.quantile(runs, 1 - max(lk.dcr_quantile, 0.01)))
    calibrated = math.floor(q) + 1
    if calibrated <= lk.verbatim_max_tokens:
        return lk.verbatim_max_tokens, "policy"
    return calibrated, (
        f"raised from {lk.verbatim_max_tokens}: {1 - max(lk.dcr_quantile, 0.01):.0%} of held-out "
        f"real notes share at most {int(q)} tokens with a training note"
    )


def _rare_tokens(common: np.ndarray, start: int, length: int, k: int) -> int:
    """Tokens of the run ``[start, start + length)`` inside no boilerplate k-gram of the run.

    ``common[i]``: the candidate's k-gram at token ``i`` is in the notes of at
    least ``boilerplate_patients`` patients.
    """
    if length < k:
        return length
    covered = np.zeros(length, dtype=bool)
    for i in np.flatnonzero(common[start : start + length - k + 1]).tolist():
        covered[i : i + k] = True
    return int(length - covered.sum())
