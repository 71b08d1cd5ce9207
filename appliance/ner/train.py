"""``appliance ner train``: fine-tune a token classifier on annotated synthetic notes.

The loop is short on purpose: windows of sub-word tokens with aligned BIO
labels, AdamW with linear warmup and decay, gradient clipping, an
entity-level F1 on the development set every ``eval_every`` steps (or each
epoch), the best weights kept, and a stop after ``patience`` evaluations
without improvement. Every ``checkpoint_every`` steps (and on Ctrl-C) the
whole state goes into one checkpoint; batches are drawn from a generator
seeded by the epoch, so a resumed run sees the batches the uninterrupted one
would have.

``--mlm-on-records`` first continues the encoder's pretraining by masked
language modelling on the hospital's real notes (read from the encrypted
record store). Such a model belongs to the real zone: its manifest and model
card say so, and its checkpoints are encrypted.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance import __version__, quiet_transformers
from appliance.documents import Document
from appliance.errors import ApplianceError, InputError, WorkspaceError
from appliance.ner.encoding import IGNORE, align_labels, encode_notes, window_ranges
from appliance.ner.model import (
    describe_special,
    load_base_model,
    load_base_tokenizer,
    max_positions,
    save_model,
    scratch_config,
    torch_module,
    train_wordpiece,
)
from appliance.ner.runtime import Tagger, TorchBackend, resolve_device
from appliance.ner.settings import NerSettings, bio_labels
from appliance.security.audit import utc_now
from appliance.security.keys import DataKey
from appliance.workspace import Workspace, hashed, read_manifest, write_manifest

CHECKPOINT = "checkpoint.pt"
MLM_CHECKPOINT = "mlm-checkpoint.pt.enc"


@dataclass(frozen=True)
class TrainProgress:
    phase: str  # "mlm" or "ner"
    step: int
    max_steps: int
    loss: float
    tokens_per_second: float
    eta_seconds: float
    dev_f1: float | None = None


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    max_steps: int
    resumed_from: int
    stopped_early: bool
    best_step: int
    dev_f1: float | None
    dev_metrics: dict[str, Any]
    train_docs: int
    dev_docs: int
    train_windows: int
    parameters: int
    tokens_per_second: float
    seconds: float
    mlm_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        f1 = (
            f", dev F1 {100 * self.dev_f1:.1f} (best at step {self.best_step})"
            if self.dev_f1 is not None
            else ""
        )
        early = " (stopped early)" if self.stopped_early else ""
        resumed = f", resumed at step {self.resumed_from}" if self.resumed_from else ""
        mlm = f" after {self.mlm_steps} MLM steps on records" if self.mlm_steps else ""
        return (
            f"trained NER model: {self.steps}/{self.max_steps} steps{early}{resumed}{mlm} on "
            f"{self.train_docs} notes ({self.train_windows} windows){f1}, "
            f"{self.tokens_per_second:.0f} tokens/s; saved to {self.model_dir}"
        )


def _seed_all(seed: int, torch: Any) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _doc_hash(docs: Sequence[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        spans = [(s.start, s.end, s.label) for s in d.spans]
        h.update(json.dumps([d.id, d.text, spans], ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def _windows(
    tokenizer: Any,
    docs: Sequence[Document],
    label2id: dict[str, int],
    special: Any,
    body: int,
    stride: int,
) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) per window, special tokens wrapped in and labelled IGNORE."""
    out = []
    for doc, enc in zip(docs, encode_notes(tokenizer, [d.text for d in docs]), strict=True):
        labels = align_labels(enc.offsets, doc.spans, label2id)
        for s, e in window_ranges(len(enc.ids), body, stride):
            ids = [*special.prefix, *enc.ids[s:e], *special.suffix]
            lab = [IGNORE] * len(special.prefix) + labels[s:e] + [IGNORE] * len(special.suffix)
            out.append((ids, lab))
    return out


def _pad(rows: list[tuple[list[int], list[int]]], pad_id: int, torch: Any) -> tuple[Any, Any, Any]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for r, (i, lab) in enumerate(rows):
        ids[r, : len(i)] = torch.tensor(i)
        mask[r, : len(i)] = 1
        labels[r, : len(lab)] = torch.tensor(lab)
    return ids, mask, labels  # (B, T) each


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def dev_scores(
    tagger: Tagger, dev_docs: Sequence[Document], batch_size: int = 32
) -> dict[str, Any]:
    """Exact-span scores of the tagger on the dev documents (metrics.score)."""
    from appliance.metrics import score

    preds = tagger.predict([d.text for d in dev_docs], batch_size=batch_size)
    pred_docs = [
        Document(d.id, d.text, [e.span() for e in p]) for d, p in zip(dev_docs, preds, strict=True)
    ]
    return score(dev_docs, pred_docs)


