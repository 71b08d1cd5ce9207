"""``appliance export``: a signed ONNX package of a trained NER model.

The model is exported with torch's ONNX exporter (dynamic batch and sequence
axes), then run side by side with PyTorch on the same padded windows of
sample notes: the export fails unless the largest logit difference is within
tolerance and every predicted label is identical. ``int8`` quantizes it
(fused graph, smoothing calibrated on synthetic notes, int8 weights; see
:mod:`appliance.ner.quantize`) and keeps the int8 model only when its entity
F1 on the development set is within the policy's limit of the fp32 model's;
otherwise the package stays fp32 and says so.

The ONNX model is built in memory. A real-zone model (see
:mod:`appliance.ner.zones`) gives a real-zone package: ``model.onnx.enc`` and
``tokenizer.json.enc`` encrypted under the workspace data key, so it only
runs where that key is, and a model card that says what real data it saw. A
screened model gives a plain, portable package. onnxruntime's quantizer works
on files: it runs in a private folder in memory-backed storage (``/dev/shm``
where available), removed as soon as it is done.

The package also carries the lexicon the model's training annotations were
made with, or lexicon files given with ``--lexicon`` (none with
``--no-lexicon``): ``lexicon.tsv`` and ``lexicon.json``, signed like every
file and, in a real-zone package, encrypted (see :mod:`appliance.ner.lexicon`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance import __version__, crashpoints
from appliance.documents import Document, document_from_json, read_gold
from appliance.errors import (
    IntegrityError,
    UsageError,
    WorkspaceError,
)
from appliance.ner import holdout, zones
from appliance.ner.lexicon import (
    CALIBRATION_GRID,
    DEFAULT_COMBINE,
    DEFAULT_MIN_CONFIDENCE,
    UNION_RULE,
    PackedLexicon,
    calibrate,
    check_min_confidence,
    lexicon_from_files,
    training_lexicon,
    write_lexicon,
)
from appliance.ner.model import NER_META, TOKENIZER_FILE, NerModel, load_model, read_tokenizer_json
from appliance.ner.package import MODEL_FILE, sign_package
from appliance.ner.quantize import calibration_windows, quantize
from appliance.ner.runtime import Tagger, TorchBackend, tagger_from
from appliance.ner.settings import entity_types
from appliance.security.audit import utc_now
from appliance.security.crypto import atomic_write, read_encrypted, write_encrypted
from appliance.security.keys import DataKey, load_signing_key
from appliance.training import export_encoder_onnx
from appliance.workspace import Workspace, hashed, read_manifest, write_manifest

PARITY_TOLERANCE = 1e-3  # largest |logit difference| allowed between PyTorch and ONNX fp32


@dataclass
class ExportResult:
    package: Path
    precision: str
    parity: dict[str, Any]
    int8: dict[str, Any] | None = None
    files: dict[str, int] = field(default_factory=dict)
    zone: str = zones.SCREENED
    lexicon: dict[str, Any] | None = None  # ner.json's lexicon entry
    lexicon_from: str = ""  # where the packed lexicon came from
    no_lexicon: str = ""  # why the package carries none
    normalizer: dict[str, Any] | None = None  # ner.json's normalizer entry

    def summary(self) -> str:
        size = sum(self.files.values()) / 2**20
        p = self.parity
        how = "signed, real zone: encrypted" if self.zone == zones.REAL else "signed"
        text = (
            f"exported {self.precision} ONNX package to {self.package} ({size:.1f} MiB, {how}); "
            f"parity with PyTorch on {p['windows']} windows: max logit difference {p['max_abs_diff']:.2e}, "
            f"labels identical"
        )
        if self.int8 is not None:
            q = self.int8
            verdict = "kept int8" if q["kept"] else "int8 exceeded the limit, fell back to fp32"
            text += (
                f"; int8 dev F1 {100 * q['f1_int8']:.1f} vs fp32 {100 * q['f1_fp32']:.1f} "
                f"(drop {q['drop_points']:.2f} points, limit {q['max_drop_points']}): {verdict}"
            )
        if self.lexicon is not None:
            lx = self.lexicon
            combine = lx["combine"]
            text += (
                f"; lexicon of {lx['entries']:,} entries ({', '.join(lx['labels'])}) from "
                f"{self.lexicon_from}, combined by default as {combine['default']}"
            )
            if combine["default"] == "union":
                text += f" (model entities with confidence >= {combine['min_confidence']}"
                text += _chosen(combine) + ")"
            else:
                text += " (the model adds nothing by default" + _chosen(combine)
                text += "; --combine union adds its entities)"
        else:
            text += f"; no lexicon ({self.no_lexicon or 'none given'})"
        if self.normalizer is not None:
            text += f"; normalizer: {self.normalizer['describe']}"
        return text


def _chosen(combine: dict[str, Any]) -> str:
    """How the package's default combination was chosen, for the export summary."""
    held = combine.get("held_out_terms") or {}
    cal = combine.get("calibration")
    if combine.get("chosen") == "held-out terms":
        f1, shares = held["exact_f1"], held.get("win_share") or {}
        where = (
            f", chosen on {held['held_out_mentions']} mentions of terms held out of training in "
            f"{held['notes']} development notes: "
        )
        found = f"; the model found {100 * held['held_out_recall']:.0f} % of them"
        grid = {k: v for k, v in f1.items() if k not in ("lexicon", "model")}
        if combine.get("default") == "union":
            t = f"{combine['min_confidence']:g}"
            what = f"union F1 {100 * f1[t]:.1f} at {t}"
        else:
            t = max(grid, key=lambda k: (grid[k], float(k)))
            what = f"union F1 at best {100 * grid[t]:.1f} at {t}"
        ahead = f", ahead in {100 * shares[t]:.0f} % of bootstrap resamples" if t in shares else ""
        return (
            where
            + f"{what} vs {100 * f1['lexicon']:.1f} for the lexicon without those terms"
            + ahead
            + found
        )
    if cal:
        f1 = cal["exact_f1"]
        chosen = f"{combine['min_confidence']:g}"
        return (
            f", chosen on {cal['notes']} development gold notes: union F1 "
            f"{100 * f1[chosen]:.1f} vs lexicon alone "
            f"{100 * f1['lexicon']:.1f}, model alone {100 * f1['model']:.1f}"
        )
    if held.get("skipped"):
        return f"; held-out terms not judged: {held['skipped']}"
    return ""


