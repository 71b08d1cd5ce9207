"""The keyed n-gram index: finds verbatim spans exactly, holds no text, ignores hash-only matches."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.privacy.ngram_index import NgramIndex, tokenize
from appliance.privacy.reference import word_tokens

REAL = [
    "Patient admitted with community acquired pneumonia and started on intravenous amoxicillin for five days before discharge home.",
    "Colonoscopy showed a sessile polyp in the sigmoid colon which was removed with a cold snare without complications at all.",
    "Kroonilise neeruhaigusega patsient, kellel on südamepuudulikkus, sai ravi furosemiidiga ja seisund paranes oluliselt haiglas.",
]
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
]


def _index(k=4):
    index = NgramIndex(b"k" * 32, k=k)
    for i, text in enumerate(REAL):
        index.add(i, text)
    index.freeze()
    return index


def _fresh(n, seed):
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _span(real_no, start_tok, length):
    return " ".join(REAL[real_no].split()[start_tok : start_tok + length])


@pytest.mark.parametrize(
    ("candidate", "record", "tokens"),
    [
        (REAL[0], 0, len(tokenize(REAL[0])[0])),  # whole note
        (
            f"{_fresh(6, 1)} {_span(1, 3, 12)} {_fresh(6, 2)}",
            1,
            12,
        ),  # 12-token span inside new text
        (
            f"{_fresh(3, 3)} {_span(0, 2, 6)} {_fresh(3, 4)} {_span(1, 0, 9)}",
            1,
            9,
        ),  # the longer of two
        (_span(2, 0, 10).upper(), 2, 10),  # case does not hide a copy
        (f"{_fresh(5, 5)} {_span(2, 4, 7)}", 2, 7),  # non-English tokens
        (_fresh(40, 6), None, 0),  # nothing shared
        (f"{_fresh(4, 7)} {_span(0, 0, 3)} {_fresh(4, 8)}", None, 0),  # shorter than k
    ],
)
def test_longest_shared_span(candidate, record, tokens):
    index = _index()
    found = index.longest_shared(candidate, lambda i: REAL[i])
    if record is None:
        assert found is None
    else:
        assert found is not None and (found.record, found.tokens) == (record, tokens)
        shared = candidate[found.start : found.end]
        assert len(tokenize(shared)[0]) == tokens


def test_hash_matches_are_confirmed_against_real_text():
    index = _index()
    # The caller's view of the real notes disagrees with what was indexed: no finding.
    assert index.longest_shared(REAL[1], lambda i: _fresh(30, 9)) is None


def test_index_holds_no_text(tmp_path):
    index = _index()
    path = tmp_path / "index.npz"
    index.save(str(path))
    blob = path.read_bytes()
    for word in ("pneumonia", "amoxicillin", "colonoscopy", "patsient"):
        assert word.encode() not in blob
    again = NgramIndex.load(str(path), b"k" * 32)
    found = again.longest_shared(f"{_fresh(5, 1)} {_span(1, 2, 15)}", lambda i: REAL[i])
    assert found is not None and found.tokens == 15


def test_another_key_finds_nothing():
    index = _index()
    stranger = NgramIndex(b"x" * 32, k=4)
    grams = stranger.gram_hashes(tokenize(REAL[0])[0])
    assert not set(grams.tolist()) & set(index.keys.tolist())


def test_boilerplate_postings_are_capped():
    index = NgramIndex(b"k" * 32, k=4, max_postings=3)
    for i in range(10):
        index.add(i, f"the patient was admitted {_fresh(8, i)}")
    index.freeze()
    assert index.longest_shared("the patient was admitted today", lambda i: "") is None


@settings(max_examples=400, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("aZ9_ ß'.-\u0307ǰİıΣσςΟΔéÉ\tŉ") + ["Ⅻ", "ǅ", "ﬁ"]),
        max_size=40,
    )
)
def test_word_tokens_equal_the_tokens_of_tokenize(text: str) -> None:
    # word_tokens lower-cases the whole text at once where that moves no boundary.
    assert word_tokens(text) == tokenize(text)[0]
