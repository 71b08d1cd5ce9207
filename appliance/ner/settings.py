"""Training settings and the BIO label scheme of an NER model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from appliance.errors import UsageError

DEV_SIGNALS = ("partial", "plain", "none")
# The defaults on an annotator's (partial) labels; a gold file's labels are
# complete, and train with every O token and no self-training (BENCHMARKS.md:
# O sampling helps on top of partial labels; a self-training round gained 0.7
# F1 points for a second training run).
AUTO_O_KEEP = 0.3
AUTO_SELF_TRAINING_ROUNDS = 0
# Mention replacement: altered copies of each annotated training note.
AUTO_MENTION_COPIES = 1
# Term holdout (ner/holdout.py): share of the annotator's distinct terms withheld from
# the training labels, so export can judge what the model adds to the lexicon.
AUTO_TERM_HOLDOUT = 0.2


@dataclass(frozen=True)
class NerSettings:
    """Everything a training run was asked for; written into the model's manifest."""

    epochs: int = 20  # upper bound: early stopping on the dev set usually ends sooner
    max_steps: int | None = None  # hard cap on optimizer steps (None: epochs decide)
    batch_size: int = 16  # windows per optimizer step
    lr: float | None = None  # None: 1e-3 for a scratch encoder, 5e-5 for a pretrained one
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06  # share of steps with linear warmup, then linear decay
    grad_clip: float = 1.0
    max_length: int = 128  # sub-word tokens per window, special tokens included
    stride: int = 32  # tokens two neighbouring windows share (context at the seams)
    seed: int = 0
    patience: int = 3  # evaluations without a better dev F1 before stopping
    eval_every: int | None = None  # steps between dev evaluations (None: once per epoch)
    dev_fraction: float = 0.15  # share of annotated notes held out as dev set (no --dev)
    checkpoint_every: int = 200  # steps between resumable checkpoints
    device: str = "auto"  # auto | cpu | cuda
    # Scratch encoder (a small BERT); ignored for a pretrained --base.
    vocab_size: int = 4000  # WordPiece vocabulary trained on the training notes
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    intermediate_size: int = 256
    dropout: float = 0.1
    # Masked-language-model pretraining on the real records (--mlm-on-records).
    mlm_steps: int = 300
    mlm_probability: float = 0.15
    # Annotator labels are partial: an entity the annotator missed is taught as O.
    partial_labels: bool = True  # tokens of undecided ranges and unsure spans: out of the loss
    min_confidence: float = 0.5  # spans below this annotator confidence count as undecided
    # None: by the labels (resolved): AUTO_* on annotations, off on a gold file.
    o_keep: float | None = (
        None  # share of O tokens kept in the loss, drawn again each epoch (1: all)
    )
    self_training_rounds: int | None = None  # teacher-student rounds after the first model
    self_training_threshold: float = 0.9  # model probability that adds a span (or decides a token)
    dev_signal: str = "partial"  # partial | plain | none: what early stopping watches
    # Mention replacement (ner/augment.py): copies of each training note with
    # confident mentions swapped for other terms of their type.
    mention_copies: int | None = None  # None: AUTO_MENTION_COPIES on annotations, 0 on gold
    mention_share: float = 0.5  # chance that a confident mention is swapped in a copy
    # Term holdout (ner/holdout.py): a seeded share of the annotator's distinct terms left
    # out of the training labels; export checks on them what the model adds to the lexicon.
    term_holdout: float | None = None  # None: AUTO_TERM_HOLDOUT on annotations, 0 on gold

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.lr is None or self.lr > 0, "--lr must be positive"),
            (self.max_length >= 8, "max_length must be at least 8 tokens"),
            (0 <= self.stride < self.max_length // 2, "stride must be below half of max_length"),
            (self.patience >= 1, "patience must be at least 1"),
            (0 < self.dev_fraction < 1, "dev_fraction must be between 0 and 1"),
            (self.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
            (self.hidden_size % self.heads == 0, "hidden_size must be a multiple of heads"),
            (self.mlm_steps >= 1, "mlm_steps must be at least 1"),
            (0 <= self.min_confidence <= 1, "--min-confidence must be between 0 and 1"),
            (
                self.o_keep is None or 0 < self.o_keep <= 1,
                "--o-keep must be above 0 and at most 1",
            ),
            (
                self.self_training_rounds is None or self.self_training_rounds >= 0,
                "--self-training-rounds must be at least 0",
            ),
            (
                0.5 <= self.self_training_threshold <= 1,
                "--self-training-threshold must be between 0.5 and 1",
            ),
            (
                self.self_training_threshold >= self.min_confidence,
                "--self-training-threshold must not be below --min-confidence "
                "(the spans it adds would be left out of the loss)",
            ),
            (self.dev_signal in DEV_SIGNALS, "--dev-signal must be partial, plain or none"),
            (
                self.mention_copies is None or 0 <= self.mention_copies <= 10,
                "--mention-copies must be from 0 to 10",
            ),
            (0 < self.mention_share <= 1, "--mention-share must be above 0 and at most 1"),
            (
                self.term_holdout is None or 0 <= self.term_holdout <= 0.5,
                "--term-holdout must be from 0 to 0.5",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def resolved(self, gold: bool) -> NerSettings:
        """Settings left to the labels made definite: gold labels are complete, an annotator's not."""
        o_keep = self.o_keep if self.o_keep is not None else (1.0 if gold else AUTO_O_KEEP)
        rounds = self.self_training_rounds
        if rounds is None:
            rounds = 0 if gold else AUTO_SELF_TRAINING_ROUNDS
        copies = self.mention_copies
        if copies is None:
            copies = 0 if gold else AUTO_MENTION_COPIES
        holdout = self.term_holdout
        if holdout is None:
            holdout = 0.0 if gold else AUTO_TERM_HOLDOUT
        return dataclasses.replace(
            self,
            o_keep=o_keep,
            self_training_rounds=rounds,
            mention_copies=copies,
            term_holdout=holdout,
        )

    @property
    def o_share(self) -> float:
        """``o_keep`` (1.0 while unresolved)."""
        return 1.0 if self.o_keep is None else self.o_keep

    @property
    def holdout_share(self) -> float:
        """``term_holdout`` (0 while unresolved)."""
        return self.term_holdout or 0.0

    @property
    def rounds(self) -> int:
        """``self_training_rounds`` (0 while unresolved)."""
        return self.self_training_rounds or 0

    def learning_rate(self, scratch: bool) -> float:
        return self.lr if self.lr is not None else (1e-3 if scratch else 5e-5)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NerSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def bio_labels(types: list[str]) -> list[str]:
    """``O`` then ``B-T``/``I-T`` for each entity type, in the schema's order."""
    out = ["O"]
    for t in types:
        out += [f"B-{t}", f"I-{t}"]
    return out


def entity_types(labels: list[str]) -> list[str]:
    return [label[2:] for label in labels if label.startswith("B-")]
