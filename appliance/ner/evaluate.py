"""``appliance ner evaluate``: entity-level P/R/F1 of a model on a gold set.

The same report for a trained PyTorch model folder and for a signed ONNX
package (verified first): seqeval's strict IOB2 entity scores on word-level
tags, plus exact and partial span matches per type (``metrics.score``).
A real-zone model or package is decrypted in memory with the workspace data
key (the workspace's, or one given with ``--data-key``).

A package that carries a lexicon is scored three ways on the same gold set:
the model alone, the lexicon alone and their union (the rule in
:mod:`appliance.ner.lexicon`); the report's main figures are those of the
chosen combination (``--combine``, default ``union`` for such a package).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from appliance.documents import Document, read_gold
from appliance.errors import ApplianceError, InputError, UsageError, WorkspaceError
from appliance.metrics import score, seqeval_report
from appliance.ner import zones
from appliance.ner.encoding import Entity
from appliance.ner.lexicon import (
    COMBINE,
    PackageLexicon,
    check_min_confidence,
    choose_combine,
    combine,
    load_package_lexicon,
)
from appliance.ner.model import is_model_folder
from appliance.ner.package import is_package, verify_package
from appliance.ner.runtime import Tagger, onnx_tagger, torch_tagger
from appliance.normalize.evaluate import span_code_scores
from appliance.normalize.linker import Normalizer, has_normalizer
from appliance.normalize.linker import load as load_normalizer
from appliance.security.keys import DataKey, load_data_key, load_public_key
from appliance.workspace import hashed


def load_tagger(
    model: Path, *, public_key: Any = None, device: str = "auto", key: DataKey | None = None
) -> Tagger:
    """A package folder (verified with ``public_key``), a model folder, or ``models/ner/<name>``.

    ``key``: the workspace data key, for a real-zone (encrypted) model or package.
    """

    if is_package(model) or (model / "manifest.sig").exists():
        if public_key is None:
            raise UsageError(
                f"{model}: a package is verified before use; give its trusted public key"
            )
        verify_package(model, public_key)
        return onnx_tagger(model, device=device, key=key)
    if is_model_folder(model):
        return torch_tagger(model, device=device, key=key)
    if is_model_folder(model / "model"):
        return torch_tagger(model / "model", device=device, key=key)
    raise InputError(
        f"{model}: neither a model package (model.onnx, manifest.json) nor a trained model folder"
    )


def _scores(
    gold_docs: Sequence[Document], predictions: Sequence[Sequence[Entity]]
) -> dict[str, Any]:
    pred_docs = [
        Document(d.id, d.text, [e.span() for e in p])
        for d, p in zip(gold_docs, predictions, strict=True)
    ]
    return {"seqeval": seqeval_report(gold_docs, pred_docs), "spans": score(gold_docs, pred_docs)}


def evaluate(
    model_or_tagger: Path | Tagger,
    gold_docs: Sequence[Document],
    *,
    public_key: Any = None,
    batch_size: int = 32,
    device: str = "auto",
    key: DataKey | None = None,
    combine_mode: str | None = None,
    min_confidence: float | None = None,
    lexicon: PackageLexicon | None = None,
    normalizer: Normalizer | None = None,
) -> dict[str, Any]:
    """Predict every gold document and score: ``{"model", "documents", "seqeval", "spans", ...}``.

    A package's lexicon (loaded from the package, or ``lexicon`` with a
    tagger) adds ``comparison``: the scores of ``model``, ``lexicon`` and
    ``union`` on the same documents; ``seqeval`` and ``spans`` are those of
    ``combine_mode`` (default: ``union`` with a lexicon, else ``model``).
    A package's normalizer (or ``normalizer``) adds ``codes``: end-to-end
    span + code scores of those entities, when the gold spans carry codes.
    """

    if not gold_docs:
        raise InputError("the gold set holds no documents")
    check_min_confidence(min_confidence)
    if isinstance(model_or_tagger, Tagger):
        tagger, where = model_or_tagger, "the model"
    else:
        where = str(model_or_tagger)
        tagger = load_tagger(Path(model_or_tagger), public_key=public_key, device=device, key=key)
        if tagger.info.get("backend") != "onnx" and combine_mode in ("lexicon", "union"):
            raise UsageError(
                f"--combine {combine_mode}: {where} is a trained model folder, which carries no "
                "lexicon; evaluate its package (appliance export) or use --combine model"
            )
        if lexicon is None and tagger.info.get("backend") == "onnx":
            lexicon = load_package_lexicon(Path(model_or_tagger), key)
        if normalizer is None and has_normalizer(Path(model_or_tagger)):
            normalizer = load_normalizer(Path(model_or_tagger), key=key)
    mode, default_min = choose_combine(combine_mode, lexicon.info if lexicon else None, where)
    threshold = default_min if min_confidence is None else min_confidence
    texts = [d.text for d in gold_docs]
    model_predictions = tagger.predict(texts, batch_size=batch_size)
    gold_types = sorted({s.label for d in gold_docs for s in d.spans})
    model_types = [label[2:] for label in tagger.labels if label.startswith("B-")]
    report: dict[str, Any] = {
        "model": {k: v for k, v in tagger.info.items()},
        "documents": len(gold_docs),
        "gold_types": gold_types,
        "model_types": model_types,
        "types_not_in_model": sorted(set(gold_types) - set(model_types)),
        "combine": mode,
    }
    coded = normalizer is not None and any(s.code for d in gold_docs for s in d.spans)

    def codes(predictions: Sequence[Sequence[Entity]]) -> dict[str, Any]:
        assert normalizer is not None
        spans = [[(e.start, e.end, e.label) for e in p] for p in predictions]
        return {"codes": span_code_scores(normalizer, gold_docs, spans)}

    if lexicon is None:
        return {
            **report,
            **_scores(gold_docs, model_predictions),
            **(codes(model_predictions) if coded else {}),
        }
    matches = lexicon.match(texts)
    combined = {
        m: [combine(p, s, m, threshold) for p, s in zip(model_predictions, matches, strict=True)]
        for m in COMBINE
    }
    comparison = {m: _scores(gold_docs, combined[m]) for m in COMBINE}
    info = lexicon.info
    return {
        **report,
        "min_confidence": threshold,
        "lexicon": {k: info.get(k) for k in ("entries", "terms", "labels", "origin")},
        **comparison[mode],
        **(codes(combined[mode]) if coded else {}),
        "comparison": comparison,
    }


def model_key(ws: Any, model: Path, data_key: Path | None) -> DataKey | None:
    """The data key a real-zone ``model`` needs: the key file given, else the workspace's (None if neither)."""
    folders = [model, model / "model"]
    if not any(zones.needs_key(f) for f in folders):
        return None
    if data_key is not None:
        return load_data_key(data_key)
    return ws.data_key if ws is not None else None