class _Wrapper:
    """Plain (ids, mask) -> logits, the signature the package promises."""

    @staticmethod
    def build(model: Any) -> Any:
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

        return Wrapper(model).eval()


def export_onnx(m: NerModel) -> bytes:
    """The ONNX model, serialized in memory: inputs input_ids/attention_mask (batch, sequence), output logits."""
    model = m.model.to("cpu").eval()
    return export_encoder_onnx(_Wrapper.build(model), m.special.pad_id, "logits", m.max_length)


def check_parity(
    reference: Tagger, candidate: Tagger, texts: Sequence[str], tolerance: float = PARITY_TOLERANCE
) -> dict[str, Any]:
    """Run both on the same padded windows (batch sizes 1 and 4); compare logits and labels."""
    _, rows, _ = reference._windows(texts)
    if not rows:
        raise UsageError("parity check: the sample notes hold no tokens")
    worst, differing, windows, tokens = 0.0, 0, 0, 0
    for batch_size in (1, 4):
        for batch in reference.batches(rows[: 4 * batch_size + 4], batch_size):
            a = reference.backend(batch.ids, batch.mask)
            b = candidate.backend(batch.ids, batch.mask)
            real = batch.mask.astype(bool)
            worst = max(worst, float(np.abs(a - b)[real].max()))
            differing += int((a.argmax(-1) != b.argmax(-1))[real].sum())
            windows += len(batch.items)
            tokens += int(real.sum())
    result = {
        "windows": windows,
        "tokens": tokens,
        "max_abs_diff": worst,
        "differing_labels": differing,
        "tolerance": tolerance,
        "labels_identical": differing == 0,
    }
    if worst > tolerance or differing:
        raise IntegrityError(
            f"export parity check failed: max logit difference {worst:.2e} (tolerance {tolerance:.0e}), "
            f"{differing} of {tokens} token labels differ; the package was not written"
        )
    return result


def _f1(tagger: Tagger, docs: Sequence[Document]) -> float:
    from appliance.ner.loop import dev_scores

    return float(dev_scores(tagger, docs)["exact"]["micro"]["f1"])


