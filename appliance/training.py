"""What the trainers (generator, NER, normalizer) share: the device, quiet logs, ONNX export, one checkpoint format.

A checkpoint is one ``torch.save`` dict: the run's fingerprint (a hash of
its data and settings), the step, model and optimizer state, the model
config and tokenizer, the history so far, and whatever else the trainer
needs to go on exactly where it stopped. Neither trainer stores RNG state:
each re-seeds its batch order (and dropout, for NER) from the step number,
so a resumed run repeats the uninterrupted one. With a data key the
checkpoint is encrypted (the generator's always is: it has seen real notes).

torch stays a lazy import: this module is imported by stages that run
without it (the CLI, inference through onnxruntime).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, ConfigError, missing_dependency
from appliance.security.crypto import atomic_write, read_encrypted, write_encrypted
from appliance.security.keys import DataKey


def resolve_device(requested: str) -> str:
    """ "auto" is CUDA when torch sees a GPU, else the CPU; "cuda" without a GPU is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' requested but torch sees no CUDA GPU; use --device cpu or auto"
        )
    return requested


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """The exporter reports its progress on stdout/stderr; keep CLI output to one line."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnxruntime", "")
    loggers = [logging.getLogger(n) if n else logging.getLogger() for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_encoder_onnx(
    module: Any, pad_id: int, output: str, max_sequence: int, what: str = "ONNX export"
) -> bytes:
    """``module(input_ids, attention_mask) -> output`` as ONNX bytes, batch and sequence dynamic.

    torch's exporter (opset 18, dynamo) traces it on a small padded batch; a
    failure of the exporter is one :class:`ApplianceError` line naming ``what``.
    """
    import torch

    try:
        import onnxscript  # noqa: F401  - the exporter's dependency; fail with an install hint
    except ImportError:
        raise missing_dependency("onnxscript", "cpu", what) from None
    n = max(8, min(16, max_sequence))
    ids = torch.full((2, n), pad_id, dtype=torch.long)
    ids[:, : min(n, 3)] = 1
    mask = torch.ones((2, n), dtype=torch.long)
    batch = torch.export.Dim("batch", min=1, max=65536)
    seq = torch.export.Dim("sequence", min=2, max=max(max_sequence, 16))
    try:
        with quiet_export():
            program = torch.onnx.export(
                module.eval(),
                (ids, mask),
                None,
                input_names=["input_ids", "attention_mask"],
                output_names=[output],
                dynamic_shapes={
                    "input_ids": {0: batch, 1: seq},
                    "attention_mask": {0: batch, 1: seq},
                },
                opset_version=18,
                dynamo=True,
                external_data=False,
            )
            assert program is not None
            blob: bytes = program.model_proto.SerializeToString()
    except Exception as exc:  # the exporter raises many internal error types
        raise ApplianceError(
            f"{what} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from exc
    return blob


def load_fast_tokenizer(base: Path) -> Any:
    """The fast tokenizer of a local Hugging Face folder, as a ``tokenizers.Tokenizer``."""
    from tokenizers import Tokenizer

    from appliance.errors import InputError

    if (base / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(base / "tokenizer.json"))
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"--base {base}: no loadable tokenizer: {str(exc).splitlines()[0]}"
        ) from exc
    if not getattr(hf, "is_fast", False):
        raise InputError(f"--base {base}: a fast tokenizer (tokenizer.json) is required")
    return Tokenizer.from_str(hf.backend_tokenizer.to_str())


def quiet_transformers() -> None:
    """Silence transformers' advisory warnings and its own progress bars in CLI output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Writing model shards" would garble the CLI's own progress


def training_state(
    *,
    fingerprint: str,
    step: int,
    model: Any,
    optimizer: Any,
    tokenizer: Any,
    history: list[Any],
    **extra: Any,
) -> dict[str, Any]:
    """The checkpoint dict both trainers write: the common part, then the trainer's ``extra``."""
    return {
        "fingerprint": fingerprint,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": model.config.to_dict(),
        "tokenizer": tokenizer.to_str(),
        "history": history,
        **extra,
    }


def save_checkpoint(path: Path, state: dict[str, Any], key: DataKey | None, *, label: str) -> None:
    """Write ``state`` to ``path`` in one go: encrypted under ``key`` (AEAD ``label``), else plain."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    if key is not None:
        write_encrypted(path, key, buf.getvalue(), label=label)
    else:
        atomic_write(path, buf.getvalue())


def load_checkpoint(
    path: Path,
    key: DataKey | None,
    *,
    label: str,
    fingerprint: str | None = None,
    weights_only: bool = True,
) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none to resume from.

    A checkpoint cut short by a crash reads as none (the run starts over). With
    ``fingerprint``, one made from other data or settings is removed and reads
    as none too.
    """
    import torch

    if not path.exists():
        return None
    blob = read_encrypted(path, key, label=label) if key is not None else path.read_bytes()
    try:
        state: dict[str, Any] = torch.load(
            io.BytesIO(blob), map_location="cpu", weights_only=weights_only
        )
    except Exception:  # a plaintext checkpoint cut short by a crash: start over
        return None
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        path.unlink()  # made from other data or settings: start over
        return None
    return state