def _save_state(path: Path, state: dict[str, Any], key: DataKey | None, torch: Any) -> None:
    from appliance.security.crypto import atomic_write, write_encrypted

    buf = io.BytesIO()
    torch.save(state, buf)
    if key is not None:
        write_encrypted(path, key, buf.getvalue(), label="ner/checkpoint")
    else:
        atomic_write(path, buf.getvalue())


def _load_state(path: Path, key: DataKey | None, torch: Any) -> dict[str, Any] | None:
    from appliance.security.crypto import read_encrypted

    if not path.exists():
        return None
    blob = (
        read_encrypted(path, key, label="ner/checkpoint") if key is not None else path.read_bytes()
    )
    try:
        state: dict[str, Any] = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)
    except Exception:  # a checkpoint cut short by a crash: start over
        return None
    return state


def _mlm(
    model: Any,
    tokenizer: Any,
    special: Any,
    texts: list[str],
    settings: NerSettings,
    device: str,
    key: DataKey | None,
    ckpt: Path,
    progress: Callable[[TrainProgress], None] | None,
    torch: Any,
) -> int:
    """Masked-language-model pretraining on ``texts``; returns the steps run."""
    mask_id = next(
        (int(i) for n in ("[MASK]", "<mask>") if (i := tokenizer.token_to_id(n)) is not None), None
    )
    if mask_id is None:
        raise InputError("--mlm-on-records: the tokenizer has no mask token ([MASK] or <mask>)")
    body = settings.max_length - len(special.prefix) - len(special.suffix)
    rows = []
    for enc in encode_notes(tokenizer, texts):
        for s, e in window_ranges(len(enc.ids), body, 0):
            rows.append(
                (
                    [*special.prefix, *enc.ids[s:e], *special.suffix],
                    [0] * (e - s + len(special.prefix) + len(special.suffix)),
                )
            )
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
    state = _load_state(ckpt, key, torch)
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
        ids, mask, _ = _pad([rows[i] for i in pick], special.pad_id, torch)
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
            _save_state(
                ckpt,
                {
                    "steps": total,
                    "n_rows": len(rows),
                    "step": step + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                },
                key,
                torch,
            )
        if progress is not None:
            rate = tokens / max(1e-9, time.monotonic() - started)
            progress(TrainProgress("mlm", step + 1, total, float(loss.item()), rate, 0.0))
    ckpt.unlink(missing_ok=True)
    return total - start


