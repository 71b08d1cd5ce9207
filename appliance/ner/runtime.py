"""One tagger over two backends: PyTorch (a trained model folder) and onnxruntime (a package).

The tagger tokenizes notes once, cuts them into windows, sorts the windows
of a batch of notes by length (so padding stays small), runs the backend and
stitches each token's prediction back from its best window. Both backends
see exactly the same padded batches, which is what the export parity check
compares.

A real-zone package or model folder is decrypted with the workspace data key
into memory (onnxruntime loads the model from bytes); no plaintext copy is
written anywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import ConfigError, InputError, missing_dependency
from appliance.ner import zones
from appliance.ner.encoding import (
    Entity,
    Special,
    bio_paths,
    decode,
    encode_notes,
    owners,
    softmax,
    spoken,
    window_ranges,
)
from appliance.security.crypto import read_encrypted
from appliance.security.keys import DataKey
from appliance.training import resolve_device

# onnxruntime fusions an int8 model's CPU session goes without: its CPU
# SkipLayerNormalization kernel was a quarter of the int8 model's time at
# batch 32 (see appliance.ner.quantize).
INT8_CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)

Backend = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (ids, mask) (B, T) -> logits (B, T, L)


class TorchBackend:
    """Eager PyTorch inference on a loaded token-classification model."""

    name = "pytorch"

    def __init__(self, model: Any, device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(ids).to(self.device),
                attention_mask=torch.from_numpy(mask).to(self.device),
            )
            logits: np.ndarray = out.logits.float().cpu().numpy()
        return logits


class OnnxBackend:
    """onnxruntime: the CUDA provider with IO binding when present, else CPU threads.

    ``model``: a path, or the serialized model itself (a decrypted real-zone model).
    """

    name = "onnx"

    def __init__(
        self,
        model: Path | bytes,
        device: str = "auto",
        threads: int | None = None,
        what: str | None = None,
        cpu_disabled_optimizers: Sequence[str] = (),
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_dependency("onnxruntime", "cpu", "ONNX inference") from None
        available = ort.get_available_providers()
        self.cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
        if device == "cuda" and not self.cuda:
            raise ConfigError(
                "device 'cuda' requested but onnxruntime has no CUDA provider here "
                f"(available: {', '.join(available)}); install the gpu extra or use --device cpu"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.log_severity_level = 3
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if self.cuda
            else ["CPUExecutionProvider"]
        )
        source = model if isinstance(model, bytes) else str(model)
        what = what or (str(model) if not isinstance(model, bytes) else "the ONNX model")
        try:
            self.session = ort.InferenceSession(
                source,
                options,
                providers=providers,
                disabled_optimizers=None if self.cuda else list(cpu_disabled_optimizers) or None,
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{what}: onnxruntime cannot load the model: {first}") from exc
        self.ort = ort
        self.providers = self.session.get_providers()

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if not self.cuda:
            out: np.ndarray = self.session.run(
                ["logits"], {"input_ids": ids, "attention_mask": mask}
            )[0]
            return out
        # IO binding: inputs copied to the GPU once, logits left there until fetched.
        binding = self.session.io_binding()
        for name, arr in (("input_ids", ids), ("attention_mask", mask)):
            binding.bind_ortvalue_input(
                name, self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), "cuda", 0)
            )
        binding.bind_output("logits", "cuda")
        self.session.run_with_iobinding(binding)
        result: np.ndarray = binding.copy_outputs_to_cpu()[0]
        return result


@dataclass
class Batch:
    ids: np.ndarray  # (B, T) int64
    mask: np.ndarray  # (B, T) int64
    items: list[int]  # which window each row is
    lengths: list[int]  # real tokens per row (special tokens included)


@dataclass
class Tagger:
    """Notes in, entities out; the backend only ever sees padded windows."""

    backend: Backend
    tokenizer: Any
    labels: list[str]
    special: Special
    max_length: int
    stride: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def body(self) -> int:
        return self.max_length - len(self.special.prefix) - len(self.special.suffix)

    def _windows(
        self, texts: Sequence[str]
    ) -> tuple[list[Any], list[list[int]], list[tuple[int, int, int]]]:
        notes = encode_notes(self.tokenizer, texts)
        ranges = [window_ranges(len(n.ids), self.body, self.stride) for n in notes]
        rows: list[list[int]] = []
        where: list[tuple[int, int, int]] = []  # (note, window, n tokens)
        for i, (note, rs) in enumerate(zip(notes, ranges, strict=True)):
            for w, (s, e) in enumerate(rs):
                rows.append([*self.special.prefix, *note.ids[s:e], *self.special.suffix])
                where.append((i, w, e - s))
        return list(zip(notes, ranges, strict=True)), rows, where

    def batches(self, rows: list[list[int]], batch_size: int) -> Iterator[Batch]:
        """Windows sorted by length, padded per batch."""
        order = sorted(range(len(rows)), key=lambda k: len(rows[k]))
        for b in range(0, len(order), batch_size):
            chunk = order[b : b + batch_size]
            width = max(len(rows[k]) for k in chunk)
            ids = np.full((len(chunk), width), self.special.pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for r, k in enumerate(chunk):
                ids[r, : len(rows[k])] = rows[k]
                mask[r, : len(rows[k])] = 1
            yield Batch(ids, mask, chunk, [len(rows[k]) for k in chunk])

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[list[Entity]]:
        """Entities of each text, with character offsets into it."""
        notes, rows, where = self._windows(texts)
        window_logits: list[np.ndarray | None] = [None] * len(rows)
        first = len(self.special.prefix)
        for batch in self.batches(rows, batch_size):
            logits = self.backend(batch.ids, batch.mask)
            for r, k in enumerate(batch.items):
                window_logits[k] = logits[r, first : first + where[k][2]]
        index = {(i, w): k for k, (i, w, _) in enumerate(where)}
        probs: list[np.ndarray] = []
        for i, (note, rs) in enumerate(notes):
            if not note.ids:
                probs.append(np.zeros((0, len(self.labels))))
                continue
            window, position = owners(len(note.ids), rs)
            token_logits = np.stack(
                [
                    window_logits[index[(i, int(w))]][int(p)]  # type: ignore[index]
                    for w, p in zip(window, position, strict=True)
                ]
            )
            probs.append(softmax(token_logits))
        kept = [spoken(note.offsets) for note, _ in notes]
        paths = bio_paths([p[k] for p, k in zip(probs, kept, strict=True)], self.labels)
        return [
            decode(text, note.offsets, p, self.labels, tags=path) if path else []
            for text, (note, _), p, path in zip(texts, notes, probs, paths, strict=True)
        ]


def torch_tagger(folder: Path, device: str = "auto", key: DataKey | None = None) -> Tagger:
    """A tagger over a trained model folder (a real-zone one decrypted in memory with ``key``)."""
    from appliance.ner.model import load_model

    m = load_model(folder, key)
    backend = TorchBackend(m.model, device)
    return Tagger(
        backend,
        m.tokenizer,
        m.labels,
        m.special,
        m.max_length,
        m.stride,
        info={"backend": "pytorch", "device": backend.device, "path": str(folder)},
    )


def tagger_from(
    meta: dict[str, Any],
    tokenizer: Any,
    model: Path | bytes,
    device: str = "auto",
    threads: int | None = None,
    info: dict[str, Any] | None = None,
    what: str | None = None,
) -> Tagger:
    """An ONNX tagger from a package's ``ner.json``, its tokenizer and its model (path or bytes)."""
    int8 = meta.get("precision") == "int8"
    backend = OnnxBackend(
        model, device, threads, what, INT8_CPU_DISABLED_OPTIMIZERS if int8 else ()
    )
    return Tagger(
        backend,
        tokenizer,
        list(meta["labels"]),
        Special.from_dict(meta["special"]),
        int(meta["max_length"]),
        int(meta["stride"]),
        info={
            "backend": "onnx",
            "providers": backend.providers,
            "precision": meta.get("precision", "fp32"),
            "zone": meta.get("zone", zones.SCREENED),
            **(info or {}),
        },
    )


