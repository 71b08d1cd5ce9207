"""The leakage detectors a screen runs, in order: the registry.

Each detector is one module here, a subclass of
:class:`~appliance.privacy.detectors.base.Detector` carrying its name, its
threshold and calibration, and what the report says of it. ``screen.py``
and ``report.py`` only iterate ``DETECTORS``; none of them is named there.

Adding a detector::

    # appliance/privacy/detectors/my_rule.py
    class MyRuleDetector(Detector):
        name = "my_rule"
        description = "what it measures"
        def check(self, batch, ctx): ...           # one Outcome per candidate
        @classmethod
        def threshold_text(cls, report): ...      # the report's threshold column

    # here: import it and add one line to DETECTORS (where in the order it runs)
        MyRuleDetector,

and, if its threshold is calibrated on held-out real notes (their scores
measured by ``screen.calibrate`` and passed to its ``calibrate``), add it to
``CALIBRATED`` as well.
"""

from __future__ import annotations

from appliance.config import Policy
from appliance.privacy.detectors.base import Candidate, Context, Detector, Finding, Outcome
from appliance.privacy.detectors.dcr import DistanceToClosestDetector, dcr_threshold
from appliance.privacy.detectors.identifiers import IdentifierDetector
from appliance.privacy.detectors.lcs import LcsRatioDetector, lcs_length
from appliance.privacy.detectors.near_duplicate import NearDuplicateDetector
from appliance.privacy.detectors.verbatim import VerbatimDetector, _rare_tokens
from appliance.privacy.reference import ReferenceIndex

__all__ = [
    "CALIBRATED",
    "DETECTORS",
    "Candidate",
    "Context",
    "Detector",
    "DistanceToClosestDetector",
    "Finding",
    "IdentifierDetector",
    "LcsRatioDetector",
    "NearDuplicateDetector",
    "Outcome",
    "VerbatimDetector",
    "_rare_tokens",
    "by_name",
    "dcr_threshold",
    "default_detectors",
    "lcs_length",
]

# In the order they run. Scores and findings are listed in this order in the
# decisions and the report. Near duplicates first: the LCS detector also
# compares against its candidates.
DETECTORS: tuple[type[Detector], ...] = (
    NearDuplicateDetector,
    VerbatimDetector,
    LcsRatioDetector,
    IdentifierDetector,
    DistanceToClosestDetector,
)

# Measured on held-out real notes by ``screen.calibrate``, in the order its
# baseline lists them (calibration.json and the report's "baseline").
CALIBRATED: tuple[type[Detector], ...] = (
    VerbatimDetector,
    LcsRatioDetector,
    NearDuplicateDetector,
)


def default_detectors(index: ReferenceIndex, policy: Policy) -> list[Detector]:
    """A screen's detectors for this index and policy, in registry order."""
    return [cls.create(index, policy) for cls in DETECTORS]


def by_name(name: str) -> type[Detector]:
    """The registered detector of this name; the base class (no threshold, no note) for another."""
    return next((cls for cls in DETECTORS if cls.name == name), Detector)
