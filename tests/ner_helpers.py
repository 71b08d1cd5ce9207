"""Shared tiny-model settings and builders for the NER tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.ner.settings import NerSettings

TYPES = ["DRUG", "PROCEDURE", "DIAGNOSIS"]


def tiny_settings(**overrides: object) -> NerSettings:
    """A BERT of ~100K parameters that learns the demo notes' entities in seconds."""
    base: dict[str, object] = dict(
        vocab_size=1500,
        hidden_size=64,
        layers=2,
        heads=2,
        intermediate_size=128,
        max_length=64,
        stride=16,
        epochs=8,
        batch_size=8,
        lr=3e-3,
        patience=10,
        dropout=0.0,
        seed=0,
        device="cpu",
        # The plain loop (the partial-label switches have their own tests):
        o_keep=1.0,
        self_training_rounds=0,
    )
    base.update(overrides)
    return NerSettings(**base)  # type: ignore[arg-type]


def demo_export(out: Path, fmt: str, notes: int = 40, seed: int = 5) -> Path:
    from appliance import demo

    return demo.run(out, notes=notes, fmt=fmt, seed=seed).export_path


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; more threads only spin on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
