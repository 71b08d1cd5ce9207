"""What every leakage detector is: the notes it sees, what it returns, and what the report says of it.

A detector looks at a batch of candidate notes and returns, per note, a
score and findings:

    class MyDetector(Detector):
        name = "my_rule"                       # key of its scores, findings and report rows
        description = "what it measures"       # the report's "what it measures" column
        def needs(self, batch, ctx) -> set[int]: ...        # real notes to decrypt for confirmation
        def check(self, batch, ctx) -> list[Outcome]: ...   # one Outcome per candidate

``needs`` runs first for every detector, so the real notes a whole batch
needs are decrypted in one pass over the store (``ctx.real``); ``check``
then confirms against the actual tokens, so a hash collision never makes a
finding. Findings carry character spans in the *candidate* note only.

Beyond those two, a detector says how it is thresholded and reported; the
defaults of :class:`Detector` fit one that only needs its name and
description:

- ``calibrate(baseline, policy)``: adjust the threshold to the held-out
  real notes' scores (``baseline[name]``, measured by ``screen.calibrate``
  for the detectors listed in the registry's ``CALIBRATED``);
- ``report_sections()``: top-level entries of the JSON report of a run
  (e.g. the DCR threshold and its rank);
- ``threshold_text(report)``, ``threshold_value(report)``, ``held_out(...)``
  and ``html_note(report)``: the HTML report's threshold column, the
  threshold line and held-out histogram of its plot, and a paragraph under
  the detectors table. These read the JSON report only (class methods), so
  a report can be rendered again from its JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from appliance.config import Policy
from appliance.privacy.ngram_index import tokenize
from appliance.privacy.reference import IndexView, ReferenceIndex


@dataclass
class Candidate:
    """A note being screened, with its word tokens and their keyed hashes."""

    id: str
    text: str
    tokens: list[str]
    spans: list[tuple[int, int]]
    hashes: np.ndarray

    @classmethod
    def of(cls, note_id: str, text: str, index: ReferenceIndex) -> Candidate:
        tokens, spans = tokenize(text)
        return cls(note_id, text, tokens, spans, index.hasher.many(tokens))

    def char_span(self, first: int, length: int) -> tuple[int, int]:
        return self.spans[first][0], self.spans[first + length - 1][1]


@dataclass(frozen=True)
class Finding:
    detector: str
    reason: str
    score: float
    start: int  # character span in the candidate (0, 0 when the finding is about the whole note)
    end: int
    quarantine: bool
    record: int | None = None  # the real note involved (index number; never shown as text)
    kind: str = ""  # e.g. the identifier type


@dataclass
class Outcome:
    score: float | None = None
    findings: list[Finding] = field(default_factory=list)


@dataclass
class Context:
    index: IndexView  # the part of the reference index this round of notes touches
    policy: Policy
    real: dict[int, list[str]] = field(default_factory=dict)  # record number -> word tokens
    cache: dict[Any, Any] = field(default_factory=dict)  # per-batch scratch shared by detectors
    exclude: np.ndarray | None = None  # real notes not to compare with (bool per record)


class Detector:
    """Base of the leakage detectors (see the module docstring); subclasses set the class attributes."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @classmethod
    def create(cls, index: ReferenceIndex, policy: Policy) -> Detector:
        """The detector a screen runs, for this index and policy (default: no arguments)."""
        return cls()

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]:
        """Record numbers of the real notes ``check`` compares with (decrypted once per batch)."""
        return set()

    def check(self, batch: Sequence[Candidate], ctx: Context) -> list[Outcome]:
        raise NotImplementedError

    # -- threshold and calibration -------------------------------------------------

    def calibrate(self, baseline: dict[str, Any], policy: Policy) -> None:
        """Set the effective threshold from the held-out baseline (default: the policy's, as is)."""

    # -- report -----------------------------------------------------------------------

    def report_sections(self) -> dict[str, Any]:
        """Top-level entries this detector adds to the JSON report of a run (after calibration)."""
        return {}

    @classmethod
    def threshold_text(cls, report: dict[str, Any]) -> str:
        """The threshold, as the HTML report's detectors table says it."""
        return ""

    @classmethod
    def threshold_value(cls, report: dict[str, Any]) -> float | None:
        """Where the threshold line of the score histogram goes (None: no line)."""
        return None

    @classmethod
    def held_out(
        cls, report: dict[str, Any], index: ReferenceIndex, baseline: dict[str, Any]
    ) -> Sequence[float] | None:
        """Held-out real notes' scores, drawn beside the synthetic notes' in the histogram."""
        values = baseline.get(cls.name)
        return values if isinstance(values, list) else None

    @classmethod
    def html_note(cls, report: dict[str, Any]) -> str:
        """A paragraph of (already escaped) HTML under the detectors table; "" for none."""
        return ""


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Count, min, median, 95th percentile and max of scores, as the report lists them."""
    if not values:
        return {"count": 0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "count": len(a),
        "min": round(float(a.min()), 4),
        "median": round(float(np.median(a)), 4),
        "p95": round(float(np.quantile(a, 0.95)), 4),
        "max": round(float(a.max()), 4),
    }
