"""Held-out terms: a label-free check of what the model adds to the lexicon it learned from.

A package combines its model with its annotator's lexicon (the union,
:mod:`appliance.ner.lexicon`). Whether the model's entities that the lexicon
does not confirm help or hurt depends on whether the model learned more than
the lexicon's names, and a development split of annotated notes cannot say:
there the lexicon *is* the reference, so every entity beyond it reads as an
error.

Term holdout makes it measurable without a human label. Before training, a
seeded share of the distinct terms the annotator found (the casefolded text
of its spans, per type) is withheld: their mentions in the training notes
become undecided ranges (out of the loss: taught neither as an entity nor as
outside one), and mention replacement never draws them. To the model they are
what a hospital's unlisted names are to the package. The development split
keeps its full labels. At export, :func:`check` combines the model with the
development notes' lexicon spans *minus* the held-out terms (the lexicon the
model will meet: one that lacks some names) and scores each minimum
confidence against the full labels, read as partial labels. The package's
default is the best of them when it beats that reduced lexicon alone, and
the lexicon alone otherwise: by default a package never answers worse than
the dictionary it learned from, as far as the notes can tell without a
human label. A loss shows on every note (the model's wrong entities), a
gain only on held-out mentions, so a gain counts only with at least
:data:`MIN_HELD_OUT_MENTIONS` of them, and only when it holds beyond chance:
in a paired bootstrap over the development notes (:data:`BOOTSTRAP_SAMPLES`
resamples, seeded), the union must beat the reduced lexicon in at least
:data:`MIN_WIN_SHARE` of them. A model entity where the annotator left a
range undecided counts as an error here (see :func:`check`). Seven
thresholds are tried on the same notes, which flatters the union a little;
the bootstrap asks the gain to be larger than the notes' noise, not only
positive.

Nothing here reads note text beyond the screened notes the model trains on;
the held-out terms are a hash of each term with the training seed, so export
finds the same ones without storing them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.documents import Document, Span, Uncertain
from appliance.metrics import partial_view
from appliance.ner.encoding import Entity
from appliance.ner.lexicon import combine

REASON = "held_out_term"
# Below this many held-out mentions in the development split a union that scores above
# the lexicon is not taken as a gain (the built-in default stays); a union that scores
# below it still leaves the package to the lexicon: a loss shows on every note.
MIN_HELD_OUT_MENTIONS = 20
# A gain must show in this share of paired bootstrap resamples of the development notes.
MIN_WIN_SHARE = 0.95
BOOTSTRAP_SAMPLES = 2000


def term_key(text: str) -> str:
    """A term's key: casefolded, hyphens as spaces, whitespace collapsed (no language's morphology)."""
    return " ".join(text.casefold().replace("-", " ").split())


def is_held_out(label: str, text: str, share: float, seed: int) -> bool:
    """Whether the term ``text`` of type ``label`` is withheld: a stable hash, so the same seed gives the same terms."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:term-holdout:{label}:{term_key(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass
class HoldoutStats:
    terms: int = 0  # distinct held-out terms met in the training notes
    mentions: int = 0  # their spans, turned into undecided ranges
    kept_terms: int = 0  # distinct terms still taught

    def as_dict(self) -> dict[str, int]:
        return {"terms": self.terms, "mentions": self.mentions, "kept_terms": self.kept_terms}


def withhold(
    docs: Sequence[Document], share: float, seed: int
) -> tuple[list[Document], HoldoutStats]:
    """``docs`` with each span of a held-out term turned into an undecided range."""
    stats = HoldoutStats()
    held: set[tuple[str, str]] = set()
    kept: set[tuple[str, str]] = set()
    out: list[Document] = []
    for doc in docs:
        spans: list[Span] = []
        ranges = list(doc.uncertain)
        for s in doc.spans:
            key = (s.label, term_key(s.text))
            if is_held_out(s.label, s.text, share, seed):
                held.add(key)
                stats.mentions += 1
                ranges.append(Uncertain(s.start, s.end, REASON))
            else:
                kept.add(key)
                spans.append(s)
        if len(spans) == len(doc.spans):
            out.append(doc)
        else:
            ranges.sort(key=lambda u: (u.start, u.end))
            out.append(Document(doc.id, doc.text, spans, doc.meta, ranges))
    stats.terms, stats.kept_terms = len(held), len(kept)
    return out, stats


def without_held_out(
    terms: Mapping[str, Sequence[str]], share: float, seed: int
) -> dict[str, list[str]]:
    """The mention-replacement pool without held-out terms (the model must not be shown them)."""
    return {
        label: [t for t in surfaces if not is_held_out(label, t, share, seed)]
        for label, surfaces in terms.items()
    }