_CARD = """\
# NER model card: {{ name }}

- **Exported:** {{ created }} by appliance {{ version }}
- **Precision:** {{ precision }}{% if int8 %} (int8 requested: dev F1 {{ "%.1f"|format(100 * int8.f1_int8) }} vs fp32 {{ "%.1f"|format(100 * int8.f1_fp32) }}, drop {{ "%.2f"|format(int8.drop_points) }} points, limit {{ int8.max_drop_points }}; {{ "kept int8" if int8.kept else "fell back to fp32" }}){% endif %}
{%- if int8 and int8.calibration %}
- **int8 method:** {{ int8.method }}; calibrated on {{ int8.calibration.notes }} notes ({{ int8.calibration.source }}, {{ int8.calibration_windows }} windows), {{ int8.smoothed_activations }} activations smoothed (alpha {{ int8.alpha }}); fused operators: {% if int8.fused %}{% for op, n in int8.fused.items() %}{{ op }} ×{{ n }}{{ ", " if not loop.last }}{% endfor %}{% else %}none{% endif %}{% if int8.fusion_error %} (fusion skipped: {{ int8.fusion_error }}){% endif %}
{%- endif %}
- **Architecture:** {{ meta.architecture }}, {{ "{:,}".format(meta.parameters) }} parameters; encoder {{ meta.base }}
- **Entity types:** {{ meta.types|join(", ") }} (BIO labels over sub-word tokens, windows of {{ meta.max_length }} tokens overlapping by {{ meta.stride }})
- **Zone:** {{ zone }}{% if zone == "real" %} (model and tokenizer encrypted under workspace key `{{ key_id }}`){% endif %}

## Training data

{% set source = data.get("source") or {} -%}
{% set dev_kind = (data.get("dev") or {}).get("kind", "none") -%}
{% if source.kind == "annotations" -%}
Annotated synthetic notes: annotation set `{{ source.name }}`{% if source.annotator %} by annotator `{{ source.annotator.get("name", source.annotator) if source.annotator is mapping else source.annotator }}`{% endif %}, made from notes released by the leakage screen. {{ data.train_notes }} training notes, {{ data.dev_notes }} development notes ({{ dev_kind }}).
{%- elif source.kind == "gold file" -%}
**Gold file `{{ source.path }}`** (sha256 `{{ source.sha256[:16] }}`): the model saw this data, not the workspace's annotated synthetic notes. {{ data.train_notes }} training notes, {{ data.dev_notes }} development notes ({{ dev_kind }}).
{%- else -%}
Documents given to the training function directly: {{ data.train_notes }} training notes, {{ data.dev_notes }} development notes.
{%- endif %}

{% if zone == "real" -%}
**Real zone: this model saw real data of this hospital.** What made it real:

{% for reason in reasons -%}
- {{ reason }}
{% endfor %}
It may have memorized text of those notes (names, ID numbers, phone numbers and the like) in its weights and in its tokenizer's vocabulary, so it belongs to the real zone and must stay inside the hospital like the records themselves. Its model and tokenizer files are encrypted under workspace key `{{ key_id }}`: `appliance infer` and `appliance ner evaluate` run it only with that key (`-w WORKSPACE` or `--data-key FILE`), decrypting it in memory.
{%- else -%}
**What it was never shown:** real notes. No real record reached training{% if source.kind == "annotations" %}; only screened synthetic notes and their annotations{% endif %}.
{%- endif %}

## Metrics (development set, exact span match)

{% if dev %}| type | precision | recall | F1 | gold |
|---|---:|---:|---:|---:|
{% for t, c in dev.exact.per_type.items() -%}
| {{ t }} | {{ "%.3f"|format(c.precision) }} | {{ "%.3f"|format(c.recall) }} | {{ "%.3f"|format(c.f1) }} | {{ c.gold }} |
{% endfor -%}
| micro | {{ "%.3f"|format(dev.exact.micro.precision) }} | {{ "%.3f"|format(dev.exact.micro.recall) }} | {{ "%.3f"|format(dev.exact.micro.f1) }} | {{ dev.exact.micro.gold }} |
{% else %}No development set was evaluated.
{% endif %}
Parity with PyTorch: max logit difference {{ "%.2e"|format(parity.max_abs_diff) }} over {{ parity.tokens }} tokens, labels identical.

## Lexicon

{% if lexicon -%}
This package carries the lexicon {% if lexicon.origin.kind == "training annotations" %}the model's training annotations (`{{ lexicon.origin.annotations }}`) were made with{% else %}given at export ({{ lexicon.origin.sources|map(attribute="name")|join(", ") }}){% endif %}: {{ "{:,}".format(lexicon.entries) }} entries, {{ "{:,}".format(lexicon.terms) }} distinct terms, types {{ lexicon.labels|join(", ") }}, in `{{ lexicon.files[0] }}` with its matching options in `{{ lexicon.files[1] }}`{% if zone == "real" %} (both encrypted under workspace key `{{ key_id }}`){% endif %}, covered by the signature.

`appliance infer` and `appliance ner evaluate` combine its matches with the model's entities (`--combine`; default `{{ lexicon.combine.default }}`, minimum confidence {{ lexicon.combine.min_confidence }}). The `union` rule: {{ rule }}. Every entity then says where it came from (`source`: `model`, `lexicon` or `both`). `--combine model` gives the model alone, `--combine lexicon` the lexicon alone; `appliance ner evaluate` reports all three on the same gold set.
{%- set held = lexicon.combine.held_out_terms %}
{%- if lexicon.combine.chosen == "held-out terms" %}

The default was chosen without a human label: {{ held.held_out_mentions }} mentions of terms held out of the model's training labels, in {{ held.notes }} development notes, stood for the names a term list lacks. Against those notes' full labels, with the lexicon stripped of the held-out terms: lexicon alone F1 {{ "%.3f"|format(held.exact_f1.lexicon) }}, model alone {{ "%.3f"|format(held.exact_f1.model) }}, union {% for k, v in held.exact_f1.items() if k not in ("lexicon", "model") %}{{ "%.3f"|format(v) }} at {{ k }}{{ ", " if not loop.last }}{% endfor %}. The model found {{ "%.0f"|format(100 * held.held_out_recall) }} % of the held-out mentions.{% if held.win_share %} In a paired bootstrap over the development notes, share of resamples where the union beat the lexicon alone ({{ "%.0f"|format(100 * min_win_share) }} % needed): {% for k, v in held.win_share.items() %}{{ "%.0f"|format(100 * v) }} % at {{ k }}{{ ", " if not loop.last }}{% endfor %}.{% endif %} A model entity where the annotator left a range undecided counted as an error.{% if lexicon.combine.default == "lexicon" %} No union beat the lexicon alone beyond chance, so the package answers with the lexicon by default.{% endif %}
{%- elif held and held.skipped %}

Held-out terms did not choose the default: {{ held.skipped }}.
{%- endif %}
{%- else -%}
No lexicon: inference gives the model's entities alone.
{%- endif %}

## Normalizer

{% if normalizer -%}
This package carries a normalizer: {{ normalizer.describe }}. `appliance infer` gives every entity a concept code from it (or none, NIL, below its threshold), with the top candidates; its files ({{ normalizer.files|join(", ") }}) are covered by the signature{% if zone == "real" %} and encrypted under workspace key `{{ key_id }}`{% endif %}. Terminology SHA-256 `{{ normalizer.terminology_sha256[:16] }}`.
{%- else -%}
No normalizer: entities carry no concept codes.
{%- endif %}

## Intended use

Batch extraction of {{ meta.types|join(", ") }} mentions from clinical notes of the
hospital that trained it, with `appliance infer`, as a first pass a person
reviews. Not for decisions about individual patients without review. Its
figures come from {% if dev_kind == "gold file" %}the development gold file `{{ data.dev.path }}`{% elif source.kind == "annotations" %}synthetic development notes{% else %}development notes split from its training notes{% endif %}; measure it on a small real gold set (`appliance ner evaluate --gold`) before relying on it.
"""


