"""The held-out share of the real records: never trained on, the leakage screen's comparison set.

Membership is a keyed hash of the record id, so re-ingesting or adding
records never moves one, and the generator and the screen always agree on
which records are held out.
"""

from __future__ import annotations

import hashlib
import hmac


def is_holdout(key: bytes, record_id: str, fraction: float) -> bool:
    """Stable membership: a keyed hash of the id, so re-ingesting or adding records never moves one."""
    digest = hmac.new(key, record_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