def train_model(
    train_docs: Sequence[Document],
    dev_docs: Sequence[Document],
    *,
    base: Path | None,
    out_dir: Path,
    settings: NerSettings | None = None,
    types: list[str] | None = None,
    data_info: dict[str, Any] | None = None,
    mlm_texts: list[str] | None = None,
    checkpoint_key: DataKey | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train a token classifier on ``train_docs`` (``base`` None: a scratch BERT) into ``out_dir``.

    ``out_dir`` becomes a model folder (see :mod:`appliance.ner.model`); an
    interrupted run with the same data and settings resumes from its checkpoint.
    ``mlm_texts`` (real notes) make it a real-zone model; pass
    ``checkpoint_key`` so its checkpoints are encrypted.
    """
    torch = torch_module()
    quiet_transformers()
    settings = settings or NerSettings()
    started = time.monotonic()
    if not train_docs:
        raise InputError("no training notes: the annotations (or --train gold) hold no documents")
    found = sorted({s.label for d in train_docs for s in d.spans})
    if not found:
        raise InputError("the training notes hold no entity spans; nothing to learn")
    types = list(types) if types else found
    labels = bio_labels(types)
    label2id = {label: i for i, label in enumerate(labels)}
    device = resolve_device(settings.device)
    scratch = base is None
    zone = "real" if mlm_texts else "screened"
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "settings": settings.as_dict(),
                "base": hashed(base)["sha256"] if base is not None else "scratch",
                "train": _doc_hash(train_docs),
                "dev": _doc_hash(dev_docs),
                "types": types,
                "mlm": hashlib.sha256("\0".join(mlm_texts or []).encode()).hexdigest(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT
    state = _load_state(ckpt_path, checkpoint_key, torch)
    if state is not None and state.get("fingerprint") != fingerprint:
        state = None  # other data or settings: start over
        ckpt_path.unlink()

    _seed_all(settings.seed, torch)
    from tokenizers import Tokenizer

    mlm_steps = 0
    config: Any = None
    mlm_model: Any = None
    if state is not None:
        tokenizer = Tokenizer.from_str(state["tokenizer"])
        from transformers import AutoConfig, AutoModelForTokenClassification

        config = AutoConfig.for_model(**state["config"])
        model = AutoModelForTokenClassification.from_config(config)
        model.load_state_dict(state["model"])
        mlm_steps = int(state.get("mlm_steps", 0))
    else:
        if scratch:
            tokenizer = train_wordpiece(
                [d.text for d in train_docs] + list(mlm_texts or []), settings.vocab_size
            )
            config = scratch_config(settings, tokenizer.get_vocab_size(), labels)
        else:
            assert base is not None
            tokenizer = load_base_tokenizer(base)
        if mlm_texts:
            if scratch:
                from transformers import BertForMaskedLM

                mlm_model = BertForMaskedLM(config)
            else:
                assert base is not None
                mlm_model = load_base_model(base, labels, masked_lm=True)
            special = describe_special(tokenizer, mlm_model.config)
            mlm_steps = _mlm(
                mlm_model,
                tokenizer,
                special,
                list(mlm_texts),
                settings,
                device,
                checkpoint_key,
                out_dir / MLM_CHECKPOINT,
                progress,
                torch,
            )
            mlm_model.to("cpu")
        if scratch:
            from transformers import BertForTokenClassification

            model = BertForTokenClassification(config)
        else:
            assert base is not None
            model = load_base_model(base, labels)
        if mlm_texts:
            # The MLM head is dropped; the pretrained encoder carries over.
            model.base_model.load_state_dict(mlm_model.base_model.state_dict())
            del mlm_model
    special = describe_special(tokenizer, model.config)
    max_length = min(settings.max_length, max_positions(model.config))
    body = max_length - len(special.prefix) - len(special.suffix)
    stride = min(settings.stride, body // 2)
    rows = _windows(tokenizer, train_docs, label2id, special, body, stride)
    steps_per_epoch = math.ceil(len(rows) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    eval_every = settings.eval_every or steps_per_epoch
    warmup = int(settings.warmup_ratio * total)
    lr = settings.learning_rate(scratch)

    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    step = 0
    history: list[dict[str, Any]] = []
    best_f1, best_step, bad_evals = -1.0, 0, 0
    best_state: dict[str, Any] | None = None
    stopped_early = False
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        history = list(state["history"])
        best_f1, best_step, bad_evals = (
            float(state["best_f1"]),
            int(state["best_step"]),
            int(state["bad_evals"]),
        )
        best_state = state["best_state"]
        stopped_early = bool(state.get("stopped_early", False))
    resumed_from = step

    def tagger() -> Tagger:
        return Tagger(TorchBackend(model, device), tokenizer, labels, special, max_length, stride)

    def checkpoint() -> None:
        _save_state(
            ckpt_path,
            {
                "fingerprint": fingerprint,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "config": model.config.to_dict(),
                "tokenizer": tokenizer.to_str(),
                "history": history,
                "best_f1": best_f1,
                "best_step": best_step,
                "bad_evals": bad_evals,
                "best_state": best_state,
                "stopped_early": stopped_early,
                "mlm_steps": mlm_steps,
            },
            checkpoint_key,
            torch,
        )

    model.train()
    tokens, t0 = 0, time.monotonic()
    loss_value = float("nan")
    try:
        while step < total and not stopped_early:
            epoch, index = divmod(step, steps_per_epoch)
            gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
            order = torch.randperm(len(rows), generator=gen).tolist()
            batch = [
                rows[i]
                for i in order[index * settings.batch_size : (index + 1) * settings.batch_size]
            ]
            ids, mask, lab = _pad(batch, special.pad_id, torch)
            for group in optimizer.param_groups:
                group["lr"] = lr * _schedule(step, total, warmup)
            # Dropout masks from a per-step seed: a resumed run repeats them.
            torch.manual_seed(settings.seed * 7_000_003 + step)
            out = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), labels=lab.to(device)
            )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            step += 1
            loss_value = float(out.loss.item())
            tokens += int(mask.sum())
            rate = tokens / max(1e-9, time.monotonic() - t0)
            f1 = None
            if dev_docs and (step % eval_every == 0 or step == total):
                model.eval()
                f1 = float(dev_scores(tagger(), dev_docs)["exact"]["micro"]["f1"])
                model.train()
                history.append({"step": step, "loss": round(loss_value, 5), "dev_f1": f1})
                if f1 > best_f1:
                    best_f1, best_step, bad_evals = f1, step, 0
                    best_state = {
                        k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()
                    }
                elif best_f1 > 0:  # patience starts once the model finds entities at all
                    bad_evals += 1
                    stopped_early = bad_evals >= settings.patience
            elif step % eval_every == 0:
                history.append({"step": step, "loss": round(loss_value, 5)})
            if step % settings.checkpoint_every == 0 and step < total:
                checkpoint()
            if progress is not None:
                eta = (total - step) * (time.monotonic() - t0) / max(1, step - resumed_from)
                progress(TrainProgress("ner", step, total, loss_value, rate, eta, f1))
    except KeyboardInterrupt:
        if step > resumed_from:
            checkpoint()
        raise

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    metrics: dict[str, Any] = {}
    if dev_docs:
        metrics = dev_scores(tagger(), dev_docs)
    model.to("cpu")
    parameters = sum(p.numel() for p in model.parameters())
    seconds = time.monotonic() - started
    meta = {
        "format": 1,
        "appliance_version": __version__,
        "created": utc_now(),
        "labels": labels,
        "types": types,
        "special": special.as_dict(),
        "max_length": max_length,
        "stride": stride,
        "base": str(base) if base is not None else "scratch",
        "base_sha256": hashed(base)["sha256"] if base is not None else None,
        "architecture": model.config.model_type,
        "parameters": parameters,
        "zone": zone,
        "mlm_on_records": {"steps": settings.mlm_steps, "notes": len(mlm_texts)}
        if mlm_texts
        else None,
        "settings": settings.as_dict(),
        "data": {
            **(data_info or {}),
            "train_notes": len(train_docs),
            "dev_notes": len(dev_docs),
            "train_windows": len(rows),
            "train_sha256": _doc_hash(train_docs),
            "dev_sha256": _doc_hash(dev_docs),
        },
        "training": {
            "steps": step,
            "max_steps": total,
            "best_step": best_step,
            "stopped_early": stopped_early,
            "device": device,
            "seconds": round(seconds, 2),
            "learning_rate": lr,
            "history": history,
        },
        "metrics": {"dev": metrics} if metrics else {},
    }
    save_model(out_dir, model, tokenizer, meta)
    ckpt_path.unlink(missing_ok=True)
    dev_f1 = float(metrics["exact"]["micro"]["f1"]) if metrics else None
    return TrainResult(
        model_dir=out_dir,
        steps=step,
        max_steps=total,
        resumed_from=resumed_from,
        stopped_early=stopped_early,
        best_step=best_step,
        dev_f1=dev_f1,
        dev_metrics=metrics,
        train_docs=len(train_docs),
        dev_docs=len(dev_docs),
        train_windows=len(rows),
        parameters=parameters,
        tokens_per_second=tokens / max(1e-9, time.monotonic() - t0),
        seconds=seconds,
        mlm_steps=mlm_steps,
        history=history,
    )


# ---------------------------------------------------------------------------
# Workspace wrapper


def is_dev(doc_id: str, fraction: float, seed: int) -> bool:
    """Stable dev membership: a hash of the note id, so adding notes never moves one."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_dev(
    docs: Sequence[Document], fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    train = [d for d in docs if not is_dev(d.id, fraction, seed)]
    dev = [d for d in docs if is_dev(d.id, fraction, seed)]
    if not dev and len(train) > 1:
        dev, train = train[-1:], train[:-1]
    return train, dev


def run(
    ws: Workspace,
    *,
    base: str = "scratch",
    annotations: str = "default",
    train_gold: Path | None = None,
    dev_gold: Path | None = None,
    gold_format: str = "auto",
    name: str = "default",
    mlm_on_records: bool = False,
    settings: NerSettings | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train ``models/ner/<name>/`` on the workspace's annotations (or a gold file), with audit entry."""
    from appliance.documents import read_gold

    settings = settings or NerSettings()
    root = ws.ner_model_dir(name)
    base_dir = None if base == "scratch" else Path(base).expanduser().resolve()
    args = {
        "base": base,
        "annotations": annotations,
        "train": str(train_gold) if train_gold else None,
        "dev": str(dev_gold) if dev_gold else None,
        "name": name,
        "mlm_on_records": mlm_on_records,
        "settings": settings.as_dict(),
    }
    inputs: list[dict[str, Any]] = []
    try:
        with ws.lock("ner train"):
            if train_gold is not None:
                docs = read_gold(train_gold, gold_format)
                inputs.append(hashed(train_gold, ws.root))
                source: dict[str, Any] = {
                    "kind": "gold file",
                    "path": str(train_gold),
                    "sha256": inputs[-1]["sha256"],
                    "note": "trained on this gold file, not on the workspace's annotations",
                }
            else:
                try:
                    from appliance.corpus import read_annotations
                except ImportError:
                    raise WorkspaceError(
                        "the annotate stage is not available in this installation; train with --train GOLD"
                    ) from None
                docs = read_annotations(ws, annotations)
                ann_manifest = ws.annotation_dir(annotations) / "manifest.json"
                inputs.append(hashed(ann_manifest, ws.root))
                manifest = read_manifest(ws.annotation_dir(annotations)) or {}
                from appliance.corpus import release_manifest

                inputs.append(
                    hashed(release_manifest(ws, manifest.get("corpus", "default")), ws.root)
                )
                source = {
                    "kind": "annotations",
                    "name": annotations,
                    "manifest_sha256": inputs[-1]["sha256"],
                    "annotator": manifest.get("annotator"),
                    "release": manifest.get("release"),
                }
            if dev_gold is not None:
                dev = read_gold(dev_gold, gold_format)
                train = list(docs)
                inputs.append(hashed(dev_gold, ws.root))
                dev_source: dict[str, Any] = {
                    "kind": "gold file",
                    "path": str(dev_gold),
                    "sha256": inputs[-1]["sha256"],
                }
            else:
                train, dev = split_dev(docs, settings.dev_fraction, settings.seed)
                dev_source = {
                    "kind": "split of the training notes",
                    "fraction": settings.dev_fraction,
                    "ids": [d.id for d in dev],
                }
            mlm_texts = None
            if mlm_on_records:
                from appliance.records.ingest import open_store

                if not (ws.store_manifest).exists():
                    raise WorkspaceError(
                        f"{ws.root}: --mlm-on-records needs ingested records; run `appliance ingest EXPORT`"
                    )
                mlm_texts = [r.text for r in open_store(ws)]
                inputs.append(hashed(ws.store_manifest, ws.root))
            schema_types = ws.policy.entity_schema().labels
            found = {s.label for d in train for s in d.spans}
            types = schema_types if found <= set(schema_types) else sorted(found)
            root.mkdir(parents=True, exist_ok=True)
            started = utc_now()
            result = train_model(
                train,
                dev,
                base=base_dir,
                out_dir=root / "model",
                settings=settings,
                types=types,
                data_info={
                    "source": source,
                    "dev": dev_source,
                    "real_notes_seen": bool(mlm_on_records),
                },
                mlm_texts=mlm_texts,
                checkpoint_key=ws.data_key if mlm_on_records else None,
                progress=progress,
            )
            if dev_gold is None:
                # Keep the synthetic dev split with the model: export measures int8 loss on it.
                from appliance.documents import write_jsonl

                write_jsonl(dev, root / "dev.jsonl")
            write_manifest(
                root,
                {
                    "stage": "ner train",
                    "zone": "real" if mlm_on_records else "screened",
                    "started": started,
                    "finished": utc_now(),
                    "inputs": inputs,
                    "base": base,
                    "settings": settings.as_dict(),
                    "data": {
                        "source": source,
                        "dev": {k: v for k, v in dev_source.items() if k != "ids"},
                        "train_notes": result.train_docs,
                        "dev_notes": result.dev_docs,
                        "real_notes_seen": bool(mlm_on_records),
                    },
                    "model": hashed(root / "model", ws.root),
                    "metrics": {"dev": result.dev_metrics},
                    "training": {
                        "steps": result.steps,
                        "best_step": result.best_step,
                        "stopped_early": result.stopped_early,
                        "resumed_from": result.resumed_from,
                    },
                },
            )
    except ApplianceError as exc:
        ws.log("ner train", args=args, inputs=inputs, result=f"error: {exc.message}")
        raise
    except KeyboardInterrupt:
        ws.log("ner train", args=args, inputs=inputs, result="interrupted (checkpoint kept)")
        raise
    ws.log(
        "ner train",
        args=args,
        inputs=inputs,
        outputs=[hashed(root / "manifest.json", ws.root), hashed(root / "model", ws.root)],
        details={
            "steps": result.steps,
            "dev_f1": result.dev_f1,
            "train_notes": result.train_docs,
            "dev_notes": result.dev_docs,
            "zone": "real" if mlm_on_records else "screened",
        },
    )
    return result