@dataclass
class HoldoutCheck:
    """What :func:`check` measured on the development split, and the default it chose."""

    default: str  # "union" or "lexicon"
    min_confidence: float | None  # the union's, when ``default`` is "union"
    held_out_mentions: int
    notes: int
    exact_f1: dict[str, float] = field(default_factory=dict)  # "lexicon", "model", each threshold
    held_out_recall: float = 0.0  # held-out mentions the model found exactly (any confidence)
    # Per threshold whose union beat the lexicon: the share of bootstrap resamples it won.
    win_share: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "notes": self.notes,
            "held_out_mentions": self.held_out_mentions,
            "held_out_recall": self.held_out_recall,
            "exact_f1": self.exact_f1,
        }
        out["win_share"] = self.win_share
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def check(
    model: Sequence[Sequence[Entity]],
    dev: Sequence[Document],
    share: float,
    seed: int,
    grid: Sequence[float],
    min_confidence: float = 0.5,
) -> HoldoutCheck:
    """The package default judged on held-out terms of the development split ``dev``.

    ``model``: the model's entities on each dev note. The reduced lexicon is
    each note's annotated spans minus those of held-out terms. The reference
    is the notes' annotated spans of at least ``min_confidence`` (the
    training's; a prediction over a less sure span counts neither way). The
    annotator's undecided ranges are *not* left open here, as they are in
    training: a model entity there counts as an error. On synthetic notes
    they are the words the model learned to call entities by their shape
    (*hydronephrosis*, *dyspnea*), and whether a hospital's gold would agree
    is what this check cannot know; so losses count wherever the annotator
    did not confirm an entity, and gains only on held-out terms. Of the
    thresholds whose union beats the reduced lexicon in at least
    :data:`MIN_WIN_SHARE` of the bootstrap resamples, the one with the best
    F1 becomes the default (ties to the higher threshold); with none, the
    lexicon.
    """
    reference = [Document(d.id, d.text, d.spans, d.meta) for d in dev]  # no undecided ranges
    sure = [
        (d.id, s) for d in dev for s in d.spans if s.confidence >= min_confidence
    ]  # the reference's confident spans
    held = [(i, s) for i, s in sure if is_held_out(s.label, s.text, share, seed)]
    reduced = [[s for s in d.spans if not is_held_out(s.label, s.text, share, seed)] for d in dev]

    def counts(entities: Sequence[Sequence[Entity]]) -> np.ndarray:
        """Per note: exact matches, predictions, reference spans."""
        pred = [
            Document(d.id, d.text, [e.span() for e in ents])
            for d, ents in zip(reference, entities, strict=True)
        ]
        ref, seen = partial_view(reference, pred, min_confidence)
        out = np.zeros((len(dev), 3), dtype=np.int64)
        for k, (r, p) in enumerate(zip(ref, seen, strict=True)):
            gold = {(x.start, x.end, x.label) for x in r.spans}
            found = {(x.start, x.end, x.label) for x in p.spans}
            out[k] = (len(gold & found), len(found), len(gold))
        return out

    def f1(c: np.ndarray) -> float:
        tp, n_pred, n_gold = c.sum(axis=0)
        return round(float(2 * tp / (n_pred + n_gold)) if n_pred + n_gold else 0.0, 4)

    lexicon_counts = counts([combine([], x, "lexicon") for x in reduced])
    union_counts = {
        t: counts([combine(m, x, "union", t) for m, x in zip(model, reduced, strict=True)])
        for t in grid
    }
    table: dict[str, float] = {"lexicon": f1(lexicon_counts), "model": f1(counts(model))}
    for t in grid:
        table[f"{t:g}"] = f1(union_counts[t])
    found = {
        (d.id, e.start, e.end, e.label) for d, ents in zip(dev, model, strict=True) for e in ents
    }
    recall = sum((i, s.start, s.end, s.label) in found for i, s in held) / max(1, len(held))
    shares = {
        f"{t:g}": round(win_share(union_counts[t], lexicon_counts, seed), 4)
        for t in grid
        if table[f"{t:g}"] > table["lexicon"]
    }
    passing = [t for t in grid if shares.get(f"{t:g}", 0.0) >= MIN_WIN_SHARE]
    best = max(passing, key=lambda t: (table[f"{t:g}"], t)) if passing else None
    wins = best is not None
    out = HoldoutCheck(
        "union" if wins else "lexicon",
        best,
        len(held),
        len(dev),
        table,
        round(recall, 4),
        shares,
    )
    if wins and len(held) < MIN_HELD_OUT_MENTIONS:
        # A loss shows on every note (the model's wrong entities); a gain needs held-out mentions.
        out.min_confidence = None
        out.skipped = (
            f"only {len(held)} held-out mention(s) in the {len(dev)} development notes "
            f"(at least {MIN_HELD_OUT_MENTIONS} needed to show a gain)"
        )
    return out


def win_share(
    union: np.ndarray, lexicon: np.ndarray, seed: int, samples: int = BOOTSTRAP_SAMPLES
) -> float:
    """Share of paired bootstrap resamples of the notes where ``union`` has the higher micro F1.

    ``union`` and ``lexicon``: per note, exact matches, predictions and
    reference spans (the same notes, in the same order). A tie counts as no win.
    """
    if len(union) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(union), size=(samples, len(union)))

    def f1(c: np.ndarray) -> np.ndarray:
        sums = c[picks].sum(axis=1)  # (samples, 3)
        denominator = sums[:, 1] + sums[:, 2]
        return np.where(denominator > 0, 2 * sums[:, 0] / np.maximum(denominator, 1), 0.0)

    return float((f1(union) > f1(lexicon)).mean())
