"""Byte-level BPE tokenizer trained on the hospital's own (pseudonymized) notes.

Byte-level: every string of any language and script is encodable, with no
unknown token and no English assumption; merges are learned from the notes
themselves, so frequent words of the hospital's language become single tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], *, vocab_size: int, min_frequency: int) -> Tokenizer:
    """Train a GPT-2-style byte-level BPE tokenizer; ``EOS`` is token 0."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def to_transformers(tok: Tokenizer) -> Any:
    """Wrap for transformers (generation, saving a model folder for vLLM)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS
    )


def tokens_per_word(tok: Tokenizer, texts: Iterable[str]) -> float:
    """Average tokens per whitespace-separated word: ~1-1.5 for a well-fitted tokenizer, 4+ when it shreds words into bytes."""
    words = tokens = 0
    for text in texts:
        words += len(text.split())
        tokens += len(tok.encode(text).ids)
    return tokens / max(words, 1)
