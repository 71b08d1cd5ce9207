"""What a trained NER model says about itself: the fingerprint of its run and its ``ner.json``.

``ner.json`` holds what inference needs (labels, special tokens, window
settings) and what an auditor asks (base encoder, zone, data hashes,
settings, training history, dev metrics).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.documents import Document
from appliance.ner.encoding import Special
from appliance.ner.loop import LoopState, Plan
from appliance.ner.settings import NerSettings
from appliance.ner.zones import REAL, zone_of
from appliance.security.audit import utc_now
from appliance.workspace import hashed


def doc_hash(docs: Sequence[Document]) -> str:
    """A hash of the notes and their labels (confidences and undecided ranges where there are any)."""
    h = hashlib.sha256()
    for d in docs:
        spans = [(s.start, s.end, s.label) for s in d.spans]
        item: list[Any] = [d.id, d.text, spans]
        # Only notes with partial labels add these, so the hash of plain labels is unchanged.
        if any(s.confidence != 1.0 for s in d.spans):
            item.append([round(s.confidence, 6) for s in d.spans])
        if d.uncertain:
            item.append([(u.start, u.end) for u in d.uncertain])
        h.update(json.dumps(item, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def fingerprint(
    settings: NerSettings,
    base: Path | None,
    train_docs: Sequence[Document],
    dev_docs: Sequence[Document],
    types: list[str],
    mlm_texts: list[str] | None,
) -> str:
    """A hash of everything the run depends on: a checkpoint resumes only a run with the same one."""
    return hashlib.sha256(
        json.dumps(
            {
                "settings": settings.as_dict(),
                "base": hashed(base)["sha256"] if base is not None else "scratch",
                "train": doc_hash(train_docs),
                "dev": doc_hash(dev_docs),
                "types": types,
                "mlm": hashlib.sha256("\0".join(mlm_texts or []).encode()).hexdigest(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()


@dataclass(frozen=True)
class Windowing:
    """How notes are cut for the model: its special tokens, window length and overlap."""

    special: Special
    max_length: int
    stride: int


def model_meta(
    *,
    labels: list[str],
    types: list[str],
    windowing: Windowing,
    base: Path | None,
    model: Any,
    parameters: int,
    settings: NerSettings,
    mlm_texts: list[str] | None,
    zone_reasons: Sequence[str],
    data_info: dict[str, Any] | None,
    train_docs: Sequence[Document],
    dev_docs: Sequence[Document],
    train_windows: int,
    loop: LoopState,
    plan: Plan,
    device: str,
    seconds: float,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """The ``ner.json`` of a trained model (see :mod:`appliance.ner.model`).

    In the real zone the ids of the development notes are replaced by their
    hash: a note id may itself identify a patient.
    """
    zone = zone_of(zone_reasons)
    data = dict(data_info or {})
    dev = data.get("dev")
    if zone == REAL and isinstance(dev, dict) and "ids" in dev:
        ids = dev["ids"]
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
        data["dev"] = {**{k: v for k, v in dev.items() if k != "ids"}, "ids_sha256": digest}
    return {
        "format": 1,
        "appliance_version": __version__,
        "created": utc_now(),
        "labels": labels,
        "types": types,
        "special": windowing.special.as_dict(),
        "max_length": windowing.max_length,
        "stride": windowing.stride,
        "base": str(base) if base is not None else "scratch",
        "base_sha256": hashed(base)["sha256"] if base is not None else None,
        "architecture": model.config.model_type,
        "parameters": parameters,
        "zone": zone,
        "zone_reasons": list(zone_reasons),
        "mlm_on_records": {"steps": settings.mlm_steps, "notes": len(mlm_texts)}
        if mlm_texts
        else None,
        "settings": settings.as_dict(),
        "data": {
            **data,
            "train_notes": len(train_docs),
            "dev_notes": len(dev_docs),
            "train_windows": train_windows,
            "train_sha256": doc_hash(train_docs),
            "dev_sha256": doc_hash(dev_docs),
        },
        "training": {
            "steps": loop.step,
            "max_steps": plan.total,
            "best_step": loop.best_step,
            "stopped_early": loop.stopped_early,
            "device": device,
            "seconds": round(seconds, 2),
            "learning_rate": plan.lr,
            "history": loop.history,
        },
        "metrics": {"dev": metrics} if metrics else {},
    }