def parse_label_map(pairs: Sequence[str]) -> dict[str, str] | None:
    """``["Disease=DIAGNOSIS"]`` → ``{"Disease": "DIAGNOSIS"}`` (None when empty)."""
    if not pairs:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise UsageError(
                f"--label {pair!r}: expected GOLD_TYPE=MODEL_TYPE, e.g. Disease=DIAGNOSIS"
            )
        out[source.strip()] = target.strip()
    return out


def run(
    ws: Any,
    *,
    gold: Path,
    model: Path | None = None,
    name: str = "default",
    gold_format: str = "auto",
    labels: Mapping[str, str] | None = None,
    public_key: Path | None = None,
    device: str = "auto",
    data_key: Path | None = None,
    combine_mode: str | None = None,
    min_confidence: float | None = None,
) -> dict[str, Any]:
    """Evaluate a package or model on a gold file; ``ws`` may be None when ``model`` and ``public_key`` are given.

    A real-zone model needs the data key: ``data_key`` (a key file), else the workspace's.
    """

    if model is None:
        if ws is None:
            raise UsageError("--model is required outside a workspace")

        root = ws.ner_model_dir(name)
        model = (
            root / "package" if (root / "package" / "manifest.json").exists() else root / "model"
        )
        if not model.exists():
            raise WorkspaceError(
                f"{root}: no trained NER model named '{name}'; run `appliance ner train`"
            )
    key_path = public_key or (ws.signing_key_path.with_suffix(".pub") if ws is not None else None)
    args = {
        "gold": str(gold),
        "model": str(model),
        "format": gold_format,
        "labels": dict(labels or {}),
        "combine": combine_mode,
        "min_confidence": min_confidence,
    }
    try:
        docs = read_gold(gold, gold_format, labels)
        report = evaluate(
            model,
            docs,
            public_key=load_public_key(key_path) if key_path else None,
            device=device,
            key=model_key(ws, Path(model), data_key),
            combine_mode=combine_mode,
            min_confidence=min_confidence,
        )
    except ApplianceError as exc:
        if ws is not None:
            ws.log("ner evaluate", args=args, result=f"error: {exc.message}")
        raise
    if ws is not None:
        micro = report["seqeval"].get("micro", {})
        ws.log(
            "ner evaluate",
            args=args,
            inputs=[hashed(gold, ws.root), hashed(model, ws.root)],
            details={
                "documents": report["documents"],
                "f1": micro.get("f1"),
                "combine": report["combine"],
                "f1_by_combine": {
                    m: r["seqeval"].get("micro", {}).get("f1")
                    for m, r in (report.get("comparison") or {}).items()
                }
                or None,
            },
        )
    return report
