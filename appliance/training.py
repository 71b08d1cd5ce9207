"""What the two trainers (generator and NER) share: the device, quiet logs, one checkpoint format.

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

import io
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError
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
