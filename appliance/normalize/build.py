"""Build a normalizer: terminology + language rules (+ annotated synthetic notes, + a local encoder)."""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.annotate.lexicon import LexiconRules
from appliance.documents import Document
from appliance.normalize.encoder import EncoderSettings
from appliance.normalize.linker import Normalizer, NormalizerSettings, SurfaceKeys
from appliance.normalize.mentions import note_mentions, rule_variants, training_pairs
from appliance.normalize.terminology import Terminology


@dataclass
class Built:
    normalizer: Normalizer
    encoder_bytes: bytes | None
    tokenizer_json: str | None
    seconds: float

    def save(self, folder: Path) -> None:
        self.normalizer.save(folder, self.encoder_bytes, self.tokenizer_json)


def build(
    terminology: Terminology,
    rules: LexiconRules,
    *,
    docs: Sequence[Document] = (),
    base: Path | None = None,
    settings: NormalizerSettings | None = None,
    encoder_settings: EncoderSettings | None = None,
    extra_mentions: Sequence[tuple[str, str]] = (),
    progress: Callable[[int, int, float], None] | None = None,
    calibrate: bool = True,
) -> Built:
    """A normalizer over ``terminology``; with ``base``, an encoder fine-tuned on synonym pairs.

    ``docs`` are annotated synthetic notes (their mentions train the encoder
    and mark concepts as seen); ``extra_mentions`` are ``(mention, code)``
    pairs from elsewhere (an LLM), used the same way. With ``calibrate``, the
    NIL threshold is chosen by :func:`calibrate_nil` (else ``settings``' is kept).
    """
    started = time.monotonic()
    settings = settings or NormalizerSettings()
    keys = SurfaceKeys(rules)
    mentions = note_mentions(docs, terminology, keys) if docs else []
    known = set(terminology.by_code)
    extra = [(t, c) for t, c in extra_mentions if c in known and t.strip()]
    counts = Counter(c for _, c in mentions + extra)
    sparse = Normalizer.fit_sparse(terminology)
    info: dict[str, Any] = {
        "mention_sources": {"notes": len(mentions), "llm": len(extra), "documents": len(docs)}
    }
    encoder = embeddings = None
    blob = tok_json = None
    if base is not None:
        from appliance.normalize import encoder as enc

        es = encoder_settings or EncoderSettings()
        pairs = training_pairs(terminology, mentions + extra, rules.stop_words, es.seed)
        if es.steps > 0:
            pooled, tokenizer, training = enc.train(base, pairs, es, progress)
        else:
            pooled, tokenizer = enc.untrained(base)
            training = {"steps": 0, "pairs": len(pairs)}
        names = [n for c in terminology.concepts for n in c.names]
        blob = enc.export_onnx(pooled, enc.pad_id(tokenizer))
        parity = enc.check_parity(pooled, blob, tokenizer, names[:64])
        encoder = enc.OnnxEncoder(blob, tokenizer, "cpu")
        embeddings = encoder(names)
        tok_json = tokenizer.to_str()
        info.update({"base": str(base), "training": training, "parity": parity})
    normalizer = Normalizer(
        terminology, rules, settings, sparse, encoder, embeddings, dict(counts), info
    )
    if calibrate:
        threshold, calibration = calibrate_nil(normalizer)
        normalizer.settings = dataclasses.replace(normalizer.settings, nil_threshold=threshold)
        normalizer.info["nil_calibration"] = calibration
    return Built(normalizer, blob, tok_json, time.monotonic() - started)


def calibrate_nil(
    normalizer: Normalizer, samples: int = 400, seed: int = 0
) -> tuple[float, dict[str, Any]]:
    """A NIL threshold chosen on the terminology itself, with no label.

    For a seeded sample of concepts, a rule-made variant of the name (one no
    name of the terminology equals, so the similarity step decides) is
    linked twice: with every concept present, where the right answer is that
    concept, and with that concept left out, where the right answer is NIL,
    as for a mention of a concept the terminology lacks. The threshold is
    the one that gets most of those answers right (a wrong concept above it
    counts as wrong; below it, as a NIL).
    """
    rng = random.Random(seed)
    concepts = normalizer.terminology.concepts
    queries: list[tuple[str, str | None]] = []
    owners: list[int] = []
    stop = normalizer.rules.stop_words
    for i in rng.sample(range(len(concepts)), min(samples, len(concepts))):
        c = concepts[i]
        # Only forms the similarity step decides: exact and variant keys answer the rest.
        forms = [v for v in rule_variants(c.name, rng, stop) if normalizer._keyed(v, None) is None]
        if forms:
            queries.append((rng.choice(forms), c.label))
            owners.append(i)
    if len(queries) < 20 or len(concepts) < 3:
        default = NormalizerSettings().nil_threshold
        return default, {"queries": len(queries), "threshold": default, "chosen": "default"}
    present_ok, present_score, absent_score = [], [], []
    for lo in range(0, len(queries), 256):
        scores = normalizer._similarity(queries[lo : lo + 256])
        for row, i in enumerate(owners[lo : lo + 256]):
            s = scores[row]
            present_ok.append(int(np.argmax(s)) == i)
            present_score.append(float(s.max()))
            s = s.copy()
            s[i] = -1.0
            absent_score.append(float(s.max()))
    ok = np.asarray(present_ok)
    ps, ab = np.asarray(present_score), np.asarray(absent_score)
    grid = np.round(np.arange(0.20, 0.96, 0.01), 2)
    right = [int(np.sum(ok & (ps >= t)) + np.sum(~ok & (ps < t)) + np.sum(ab < t)) for t in grid]
    best = int(np.argmax(right))
    threshold = float(grid[best])
    return threshold, {
        "queries": len(queries),
        "threshold": threshold,
        "chosen": "held-out concepts of the terminology",
        "right": round(right[best] / (2 * len(queries)), 4),
        "present_top1": round(float(ok.mean()), 4),
    }
