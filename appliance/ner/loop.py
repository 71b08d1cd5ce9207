"""The NER training loop: shuffled windows, linear warmup and decay, early stopping on dev F1.

Batches are drawn from a permutation seeded by the epoch and dropout masks
from a seed per step, so a run resumed from a checkpoint sees exactly the
batches (and masks) the uninterrupted one would have. The dev set is scored
every ``eval_every`` steps; the best weights are kept, and the run stops after
``patience`` evaluations without improvement (once the model finds entities
at all).

Annotator labels are partial (an entity the annotator missed reads as
``O``). With ``partial_labels`` the windows leave the annotator's undecided
ranges and unsure spans out of the loss (:func:`align_partial`); with
``o_keep`` below 1 only that share of the ``O`` tokens counts, drawn afresh
each epoch from the seed, the epoch and the window's index (negative
sampling, Li et al. 2021), so a resumed run draws what the uninterrupted one
did.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.documents import Document
from appliance.metrics import partial_view, score
from appliance.ner.encoding import (
    IGNORE,
    Special,
    align_labels,
    align_partial,
    encode_notes,
    window_ranges,
)
from appliance.ner.runtime import Tagger
from appliance.ner.settings import NerSettings

Row = tuple[list[int], list[int]]  # token ids and their labels, one window


@dataclass(frozen=True)
class TrainProgress:
    phase: str  # "mlm" or "ner"
    step: int
    max_steps: int
    loss: float
    tokens_per_second: float
    eta_seconds: float
    dev_f1: float | None = None


@dataclass(frozen=True)
class Plan:
    """How long the run is and how its learning rate moves."""

    steps_per_epoch: int
    total: int
    eval_every: int
    warmup: int
    lr: float

    @classmethod
    def of(cls, settings: NerSettings, n_rows: int, scratch: bool) -> Plan:
        steps_per_epoch = math.ceil(n_rows / settings.batch_size)
        total = settings.epochs * steps_per_epoch
        if settings.max_steps is not None:
            total = min(total, settings.max_steps)
        return cls(
            steps_per_epoch=steps_per_epoch,
            total=total,
            eval_every=settings.eval_every or steps_per_epoch,
            warmup=int(settings.warmup_ratio * total),
            lr=settings.learning_rate(scratch),
        )


@dataclass
class LoopState:
    """Where the loop stands; all of it goes into the checkpoint."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_f1: float = -1.0
    best_step: int = 0
    bad_evals: int = 0
    best_state: dict[str, Any] | None = None
    stopped_early: bool = False

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> LoopState:
        return cls(
            step=int(state["step"]),
            history=list(state["history"]),
            best_f1=float(state["best_f1"]),
            best_step=int(state["best_step"]),
            bad_evals=int(state["bad_evals"]),
            best_state=state["best_state"],
            stopped_early=bool(state.get("stopped_early", False)),
        )

    def checkpoint_fields(self) -> dict[str, Any]:
        """The checkpoint's loop fields after the common ones (step and history go there)."""
        return {
            "best_f1": self.best_f1,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "best_state": self.best_state,
            "stopped_early": self.stopped_early,
        }


@dataclass(frozen=True)
class LoopStats:
    tokens: int  # non-padding tokens trained on in this run
    started: float  # time.monotonic() when the loop began


def windows(
    tokenizer: Any,
    docs: Sequence[Document],
    label2id: dict[str, int],
    special: Special,
    body: int,
    stride: int,
    min_confidence: float | None = None,
) -> list[Row]:
    """(ids, labels) per window, special tokens wrapped in and labelled IGNORE.

    ``min_confidence`` (partial labels): undecided ranges and spans below it
    are left out of the loss; None: every token is taught, undecided ones as O.
    """
    out = []
    for doc, enc in zip(docs, encode_notes(tokenizer, [d.text for d in docs]), strict=True):
        if min_confidence is None:
            labels = align_labels(enc.offsets, doc.spans, label2id)
        else:
            labels = align_partial(enc.offsets, doc.spans, doc.uncertain, label2id, min_confidence)
        for s, e in window_ranges(len(enc.ids), body, stride):
            ids = [*special.prefix, *enc.ids[s:e], *special.suffix]
            lab = [IGNORE] * len(special.prefix) + labels[s:e] + [IGNORE] * len(special.suffix)
            out.append((ids, lab))
    return out


OUTSIDE = 0  # the id of "O" (bio_labels puts it first)


def sample_outside(labels: list[int], o_keep: float, seed: int, epoch: int, row: int) -> list[int]:
    """``labels`` with each ``O`` kept at rate ``o_keep`` (the rest IGNORE), drawn from (seed, epoch, row)."""
    if o_keep >= 1:
        return labels
    rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch, row])
    draw = rng.random(len(labels)).tolist()
    return [
        IGNORE if label == OUTSIDE and d >= o_keep else label
        for label, d in zip(labels, draw, strict=True)
    ]


