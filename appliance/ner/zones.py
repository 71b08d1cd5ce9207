"""Which zone an NER model belongs to, and why; how its real-zone files are encrypted.

Zone ``real``: the model may hold real text or what was learned from it (a
tokenizer vocabulary of real words, weights fitted on real notes). Zone
``screened``: everything it saw came from the leakage screen's release. The
zone is worked out from *every* input of a training run; any real input makes
the model real, and each one is recorded as a reason:

* training notes that are not the annotations of a screened release (a gold
  file given with ``--train``, which is assumed to hold real notes);
* the WordPiece tokenizer of a scratch model, whose vocabulary is learned from
  those notes (and from the records, with ``--mlm-on-records``);
* a development split taken from such notes (it is kept with the model);
* masked-language-model pretraining on the record store (``--mlm-on-records``);
* a base encoder folder that is itself a real-zone model.

A development gold file given with ``--dev`` only scores checkpoints (early
stopping, the int8 check) and no text of it is kept; it is recorded in the
manifest but does not by itself make the model real.

A real-zone model folder and package keep every file that can hold real text
(weights, tokenizer, development notes, checkpoints, the package's lexicon)
encrypted under the workspace data key
(:func:`appliance.security.crypto.write_encrypted`, AEAD labels below); they
are decrypted only in memory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance.errors import KeyRequired
from appliance.security.keys import DataKey

REAL = "real"
SCREENED = "screened"

ENC = ".enc"
DEV_FILE = "dev.jsonl"  # the development split kept beside a screened model
DEV_FILE_ENC = "dev.jsonl.enc"  # the same, encrypted, beside a real-zone model
# AEAD labels (bound with the file name): a file moved to another role does not decrypt.
LABEL_WEIGHTS = "ner/model/weights"
LABEL_TOKENIZER = "ner/model/tokenizer"
LABEL_DEV = "ner/dev"
LABEL_PACKAGE_MODEL = "ner/package/model"
LABEL_PACKAGE_TOKENIZER = "ner/package/tokenizer"
LABEL_PACKAGE_LEXICON = "ner/package/lexicon"
LABEL_PACKAGE_LEXICON_SETTINGS = "ner/package/lexicon-settings"


def zone_of(reasons: Sequence[str]) -> str:
    return REAL if reasons else SCREENED


def _short(sha256: str | None) -> str:
    return f"sha256 {sha256}" if sha256 else "sha256 unknown"


def base_reasons(base: Path | None) -> list[str]:
    """Why a base encoder folder is real-zone (empty when it is not, or is ``scratch``)."""
    if base is None or not base.is_dir():
        return []
    for name in ("ner.json", "manifest.json"):
        try:
            meta = json.loads((base / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("zone") == REAL:
            return [f"encoder initialised from the real-zone model {base}"]
    if any(p.name.endswith(ENC) for p in base.iterdir()):
        return [f"encoder initialised from {base}, which holds encrypted (real-zone) files"]
    return []


def training_reasons(
    source: dict[str, Any] | None,
    dev: dict[str, Any] | None,
    base: Path | None,
    mlm_notes: int = 0,
    store_sha256: str | None = None,
) -> list[str]:
    """Every real input of a training run, one sentence each (none: a screened model).

    ``source``/``dev``: the run's ``data.source`` and ``data.dev`` entries
    (``kind`` "annotations" or "gold file", "split of the training notes");
    no ``source`` at all means documents handed to ``train_model`` directly,
    whose caller vouches for them (benchmarks on public corpora).
    """
    reasons: list[str] = []
    real_notes = bool(source) and (source or {}).get("kind") != "annotations"
    what = ""
    if real_notes:
        assert source is not None
        name = Path(str(source.get("path", "gold notes"))).name
        what = f"gold notes {name}"
        reasons.append(f"trained on {what} ({_short(source.get('sha256'))})")
    if mlm_notes:
        reasons.append(
            f"encoder pretrained by masked language modelling on {mlm_notes} real notes "
            f"of the record store (store.json {_short(store_sha256)})"
        )
    if base is None and (real_notes or mlm_notes):
        learned = " and ".join(x for x in (what, "the real records" if mlm_notes else "") if x)
        reasons.append(
            f"WordPiece tokenizer learned from {learned} (its vocabulary holds their words)"
        )
    if real_notes and (dev or {}).get("kind") == "split of the training notes":
        reasons.append(f"development notes split from {what} (kept encrypted as dev.jsonl.enc)")
    reasons += base_reasons(base)
    return reasons


def _ner_json(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / "ner.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def is_encrypted(folder: Path) -> bool:
    """Whether a model folder or package keeps its files encrypted (its ``ner.json`` says so)."""
    return bool(_ner_json(folder).get("encrypted"))


def needs_key(folder: Path) -> bool:
    """Whether using (or exporting) the model folder or package needs the workspace key."""
    meta = _ner_json(folder)
    return bool(meta.get("encrypted")) or meta.get("zone") == REAL


def require_key(folder: Path, meta: dict[str, Any], key: DataKey | None) -> DataKey:
    """``key``, or a one-line KeyRequired naming the key the real-zone ``folder`` needs."""
    if key is not None:
        return key
    key_id = (
        (meta.get("encrypted") or {}).get("key_id", "?")
        if isinstance(meta.get("encrypted"), dict)
        else "?"
    )
    raise KeyRequired(
        f"{folder}: a real-zone model, encrypted under workspace key {key_id}; run it inside "
        "that workspace (-w WORKSPACE) or pass its data key (--data-key FILE)"
    )
