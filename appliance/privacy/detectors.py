"""Leakage detectors: each looks at a batch of candidate notes and returns, per note, a score and findings.

The interface is small so detectors can be added, removed or thresholded by
policy without touching the screen:

    class Detector(Protocol):
        name: str
        def needs(self, batch, ctx) -> set[int]: ...        # real notes to decrypt for confirmation
        def check(self, batch, ctx) -> list[Outcome]: ...   # one Outcome per candidate

``needs`` runs first for every detector, so the real notes a whole batch
needs are decrypted in one pass over the store (``ctx.real``); ``check``
then confirms against the actual tokens, so a hash collision never makes a
finding. Findings carry character spans in the *candidate* note only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from appliance.config import Policy
from appliance.privacy.ngram_index import _P, tokenize
from appliance.privacy.reference import (
    IDENT_MAX_TOKENS,
    STRONG,
    ReferenceIndex,
    gram_hashes,
    id_token_spans,
    id_token_words,
    max_similarity,
    phone_candidates,
)


@dataclass
class Candidate:
    """A note being screened, with its word tokens and their keyed hashes."""

    id: str
    text: str
    tokens: list[str]
    spans: list[tuple[int, int]]
    hashes: np.ndarray

    @classmethod
    def of(cls, note_id: str, text: str, index: ReferenceIndex) -> Candidate:
        tokens, spans = tokenize(text)
        return cls(note_id, text, tokens, spans, index.hasher.many(tokens))

    def char_span(self, first: int, length: int) -> tuple[int, int]:
        return self.spans[first][0], self.spans[first + length - 1][1]


@dataclass(frozen=True)
class Finding:
    detector: str
    reason: str
    score: float
    start: int  # character span in the candidate (0, 0 when the finding is about the whole note)
    end: int
    quarantine: bool
    record: int | None = None  # the real note involved (index number; never shown as text)
    kind: str = ""  # e.g. the identifier type


@dataclass
class Outcome:
    score: float | None = None
    findings: list[Finding] = field(default_factory=list)


@dataclass
class Context:
    index: ReferenceIndex
    policy: Policy
    real: dict[int, list[str]] = field(default_factory=dict)  # record number -> word tokens
    cache: dict[Any, Any] = field(default_factory=dict)  # per-batch scratch shared by detectors
    exclude: np.ndarray | None = None  # real notes not to compare with (bool per record)


class Detector(Protocol):
    name: str
    description: str

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]: ...

    def check(self, batch: Sequence[Candidate], ctx: Context) -> list[Outcome]: ...


# --------------------------------------------------------------------------- k-gram hits


@dataclass
class _Hits:
    """Rare k-gram hits of one batch: parallel arrays over (note, posting) pairs."""

    note: np.ndarray
    cpos: np.ndarray
    record: np.ndarray
    rpos: np.ndarray


def _gram_hits(batch: Sequence[Candidate], ctx: Context) -> _Hits:
    cached = ctx.cache.get("hits")
    if isinstance(cached, _Hits):
        return cached
    idx, k = ctx.index, ctx.index.k
    grams, notes, cpos = [], [], []
    for i, cand in enumerate(batch):
        g = gram_hashes(cand.hashes, k)
        grams.append(g)
        notes.append(np.full(len(g), i, dtype=np.int64))
        cpos.append(np.arange(len(g), dtype=np.int64))
    empty = np.empty(0, dtype=np.int64)
    if not grams or not len(idx.ukeys):
        ctx.cache["boilerplate"] = [np.zeros(len(x), dtype=bool) for x in grams]
        hits = _Hits(empty, empty, empty, empty)
        ctx.cache["hits"] = hits
        return hits
    g = np.concatenate(grams)
    note = np.concatenate(notes)
    cp = np.concatenate(cpos)
    pos = np.minimum(np.searchsorted(idx.ukeys, g), len(idx.ukeys) - 1)
    common = (idx.ukeys[pos] == g) & (idx.udf[pos] >= ctx.policy.leakage.boilerplate_patients)
    bounds = np.cumsum([0, *(len(x) for x in grams)])
    ctx.cache["boilerplate"] = [common[bounds[i] : bounds[i + 1]] for i in range(len(batch))]
    # A k-gram in the notes of at least ``boilerplate_patients`` distinct patients is
    # boilerplate: it anchors nothing (a run through it still counts when a rarer k-gram
    # anchors the run).
    rare = (idx.ukeys[pos] == g) & (idx.udf[pos] < ctx.policy.leakage.boilerplate_patients)
    pos, note, cp = pos[rare], note[rare], cp[rare]
    counts = np.minimum(idx.ucount[pos], 64)
    total = int(counts.sum())
    first = np.repeat(idx.ustart[pos], counts)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    post = first + within
    hits = _Hits(
        np.repeat(note, counts),
        np.repeat(cp, counts),
        idx.gram_records[post].astype(np.int64),
        idx.gram_positions[post].astype(np.int64),
    )
    if ctx.exclude is not None:  # calibration: held-out notes against training notes only
        keep = ~ctx.exclude[hits.record]
        hits = _Hits(hits.note[keep], hits.cpos[keep], hits.record[keep], hits.rpos[keep])
    ctx.cache["hits"] = hits
    return hits


def _alignments(
    batch: Sequence[Candidate], ctx: Context, top: int, limit: int, cap: int = 32
) -> list[list[tuple[int, list[tuple[int, int]]]]]:
    """Per note, the (record, [(candidate pos, real pos) of each hit]) diagonals worth confirming.

    The ``top`` diagonals with most rare k-gram hits (the longest shared runs),
    and every diagonal whose hits cover at least ``limit`` candidate tokens (up
    to ``cap`` of them, most covered first): the tokens of a run outside
    boilerplate k-grams all lie in its rare k-grams, which are all hits on its
    diagonal, so no run that can reach the limit is left out, however many
    longer template runs the note shares with other real notes.
    """
    key = ("align", top, limit, cap)
    cached = ctx.cache.get(key)
    if isinstance(cached, list):
        return cached
    h = _gram_hits(batch, ctx)
    k = ctx.index.k
    out: list[list[tuple[int, list[tuple[int, int]]]]] = [[] for _ in batch]
    if len(h.note):
        diag = h.rpos - h.cpos
        order = np.lexsort((h.cpos, diag, h.record, h.note))
        note, rec, dg, cp = h.note[order], h.record[order], diag[order], h.cpos[order]
        new = np.ones(len(note), dtype=bool)
        new[1:] = (note[1:] != note[:-1]) | (rec[1:] != rec[:-1]) | (dg[1:] != dg[:-1])
        starts = np.flatnonzero(new)
        # Tokens covered by each diagonal's hits: k per hit, less the overlap with the previous.
        gap = np.full(len(cp), k, dtype=np.int64)
        gap[1:] = np.minimum(cp[1:] - cp[:-1], k)
        gap[new] = k
        covered = np.add.reduceat(gap, starts)
        sizes = np.diff(np.append(starts, len(note)))
        groups: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for g, (s, size, cov) in enumerate(
            zip(starts.tolist(), sizes.tolist(), covered.tolist(), strict=True)
        ):
            groups[int(note[s])].append((size, cov, g))
        ends = np.append(starts[1:], len(note))
        for n, items in groups.items():
            by_hits = sorted(items, key=lambda t: (-t[0], t[2]))[:top]
            by_cover = sorted((t for t in items if t[1] >= limit), key=lambda t: (-t[1], t[2]))
            chosen = dict.fromkeys(t[2] for t in [*by_hits, *by_cover[:cap]])
            for g in chosen:
                s, e = int(starts[g]), int(ends[g])
                out[n].append(
                    (
                        int(rec[s]),
                        list(zip(cp[s:e].tolist(), (cp[s:e] + dg[s:e]).tolist(), strict=True)),
                    )
                )
    ctx.cache[key] = out
    return out


def _extend(cand: list[str], real: list[str], c: int, r: int, k: int) -> tuple[int, int] | None:
    """Confirm a k-gram anchor against the real tokens and extend it both ways: (start, length)."""
    if r < 0 or r + k > len(real) or cand[c : c + k] != real[r : r + k]:
        return None
    while c > 0 and r > 0 and cand[c - 1] == real[r - 1]:
        c, r = c - 1, r - 1
    n = 0
    while c + n < len(cand) and r + n < len(real) and cand[c + n] == real[r + n]:
        n += 1
    return c, n


class VerbatimDetector:
    name = "verbatim"
    description = "longest run of word tokens shared with a real note"

    def __init__(self, anchors: int = 4, limit: int | None = None) -> None:
        self.anchors = anchors
        self.limit = limit  # effective threshold (None: the policy's)

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]:
        limit = self.limit or ctx.policy.leakage.verbatim_max_tokens
        return {r for al in _alignments(batch, ctx, self.anchors, limit) for r, _ in al}

    def check(self, batch: Sequence[Candidate], ctx: Context) -> list[Outcome]:
        lk = ctx.policy.leakage
        limit = self.limit or lk.verbatim_max_tokens
        k = ctx.index.k
        out = []
        alignments = _alignments(batch, ctx, self.anchors, limit)
        boiler = ctx.cache.get("boilerplate") or [np.zeros(0, dtype=bool)] * len(batch)
        for cand, diagonals, common in zip(batch, alignments, boiler, strict=True):
            best: tuple[int, int, int, int] | None = None  # counted, length, start, record
            for record, hits in diagonals:
                done = -1  # candidate position the last confirmed run reached
                for c, r in hits:
                    if c < done:
                        continue  # inside a run already measured
                    span = _extend(cand.tokens, ctx.real[record], c, r, k)
                    if span is None:
                        continue
                    done = span[0] + span[1]
                    counted = span[1]
                    if not lk.verbatim_counts_boilerplate:
                        counted = _rare_tokens(common, span[0], span[1], k)
                    if best is None or (counted, span[1]) > best[:2]:
                        best = (counted, span[1], span[0], record)
            outcome = Outcome(score=float(best[0]) if best else 0.0)
            if best is not None and best[0] >= limit:
                start, end = cand.char_span(best[2], best[1])
                what = (
                    f"{best[1]} consecutive word tokens copied from a real note"
                    if best[0] == best[1]
                    else f"{best[1]} consecutive word tokens copied from a real note, "
                    f"{best[0]} of them outside boilerplate"
                )
                outcome.findings.append(
                    Finding(
                        self.name,
                        f"{what} (limit {limit})",
                        float(best[0]),
                        start,
                        end,
                        True,
                        best[3],
                    )
                )
            out.append(outcome)
        return out


def _rare_tokens(common: np.ndarray, start: int, length: int, k: int) -> int:
    """Tokens of the run ``[start, start + length)`` inside no boilerplate k-gram of the run.

    ``common[i]``: the candidate's k-gram at token ``i`` is in the notes of at
    least ``boilerplate_patients`` patients.
    """
    if length < k:
        return length
    covered = np.zeros(length, dtype=bool)
    for i in np.flatnonzero(common[start : start + length - k + 1]).tolist():
        covered[i : i + k] = True
    return int(length - covered.sum())


# --------------------------------------------------------------------------- LCS ratio


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, O(|a|·|b|/w))."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for tok in a:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


class LcsRatioDetector:
    name = "lcs_ratio"
    description = "longest common subsequence with the closest real notes, over the note's length"

    def __init__(self, closest: int = 3) -> None:
        self.closest = closest

    def _pairs(self, batch: Sequence[Candidate], ctx: Context) -> list[list[tuple[int, int]]]:
        """Per note: (record, diagonal) of the closest real notes (most rare k-gram hits)."""
        cached = ctx.cache.get("lcs_pairs")
        if isinstance(cached, list):
            return cached
        h = _gram_hits(batch, ctx)
        out: list[list[tuple[int, int]]] = [[] for _ in batch]
        if len(h.note):
            per: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
            for n, r, d in zip(
                h.note.tolist(), h.record.tolist(), (h.rpos - h.cpos).tolist(), strict=True
            ):
                per[n][r].append(d)
            for n, recs in per.items():
                best = sorted(recs.items(), key=lambda kv: -len(kv[1]))[: self.closest]
                out[n] = [(r, int(np.median(ds))) for r, ds in best]
        for n, near in ctx.cache.get("near_records", {}).items():
            have = {r for r, _ in out[n]}
            out[n] += [(r, 0) for r in near if r not in have]
        ctx.cache["lcs_pairs"] = out
        return out

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]:
        return {r for pairs in self._pairs(batch, ctx) for r, _ in pairs}

    def check(self, batch: Sequence[Candidate], ctx: Context) -> list[Outcome]:
        lk = ctx.policy.leakage
        out = []
        for cand, pairs in zip(batch, self._pairs(batch, ctx), strict=True):
            n = len(cand.tokens)
            if n < lk.lcs_min_tokens or not pairs:
                out.append(Outcome(score=0.0 if n >= lk.lcs_min_tokens else None))
                continue
            best, best_rec = 0.0, None
            for record, diag in pairs:
                real = ctx.real[record]
                # Only the part of the real note the candidate could be a copy of: a short
                # text is a subsequence of almost any long one.
                lo = max(0, diag - n // 2)
                window = real[lo : diag + n + n // 2] if len(real) > 2 * n else real
                ratio = lcs_length(cand.tokens, window) / n
                if ratio > best:
                    best, best_rec = ratio, record
            outcome = Outcome(score=best)
            if best >= lk.lcs_ratio_max:
                outcome.findings.append(
                    Finding(
                        self.name,
                        f"{best:.0%} of the note's words appear in order in one real note "
                        f"(limit {lk.lcs_ratio_max:.0%}): a copy with small edits",
                        best,
                        0,
                        0,
                        True,
                        best_rec,
                    )
                )
            out.append(outcome)
        return out


# --------------------------------------------------------------------------- near duplicates


class NearDuplicateDetector:
    name = "near_duplicate"
    description = "Jaccard similarity of word shingles with the nearest real note (MinHash/LSH)"

    def _candidates(self, batch: Sequence[Candidate], ctx: Context) -> list[dict[int, float]]:
        cached = ctx.cache.get("minhash")
        if isinstance(cached, list):
            return cached
        idx = ctx.index
        sh = idx.shingle
        sigs = np.stack(
            [
                idx.minhash(
                    gram_hashes(
                        c.hashes
                        if len(c.hashes) >= sh
                        else np.concatenate([c.hashes, np.zeros(sh - len(c.hashes), np.uint64)]),
                        sh,
                    )
                )
                for c in batch
            ]
        )
        bands = idx.band_hashes(sigs)
        out: list[dict[int, float]] = [{} for _ in batch]
        threshold = ctx.policy.leakage.near_duplicate_jaccard
        if idx.band_keys.shape[1]:
            found: list[set[int]] = [set() for _ in batch]
            for b in range(idx.bands):
                keys = idx.band_keys[b]
                lo = np.searchsorted(keys, bands[b], side="left")
                hi = np.searchsorted(keys, bands[b], side="right")
                for n in np.flatnonzero(hi > lo).tolist():
                    found[n].update(idx.band_records[b][lo[n] : hi[n]].tolist())
            sig32 = sigs.astype(np.uint32)
            for n, recs in enumerate(found):
                if not recs:
                    continue
                rl = np.fromiter(recs, dtype=np.int64, count=len(recs))
                if ctx.exclude is not None:
                    rl = rl[~ctx.exclude[rl]]
                est = (idx.signatures[rl] == sig32[n][None, :]).mean(axis=1)
                keep = est >= max(0.0, threshold - 0.2)
                out[n] = dict(zip(rl[keep].tolist(), est[keep].tolist(), strict=True))
        ctx.cache["minhash"] = out
        ctx.cache["near_records"] = {n: list(c) for n, c in enumerate(out) if c}
        return out

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]:
        return {r for c in self._candidates(batch, ctx) for r in c}

    def check(self, batch: Sequence[Candidate], ctx: Context) -> list[Outcome]:
        threshold = ctx.policy.leakage.near_duplicate_jaccard
        min_tokens = ctx.policy.leakage.lcs_min_tokens
        sh = ctx.index.shingle
        out = []
        for cand, cands in zip(batch, self._candidates(batch, ctx), strict=True):
            if len(cand.tokens) < min_tokens:
                # A short note ("Unremarkable.") is the same as many real ones and says
                # nothing about any; a copied run of it is the verbatim rule's.
                out.append(Outcome(score=None))
                continue
            mine = _shingles(cand.tokens, sh)
            best, best_rec = 0.0, None
            for record in cands:
                theirs = _shingles(ctx.real[record], sh)
                union = len(mine | theirs)
                j = len(mine & theirs) / union if union else 0.0
                if j > best:
                    best, best_rec = j, record
            outcome = Outcome(score=best)
            if best >= threshold:
                outcome.findings.append(
                    Finding(
                        self.name,
                        f"near-duplicate of a real note: {best:.0%} of word {sh}-shingles shared "
                        f"(limit {threshold:.0%})",
                        best,
                        0,
                        0,
                        True,
                        best_rec,
                    )
                )
            out.append(outcome)
        return out


def _shingles(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)}
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


# --------------------------------------------------------------------------- identifiers


class IdentifierDetector:
    name = "identifiers"
    description = (
        "real identifiers of records (deny-lists) and identifier-shaped strings (patterns)"
    )

    def __init__(self, policy: Policy) -> None:
        from appliance.identifiers.recognizers import build_recognizers

        self.recognizers = build_recognizers(policy.identifiers)

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]:
        return set()

    def _real_hits(self, batch: Sequence[Candidate], idx: ReferenceIndex) -> list[np.ndarray]:
        """Per note, rows of (start, end, type, record, strength), one per known real identifier match.

        Arrays, not tuples, and one lookup per identifier length for the whole
        batch: a common name part can be the identifier of thousands of
        records, and most notes match nothing at all. Rows come in identifier
        length, then token, then index entry order; phone numbers last.
        """
        words = [id_token_words(c.text) for c in batch]
        sizes = np.array([len(w) for w in words], dtype=np.int64)
        total = int(sizes.sum())
        parts: list[np.ndarray] = []  # rows of (note, token, length, entry)
        if total and len(idx.id_keys):
            th = idx.hasher.many([t for w in words for t in w])
            note_of = np.repeat(np.arange(len(batch), dtype=np.int64), sizes)
            # Notes repeat their words: look each distinct token up once.
            uniq, inverse = np.unique(th, return_inverse=True)
            inverse = inverse.reshape(-1)
            if len(idx.id_first):
                pos = np.minimum(np.searchsorted(idx.id_first, uniq), len(idx.id_first) - 1)
                first_ok = np.flatnonzero((idx.id_first[pos] == uniq)[inverse])
            else:
                first_ok = np.arange(total)
            for length in range(1, IDENT_MAX_TOKENS + 1):
                if length > 1:
                    # Only where a known identifier's first token starts, within one note.
                    starts = first_ok[first_ok + length - 1 < total]
                    starts = starts[note_of[starts + length - 1] == note_of[starts]]
                    if not len(starts):
                        break
                    g = np.zeros(len(starts), dtype=np.uint64)
                    with np.errstate(over="ignore"):
                        for j in range(length):
                            g = g * _P + th[starts + j]
                    lo = np.searchsorted(idx.id_keys, g, side="left")
                    hi = np.searchsorted(idx.id_keys, g, side="right")
                else:
                    starts = np.arange(total)
                    lo = np.searchsorted(idx.id_keys, uniq, side="left")[inverse]
                    hi = np.searchsorted(idx.id_keys, uniq, side="right")[inverse]
                found = np.flatnonzero(hi > lo)
                if not len(found):
                    continue
                # Every (match, index entry) pair, in match then entry order, without a Python loop.
                counts = (hi - lo)[found]
                begin = np.repeat(lo[found], counts)
                entry = begin + (
                    np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
                )
                tok = np.repeat(starts[found], counts)
                parts.append(
                    np.stack([note_of[tok], tok, np.full(len(tok), length), entry], axis=1)
                )
        phone_rows = self._phone_hits(batch, idx)
        out = [np.empty((0, 5), dtype=np.int64)] * len(batch)
        rows = np.concatenate(parts) if parts else np.empty((0, 4), dtype=np.int64)
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        bounds = np.searchsorted(rows[:, 0], np.arange(len(batch) + 1))
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for i, cand in enumerate(batch):
            chunk: list[np.ndarray] = []
            mine = rows[bounds[i] : bounds[i + 1]]
            if len(mine):
                spans = np.array(id_token_spans(cand.text), dtype=np.int64).reshape(-1, 2)
                tok = mine[:, 1] - offsets[i]
                entry = mine[:, 3]
                chunk.append(
                    np.stack(
                        [
                            spans[tok, 0],
                            spans[tok + mine[:, 2] - 1, 1],
                            idx.id_types[entry].astype(np.int64),
                            idx.id_records[entry].astype(np.int64),
                            idx.id_strength[entry].astype(np.int64),
                        ],
                        axis=1,
                    )
                )
            if i in phone_rows:
                chunk.append(phone_rows[i])
            if chunk:
                out[i] = np.concatenate(chunk)
        return out

    @staticmethod
    def _phone_hits(batch: Sequence[Candidate], idx: ReferenceIndex) -> dict[int, np.ndarray]:
        """Per note with any, rows of (start, end, type, record, strength) for real phone numbers."""
        found = [(i, s, e, d) for i, c in enumerate(batch) for s, e, d in phone_candidates(c.text)]
        if not found or not len(idx.id_keys):
            return {}
        h = np.array([idx.hasher.digits(d) for _, _, _, d in found], dtype=np.uint64)
        lo = np.searchsorted(idx.id_keys, h, side="left")
        hi = np.searchsorted(idx.id_keys, h, side="right")
        out: dict[int, list[np.ndarray]] = {}
        for k in np.flatnonzero(hi > lo).tolist():
            i, start, end, _ = found[k]
            e = np.arange(lo[k], hi[k])
            out.setdefault(i, []).append(
                np.stack(
                    [
                        np.full(len(e), start, dtype=np.int64),
                        np.full(len(e), end, dtype=np.int64),
                        idx.id_types[e].astype(np.int64),
                        idx.id_records[e].astype(np.int64),
                        idx.id_strength[e].astype(np.int64),
                    ],
                    axis=1,
                )
            )
        return {i: np.concatenate(v) for i, v in out.items()}

    def check(self, batch: Sequence[Candidate], ctx: Context) -> list[Outcome]:
        from appliance.identifiers.recognizers import find_identifiers

        idx = ctx.index
        quarantine_generic = ctx.policy.identifiers.quarantine_generic
        out = []
        for cand, hits in zip(batch, self._real_hits(batch, idx), strict=True):
            outcome = Outcome()
            person = idx.types.index("PERSON") if "PERSON" in idx.types else -1
            is_strong = hits[:, 4] == STRONG
            strong = hits[is_strong].tolist()
            # Distinct matched spans (few) index the many (span, record) hits.
            # (start, end) as one int64 key: same order as sorting the pairs, and a 1-D unique is fast.
            uniq_keys, span_of = np.unique((hits[:, 0] << 32) | hits[:, 1], return_inverse=True)
            span_of = span_of.reshape(-1)
            span_list = [(k >> 32, k & 0xFFFFFFFF) for k in uniq_keys.tolist()]
            upper = np.array([cand.text[a].isupper() for a, _ in span_list], dtype=bool)
            # A name part written in lower case is a word ("per", "will"), not a name.
            is_weak = ~is_strong & ~((hits[:, 2] == person) & ~upper[span_of])
            weak = hits[is_weak]
            weak_span = span_of[is_weak]
            value_ids: dict[str, int] = {}
            span_value = np.array(
                [
                    value_ids.setdefault(cand.text[a:b].casefold(), len(value_ids))
                    for a, b in span_list
                ],
                dtype=np.int64,
            )
            weak_by_record: dict[int, set[tuple[int, int, int]]] = {}
            if len(weak):
                # Records with at least two distinct weak values in this note, in order of first hit.
                # Distinct (record, value) pairs as one int64 key (records are ≥ -1).
                width = len(value_ids)
                pairs = np.unique((weak[:, 3] + 1) * width + span_value[weak_span])
                recs, n_values = np.unique(pairs // width - 1, return_counts=True)
                several = recs[n_values >= 2]
                if len(several):
                    rows = np.flatnonzero(np.isin(weak[:, 3], several))
                    for row in rows.tolist():
                        a, b, t, r, _ = weak[row].tolist()
                        weak_by_record.setdefault(r, set()).add((a, b, t))
            reported: set[tuple[int, int]] = set()
            for s, e, t, r, _ in strong:
                if (s, e) in reported:
                    continue
                reported.add((s, e))
                kind = idx.types[t]
                what = (
                    "a canary planted in the generator's training data"
                    if kind == "CANARY"
                    else f"a real {kind} of a record"
                )
                outcome.findings.append(
                    Finding(
                        self.name, f"replays {what}", 1.0, s, e, True, r if r >= 0 else None, kind
                    )
                )
            for r, spans in weak_by_record.items():
                distinct = {(s, e) for s, e, _ in spans}
                values = {cand.text[s:e].casefold() for s, e in distinct}
                if len(values) >= 2 and not distinct <= reported:
                    kinds = sorted({idx.types[t] for _, _, t in spans})
                    for s, e, t in sorted(spans):
                        if (s, e) not in reported:
                            reported.add((s, e))
                            outcome.findings.append(
                                Finding(
                                    self.name,
                                    f"{len(values)} quasi-identifiers ({', '.join(kinds)}) of the same real record together",
                                    1.0,
                                    s,
                                    e,
                                    True,
                                    r,
                                    idx.types[t],
                                )
                            )
            weak_single = {span_list[i] for i in np.unique(weak_span).tolist()} - reported
            for s, e in sorted(weak_single):
                outcome.findings.append(
                    Finding(
                        self.name,
                        "matches a common value of real records (name part or date)",
                        0.5,
                        s,
                        e,
                        False,
                        None,
                        "WEAK",
                    )
                )
                reported.add((s, e))
            for f in find_identifiers(cand.text, self.recognizers):
                if any(s < f.end and f.start < e for s, e in reported):
                    continue
                outcome.findings.append(
                    Finding(
                        self.name,
                        f"{f.type}-shaped string that is no real record's identifier",
                        f.score,
                        f.start,
                        f.end,
                        quarantine_generic,
                        None,
                        f.type,
                    )
                )
            outcome.score = float(sum(1 for f in outcome.findings if f.quarantine))
            out.append(outcome)
        return out


# --------------------------------------------------------------------------- distance to closest record


class DistanceToClosestDetector:
    name = "dcr"
    description = (
        "cosine similarity (TF-IDF) to the nearest training note, against held-out real notes"
    )

    def __init__(self, index: ReferenceIndex, policy: Policy) -> None:
        q = policy.leakage.dcr_quantile
        self.min_tokens = policy.leakage.dcr_min_tokens
        # Held-out notes as long as the notes this rule applies to (the rule's own population).
        self.baseline = index.holdout_baseline(self.min_tokens)
        n = len(self.baseline)
        self.rank, self.threshold = dcr_threshold(self.baseline, q)
        # The rank must exist among the held-out notes: (n + 1)(1 - q) ≤ n, and at least 20.
        self.min_holdout = max(20, math.ceil((1 - q) / q)) if q > 0 else 20
        self.enabled = q > 0 and n >= self.min_holdout and self.rank <= n
        train = np.flatnonzero(~index.holdout)
        rng = np.random.default_rng(0)
        size = min(len(train), int(index.holdout.sum()))
        self.train_sample = np.zeros(len(index.holdout), dtype=bool)
        if size:
            self.train_sample[rng.choice(train, size=size, replace=False)] = True
        self._index = index
        self._pool: np.ndarray | None = None
        self._bounds = (0, 0)

    def _blocks(self) -> tuple[np.ndarray, int, int]:
        """The real notes' vectors as three contiguous blocks: training sample, other training, held out.

        One pass over them per batch gives all three similarities, without
        copying the training notes out of the index for every batch.
        """
        if self._pool is None:
            holdout = self._index.holdout
            order = np.concatenate(
                [
                    np.flatnonzero(self.train_sample),
                    np.flatnonzero(~holdout & ~self.train_sample),
                    np.flatnonzero(holdout),
                ]
            )
            self._pool = self._index.vectors[order]
            n_sample = int(self.train_sample.sum())
            self._bounds = (n_sample, n_sample + int((~holdout & ~self.train_sample).sum()))
        return self._pool, *self._bounds

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]:
        return set()

    def check(self, batch: Sequence[Candidate], ctx: Context) -> list[Outcome]:
        if not self.enabled:
            return [Outcome() for _ in batch]
        idx = ctx.index
        vecs = idx.vectorize([c.hashes for c in batch])
        pool, a, b = self._blocks()
        sim_train = max_similarity(vecs, pool[:a])
        sim = np.maximum(sim_train, max_similarity(vecs, pool[a:b]))
        sim_hold = max_similarity(vecs, pool[b:])
        ctx.cache["dcr_closer_to_training"] = (sim_train > sim_hold).tolist()
        out = []
        for cand, s in zip(batch, sim.tolist(), strict=True):
            outcome = Outcome(score=float(s))
            # (1e-5: float noise of a cosine of 1, e.g. a one-word note equal to a real one)
            if s > self.threshold + 1e-5 and len(cand.tokens) >= self.min_tokens:
                outcome.findings.append(
                    Finding(
                        self.name,
                        f"closer to a training note (similarity {s:.3f}) than all but "
                        f"{len(self.baseline) - self.rank} of {len(self.baseline)} held-out real "
                        f"notes are (threshold {self.threshold:.3f}: at most "
                        f"{ctx.policy.leakage.dcr_quantile:.0%} of new real notes lie above it)",
                        float(s),
                        0,
                        0,
                        True,
                    )
                )
            out.append(outcome)
        return out


def dcr_threshold(baseline: np.ndarray, q: float) -> tuple[int, float]:
    """(rank, similarity): the ⌈(n + 1)(1 − q)⌉-th smallest held-out similarity.

    A synthetic note that is no copy is, as far as its distance to the
    training notes goes, one more held-out note: with this order statistic
    (the split-conformal rule) the chance that such a note lies above the
    threshold is at most ``q`` whatever the distribution, where the plain
    empirical quantile of a small holdout overshoots it (about 1.7 % instead
    of 1 % with 111 held-out notes). The rank is n + 1 (no threshold) when
    there are too few held-out notes for ``q``.
    """
    n = len(baseline)
    if q <= 0 or not n:
        return n + 1, math.inf
    rank = math.ceil((n + 1) * (1 - q) - 1e-9)
    if rank > n:
        return rank, math.inf
    return rank, float(np.sort(baseline)[rank - 1])


def default_detectors(index: ReferenceIndex, policy: Policy) -> list[Detector]:
    # Near duplicates first: the LCS detector also compares against its candidates.
    return [
        NearDuplicateDetector(),
        VerbatimDetector(),
        LcsRatioDetector(),
        IdentifierDetector(policy),
        DistanceToClosestDetector(index, policy),
    ]
