"""Self-training on partial labels: a trained model re-labels its own training notes.

BOND-style teacher-student rounds (Liang et al., KDD 2020), adapted to
annotator labels that miss entities. The model of the previous round (the
teacher) reads every training note; the new labels keep what the annotator
decided and add what the teacher is sure of:

* the annotator's spans are kept (those below ``min_confidence`` stay
  undecided, as the annotator left them);
* an entity the teacher predicts with probability at least ``threshold``
  that overlaps no confident annotator span is added;
* a token the teacher is unsure about (no tag reaches ``threshold``), or
  that it tags as an entity it did not add, becomes undecided: out of the
  student's loss instead of taught as ``O``.

:func:`relabel` only reads; the rounds themselves (a fresh student per
round, early stop on the dev score) are run by :mod:`appliance.ner.train`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from appliance.documents import Document, Span, Uncertain
from appliance.ner.encoding import decode, encode_notes, owners, softmax, window_ranges
from appliance.ner.runtime import Tagger

UNSURE = "self_training"  # the reason of the undecided ranges a teacher adds


@dataclass(frozen=True)
class Relabelled:
    """The training notes as the student sees them, and what the teacher changed."""

    docs: list[Document]
    added_spans: int  # entities the teacher added
    undecided_tokens: int  # tokens the teacher left out of the loss

    def counts(self) -> dict[str, int]:
        return {"added_spans": self.added_spans, "undecided_tokens": self.undecided_tokens}


def token_probabilities(
    tagger: Tagger, texts: Sequence[str], batch_size: int = 32
) -> list[tuple[list[tuple[int, int]], np.ndarray]]:
    """Per text: its sub-word offsets and the tag probabilities ``(T, L)`` of each token.

    Windows and stitching as :meth:`Tagger.predict` does them (each token read
    from the window where it sits farthest from an edge).
    """
    notes = encode_notes(tagger.tokenizer, texts)
    rows: list[list[int]] = []
    where: list[tuple[int, int, int]] = []  # (note, window, tokens)
    ranges = []
    for i, note in enumerate(notes):
        rs = window_ranges(len(note.ids), tagger.body, tagger.stride)
        ranges.append(rs)
        for w, (s, e) in enumerate(rs):
            rows.append([*tagger.special.prefix, *note.ids[s:e], *tagger.special.suffix])
            where.append((i, w, e - s))
    first = len(tagger.special.prefix)
    logits: list[Any] = [None] * len(rows)
    for batch in tagger.batches(rows, batch_size):
        out = tagger.backend(batch.ids, batch.mask)
        for r, k in enumerate(batch.items):
            logits[k] = out[r, first : first + where[k][2]]
    index = {(i, w): k for k, (i, w, _) in enumerate(where)}
    result = []
    for i, note in enumerate(notes):
        if not note.ids:
            result.append((note.offsets, np.zeros((0, len(tagger.labels)))))
            continue
        window, position = owners(len(note.ids), ranges[i])
        stacked = np.stack(
            [logits[index[(i, int(w))]][int(p)] for w, p in zip(window, position, strict=True)]
        )
        result.append((note.offsets, softmax(stacked)))
    return result


def _overlaps(a_start: int, a_end: int, spans: Sequence[Span]) -> bool:
    return any(a_start < s.end and s.start < a_end for s in spans)


def _order(spans: list[Span]) -> list[Span]:
    return sorted(spans, key=lambda s: (s.start, -(s.end - s.start), s.label))


def relabel(
    docs: Sequence[Document],
    teacher: Tagger,
    *,
    threshold: float,
    min_confidence: float,
    partial: bool = True,
    batch_size: int = 32,
) -> Relabelled:
    """The student's labels for ``docs`` (see the module docstring).

    ``partial`` False: the annotator's doubts are not kept (every span taught,
    its undecided ranges dropped); only the teacher's are added.
    """
    outside = teacher.labels.index("O")
    out: list[Document] = []
    added_total = unsure_total = 0
    probs_of = token_probabilities(teacher, [d.text for d in docs], batch_size)
    for doc, (offsets, probs) in zip(docs, probs_of, strict=True):
        spans = list(doc.spans) if partial else [replace(s, confidence=1.0) for s in doc.spans]
        uncertain = list(doc.uncertain) if partial else []
        sure = [s for s in spans if s.confidence >= min_confidence]
        added: list[Span] = []
        for ent in decode(doc.text, offsets, probs, teacher.labels) if len(offsets) else []:
            if ent.confidence >= threshold and not _overlaps(ent.start, ent.end, sure):
                added.append(
                    Span(ent.start, ent.end, ent.label, ent.text, round(ent.confidence, 6))
                )
        # Unsure tokens: no tag reaches the threshold, or an entity tag the teacher did not add.
        unsure: list[list[int]] = []
        previous = -2
        for t, ((s, e), p) in enumerate(zip(offsets, probs, strict=True)):
            if e <= s or _overlaps(s, e, sure):
                continue  # the annotator's confident spans are kept as they are
            tag = int(p.argmax())
            doubt = float(p[tag]) < threshold or (tag != outside and not _overlaps(s, e, added))
            if not doubt:
                continue
            unsure_total += 1
            if unsure and previous == t - 1:
                unsure[-1][1] = e
            else:
                unsure.append([s, e])
            previous = t
        added_total += len(added)
        out.append(
            Document(
                doc.id,
                doc.text,
                _order(spans + added),
                doc.meta,
                uncertain + [Uncertain(s, e, UNSURE) for s, e in unsure],
            )
        )
    return Relabelled(out, added_total, unsure_total)
