"""Word tokens: the fast path of ``word_tokens`` gives the tokens of ``tokenize``."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.privacy.ngram_index import tokenize
from appliance.privacy.reference import word_tokens


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
