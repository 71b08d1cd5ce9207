"""The token-classification model: a scratch BERT or a local encoder, and its saved folder.

A saved model folder holds everything needed to rebuild and run it, with
nothing else (nanoGPT's habit)::

    model/
      config.json          the transformers config (architecture, id2label)
      model.safetensors    the weights
      tokenizer.json       the fast tokenizer (offsets for every sub-word)
      ner.json             labels, window settings, special tokens, base encoder,
                           zone, training data, settings and metrics
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import crashpoints
from appliance.errors import InputError, missing_dependency
from appliance.ner.encoding import Special, special_tokens
from appliance.ner.settings import NerSettings

NER_META = "ner.json"
TOKENIZER_FILE = "tokenizer.json"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def torch_module() -> Any:
    try:
        import torch
    except ImportError:
        raise missing_dependency("torch", "cpu", "NER training and PyTorch inference") from None
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # loading/saving bars would garble the CLI's own progress
    return torch


def train_wordpiece(texts: list[str], vocab_size: int) -> Any:
    """A BERT-style WordPiece tokenizer whose vocabulary comes from the training notes (``--base scratch``).

    The vocabulary is built here rather than by the ``tokenizers`` trainer,
    whose choice among equally frequent merges changes from run to run: every
    character (alone and as a ``##`` continuation), then the most frequent
    word endings and words, ties broken alphabetically. Same notes, same
    tokenizer, so a fixed seed gives the same model.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = [*SPECIALS, *chars, *(f"##{c}" for c in chars)]
    # Word endings (2-4 characters) let unseen inflections split into known pieces.
    endings: Counter[str] = Counter()
    for w, n in words.items():
        for k in (2, 3, 4):
            if len(w) > k + 1:
                endings[f"##{w[-k:]}"] += n
    room = max(0, vocab_size - len(vocab))
    ranked_words = sorted(words.items(), key=lambda x: (-x[1], x[0]))
    ranked_endings = sorted(endings.items(), key=lambda x: (-x[1], x[0]))[: room // 4]
    known = set(vocab)
    for piece, _ in [*ranked_endings, *ranked_words]:
        if len(vocab) >= vocab_size:
            break
        if piece not in known:
            known.add(piece)
            vocab.append(piece)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    # Lower-casing helps a small model on little data; offsets still point into the original text.
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    return tok


def scratch_config(settings: NerSettings, vocab_size: int, labels: list[str]) -> Any:
    from transformers import BertConfig

    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        intermediate_size=settings.intermediate_size,
        hidden_dropout_prob=settings.dropout,
        attention_probs_dropout_prob=settings.dropout,
        max_position_embeddings=max(settings.max_length, 64),
        pad_token_id=0,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    return BertConfig(**kwargs)


def load_base_tokenizer(base: Path) -> Any:
    """The fast tokenizer of a local Hugging Face folder, as a ``tokenizers.Tokenizer``."""
    from tokenizers import Tokenizer

    if not base.is_dir():
        raise InputError(f"--base {base}: not a folder (give a local encoder folder or 'scratch')")
    if (base / TOKENIZER_FILE).is_file():
        tok = Tokenizer.from_file(str(base / TOKENIZER_FILE))
    else:
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"--base {base}: no loadable tokenizer: {str(exc).splitlines()[0]}"
            ) from exc
        if not getattr(hf, "is_fast", False):
            raise InputError(f"--base {base}: a fast tokenizer (tokenizer.json) is required")
        tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def load_base_model(base: Path, labels: list[str], *, masked_lm: bool = False) -> Any:
    from transformers import AutoModelForMaskedLM, AutoModelForTokenClassification

    try:
        if masked_lm:
            return AutoModelForMaskedLM.from_pretrained(str(base), local_files_only=True)
        return AutoModelForTokenClassification.from_pretrained(
            str(base),
            local_files_only=True,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"--base {base}: not a loadable encoder: {str(exc).splitlines()[0]}"
        ) from exc


def max_positions(config: Any) -> int:
    n = int(getattr(config, "max_position_embeddings", 512))
    # RoBERTa-family models reserve two positions for the padding offset.
    return (
        n - 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else n
    )


@dataclass
class NerModel:
    """A loaded model folder: the torch model, its tokenizer and ``ner.json``."""

    model: Any
    tokenizer: Any
    meta: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def special(self) -> Special:
        return Special.from_dict(self.meta["special"])

    @property
    def max_length(self) -> int:
        return int(self.meta["max_length"])

    @property
    def stride(self) -> int:
        return int(self.meta["stride"])


def save_model(folder: Path, model: Any, tokenizer: Any, meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save(str(folder / TOKENIZER_FILE))
    (folder / NER_META).write_text(
        json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    crashpoints.reached("ner.model")


def is_model_folder(path: Path) -> bool:
    return (path / NER_META).is_file() and (path / "config.json").is_file()


def load_model(folder: Path) -> NerModel:
    """Rebuild a trained model from its folder alone."""
    torch_module()
    from tokenizers import Tokenizer
    from transformers import AutoModelForTokenClassification

    if not is_model_folder(folder):
        raise InputError(f"{folder}: not an NER model folder (no {NER_META} and config.json)")
    meta = json.loads((folder / NER_META).read_text(encoding="utf-8"))
    model = AutoModelForTokenClassification.from_pretrained(str(folder), local_files_only=True)
    model.eval()
    tok = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    tok.no_truncation()
    tok.no_padding()
    return NerModel(model, tok, meta)


def describe_special(tokenizer: Any, config: Any) -> Special:
    pad = getattr(config, "pad_token_id", None)
    return special_tokens(tokenizer, pad if isinstance(pad, int) else None)
