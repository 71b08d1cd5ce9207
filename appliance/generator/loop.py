"""The generator's training loop, nanoGPT's: random windows of the packed stream, warmup then cosine.

Batches come from a generator seeded by the step number, so a run resumed
from a checkpoint draws the batches the uninterrupted one would have. The
held-out loss is measured on the same windows every time, so its figures
compare across evaluations and runs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.generator.recipes import Recipe


@dataclass(frozen=True)
class TrainProgress:
    step: int
    max_steps: int
    loss: float
    lr: float
    tokens_per_second: float
    eta_seconds: float
    val_loss: float | None = None


@dataclass(frozen=True)
class LoopResult:
    step: int
    loss: float  # of the last step run (NaN when none was)
    tokens_per_second: float


def lr_at(step: int, r: Recipe) -> float:
    """Linear warmup to the learning rate, then cosine decay to the minimum at ``max_steps``."""
    t = r.train
    if step < t.warmup_steps:
        return t.learning_rate * (step + 1) / t.warmup_steps
    if step >= t.max_steps:
        return t.min_learning_rate
    ratio = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
    return t.min_learning_rate + 0.5 * (1 + math.cos(math.pi * ratio)) * (
        t.learning_rate - t.min_learning_rate
    )


def windows(data: Any, block: int, batch: int, generator: Any) -> tuple[Any, Any]:
    """``batch`` random windows of ``block`` tokens and the same windows shifted by one."""
    import torch

    starts = torch.randint(len(data) - block - 1 + 1, (batch,), generator=generator)
    x = torch.stack([data[i : i + block] for i in starts.tolist()])  # (B, T)
    y = torch.stack([data[i + 1 : i + 1 + block] for i in starts.tolist()])  # (B, T)
    return x, y


def autocast_for(device: str, precision: str) -> Any:
    """bf16 autocast on CUDA when the recipe asks for it; otherwise a no-op context."""
    import torch

    if device == "cuda" and precision == "bf16":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _cross_entropy(logits: Any, y: Any, device: str) -> Any:
    import torch

    return torch.nn.functional.cross_entropy(
        logits.view(-1, logits.size(-1)), y.to(device).view(-1)
    )


def heldout_loss(
    model: Any, data: Any, block: int, recipe: Recipe, device: str, autocast: Any
) -> float | None:
    """Mean loss on ``eval_batches`` fixed windows of the held-out stream (None without one)."""
    import torch

    t = recipe.train
    if data is None or len(data) < 2:
        return None
    model.eval()
    width = min(block, len(data) - 1)
    gen = torch.Generator().manual_seed(t.seed)  # the same windows every time: comparable numbers
    losses = []
    with torch.no_grad():
        for _ in range(t.eval_batches):
            x, y = windows(data, width, t.batch_size, gen)
            with autocast:
                out = model(input_ids=x.to(device), labels=None)
                logits = out.logits.float()
            losses.append(_cross_entropy(logits, y, device).item())
    model.train()
    return sum(losses) / len(losses)


def fit(
    model: Any,
    optimizer: Any,
    train_data: Any,
    *,
    recipe: Recipe,
    block: int,
    device: str,
    autocast: Any,
    start_step: int,
    history: list[dict[str, float]],
    evaluate: Callable[[], float | None],
    checkpoint: Callable[[int], None],
    progress: Callable[[TrainProgress], None] | None,
) -> LoopResult:
    """Train from ``start_step`` to the recipe's ``max_steps``, appending evaluations to ``history``.

    ``checkpoint(step)`` runs every ``checkpoint_every`` steps and on Ctrl-C
    (when a step was run), before the interrupt goes on up.
    """
    import torch

    t = recipe.train
    model.train()
    tokens_per_step = t.batch_size * block
    step = start_step
    loss_value = float("nan")
    window_started, window_tokens = time.monotonic(), 0
    rate = 0.0
    try:
        while step < t.max_steps:
            lr = lr_at(step, recipe)
            for group in optimizer.param_groups:
                group["lr"] = lr
            gen = torch.Generator().manual_seed(t.seed * 1_000_003 + step)
            x, y = windows(train_data, block, t.batch_size, gen)
            with autocast:
                logits = model(input_ids=x.to(device)).logits.float()
            loss = _cross_entropy(logits, y, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            step += 1
            loss_value = loss.item()
            window_tokens += tokens_per_step
            elapsed = time.monotonic() - window_started
            rate = window_tokens / elapsed if elapsed > 0 else 0.0
            val_loss = None
            if step % t.eval_every == 0 or step == t.max_steps:
                val_loss = evaluate()
                history.append(
                    {
                        "step": step,
                        "loss": loss_value,
                        **({"val_loss": val_loss} if val_loss is not None else {}),
                    }
                )
            if step % t.checkpoint_every == 0 and step < t.max_steps:
                checkpoint(step)
            if progress is not None:
                remaining = (t.max_steps - step) * tokens_per_step / rate if rate else 0.0
                progress(
                    TrainProgress(step, t.max_steps, loss_value, lr, rate, remaining, val_loss)
                )
    except KeyboardInterrupt:
        if step > start_step:
            checkpoint(step)
        raise
    return LoopResult(step=step, loss=loss_value, tokens_per_second=rate)
