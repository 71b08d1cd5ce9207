"""Sub-word tokens, label alignment, overlapping windows and stitching predictions back.

A note is tokenized once, whole, with character offsets and no special
tokens. Training labels are aligned to those sub-word tokens by character
overlap (the first token of a span gets ``B-``, the rest ``I-``). Long notes
are cut into windows of ``max_length`` tokens (special tokens included) that
overlap by ``stride`` tokens; each token then takes its prediction from the
window where it sits farthest from an edge, so every token is judged with as
much context as the windows give. Predicted token tags become character spans
through the token offsets, snapped outwards to whole words.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.documents import Span, Uncertain, word_tokens

IGNORE = -100  # label of special and padding positions: no loss


@dataclass(frozen=True)
class Special:
    """The special tokens a window is wrapped in (``[CLS] … [SEP]``, ``<s> … </s>``)."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int

    def as_dict(self) -> dict[str, Any]:
        return {"prefix": list(self.prefix), "suffix": list(self.suffix), "pad_id": self.pad_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Special:
        return cls(tuple(d["prefix"]), tuple(d["suffix"]), int(d["pad_id"]))


def special_tokens(tokenizer: Any, pad_id: int | None = None) -> Special:
    """Read the wrapping from the tokenizer's own post-processor, whatever the model family."""
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a", add_special_tokens=True).ids
    i = full.index(plain[0]) if plain and plain[0] in full else 0
    prefix, suffix = tuple(full[:i]), tuple(full[i + len(plain) :])
    if pad_id is None:
        for name in ("[PAD]", "<pad>", "<PAD>"):
            found = tokenizer.token_to_id(name)
            if found is not None:
                pad_id = int(found)
                break
    return Special(prefix, suffix, int(pad_id if pad_id is not None else 0))


@dataclass
class EncodedNote:
    ids: list[int]
    offsets: list[tuple[int, int]]


def encode_notes(tokenizer: Any, texts: Sequence[str]) -> list[EncodedNote]:
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [EncodedNote(list(e.ids), [tuple(o) for o in e.offsets]) for e in encodings]


def window_ranges(n_tokens: int, body: int, stride: int) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` of the windows over a note; the last one ends at the end."""
    if n_tokens == 0:
        return []
    if n_tokens <= body:
        return [(0, n_tokens)]
    step = max(1, body - stride)
    starts = [*range(0, n_tokens - body, step), n_tokens - body]
    return [(s, s + body) for s in starts]


def owners(n_tokens: int, ranges: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """For each token, the window to read it from and its position there (farthest from an edge)."""
    window = np.full(n_tokens, -1, dtype=np.int64)
    position = np.zeros(n_tokens, dtype=np.int64)
    best = np.full(n_tokens, -1, dtype=np.int64)
    for w, (s, e) in enumerate(ranges):
        t = np.arange(s, e)
        margin = np.minimum(t - s, e - 1 - t)
        better = margin > best[s:e]
        best[s:e][better] = margin[better]
        window[s:e][better] = w
        position[s:e][better] = (t - s)[better]
    return window, position


def align_labels(
    offsets: Sequence[tuple[int, int]], spans: Sequence[Span], label2id: dict[str, int]
) -> list[int]:
    """Sub-word BIO label ids: a token inside a span (by character overlap) is B- if first, else I-."""
    labels = [label2id["O"]] * len(offsets)
    starts = [s for s, _ in offsets]
    for span in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if f"B-{span.label}" not in label2id:
            continue
        i = max(0, bisect.bisect_right(starts, span.start) - 1)
        first = True
        while i < len(offsets) and offsets[i][0] < span.end:
            s, e = offsets[i]
            if e > span.start and e > s:
                if labels[i] != label2id["O"] and first:
                    break  # overlapped by an earlier span: it keeps the tokens
                labels[i] = label2id[("B-" if first else "I-") + span.label]
                first = False
            i += 1
    return labels


def undecided_ranges(
    spans: Sequence[Span], uncertain: Sequence[Uncertain], min_confidence: float
) -> list[tuple[int, int]]:
    """Character ranges a partial-label view leaves open: undecided ranges and unsure spans."""
    out = [(u.start, u.end) for u in uncertain]
    out += [(s.start, s.end) for s in spans if s.confidence < min_confidence]
    return sorted(r for r in out if r[1] > r[0])


def align_partial(
    offsets: Sequence[tuple[int, int]],
    spans: Sequence[Span],
    uncertain: Sequence[Uncertain],
    label2id: dict[str, int],
    min_confidence: float,
) -> list[int]:
    """Like :func:`align_labels`, with the annotator's doubts out of the loss.

    Spans of at least ``min_confidence`` are aligned as usual; a token that
    would be ``O`` but overlaps an undecided range or a span below
    ``min_confidence`` gets ``IGNORE`` (a partial label: the annotator said
    neither entity nor outside). A token of a confident span keeps its tag.
    """
    sure = [s for s in spans if s.confidence >= min_confidence]
    labels = align_labels(offsets, sure, label2id)
    outside = label2id["O"]
    starts = [s for s, _ in offsets]
    for a, b in undecided_ranges(spans, uncertain, min_confidence):
        i = max(0, bisect.bisect_right(starts, a) - 1)
        while i < len(offsets) and offsets[i][0] < b:
            s, e = offsets[i]
            if e > a and e > s and labels[i] == outside:
                labels[i] = IGNORE
            i += 1
    return labels


@dataclass(frozen=True)
class Entity:
    """A predicted entity: character offsets into the note, type, text and confidence.

    ``source`` is set only where a package's lexicon was combined with the
    model (:mod:`appliance.ner.lexicon`): ``model``, ``lexicon`` or ``both``.
    ``concept`` only where the package normalizes (:mod:`appliance.normalize`):
    ``code`` (None when NIL), ``system``, ``name``, ``score``, ``via`` and
    ``candidates`` (the top-k, each with code, name, system and score).
    """

    start: int
    end: int
    label: str
    text: str
    confidence: float
    source: str | None = None
    concept: dict[str, Any] | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": self.start,
            "end": self.end,
            "label": self.label,
            "text": self.text,
            "confidence": round(self.confidence, 4),
        }
        if self.source is not None:
            out["source"] = self.source
        if self.concept is not None:
            out.update(self.concept)
        return out

    def span(self) -> Span:
        return Span(self.start, self.end, self.label, self.text)


def _transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """BIO constraints as additive scores: ``(start (L,), transition (L, L) [previous, current])``."""
    barred = -1e9
    inside = np.array([name.startswith("I-") for name in labels])
    allowed = np.ones((len(labels), len(labels)), dtype=bool)
    for j, name in enumerate(labels):
        if name.startswith("I-"):
            allowed[:, j] = [prev != "O" and prev[2:] == name[2:] for prev in labels]
    return np.where(inside, barred, 0.0), np.where(allowed, 0.0, barred)


def bio_paths(probs: Sequence[np.ndarray], labels: Sequence[str]) -> list[list[int]]:
    """For each ``(T, L)`` array, the most probable tag sequence that is valid BIO.

    Viterbi over log-probabilities: ``I-X`` may follow only ``B-X`` or
    ``I-X``, and no path starts with an ``I-`` tag. Decoding each token by
    its own argmax instead breaks multi-word entities into pieces wherever
    one inner token leans to ``O`` (``Type 2 diabetes mellitus`` read as
    ``Type`` and ``diabetes mellitus``); the constrained path keeps them
    whole when the sequence as a whole says so. The notes are decoded
    together, one step per token position, so a batch costs one pass.
    """
    start, transition = _transitions(labels)
    paths: list[list[int]] = [[] for _ in probs]
    # Like lengths together (little padding), at most _VITERBI_TOKENS padded positions a pass.
    chunks: list[list[int]] = [[]]
    for k in sorted((k for k in range(len(probs)) if len(probs[k])), key=lambda k: len(probs[k])):
        if chunks[-1] and (len(chunks[-1]) + 1) * len(probs[k]) > _VITERBI_TOKENS:
            chunks.append([])
        chunks[-1].append(k)
    for chunk in chunks:
        for k, path in zip(
            chunk, _viterbi([probs[k] for k in chunk], start, transition), strict=True
        ):
            paths[k] = path
    return paths


_VITERBI_TOKENS = 1 << 16


def _viterbi(
    probs: Sequence[np.ndarray], start: np.ndarray, transition: np.ndarray
) -> list[list[int]]:
    if not probs:
        return []
    lengths = np.array([len(p) for p in probs])
    n, width, n_labels = len(probs), int(lengths.max()), start.shape[0]
    log_p = np.zeros((n, width, n_labels))
    for i, p in enumerate(probs):
        log_p[i, : len(p)] = np.log(np.clip(p.astype(np.float64), 1e-12, 1.0))
    score = log_p[:, 0] + start
    back = np.zeros((n, width, n_labels), dtype=np.int32)
    for t in range(1, width):
        candidates = score[:, :, None] + transition  # (note, previous, current)
        back[:, t] = candidates.argmax(axis=1)
        score = np.where((t < lengths)[:, None], candidates.max(axis=1) + log_p[:, t], score)
    current = score.argmax(axis=1)
    tags = np.zeros((n, width), dtype=np.int64)
    rows = np.arange(n)
    for t in range(width - 1, -1, -1):  # back from each note's own last token
        live = t < lengths
        tags[live, t] = current[live]
        if t > 0:
            current = np.where(live, back[rows, t, current], current)
    return [tags[i, :size].tolist() for i, size in enumerate(lengths.tolist())]


def spoken(offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Indices of the tokens that cover characters (a stray special token says nothing)."""
    return [k for k, (s, e) in enumerate(offsets) if e > s]


def decode(
    text: str,
    offsets: Sequence[tuple[int, int]],
    probs: np.ndarray,
    labels: Sequence[str],
    tags: Sequence[int] | None = None,
) -> list[Entity]:
    """Token probabilities ``(T, L)`` to entities along the best valid BIO path (:func:`bio_paths`).

    ``tags``: that path for the :func:`spoken` tokens, when already decoded
    with other notes. An entity's confidence is the mean probability of its
    tokens' tags.
    """
    kept = spoken(offsets)
    if not kept:
        return []
    if tags is None:
        tags = bio_paths([probs[kept]], labels)[0]
    raw: list[tuple[int, int, str, list[float]]] = []
    current: tuple[int, int, str, list[float]] | None = None
    for k, tag in zip(kept, tags, strict=True):
        s, e = offsets[k]
        p = float(probs[k, tag])
        name = labels[tag]
        if name == "O":
            if current is not None:
                raw.append(current)
            current = None
            continue
        kind, label = name[:1], name[2:]
        if kind == "I" and current is not None and current[2] == label:
            current = (current[0], e, label, [*current[3], p])
        else:
            if current is not None:
                raw.append(current)
            current = (s, e, label, [p])
    if current is not None:
        raw.append(current)
    return _snap(text, raw)


def _snap(text: str, raw: list[tuple[int, int, str, list[float]]]) -> list[Entity]:
    """Widen spans that start or end inside a word to the whole word; drop overlaps (first wins)."""
    words = word_tokens(text)
    starts = [s for s, _ in words]
    out: list[Entity] = []
    for s, e, label, scores in raw:
        i = bisect.bisect_right(starts, s) - 1
        if i >= 0 and words[i][0] < s < words[i][1]:
            s = words[i][0]
        j = bisect.bisect_right(starts, e - 1) - 1
        if j >= 0 and words[j][0] < e < words[j][1]:
            e = words[j][1]
        conf = sum(scores) / len(scores)
        if out and s < out[-1].end:
            prev = out[-1]
            if prev.label == label:  # two pieces of one word-snapped entity
                merged_conf = (prev.confidence + conf) / 2
                out[-1] = Entity(prev.start, max(e, prev.end), label, "", merged_conf)
            continue
        out.append(Entity(s, e, label, "", conf))
    return [Entity(x.start, x.end, x.label, text[x.start : x.end], x.confidence) for x in out]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    ez = np.exp(z)
    out: np.ndarray = ez / ez.sum(axis=-1, keepdims=True)
    return out
