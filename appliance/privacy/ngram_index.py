"""Word tokens and the k-gram hash multiplier shared by the reference index and the detectors.

A note's word tokens (any script, lower-cased, punctuation ignored) are what
the leakage screen compares: the reference index hashes every k-gram of
them with keyed token hashes combined by the polynomial multiplier ``_P``
(:func:`appliance.privacy.reference.gram_hashes`), and the detectors
confirm a hit against the actual tokens, with their character spans.
"""

from __future__ import annotations

import re

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