def render_card(
    name: str,
    meta: dict[str, Any],
    precision: str,
    parity: dict[str, Any],
    int8: dict[str, Any] | None,
    lexicon: dict[str, Any] | None = None,
    normalizer: dict[str, Any] | None = None,
) -> str:
    import jinja2

    zone = meta.get("zone", zones.SCREENED)
    reasons = list(meta.get("zone_reasons") or [])
    if zone == zones.REAL and not reasons:  # a model from before reasons were recorded
        mlm = meta.get("mlm_on_records") or {}
        reasons = [
            f"encoder pretrained by masked language modelling on {mlm.get('notes', '?')} real notes"
            if mlm
            else "recorded as real zone when it was trained"
        ]
    encrypted = meta.get("encrypted")
    env = jinja2.Environment(autoescape=False, keep_trailing_newline=True)
    return env.from_string(_CARD).render(
        name=name,
        zone=zone,
        reasons=reasons,
        key_id=encrypted.get("key_id", "?") if isinstance(encrypted, dict) else "?",
        created=utc_now(),
        version=__version__,
        precision=precision,
        meta=meta,
        data=meta.get("data", {}),
        dev=meta.get("metrics", {}).get("dev"),
        parity=parity,
        int8=int8,
        lexicon=lexicon,
        normalizer=normalizer,
        rule=UNION_RULE,
        min_win_share=holdout.MIN_WIN_SHARE,
    )


