"""Distance to closest record: cosine similarity (TF-IDF) to the nearest training note.

The threshold comes from the held-out real notes of at least
``dcr_min_tokens`` tokens (split conformal, :func:`dcr_threshold`): a note
no closer to the training notes than a new real note would be is quarantined
with probability at most ``dcr_quantile``. With too few held-out notes the
rule is off (and the report says why).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from appliance.config import Policy
from appliance.privacy.detectors.base import (
    Candidate,
    Context,
    Detector,
    Finding,
    Outcome,
    summary,
)
from appliance.privacy.reference import ReferenceIndex

# The report's paragraph on this rule (the HTML report's template language, autoescaped).
_HTML_NOTE = """{% if r.dcr.enabled %}<p>Distance to closest record: {{ (100 * r.dcr.share_closer_to_training_than_holdout) | round(1) if r.dcr.share_closer_to_training_than_holdout is not none else "n/a" }}% of synthetic notes are closer to a
training note than to a held-out real note (same-size samples; about 50% means the generator does not copy its training notes).
Notes more similar to a training note than the held-out real note of rank {{ r.dcr.threshold_rank }} of {{ r.dcr.holdout_notes }} are quarantined (similarity &gt; {{ r.dcr.threshold_similarity }}; a new real note lies above it with probability at most {{ (100 * r.dcr.quantile) | round(1) }}%).</p>
{% else %}<p class="muted">Distance to closest record: not applied ({{ r.dcr.why }}).</p>{% endif %}"""


class DistanceToClosestDetector(Detector):
    name = "dcr"
    description = (
        "cosine similarity (TF-IDF) to the nearest training note, against held-out real notes"
    )

    def __init__(self, index: ReferenceIndex, policy: Policy) -> None:
        q = self.quantile = policy.leakage.dcr_quantile
        self.min_tokens = policy.leakage.dcr_min_tokens
        # Held-out notes as long as the notes this rule applies to (the rule's own population).
        self.baseline = index.holdout_baseline(self.min_tokens)
        n = len(self.baseline)
        self.rank, self.threshold = dcr_threshold(self.baseline, q)
        # The rank must exist among the held-out notes: (n + 1)(1 - q) ≤ n, and at least 20.
        self.min_holdout = max(20, math.ceil((1 - q) / q)) if q > 0 else 20
        self.enabled = q > 0 and n >= self.min_holdout and self.rank <= n
        # Per screened note: closer to the sampled training notes than to the held-out ones.
        self.closer_to_training: list[bool] = []

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]:
        return set()

    def check(self, batch: Sequence[Candidate], ctx: Context) -> list[Outcome]:
        if not self.enabled:
            return [Outcome() for _ in batch]
        # Each note's nearest training-sample, other training and held-out note, from the round's view.
        near = np.array([ctx.index.nearest_by_group[id(c)] for c in batch], dtype=np.float32)
        near = near.reshape(len(batch), 3)
        sim_train, sim_hold = near[:, 0], near[:, 2]
        sim = np.maximum(sim_train, near[:, 1])
        self.closer_to_training += (sim_train > sim_hold).tolist()
        out = []
        for cand, s in zip(batch, sim.tolist(), strict=True):
            outcome = Outcome(score=float(s))
            # (1e-5: float noise of a cosine of 1, e.g. a one-word note equal to a real one)
            if s > self.threshold + 1e-5 and len(cand.tokens) >= self.min_tokens:
                outcome.findings.append(
                    Finding(
                        self.name,
                        f"closer to a training note (similarity {s:.3f}) than all but "
                        f"{len(self.baseline) - self.rank} of {len(self.baseline)} held-out real "
                        f"notes are (threshold {self.threshold:.3f}: at most "
                        f"{ctx.policy.leakage.dcr_quantile:.0%} of new real notes lie above it)",
                        float(s),
                        0,
                        0,
                        True,
                    )
                )
            out.append(outcome)
        return out

    # -- report -----------------------------------------------------------------------

    @classmethod
    def create(cls, index: ReferenceIndex, policy: Policy) -> DistanceToClosestDetector:
        return cls(index, policy)

    def report_sections(self) -> dict[str, Any]:
        return {"dcr": self._summary()}

    def _summary(self) -> dict[str, Any]:
        closer = self.closer_to_training
        if not self.enabled:
            if self.quantile <= 0:
                return {"enabled": False, "why": "dcr_quantile is 0 in the policy"}
            return {
                "enabled": False,
                "why": f"fewer than {self.min_holdout} held-out real notes of at least "
                f"{self.min_tokens} tokens to compare with ({len(self.baseline)}); "
                "the quantile would be noise",
            }
        return {
            "enabled": True,
            "threshold_similarity": round(self.threshold, 4),
            "quantile": self.quantile,
            "threshold_rank": self.rank,
            "holdout_notes": len(self.baseline),
            "min_tokens": self.min_tokens,
            "rule": "the ⌈(n + 1)(1 − q)⌉-th smallest held-out similarity (split conformal): "
            "a new real note lies above it with probability at most q",
            "baseline": summary(self.baseline.tolist()),
            "share_closer_to_training_than_holdout": (
                round(sum(closer) / len(closer), 4) if closer else None
            ),
            "expected_share": 0.5,
        }

    @classmethod
    def threshold_text(cls, report: dict[str, Any]) -> str:
        lk = report["policy"]["leakage"]
        return (
            f"similarity > {report['dcr']['threshold_similarity']} (notes ≥ {lk['dcr_min_tokens']} tokens)"
            if report["dcr"].get("enabled")
            else "not applied"
        )

    @classmethod
    def threshold_value(cls, report: dict[str, Any]) -> float | None:
        value = report["dcr"].get("threshold_similarity")
        return None if value is None else float(value)

    @classmethod
    def held_out(
        cls, report: dict[str, Any], index: ReferenceIndex, baseline: dict[str, Any]
    ) -> Sequence[float] | None:
        # Not calibrated by the screen: the index keeps every held-out note's similarity.
        values: list[float] = index.holdout_baseline(
            report["policy"]["leakage"]["dcr_min_tokens"]
        ).tolist()
        return values

    @classmethod
    def html_note(cls, report: dict[str, Any]) -> str:
        import jinja2

        env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        return env.from_string(_HTML_NOTE).render(r=report)


def dcr_threshold(baseline: np.ndarray, q: float) -> tuple[int, float]:
    """(rank, similarity): the ⌈(n + 1)(1 − q)⌉-th smallest held-out similarity.

    A synthetic note that is no copy is, as far as its distance to the
    training notes goes, one more held-out note: with this order statistic
    (the split-conformal rule) the chance that such a note lies above the
    threshold is at most ``q`` whatever the distribution, where the plain
    empirical quantile of a small holdout overshoots it (about 1.7 % instead
    of 1 % with 111 held-out notes). The rank is n + 1 (no threshold) when
    there are too few held-out notes for ``q``.
    """
    n = len(baseline)
    if q <= 0 or not n:
        return n + 1, math.inf
    rank = math.ceil((n + 1) * (1 - q) - 1e-9)
    if rank > n:
        return rank, math.inf
    return rank, float(np.sort(baseline)[rank - 1])
