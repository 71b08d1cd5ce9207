"""Build a normalizer: terminology + language rules (+ annotated synthetic notes, + a local encoder)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.annotate.lexicon import LexiconRules
from appliance.documents import Document
from appliance.normalize.encoder import EncoderSettings
from appliance.normalize.linker import Normalizer, NormalizerSettings, SurfaceKeys
from appliance.normalize.mentions import note_mentions, training_pairs
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
) -> Built:
    """A normalizer over ``terminology``; with ``base``, an encoder fine-tuned on synonym pairs.

    ``docs`` are annotated synthetic notes (their mentions train the encoder
    and mark concepts as seen); ``extra_mentions`` are ``(mention, code)``
    pairs from elsewhere (an LLM), used the same way.
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
    return Built(normalizer, blob, tok_json, time.monotonic() - started)