def _remove_leftovers(out_dir: Path) -> None:
    """Remove what an export stopped by a crash left beside ``out_dir``.

    A package is built in ``.NAME.XXXX`` and swapped in through ``.NAME.old``;
    a process killed in between leaves those folders, never a half package
    under ``NAME`` itself.
    """
    for leftover in out_dir.parent.glob(f".{out_dir.name}.*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)


def export_package(
    model_dir: Path,
    out_dir: Path,
    *,
    signing_key: Any,
    int8: bool = False,
    dev_docs: Sequence[Document] | None = None,
    max_f1_drop: float = 0.5,
    sample_texts: Sequence[str] | None = None,
    tolerance: float = PARITY_TOLERANCE,
    details: dict[str, Any] | None = None,
    data_key: DataKey | None = None,
    lexicon: PackedLexicon | None = None,
    min_confidence: float | None = None,
    calibrate_on: Sequence[Document] | None = None,
    normalizer: Path | None = None,
    calibration_texts: Sequence[str] | None = None,
    calibration_source: str = "",
) -> ExportResult:
    """Export ``model_dir`` to a signed package in ``out_dir`` (replaced only when all checks pass).

    A real-zone model (its files encrypted under ``data_key``) gives a
    real-zone package encrypted under the same key. ``lexicon`` is packed
    with it (encrypted too in the real zone), with the union's minimum
    confidence ``min_confidence``; when that is None and ``calibrate_on``
    holds real annotated notes, the one with the best union F1 on them
    (:func:`~appliance.ner.lexicon.calibrate`); else the built-in default.
    ``normalizer``: a normalizer folder whose files the package carries
    (checked first; encrypted under the key in the real zone, as the
    lexicon is). ``int8``: also quantize (see :mod:`appliance.ner.quantize`),
    calibrated on ``calibration_texts`` (the released synthetic notes the
    model was trained on; else the development notes), and keep the int8
    model if its F1 on ``dev_docs`` is within ``max_f1_drop`` points.
    """
    dev_docs = list(dev_docs or [])
    if int8 and not dev_docs:
        raise UsageError("--int8 needs development notes to measure the F1 loss; pass --dev GOLD")
    m = load_model(model_dir, data_key)
    meta = dict(m.meta)
    zone = meta.get("zone", zones.SCREENED)
    key = zones.require_key(model_dir, meta, data_key) if zone == zones.REAL else None
    texts = list(sample_texts or [d.text for d in dev_docs[:8]])
    if not texts:
        raise UsageError(
            "export needs sample notes for the parity check (development notes or --dev GOLD)"
        )
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        onnx_model = export_onnx(m)
        runtime_meta = {
            k: meta[k]
            for k in (
                "labels",
                "types",
                "special",
                "max_length",
                "stride",
                "zone",
                "base",
                "architecture",
            )
        }
        runtime_meta["zone"] = zone
        if key is not None:
            runtime_meta["encrypted"] = {
                "key_id": key.key_id,
                "files": [MODEL_FILE + zones.ENC, TOKENIZER_FILE + zones.ENC],
            }
        reference = Tagger(
            TorchBackend(m.model, "cpu"), m.tokenizer, m.labels, m.special, m.max_length, m.stride
        )
        fp32 = tagger_from({**runtime_meta, "precision": "fp32"}, m.tokenizer, onnx_model, "cpu")
        parity = check_parity(reference, fp32, texts, tolerance)
        precision = "fp32"
        shipped = fp32  # the tagger the package holds (int8 when it is kept)
        int8_info: dict[str, Any] | None = None
        if int8:
            calibration = list(calibration_texts or [d.text for d in dev_docs])
            windows = calibration_windows(fp32, calibration)
            done = quantize(onnx_model, windows)
            quantized = done.model
            q = tagger_from({**runtime_meta, "precision": "int8"}, m.tokenizer, quantized, "cpu")
            f1_fp32, f1_int8 = _f1(fp32, dev_docs), _f1(q, dev_docs)
            drop = 100 * (f1_fp32 - f1_int8)
            kept = drop <= max_f1_drop
            int8_info = {
                "f1_fp32": f1_fp32,
                "f1_int8": f1_int8,
                "drop_points": round(drop, 4),
                "max_drop_points": max_f1_drop,
                "kept": kept,
                "dev_notes": len(dev_docs),
                "calibration": {
                    "notes": len(calibration),
                    "source": calibration_source
                    or ("the given notes" if calibration_texts else "the development notes"),
                },
                **done.describe(),
            }
            if kept:
                onnx_model = quantized
                precision = "int8"
                shipped = q
            del quantized
        if key is None:
            atomic_write(tmp / MODEL_FILE, onnx_model, 0o600)
            shutil.copyfile(model_dir / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        else:
            write_encrypted(
                tmp / (MODEL_FILE + zones.ENC), key, onnx_model, label=zones.LABEL_PACKAGE_MODEL
            )
            write_encrypted(
                tmp / (TOKENIZER_FILE + zones.ENC),
                key,
                read_tokenizer_json(model_dir, key).encode("utf-8"),
                label=zones.LABEL_PACKAGE_TOKENIZER,
            )
        lexicon_entry = None
        if lexicon is not None:
            combine = _combine_defaults(
                shipped, lexicon, min_confidence, calibrate_on, dev_docs, meta.get("settings")
            )
            lexicon_entry = write_lexicon(tmp, lexicon, key, combine)
            runtime_meta["lexicon"] = lexicon_entry
            if key is not None:
                runtime_meta["encrypted"]["files"] += lexicon_entry["files"]
        normalizer_entry = None
        if normalizer is not None:
            normalizer_entry = _pack_normalizer(normalizer, tmp, key)
            runtime_meta["normalizer"] = normalizer_entry
            if key is not None:
                runtime_meta["encrypted"]["files"] += normalizer_entry["files"]
        (tmp / NER_META).write_text(
            json.dumps({**runtime_meta, "precision": precision}, indent=2) + "\n", encoding="utf-8"
        )
        (tmp / "labels.json").write_text(json.dumps(m.labels, indent=2) + "\n", encoding="utf-8")
        (tmp / "MODEL_CARD.md").write_text(
            render_card(
                out_dir.parent.name if out_dir.name == "package" else out_dir.name,
                {**meta, "zone": zone, "encrypted": runtime_meta.get("encrypted")},
                precision,
                parity,
                int8_info,
                lexicon_entry,
                normalizer_entry,
            ),
            encoding="utf-8",
        )
        sign_package(
            tmp,
            signing_key,
            {
                "created": utc_now(),
                "appliance_version": __version__,
                "precision": precision,
                "zone": zone,
                "zone_reasons": list(meta.get("zone_reasons") or []),
                "encrypted": runtime_meta.get("encrypted"),
                "parity": parity,
                "int8": int8_info,
                "training_data": meta.get("data"),
                "metrics": meta.get("metrics"),
                "lexicon": lexicon_entry,
                "normalizer": normalizer_entry,
                **(details or {}),
            },
        )
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            crashpoints.reached("export.swap")
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir())}
    return ExportResult(
        out_dir,
        precision,
        parity,
        int8_info,
        files,
        zone,
        lexicon_entry,
        lexicon.describe() if lexicon is not None else "",
        normalizer=normalizer_entry,
    )


