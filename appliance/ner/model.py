"""The token-classification model: a scratch BERT or a local encoder, and its saved folder.

A saved model folder holds everything needed to rebuild and run it, with
nothing else (nanoGPT's habit)::

    model/
      config.json          the transformers config (architecture, id2label)
      model.safetensors    the weights
      tokenizer.json       the fast tokenizer (offsets for every sub-word)
      ner.json             labels, window settings, special tokens, base encoder,
                           zone and its reasons, training data, settings and metrics

A real-zone model (see :mod:`appliance.ner.zones`) keeps its weights and
tokenizer encrypted under the workspace data key, as
``model.safetensors.enc`` and ``tokenizer.json.enc`` (mode 0600); they are
decrypted only in memory. ``config.json`` (the shape and label names) and
``ner.json`` (which says ``"encrypted": {"key_id": ...}``) stay readable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import crashpoints
from appliance.errors import InputError, IntegrityError, missing_dependency
from appliance.ner import zones
from appliance.ner.encoding import Special, special_tokens
from appliance.ner.settings import NerSettings
from appliance.security.crypto import atomic_write, read_encrypted, write_encrypted
from appliance.security.keys import DataKey
from appliance.training import load_fast_tokenizer

NER_META = "ner.json"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
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


def load_base_tokenizer(base: Path, key: DataKey | None = None) -> Any:
    """The fast tokenizer of a local Hugging Face folder, as a ``tokenizers.Tokenizer``.

    An encrypted (real-zone) NER model folder is decrypted in memory with ``key``.
    """
    from tokenizers import Tokenizer

    if not base.is_dir():
        raise InputError(f"--base {base}: not a folder (give a local encoder folder or 'scratch')")
    if zones.is_encrypted(base):
        tok = Tokenizer.from_str(read_tokenizer_json(base, key))
    else:
        tok = load_fast_tokenizer(base)
    tok.no_truncation()
    tok.no_padding()
    return tok


def load_base_model(
    base: Path, labels: list[str], *, masked_lm: bool = False, key: DataKey | None = None
) -> Any:
    from transformers import AutoModelForMaskedLM, AutoModelForTokenClassification

    if zones.is_encrypted(base):
        return _encrypted_base_model(base, labels, masked_lm, key)
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


def _encrypted_base_model(
    base: Path, labels: list[str], masked_lm: bool, key: DataKey | None
) -> Any:
    """A real-zone NER model folder as the base: its encoder, decrypted in memory, under a new head."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(str(base), local_files_only=True)
    state = _decrypted_state(base, _meta(base), key)
    if masked_lm:
        model = AutoModelForMaskedLM.from_config(config)
    else:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        model = AutoModelForTokenClassification.from_config(config)
    prefix = model.base_model_prefix + "."
    encoder = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = model.base_model.load_state_dict(encoder, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m and "pooler" not in m]:
        raise InputError(f"--base {base}: its encrypted weights do not match its config.json")
    return model


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


def _state_bytes(model: Any) -> bytes:
    """The weights as safetensors bytes, in memory (tensors sharing storage kept once)."""
    from safetensors.torch import save

    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        ptr = (tensor.data_ptr(), tuple(tensor.shape)) if tensor.numel() else None
        if ptr is not None and ptr in seen:
            continue  # a tied weight: restored by tie_weights() on load
        if ptr is not None:
            seen.add(ptr)
        state[name] = tensor.detach().cpu().contiguous()
    return save(state)


def save_model(
    folder: Path, model: Any, tokenizer: Any, meta: dict[str, Any], key: DataKey | None = None
) -> None:
    """Write the model folder; with ``key`` (a real-zone model) weights and tokenizer encrypted.

    Files of the other form left by an earlier run into the same folder are removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if key is None:
        for name in (WEIGHTS_FILE + zones.ENC, TOKENIZER_FILE + zones.ENC):
            (folder / name).unlink(missing_ok=True)
        model.save_pretrained(str(folder))
        tokenizer.save(str(folder / TOKENIZER_FILE))
        (folder / NER_META).write_text(
            json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        crashpoints.reached("ner.model")
        return
    for name in (WEIGHTS_FILE, TOKENIZER_FILE, "pytorch_model.bin"):
        (folder / name).unlink(missing_ok=True)
    write_encrypted(
        folder / (WEIGHTS_FILE + zones.ENC), key, _state_bytes(model), label=zones.LABEL_WEIGHTS
    )
    write_encrypted(
        folder / (TOKENIZER_FILE + zones.ENC),
        key,
        tokenizer.to_str(pretty=True).encode("utf-8"),
        label=zones.LABEL_TOKENIZER,
    )
    atomic_write(folder / CONFIG_FILE, model.config.to_json_string().encode("utf-8"), 0o600)
    meta = {
        **meta,
        "encrypted": {
            "key_id": key.key_id,
            "files": [WEIGHTS_FILE + zones.ENC, TOKENIZER_FILE + zones.ENC],
        },
    }
    body = json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write(folder / NER_META, body.encode("utf-8"), 0o600)
    crashpoints.reached("ner.model")


def is_model_folder(path: Path) -> bool:
    return (path / NER_META).is_file() and (path / CONFIG_FILE).is_file()


def _meta(folder: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((folder / NER_META).read_text(encoding="utf-8"))
    return meta


def read_tokenizer_json(folder: Path, key: DataKey | None) -> str:
    """The model folder's tokenizer.json text (decrypted in memory for a real-zone model)."""
    meta = _meta(folder)
    if not meta.get("encrypted"):
        return (folder / TOKENIZER_FILE).read_text(encoding="utf-8")
    key = zones.require_key(folder, meta, key)
    blob = read_encrypted(folder / (TOKENIZER_FILE + zones.ENC), key, label=zones.LABEL_TOKENIZER)
    return blob.decode("utf-8")


def _decrypted_state(folder: Path, meta: dict[str, Any], key: DataKey | None) -> dict[str, Any]:
    from safetensors.torch import load

    key = zones.require_key(folder, meta, key)
    return dict(
        load(read_encrypted(folder / (WEIGHTS_FILE + zones.ENC), key, label=zones.LABEL_WEIGHTS))
    )


def load_model(folder: Path, key: DataKey | None = None) -> NerModel:
    """Rebuild a trained model from its folder alone (a real-zone one decrypted in memory with ``key``)."""
    torch_module()
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForTokenClassification

    if not is_model_folder(folder):
        raise InputError(f"{folder}: not an NER model folder (no {NER_META} and config.json)")
    meta = _meta(folder)
    if meta.get("encrypted"):
        state = _decrypted_state(folder, meta, key)
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForTokenClassification.from_config(config)
        missing, unexpected = model.load_state_dict(state, strict=False)
        model.tie_weights()
        if unexpected or [m for m in missing if "position_ids" not in m]:
            raise IntegrityError(f"{folder}: the decrypted weights do not match config.json")
    else:
        model = AutoModelForTokenClassification.from_pretrained(str(folder), local_files_only=True)
    model.eval()
    tok = Tokenizer.from_str(read_tokenizer_json(folder, key))
    tok.no_truncation()
    tok.no_padding()
    return NerModel(model, tok, meta)


def describe_special(tokenizer: Any, config: Any) -> Special:
    pad = getattr(config, "pad_token_id", None)
    return special_tokens(tokenizer, pad if isinstance(pad, int) else None)
