"""The dense half of the normalizer: a local encoder fine-tuned on synonym pairs, SapBERT-style.

Training takes any local Hugging Face encoder folder (``--base``), embeds a
name as the mean of its token vectors (L2-normalized), and pulls the names
of one concept together and those of other concepts apart: a supervised
contrastive loss over in-batch pairs (two names of one concept per row,
every other concept in the batch a negative), as SapBERT does with its
multi-similarity loss. Pairs come from the terminology's names and
synonyms, rule-made variants and mentions found in annotated synthetic
notes (:mod:`appliance.normalize.mentions`).

The trained encoder is exported to ONNX (inputs ``input_ids`` and
``attention_mask``, output ``name_vector``) and checked against PyTorch on
the terminology's own names before it is kept; inference runs it with
onnxruntime, with no PyTorch needed.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import ApplianceError, InputError, missing_dependency
from appliance.training import (
    export_encoder_onnx,
    load_fast_tokenizer,
    quiet_export,
    resolve_device,
)

MAX_TOKENS = 32  # names and mentions are short; longer ones are cut
PARITY_TOLERANCE = 1e-3


@dataclass
class EncoderSettings:
    steps: int = 300
    batch_size: int = 64
    lr: float = 2e-5
    temperature: float = 0.05
    seed: int = 0
    device: str = "auto"


def load_tokenizer(base: Path) -> Any:
    """The fast tokenizer of a local encoder folder, cut at :data:`MAX_TOKENS`, unpadded."""
    tok = load_fast_tokenizer(base)
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return tok


def pad_id(tokenizer: Any) -> int:
    for name in ("[PAD]", "<pad>"):
        i = tokenizer.token_to_id(name)
        if i is not None:
            return int(i)
    return 0


def encode_batch(tokenizer: Any, texts: Sequence[str], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded ``(ids, mask)`` int64 arrays of ``texts``."""
    encs = tokenizer.encode_batch(list(texts))
    width = max(2, max((len(e.ids) for e in encs), default=2))
    ids = np.full((len(encs), width), pad, dtype=np.int64)
    mask = np.zeros((len(encs), width), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return ids, mask


def load_base(base: Path) -> Any:
    from transformers import AutoModel

    if not base.is_dir():
        raise InputError(f"--base {base}: not a folder (give a local encoder folder)")
    try:
        with quiet_export():
            return AutoModel.from_pretrained(str(base), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"--base {base}: not a loadable encoder: {str(exc).splitlines()[0]}"
        ) from None


class _Pooled:
    """Mean-pooled, L2-normalized embeddings from a transformers encoder (what ONNX exports)."""

    @staticmethod
    def build(model: Any) -> Any:
        import torch

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
                m = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
                return torch.nn.functional.normalize(pooled, dim=-1)

        return Pooled()


def train(
    base: Path,
    pairs: Sequence[tuple[str, str, int]],
    settings: EncoderSettings,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Fine-tune ``base`` on ``pairs`` (name, other name of the same concept, concept index).

    Returns the pooled model, the tokenizer and what training measured.
    """
    import torch

    tokenizer = load_tokenizer(base)
    pad = pad_id(tokenizer)
    pooled = _Pooled.build(load_base(base))
    device = resolve_device(settings.device)
    pooled.to(device).train()
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    by_concept: dict[int, list[tuple[str, str]]] = {}
    for a, b, c in pairs:
        by_concept.setdefault(c, []).append((a, b))
    concepts = sorted(by_concept)
    if len(concepts) < 2:
        raise InputError("the terminology needs at least two concepts to train an encoder")
    optimizer = torch.optim.AdamW(pooled.parameters(), lr=settings.lr, weight_decay=0.01)
    losses: list[float] = []
    started = time.monotonic()
    batch = min(settings.batch_size, len(concepts))
    for step in range(1, settings.steps + 1):
        chosen = rng.sample(concepts, batch)  # one row per concept: no false negatives in-batch
        rows = [rng.choice(by_concept[c]) for c in chosen]
        left = [a for a, _ in rows]
        right = [b for _, b in rows]
        ids, mask = encode_batch(tokenizer, left + right, pad)
        emb = pooled(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
        q, k = emb[:batch], emb[batch:]
        logits = q @ k.T / settings.temperature
        target = torch.arange(batch, device=device)
        loss = (
            torch.nn.functional.cross_entropy(logits, target)
            + torch.nn.functional.cross_entropy(logits.T, target)
        ) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pooled.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, settings.steps, losses[-1])
    pooled.eval()
    info = {
        "steps": settings.steps,
        "batch_size": batch,
        "lr": settings.lr,
        "temperature": settings.temperature,
        "pairs": len(pairs),
        "first_loss": round(float(np.mean(losses[:10])), 4) if losses else None,
        "last_loss": round(float(np.mean(losses[-10:])), 4) if losses else None,
        "seconds": round(time.monotonic() - started, 1),
        "device": str(device),
    }
    return pooled.to("cpu"), tokenizer, info


def untrained(base: Path) -> tuple[Any, Any]:
    """``base`` as it is, pooled: the encoder without fine-tuning."""
    pooled = _Pooled.build(load_base(base)).eval()
    return pooled, load_tokenizer(base)


def torch_embed(pooled: Any, tokenizer: Any, texts: Sequence[str], batch: int = 256) -> np.ndarray:
    import torch

    pad = pad_id(tokenizer)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            ids, mask = encode_batch(tokenizer, texts[i : i + batch], pad)
            out.append(pooled(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)


def export_onnx(pooled: Any, pad: int) -> bytes:
    """The pooled encoder as ONNX bytes: (input_ids, attention_mask) -> name_vector."""
    return export_encoder_onnx(pooled, pad, "name_vector", MAX_TOKENS, "normalizer encoder export")


class OnnxEncoder:
    """The exported encoder under onnxruntime (CPU threads, or CUDA when present and asked)."""

    def __init__(self, model: bytes | Path, tokenizer: Any, device: str = "cpu") -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_dependency("onnxruntime", "cpu", "the normalizer") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise InputError(f"normalizer encoder: onnxruntime cannot load it: {exc}") from exc
        self.tokenizer = tokenizer
        self.pad = pad_id(tokenizer)

    def __call__(self, texts: Sequence[str], batch: int = 256) -> np.ndarray:
        out = []
        # Sorted by length so a batch pads little; the order is restored at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for i in range(0, len(order), batch):
            part = [texts[j] for j in order[i : i + batch]]
            ids, mask = encode_batch(self.tokenizer, part, self.pad)
            out.append(
                self.session.run(["name_vector"], {"input_ids": ids, "attention_mask": mask})[0]
            )
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        emb = np.concatenate(out).astype(np.float32)
        result = np.empty_like(emb)
        result[np.asarray(order)] = emb
        return result


def check_parity(
    pooled: Any, onnx_model: bytes, tokenizer: Any, texts: Sequence[str]
) -> dict[str, Any]:
    """PyTorch vs onnxruntime embeddings of ``texts``: the largest difference, refused above tolerance."""
    ref = torch_embed(pooled, tokenizer, texts)
    got = OnnxEncoder(onnx_model, tokenizer, "cpu")(texts)
    diff = float(np.abs(ref - got).max()) if len(texts) else 0.0
    if diff > PARITY_TOLERANCE:
        raise ApplianceError(
            f"normalizer encoder: ONNX differs from PyTorch by {diff:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e}); not exported"
        )
    return {"texts": len(texts), "max_abs_diff": diff, "tolerance": PARITY_TOLERANCE}
