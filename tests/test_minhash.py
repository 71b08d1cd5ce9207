"""MinHash + LSH near-duplicate detection: lightly edited copies found, unrelated notes not."""

from __future__ import annotations

import random

import pytest

from appliance.privacy.minhash import MinHashIndex

VOCAB = [f"w{i}" for i in range(3000)]


def _note(seed: int, n: int = 150) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def _edit(text: str, share: float, seed: int) -> str:
    rng = random.Random(seed)
    words = text.split()
    for i in rng.sample(range(len(words)), int(len(words) * share)):
        words[i] = rng.choice(VOCAB)
    return " ".join(words)


REAL = [_note(i) for i in range(200)]


@pytest.fixture(scope="module")
def index():
    ix = MinHashIndex(b"k" * 32, shingle=5, permutations=128, bands=32)
    for i, text in enumerate(REAL):
        ix.add(i, text)
    return ix


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (REAL[17], 17),  # exact copy
        (_edit(REAL[42], 0.02, 1), 42),  # 2% of words changed
        (_edit(REAL[99], 0.05, 2), 99),  # 5% of words changed
        (_note(10_001), None),  # unrelated note
        (REAL[3][: len(REAL[3]) // 2], None),  # half a note: Jaccard about 0.5, under 0.6
    ],
    ids=["copy", "edit-2%", "edit-5%", "unrelated", "half"],
)
def test_near_duplicates(index, candidate, expected):
    found = index.near_duplicates(candidate, lambda i: REAL[i], threshold=0.6)
    if expected is None:
        assert found == []
    else:
        assert found and found[0].record == expected
        assert found[0].jaccard >= 0.6 and abs(found[0].estimate - found[0].jaccard) < 0.2


def test_unrelated_notes_are_rarely_even_candidates(index):
    hits = sum(bool(index.candidates(_note(20_000 + i))) for i in range(50))
    assert hits <= 2


def test_another_key_gives_other_signatures():
    a = MinHashIndex(b"a" * 32)
    b = MinHashIndex(b"b" * 32)
    assert not (a.signature(a.shingles(REAL[0])) == b.signature(b.shingles(REAL[0]))).all()
