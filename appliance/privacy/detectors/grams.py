"""Rare k-gram hits of a batch against the reference index, shared by the verbatim and LCS detectors.

One table per batch (kept in ``ctx.cache``): every (candidate k-gram,
posting) pair whose k-gram is in the notes of fewer than
``boilerplate_patients`` patients, and per candidate which of its k-grams
are boilerplate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance.privacy.detectors.base import Candidate, Context
from appliance.privacy.reference import gram_hashes


@dataclass
class Hits:
    """Rare k-gram hits of one batch: parallel arrays over (note, posting) pairs."""

    note: np.ndarray
    cpos: np.ndarray
    record: np.ndarray
    rpos: np.ndarray


def gram_hits(batch: Sequence[Candidate], ctx: Context) -> Hits:
    cached = ctx.cache.get("hits")
    if isinstance(cached, Hits):
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
        hits = Hits(empty, empty, empty, empty)
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
    hits = Hits(
        np.repeat(note, counts),
        np.repeat(cp, counts),
        idx.gram_records[post].astype(np.int64),
        idx.gram_positions[post].astype(np.int64),
    )
    if ctx.exclude is not None:  # calibration: held-out notes against training notes only
        keep = ~ctx.exclude[hits.record]
        hits = Hits(hits.note[keep], hits.cpos[keep], hits.record[keep], hits.rpos[keep])
    ctx.cache["hits"] = hits
    return hits