def pad(rows: list[Row], pad_id: int, torch: Any) -> tuple[Any, Any, Any]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for r, (i, lab) in enumerate(rows):
        ids[r, : len(i)] = torch.tensor(i)
        mask[r, : len(i)] = 1
        labels[r, : len(lab)] = torch.tensor(lab)
    return ids, mask, labels  # (B, T) each


def schedule(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor: linear warmup, then linear decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def dev_scores(
    tagger: Tagger,
    dev_docs: Sequence[Document],
    batch_size: int = 32,
    min_confidence: float | None = None,
) -> dict[str, Any]:
    """Exact-span scores of the tagger on the dev documents (metrics.score).

    ``min_confidence``: scored through :func:`appliance.metrics.partial_view`
    (what the annotator left undecided counts neither way).
    """
    preds = tagger.predict([d.text for d in dev_docs], batch_size=batch_size)
    pred_docs = [
        Document(d.id, d.text, [e.span() for e in p]) for d, p in zip(dev_docs, preds, strict=True)
    ]
    if min_confidence is None:
        return score(dev_docs, pred_docs)
    return score(*partial_view(dev_docs, pred_docs, min_confidence))


def make_optimizer(model: Any, settings: NerSettings, lr: float, torch: Any) -> Any:
    """AdamW with weight decay on matrices only (not biases or norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=lr,
    )


def _evaluated(
    st: LoopState, loss_value: float, f1: float, model: Any, settings: NerSettings
) -> None:
    """Record a dev evaluation: keep the best weights, count evaluations without improvement."""
    st.history.append({"step": st.step, "loss": round(loss_value, 5), "dev_f1": f1})
    if f1 > st.best_f1:
        st.best_f1, st.best_step, st.bad_evals = f1, st.step, 0
        st.best_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    elif st.best_f1 > 0:  # patience starts once the model finds entities at all
        st.bad_evals += 1
        st.stopped_early = st.bad_evals >= settings.patience


def fit(
    model: Any,
    optimizer: Any,
    rows: list[Row],
    st: LoopState,
    plan: Plan,
    *,
    settings: NerSettings,
    device: str,
    pad_id: int,
    evaluate: Callable[[], float] | None,
    checkpoint: Callable[[], None],
    progress: Callable[[TrainProgress], None] | None,
    torch: Any,
) -> LoopStats:
    """Train until ``plan.total`` steps or early stop, updating ``st`` in place.

    ``evaluate`` (None without dev notes) gives the dev F1 of the model as it
    is; ``checkpoint`` saves the whole state, every ``checkpoint_every`` steps
    and on Ctrl-C (when a step was run), before the interrupt goes on up.
    """
    resumed_from = st.step
    total, bs = plan.total, settings.batch_size
    model.train()
    tokens, t0 = 0, time.monotonic()
    try:
        while st.step < total and not st.stopped_early:
            epoch, index = divmod(st.step, plan.steps_per_epoch)
            gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
            order = torch.randperm(len(rows), generator=gen).tolist()
            batch = [
                (rows[i][0], sample_outside(rows[i][1], settings.o_share, settings.seed, epoch, i))
                for i in order[index * bs : (index + 1) * bs]
            ]
            ids, mask, lab = pad(batch, pad_id, torch)
            for group in optimizer.param_groups:
                group["lr"] = plan.lr * schedule(st.step, total, plan.warmup)
            # Dropout masks from a per-step seed: a resumed run repeats them.
            torch.manual_seed(settings.seed * 7_000_003 + st.step)
            out = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), labels=lab.to(device)
            )
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            st.step += 1
            loss_value = float(out.loss.item())
            tokens += int(mask.sum())
            rate = tokens / max(1e-9, time.monotonic() - t0)
            f1 = None
            if evaluate is not None and (st.step % plan.eval_every == 0 or st.step == total):
                model.eval()
                f1 = evaluate()
                model.train()
                _evaluated(st, loss_value, f1, model, settings)
            elif st.step % plan.eval_every == 0:
                st.history.append({"step": st.step, "loss": round(loss_value, 5)})
            if st.step % settings.checkpoint_every == 0 and st.step < total:
                checkpoint()
            if progress is not None:
                eta = (total - st.step) * (time.monotonic() - t0) / max(1, st.step - resumed_from)
                progress(TrainProgress("ner", st.step, total, loss_value, rate, eta, f1))
    except KeyboardInterrupt:
        if st.step > resumed_from:
            checkpoint()
        raise
    return LoopStats(tokens=tokens, started=t0)