def _pack_normalizer(folder: Path, into: Path, key: DataKey | None) -> dict[str, Any]:
    """Copy a normalizer's files into a package being built (encrypted under ``key`` in the real zone)."""
    from appliance.normalize.linker import from_files, read_folder, write_files

    files = read_folder(folder)
    # The bytes checked are the bytes packed: a broken or altered normalizer is never signed.
    linker = from_files(files, str(folder))
    names = write_files(into, files, key)
    return {
        "files": names,
        "terminology_sha256": linker.terminology.sha256(),
        "concepts": len(linker.terminology.concepts),
        "labels": linker.terminology.labels,
        "encoder": linker.encoder is not None,
        "describe": linker.describe(),
    }


def _combine_defaults(
    tagger: Tagger,
    lexicon: PackedLexicon,
    min_confidence: float | None,
    gold: Sequence[Document] | None,
    split: Sequence[Document] = (),
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The package's combination defaults.

    As asked; else chosen on real gold notes; else, for a model trained with
    held-out terms, chosen on them in its development ``split``
    (:mod:`appliance.ner.holdout`); else built in.
    """
    if min_confidence is not None:
        check_min_confidence(min_confidence)
        return {"default": DEFAULT_COMBINE, "min_confidence": min_confidence, "chosen": "given"}
    if not gold:
        built_in = {
            "default": DEFAULT_COMBINE,
            "min_confidence": DEFAULT_MIN_CONFIDENCE,
            "chosen": "default",
        }
        share = float((settings or {}).get("term_holdout") or 0.0)
        if not share or not split:
            return built_in
        found = holdout.check(
            tagger.predict([d.text for d in split]),
            split,
            share,
            int((settings or {}).get("seed", 0)),
            CALIBRATION_GRID,
            float((settings or {}).get("min_confidence", 0.5)),
        )
        if found.skipped:
            return built_in | {"held_out_terms": found.as_dict()}
        return {
            "default": found.default,
            "min_confidence": (
                found.min_confidence if found.min_confidence is not None else DEFAULT_MIN_CONFIDENCE
            ),
            "chosen": "held-out terms",
            "held_out_terms": found.as_dict(),
        }
    gold_types = {s.label for d in gold for s in d.spans}
    types = set(lexicon.lexicon.labels) | set(entity_types(tagger.labels))
    if not gold_types & types:  # e.g. "Disease" against DIAGNOSIS: every threshold would score 0
        return {
            "default": DEFAULT_COMBINE,
            "min_confidence": DEFAULT_MIN_CONFIDENCE,
            "chosen": "default",
            "calibration_skipped": (
                f"the development gold labels ({', '.join(sorted(gold_types)) or 'none'}) "
                f"share no type with the package ({', '.join(sorted(types))})"
            ),
        }
    texts = [d.text for d in gold]
    annotator = lexicon.annotator()
    best, table = calibrate(
        tagger.predict(texts), [annotator.annotate_text(t) for t in texts], gold
    )
    return {
        "default": DEFAULT_COMBINE,
        "min_confidence": best,
        "chosen": "development gold notes",
        "calibration": {"notes": len(gold), "exact_f1": table},
    }


def _dev_is_gold(trained: dict[str, Any], dev_gold: Path | None) -> bool:
    """Whether the development notes are real annotated ones (not a split of the training notes)."""
    dev = (trained.get("data") or {}).get("dev") or {}
    return dev_gold is not None or dev.get("kind") == "gold file"


def load_dev_docs(
    ws: Workspace, root: Path, dev_gold: Path | None, gold_format: str = "auto"
) -> list[Document]:
    """The model's development notes: --dev GOLD, else the kept synthetic split, else the gold file it was trained with."""

    if dev_gold is not None:
        return read_gold(dev_gold, gold_format)
    if (root / zones.DEV_FILE_ENC).is_file():  # a real-zone split: decrypted in memory
        blob = read_encrypted(root / zones.DEV_FILE_ENC, ws.data_key, label=zones.LABEL_DEV)
        where = str(root / zones.DEV_FILE_ENC)
        return [
            document_from_json(json.loads(line), f"{where} line {n}")
            for n, line in enumerate(blob.decode("utf-8").splitlines(), 1)
            if line.strip()
        ]
    if (root / zones.DEV_FILE).is_file():
        return read_gold(root / zones.DEV_FILE, "jsonl")
    manifest = read_manifest(root) or {}
    dev = (manifest.get("data") or {}).get("dev") or {}
    if dev.get("kind") == "gold file" and dev.get("path"):
        path = Path(dev["path"])
        if path.is_file() and hashed(path)["sha256"] == dev.get("sha256"):
            return read_gold(path, gold_format)
        raise WorkspaceError(
            f"{path}: the development gold file changed or is gone since training; pass --dev GOLD"
        )
    return []


def run(
    ws: Workspace,
    *,
    name: str = "default",
    out: Path | None = None,
    int8: bool = False,
    dev_gold: Path | None = None,
    gold_format: str = "auto",
    lexicons: Sequence[Path] = (),
    label: str | None = None,
    no_lexicon: bool = False,
    min_confidence: float | None = None,
    normalizer: Path | None = None,
    no_normalizer: bool = False,
) -> ExportResult:
    """Export ``models/ner/<name>/model`` to ``models/ner/<name>/package`` (or ``out``), signed.

    The package carries the lexicon of the model's training annotations, or
    ``lexicons`` (``[TYPE=]FILE``, typed by ``label`` when a file has no label
    column), or none with ``no_lexicon``. The union's minimum confidence is
    ``min_confidence``, else the best on a development gold file (``dev_gold``,
    or the one the model was trained with ``--dev``), else the default.
    The package carries ``normalizer`` (a folder), else the workspace's
    (``appliance normalize train``) when there is one, unless ``no_normalizer``.
    """
    if normalizer is not None and no_normalizer:
        raise UsageError("--normalizer and --no-normalizer exclude each other")
    if min_confidence is not None:
        check_min_confidence(min_confidence)

    root = ws.ner_model_dir(name)
    model_dir = root / "model"
    package = (out or root / "package").expanduser()
    if no_lexicon and lexicons:
        raise UsageError("--lexicon and --no-lexicon exclude each other")
    if label and not lexicons:
        raise UsageError("--label types --lexicon files; give --lexicon FILE with it")
    args = {
        "name": name,
        "out": str(package),
        "int8": int8,
        "dev": str(dev_gold) if dev_gold else None,
        "lexicons": [str(p) for p in lexicons],
        "no_lexicon": no_lexicon,
        "min_confidence": min_confidence,
        "normalizer": str(normalizer) if normalizer else None,
        "no_normalizer": no_normalizer,
    }
    with ws.stage("export", args) as stage:
        if not (model_dir / NER_META).is_file():
            raise WorkspaceError(
                f"{model_dir}: no trained NER model named '{name}'; run `appliance ner train` first"
            )
        stage.inputs.append(hashed(model_dir, ws.root))
        trained = read_manifest(root) or {}
        if (trained.get("model") or {}).get("sha256") not in (None, stage.inputs[0]["sha256"]):
            raise IntegrityError(
                f"{model_dir}: the model folder changed since `appliance ner train` wrote it; retrain it"
            )
        dev_docs = load_dev_docs(ws, root, dev_gold, gold_format)
        if dev_gold is not None:
            stage.inputs.append(hashed(dev_gold, ws.root))
        packed, why = _package_lexicon(ws, root, trained, lexicons, label, no_lexicon)
        if packed is not None:
            stage.inputs += [
                {"path": str(s.get("path")), "sha256": s.get("sha256")}
                for s in packed.lexicon.sources
            ]
        if normalizer is None and not no_normalizer:
            from appliance.normalize.stage import workspace_normalizer

            normalizer = workspace_normalizer(ws)
        if normalizer is not None:
            stage.inputs.append(hashed(normalizer, ws.root))
        calibration, calibration_source = _calibration_notes(ws, trained) if int8 else ([], "")
        started = utc_now()
        result = export_package(
            model_dir,
            package,
            signing_key=load_signing_key(ws.signing_key_path),
            int8=int8,
            calibration_texts=calibration,
            calibration_source=calibration_source,
            dev_docs=dev_docs,
            max_f1_drop=ws.policy.export.int8_max_f1_drop,
            details={"model_sha256": stage.inputs[0]["sha256"], "policy_sha256": ws.policy.sha256},
            data_key=ws.data_key if zones.needs_key(model_dir) else None,
            lexicon=packed,
            min_confidence=min_confidence,
            calibrate_on=dev_docs if _dev_is_gold(trained, dev_gold) else None,
            normalizer=normalizer,
        )
        result.no_lexicon = why
        (root / "export").mkdir(exist_ok=True)
        write_manifest(
            root / "export",
            {
                "stage": "export",
                "started": started,
                "finished": utc_now(),
                "inputs": stage.inputs,
                "package": hashed(package, ws.root),
                "precision": result.precision,
                "zone": result.zone,
                "parity": result.parity,
                "int8": result.int8,
                "lexicon": result.lexicon,
                "normalizer": result.normalizer,
            },
        )
        stage.outputs = [hashed(package, ws.root)]
        stage.details = {
            "zone": result.zone,
            "precision": result.precision,
            "parity_max_abs_diff": result.parity["max_abs_diff"],
            "int8": result.int8,
            "lexicon": (
                {k: result.lexicon[k] for k in ("entries", "terms", "labels", "origin")}
                if result.lexicon
                else None
            ),
        }
    return result


CALIBRATION_NOTES = 256


def _calibration_notes(ws: Workspace, trained: dict[str, Any]) -> tuple[list[str], str]:
    """Notes to calibrate int8 on: the model's training notes (released synthetic ones, or its gold file).

    Empty when neither can be read (the development notes are used instead).
    """
    source = (trained.get("data") or {}).get("source") or {}
    if source.get("kind") == "annotations" and source.get("name"):
        from appliance.corpus import read_annotations

        docs = sorted(read_annotations(ws, source["name"]), key=lambda d: d.id)
        return [d.text for d in docs[:CALIBRATION_NOTES]], (
            f"the released synthetic notes of annotations '{source['name']}'"
        )
    if source.get("kind") == "gold file" and source.get("path"):
        path = Path(source["path"])
        if path.is_file() and hashed(path)["sha256"] == source.get("sha256"):
            docs = read_gold(path)
            return [d.text for d in docs[:CALIBRATION_NOTES]], f"the training gold file {path}"
    return [], ""


def _package_lexicon(
    ws: Workspace,
    root: Path,
    trained: dict[str, Any],
    lexicons: Sequence[Path],
    label: str | None,
    no_lexicon: bool,
) -> tuple[PackedLexicon | None, str]:
    """The lexicon to pack, or (None, why none): --no-lexicon, --lexicon files, else the training annotator's."""
    if no_lexicon:
        return None, "--no-lexicon"
    if lexicons:
        return (
            lexicon_from_files(
                lexicons, label, ws.config.workspace.language, ws.policy.entity_schema()
            ),
            "",
        )
    source = (trained.get("data") or {}).get("source")
    if not isinstance(source, dict):
        try:
            meta = json.loads((root / "model" / NER_META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        source = (meta.get("data") or {}).get("source") or {}
    annotation_manifest = None
    if source.get("kind") == "annotations" and not isinstance(source.get("annotator"), dict):
        annotation_manifest = read_manifest(ws.annotation_dir(str(source.get("name", "default"))))
    return training_lexicon(source, annotation_manifest, ws.root, ws.policy.entity_schema())
