"""Identifiers: real identifiers of records replayed in a synthetic note, and identifier-shaped strings.

Known real identifiers (and the variants notes write them in, canaries
included) are keyed hashes in the reference index, looked up per token
sequence and, for phone numbers, per digit string
(:func:`appliance.identifiers.phones.phone_candidates`, the scan the index
was built with). A strong one (an ID number, a phone, a full name)
quarantines by itself; weak ones (a name part, a birth date) only two of one
record together. The offline pattern recognizers then report
identifier-shaped strings that are no real record's (quarantined when the
policy's ``quarantine_generic`` says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from appliance.config import Policy
from appliance.identifiers.phones import phone_candidates
from appliance.privacy.detectors.base import Candidate, Context, Detector, Finding, Outcome
from appliance.privacy.reference import (
    STRONG,
    IndexView,
    ReferenceIndex,
    id_token_spans,
    id_token_words,
    identifier_sequences,
)


class IdentifierDetector(Detector):
    name = "identifiers"
    description = (
        "real identifiers of records (deny-lists) and identifier-shaped strings (patterns)"
    )

    def __init__(self, policy: Policy) -> None:
        # presidio takes seconds to import: only when a screen builds its detectors.
        from appliance.identifiers.recognizers import build_recognizers

        self.recognizers = build_recognizers(policy.identifiers)

    def needs(self, batch: Sequence[Candidate], ctx: Context) -> set[int]:
        return set()

    def _real_hits(self, batch: Sequence[Candidate], idx: IndexView) -> list[np.ndarray]:
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
            for length, starts, g in identifier_sequences(th, note_of, idx.id_first):
                if length == 1:
                    # Notes repeat their words: look each distinct token up once.
                    uniq, inverse = np.unique(g, return_inverse=True)
                    inverse = inverse.reshape(-1)
                    lo = np.searchsorted(idx.id_keys, uniq, side="left")[inverse]
                    hi = np.searchsorted(idx.id_keys, uniq, side="right")[inverse]
                else:
                    lo = np.searchsorted(idx.id_keys, g, side="left")
                    hi = np.searchsorted(idx.id_keys, g, side="right")
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
    def _phone_hits(batch: Sequence[Candidate], idx: IndexView) -> dict[int, np.ndarray]:
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
        from appliance.identifiers.recognizers import find_identifiers  # (loaded by __init__)

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

    @classmethod
    def create(cls, index: ReferenceIndex, policy: Policy) -> IdentifierDetector:
        return cls(policy)

    @classmethod
    def threshold_text(cls, report: dict[str, Any]) -> str:
        return "any real identifier; 2 quasi-identifiers of one record"
