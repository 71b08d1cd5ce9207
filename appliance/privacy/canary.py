"""Canary exposure (Carlini et al., "The Secret Sharer"): does the generator memorize rare secrets?

``generator train --canaries K`` inserts K random secrets (a fixed sentence
with 9 random digits), each repeated several times, into the training
notes. Here each canary's log-likelihood under the generator is ranked
among ``candidates`` random secrets of the same format; exposure is
``log2(candidates + 1) - log2(rank)``: about 0 bits when the true secret is
no more likely than a random one, the maximum when it ranks first.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from appliance.generator.data import CANARY_DIGITS, CANARY_FORMAT
from appliance.generator.tokenizer import EOS

CANDIDATES = 2047


def _nll(gen: Any, texts: Sequence[str], batch: int = 256) -> list[float]:
    import torch

    tok = gen.tokenizer
    eos = tok.token_to_id(EOS)
    out: list[float] = []
    model = gen.model
    with torch.no_grad():
        for s in range(0, len(texts), batch):
            ids = [[eos, *tok.encode(t).ids] for t in texts[s : s + batch]]
            width = max(len(i) for i in ids)
            x = torch.full((len(ids), width), eos, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.bool)
            for r, seq in enumerate(ids):
                x[r, : len(seq)] = torch.tensor(seq)
                mask[r, 1 : len(seq)] = True
            logits = model(x).logits[:, :-1].float()
            logp = torch.log_softmax(logits, dim=-1)
            target = x[:, 1:]
            token_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            out += (-(token_lp * mask[:, 1:]).sum(dim=1)).tolist()
    return out


def exposures(
    gen: Any, canaries: Sequence[str], candidates: int = CANDIDATES, seed: int = 0
) -> list[dict[str, Any]]:
    """Exposure in bits of each canary sentence (texts as the generator was trained on them)."""

    rng = random.Random(seed)
    results = []
    repeats = {c["text"]: c.get("repeats") for c in gen.meta.get("canaries", [])}
    for text in canaries:
        others = [
            CANARY_FORMAT.format(
                secret=" ".join(str(rng.randrange(10)) for _ in range(CANARY_DIGITS))
            )
            for _ in range(candidates)
        ]
        scores = _nll(gen, [text, *others])
        mine = scores[0]
        rank = 1 + sum(1 for s in scores[1:] if s < mine)
        results.append(
            {
                "repeats": repeats.get(text),
                "rank": rank,
                "candidates": candidates + 1,
                "exposure_bits": round(math.log2(candidates + 1) - math.log2(rank), 2),
            }
        )
    return results
