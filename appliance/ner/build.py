"""The token classifier to train: resumed from a checkpoint, a scratch BERT, or a local encoder.

With ``--mlm-on-records`` the encoder first continues its pretraining by
masked language modelling on the hospital's real notes; the MLM head is then
dropped and the encoder carries over into the token classifier. That phase
has its own (encrypted) checkpoint, so an interrupted run resumes it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.documents import Document
from appliance.errors import InputError
from appliance.ner.encoding import IGNORE, Special, encode_notes, window_ranges
from appliance.ner.loop import Row, TrainProgress, pad
from appliance.ner.model import (
    describe_special,
    load_base_model,
    load_base_tokenizer,
    scratch_config,
    train_wordpiece,
)
from appliance.ner.settings import NerSettings
from appliance.security.keys import DataKey
from appliance.training import load_checkpoint, save_checkpoint

CHECKPOINT_LABEL = "ner/checkpoint"


@dataclass
class Built:
    tokenizer: Any  # tokenizers.Tokenizer
    model: Any  # a transformers token-classification model, on the CPU
    mlm_steps: int  # masked-LM steps run on records (by this run, or before the checkpoint)


@dataclass(frozen=True)
class MlmJob:
    """The masked-LM phase: real notes, the key for its checkpoint, and where that goes."""

    texts: list[str]
    key: DataKey | None
    checkpoint: Path


def resumed(state: dict[str, Any]) -> Built:
    """The model and tokenizer of an NER checkpoint."""
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForTokenClassification

    tokenizer = Tokenizer.from_str(state["tokenizer"])
    config = AutoConfig.for_model(**state["config"])
    model = AutoModelForTokenClassification.from_config(config)
    model.load_state_dict(state["model"])
    return Built(tokenizer, model, int(state.get("mlm_steps", 0)))


def build(
    base: Path | None,
    train_docs: Sequence[Document],
    labels: list[str],
    settings: NerSettings,
    device: str,
    mlm: MlmJob | None,
    progress: Callable[[TrainProgress], None] | None,
    torch: Any,
    base_key: DataKey | None = None,
) -> Built:
    """A new classifier: a scratch BERT (``base`` None) or ``base``, pretrained on records first with ``mlm``.

    ``base_key`` decrypts a base that is an encrypted (real-zone) model folder.
    """
    scratch = base is None
    config: Any = None
    if base is None:
        texts = [d.text for d in train_docs] + list(mlm.texts if mlm else [])
        tokenizer = train_wordpiece(texts, settings.vocab_size)
        config = scratch_config(settings, tokenizer.get_vocab_size(), labels)
    else:
        tokenizer = load_base_tokenizer(base, base_key)
    mlm_model: Any = None
    mlm_steps = 0
    if mlm:
        if base is None:
            from transformers import BertForMaskedLM

            mlm_model = BertForMaskedLM(config)
        else:
            mlm_model = load_base_model(base, labels, masked_lm=True, key=base_key)
        special = describe_special(tokenizer, mlm_model.config)
        mlm_steps = pretrain_mlm(
            mlm_model, tokenizer, special, mlm, settings, device, progress, torch
        )
        mlm_model.to("cpu")
    if scratch:
        from transformers import BertForTokenClassification

        model = BertForTokenClassification(config)
    else:
        assert base is not None
        model = load_base_model(base, labels, key=base_key)
    if mlm:
        # The MLM head is dropped; the pretrained encoder carries over.
        model.base_model.load_state_dict(mlm_model.base_model.state_dict())
        del mlm_model
    return Built(tokenizer, model, mlm_steps)


def _mlm_rows(tokenizer: Any, special: Special, texts: list[str], body: int) -> list[Row]:
    rows = []
    for enc in encode_notes(tokenizer, texts):
        for s, e in window_ranges(len(enc.ids), body, 0):
            rows.append(
                (
                    [*special.prefix, *enc.ids[s:e], *special.suffix],
                    [0] * (e - s + len(special.prefix) + len(special.suffix)),
                )
            )
    return rows


def pretrain_mlm(
    model: Any,
    tokenizer: Any,
    special: Special,
    job: MlmJob,
    settings: NerSettings,
    device: str,
    progress: Callable[[TrainProgress], None] | None,
    torch: Any,
) -> int:
    """Masked-language-model pretraining on ``job.texts``; returns the steps run."""
    mask_id = next(
        (int(i) for n in ("[MASK]", "<mask>") if (i := tokenizer.token_to_id(n)) is not None), None
    )
    if mask_id is None:
        raise InputError("--mlm-on-records: the tokenizer has no mask token ([MASK] or <mask>)")
    body = settings.max_length - len(special.prefix) - len(special.suffix)
    rows = _mlm_rows(tokenizer, special, job.texts, body)
    if not rows:
        raise InputError("--mlm-on-records: the record store holds no text to pretrain on")
    n_special = {*special.prefix, *special.suffix, special.pad_id}
    vocab = int(model.config.vocab_size)
    total = settings.mlm_steps
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=settings.learning_rate(True) if settings.lr is None else settings.lr,
        weight_decay=settings.weight_decay,
    )
    start = 0
    state = load_checkpoint(job.checkpoint, job.key, label=CHECKPOINT_LABEL, weights_only=False)
    if state is not None and state.get("steps") == total and state.get("n_rows") == len(rows):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
    model.to(device).train()
    started = time.monotonic()
    tokens = 0
    for step in range(start, total):
        gen = torch.Generator().manual_seed(settings.seed * 7919 + step)
        pick = torch.randint(len(rows), (settings.batch_size,), generator=gen).tolist()
        ids, mask, _ = pad([rows[i] for i in pick], special.pad_id, torch)
        labels = ids.clone()
        maskable = mask.bool() & ~torch.isin(ids, torch.tensor(sorted(n_special)))
        chosen = (torch.rand(ids.shape, generator=gen) < settings.mlm_probability) & maskable
        labels[~chosen] = IGNORE
        roll = torch.rand(ids.shape, generator=gen)
        ids = ids.clone()
        ids[chosen & (roll < 0.8)] = mask_id  # BERT's 80/10/10 corruption
        swap = chosen & (roll >= 0.8) & (roll < 0.9)
        ids[swap] = torch.randint(vocab, ids.shape, generator=gen)[swap]
        loss = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        tokens += int(mask.sum())
        if (step + 1) % settings.checkpoint_every == 0 and step + 1 < total:
            # Its own small format: the MLM phase has no tokenizer or history to keep.
            mlm_state = {"steps": total, "n_rows": len(rows), "step": step + 1,
                         "model": model.state_dict(), "optimizer": optimizer.state_dict()}  # fmt: skip
            save_checkpoint(job.checkpoint, mlm_state, job.key, label=CHECKPOINT_LABEL)
        if progress is not None:
            rate = tokens / max(1e-9, time.monotonic() - started)
            progress(TrainProgress("mlm", step + 1, total, float(loss.item()), rate, 0.0))
    job.checkpoint.unlink(missing_ok=True)
    return total - start