def onnx_tagger(
    package: Path,
    *,
    model_file: str = "model.onnx",
    device: str = "auto",
    threads: int | None = None,
    key: DataKey | None = None,
) -> Tagger:
    """A tagger over a package folder's ONNX model (verify the package before calling this).

    A real-zone package needs ``key`` (the workspace data key): its model and
    tokenizer are decrypted into memory; without it, a one-line KeyRequired.
    """
    from tokenizers import Tokenizer

    from appliance.ner.model import NER_META, TOKENIZER_FILE

    meta = json.loads((package / NER_META).read_text(encoding="utf-8"))
    model: Path | bytes
    if meta.get("encrypted"):
        key = zones.require_key(package, meta, key)
        tok = Tokenizer.from_str(
            read_encrypted(
                package / (TOKENIZER_FILE + zones.ENC), key, label=zones.LABEL_PACKAGE_TOKENIZER
            ).decode("utf-8")
        )
        model = read_encrypted(
            package / (model_file + zones.ENC), key, label=zones.LABEL_PACKAGE_MODEL
        )
    else:
        tok = Tokenizer.from_file(str(package / TOKENIZER_FILE))
        model = package / model_file
    tok.no_truncation()
    tok.no_padding()
    return tagger_from(
        meta,
        tok,
        model,
        device,
        threads,
        info={"path": str(package)},
        what=str(package / model_file),
    )
