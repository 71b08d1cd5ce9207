"""``appliance ner train``: fine-tune a token classifier on annotated synthetic notes.

nanoGPT's shape: build the model (:mod:`~appliance.ner.build`), run the short
loop (:mod:`~appliance.ner.loop`), save the folder with its ``ner.json``
(:mod:`~appliance.ner.metadata`). The loop: windows of sub-word tokens with
aligned BIO labels, AdamW with linear warmup and decay, gradient clipping, an
entity-level F1 on the development set every ``eval_every`` steps (or each
epoch), the best weights kept, and a stop after ``patience`` evaluations
without improvement. Every ``checkpoint_every`` steps (and on Ctrl-C) the
whole state goes into one checkpoint (:mod:`appliance.training`); batches are
drawn from a generator seeded by the epoch, so a resumed run sees the batches
the uninterrupted one would have.

Annotator labels are partial: what the annotator missed reads as ``O``.
``partial_labels`` leaves its undecided ranges and unsure spans out of the
loss, ``o_keep`` keeps only a seeded share of the ``O`` tokens each epoch
(:mod:`~appliance.ner.loop`), and ``self_training_rounds`` re-labels the
training notes with the model itself and trains a fresh student on them
(:mod:`~appliance.ner.selftrain`), round after round (judged by a dev gold
file when there is one: a split of the annotated notes cannot judge a
student that departs from the annotator by design). Each round is a whole resumable run in
``<model>/self-training/round-K/`` with a ``round.json`` once it is done, so
a killed run redoes at most the round it was in (from its checkpoint). A
dev set split from the annotated notes is scored the way training reads the
labels (``dev_signal = "partial"``): a prediction where the annotator left
the text undecided counts neither for nor against the model.

``--mlm-on-records`` first continues the encoder's pretraining by masked
language modelling on the hospital's real notes (read from the encrypted
record store).

The model's zone is worked out from every input of the run
(:func:`appliance.ner.zones.training_reasons`): gold notes given with
``--train``, a tokenizer learned from them, a development split of them,
``--mlm-on-records``, a real-zone base. A real-zone model's manifest,
``ner.json`` and model card say so and list the reasons; its weights,
tokenizer, development split and checkpoints are encrypted under the
workspace key (mode 0600), never written in plaintext.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from appliance.documents import Document, document_to_json, read_gold, write_jsonl
from appliance.errors import InputError, UsageError, WorkspaceError
from appliance.ner import zones
from appliance.ner.augment import replace_mentions
from appliance.ner.build import CHECKPOINT_LABEL, Built, MlmJob, build, resumed
from appliance.ner.holdout import withhold, without_held_out
from appliance.ner.loop import (
    LoopState,
    LoopStats,
    Plan,
    Row,
    TrainProgress,
    dev_scores,
    fit,
    make_optimizer,
    windows,
)
from appliance.ner.metadata import Windowing, fingerprint, model_meta
from appliance.ner.model import (
    NER_META,
    describe_special,
    load_model,
    max_positions,
    save_model,
    torch_module,
)
from appliance.ner.runtime import Tagger, TorchBackend, torch_tagger
from appliance.ner.selftrain import relabel
from appliance.ner.settings import NerSettings, bio_labels
from appliance.security.audit import utc_now
from appliance.security.crypto import atomic_write, write_encrypted
from appliance.security.keys import DataKey
from appliance.training import (
    load_checkpoint,
    quiet_transformers,
    resolve_device,
    save_checkpoint,
    training_state,
)
from appliance.workspace import Workspace, hashed, read_manifest, write_manifest

CHECKPOINT = "checkpoint.pt"  # screened zone; a real-zone run's is encrypted:
CHECKPOINT_ENC = "checkpoint.pt.enc"
MLM_CHECKPOINT = "mlm-checkpoint.pt.enc"
DEV_FILE, DEV_FILE_ENC = zones.DEV_FILE, zones.DEV_FILE_ENC
ROUNDS_DIR = "self-training"  # inside the model folder while the rounds run
ROUND_FILE = "round.json"  # a finished round: its fingerprint and result


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    max_steps: int
    resumed_from: int
    stopped_early: bool
    best_step: int
    dev_f1: float | None
    dev_metrics: dict[str, Any]
    train_docs: int
    dev_docs: int
    train_windows: int
    parameters: int
    tokens_per_second: float
    seconds: float
    mlm_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    zone_reasons: list[str] = field(default_factory=list)
    # Self-training: one entry per round run (round 0: the annotator's labels).
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def zone(self) -> str:
        return zones.zone_of(self.zone_reasons)

    def summary(self) -> str:
        f1 = (
            f", dev F1 {100 * self.dev_f1:.1f} (best at step {self.best_step})"
            if self.dev_f1 is not None
            else ""
        )
        early = " (stopped early)" if self.stopped_early else ""
        resumed = f", resumed at step {self.resumed_from}" if self.resumed_from else ""
        mlm = f" after {self.mlm_steps} MLM steps on records" if self.mlm_steps else ""
        if self.rounds:
            kept = next((r["round"] for r in self.rounds if r.get("kept")), 0)
            mlm += f", self-training round {kept} of {len(self.rounds) - 1} kept"
        zone = (
            f"real zone ({len(self.zone_reasons)} real inputs), saved encrypted"
            if self.zone_reasons
            else "screened zone, saved"
        )
        return (
            f"trained NER model: {self.steps}/{self.max_steps} steps{early}{resumed}{mlm} on "
            f"{self.train_docs} notes ({self.train_windows} windows){f1}, "
            f"{self.tokens_per_second:.0f} tokens/s; {zone} to {self.model_dir}"
        )


def _seed_all(seed: int, torch: Any) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _types(train_docs: Sequence[Document], types: list[str] | None) -> list[str]:
    """The entity types to learn: those given, else those the training notes carry."""
    if not train_docs:
        raise InputError("no training notes: the annotations (or --train gold) hold no documents")
    found = sorted({s.label for d in train_docs for s in d.spans})
    if not found:
        raise InputError("the training notes hold no entity spans; nothing to learn")
    return list(types) if types else found


def _windowing(tokenizer: Any, model: Any, settings: NerSettings) -> Windowing:
    special = describe_special(tokenizer, model.config)
    max_length = min(settings.max_length, max_positions(model.config))
    body = max_length - len(special.prefix) - len(special.suffix)
    return Windowing(special, max_length, min(settings.stride, body // 2))


@dataclass
class _Run:
    """One training run: the model and its tokenizer, windows, plan, optimizer and loop state."""

    built: Built
    labels: list[str]
    wnd: Windowing
    rows: list[Row]
    plan: Plan
    device: str
    optimizer: Any
    st: LoopState
    resumed_from: int
    run_id: str
    ckpt_path: Path
    key: DataKey | None

    def tagger(self) -> Tagger:
        w = self.wnd
        backend = TorchBackend(self.built.model, self.device)
        return Tagger(backend, self.built.tokenizer, self.labels, w.special, w.max_length, w.stride)

    def checkpoint(self) -> None:
        state = training_state(
            fingerprint=self.run_id,
            step=self.st.step,
            model=self.built.model,
            optimizer=self.optimizer,
            tokenizer=self.built.tokenizer,
            history=self.st.history,
            **self.st.checkpoint_fields(),
            mlm_steps=self.built.mlm_steps,
        )
        save_checkpoint(self.ckpt_path, state, self.key, label=CHECKPOINT_LABEL)


def _setup(
    built: Built,
    state: dict[str, Any] | None,
    train_docs: Sequence[Document],
    labels: list[str],
    settings: NerSettings,
    scratch: bool,
    device: str,
    checkpoint: tuple[str, Path, DataKey | None],
    torch: Any,
) -> _Run:
    """Windows of the training notes, the plan, the optimizer and loop state (resumed from ``state``).

    ``checkpoint``: the run's fingerprint, the checkpoint's path and its key.
    """
    model, tokenizer = built.model, built.tokenizer
    wnd = _windowing(tokenizer, model, settings)
    label2id = {label: i for i, label in enumerate(labels)}
    body = wnd.max_length - len(wnd.special.prefix) - len(wnd.special.suffix)
    partial = settings.min_confidence if settings.partial_labels else None
    rows = windows(tokenizer, train_docs, label2id, wnd.special, body, wnd.stride, partial)
    plan = Plan.of(settings, len(rows), scratch)
    model.to(device)
    optimizer = make_optimizer(model, settings, plan.lr, torch)
    st = LoopState()
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        st = LoopState.from_checkpoint(state)
    return _Run(built, labels, wnd, rows, plan, device, optimizer, st, st.step, *checkpoint)


def train_model(
    train_docs: Sequence[Document],
    dev_docs: Sequence[Document],
    *,
    base: Path | None,
    out_dir: Path,
    settings: NerSettings | None = None,
    types: list[str] | None = None,
    data_info: dict[str, Any] | None = None,
    mlm_texts: list[str] | None = None,
    zone_reasons: Sequence[str] | None = None,
    data_key: DataKey | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train a token classifier on ``train_docs`` (``base`` None: a scratch BERT) into ``out_dir``.

    ``out_dir`` becomes a model folder (see :mod:`appliance.ner.model`); an
    interrupted run with the same data and settings resumes from its checkpoint.
    ``zone_reasons`` name the run's real inputs (default: worked out from
    ``data_info``, ``base`` and ``mlm_texts``); any makes a real-zone model,
    whose checkpoints and saved files are encrypted under ``data_key``
    (required then). ``data_key`` also decrypts a real-zone ``base``. With
    ``settings.self_training_rounds`` the rounds run first (see the module
    docstring) and the model of the best one is saved into ``out_dir``.
    Settings left to the labels (None) are resolved first: as for an
    annotator's labels, unless ``data_info`` names a gold file as the source
    (mention replacement, which :func:`run` applies before this, to 0).
    """
    source = (data_info or {}).get("source") or {}
    given = settings or NerSettings()
    settings = given.resolved(gold=source.get("kind") == "gold file")
    if given.mention_copies is None:
        # Copies are made by run() before the notes reach here; none were made for these.
        settings = replace(settings, mention_copies=0)
    if given.term_holdout is None:
        # Terms are withheld by run() too; none were for these.
        settings = replace(settings, term_holdout=0.0)
    types = _types(train_docs, types)
    if zone_reasons is None:
        info = data_info or {}
        zone_reasons = zones.training_reasons(
            info.get("source"), info.get("dev"), base, len(mlm_texts or [])
        )
    reasons = list(zone_reasons)
    key = data_key if reasons else None
    if reasons and key is None:
        raise UsageError(
            f"a real-zone model ({reasons[0]}) is written encrypted; give the workspace data key"
        )
    job = _Job(base, types, data_info, mlm_texts, reasons, key, data_key, progress)
    if settings.rounds:
        return _self_train(train_docs, dev_docs, out_dir, settings, job)
    shutil.rmtree(out_dir / ROUNDS_DIR, ignore_errors=True)  # rounds of an earlier run
    return _train_once(train_docs, dev_docs, out_dir, settings, job)


@dataclass(frozen=True)
class _Job:
    """What every run of one ``train_model`` call shares (each self-training round's too)."""

    base: Path | None
    types: list[str]
    data_info: dict[str, Any] | None
    mlm_texts: list[str] | None
    reasons: list[str]
    key: DataKey | None  # the key the model is written under (real zone), else None
    data_key: DataKey | None  # the key that decrypts a real-zone base
    progress: Callable[[TrainProgress], None] | None


def _dev_view(settings: NerSettings) -> float | None:
    """The ``min_confidence`` dev scores are read through (None: plain scores)."""
    return settings.min_confidence if settings.dev_signal == "partial" else None


def _train_once(
    train_docs: Sequence[Document],
    dev_docs: Sequence[Document],
    out_dir: Path,
    settings: NerSettings,
    job: _Job,
) -> TrainResult:
    """One training run into ``out_dir`` (resumable from its checkpoint)."""
    torch = torch_module()
    quiet_transformers()
    started = time.monotonic()
    base, types, mlm_texts, reasons, key = job.base, job.types, job.mlm_texts, job.reasons, job.key
    progress, data_key, data_info = job.progress, job.data_key, job.data_info
    labels = bio_labels(types)
    device = resolve_device(settings.device)
    run_id = fingerprint(settings, base, train_docs, dev_docs, types, mlm_texts)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / (CHECKPOINT_ENC if key is not None else CHECKPOINT)
    # A checkpoint of the other form is another run's (or a plaintext one of an older version).
    (out_dir / (CHECKPOINT if key is not None else CHECKPOINT_ENC)).unlink(missing_ok=True)
    state = load_checkpoint(
        ckpt_path, key, label=CHECKPOINT_LABEL, fingerprint=run_id, weights_only=False
    )

    _seed_all(settings.seed, torch)
    if state is not None:
        built = resumed(state)
    else:
        mlm = MlmJob(list(mlm_texts), key, out_dir / MLM_CHECKPOINT) if mlm_texts else None
        built = build(base, train_docs, labels, settings, device, mlm, progress, torch, data_key)
    run = _setup(built, state, train_docs, labels, settings, base is None, device,
                 (run_id, ckpt_path, key), torch)  # fmt: skip

    view = _dev_view(settings)

    def evaluate() -> float:
        scores = dev_scores(run.tagger(), dev_docs, min_confidence=view)
        return float(scores["exact"]["micro"]["f1"])

    stats = fit(
        built.model,
        run.optimizer,
        run.rows,
        run.st,
        run.plan,
        settings=settings,
        device=device,
        pad_id=run.wnd.special.pad_id,
        evaluate=evaluate if dev_docs and settings.dev_signal != "none" else None,
        checkpoint=run.checkpoint,
        progress=progress,
        torch=torch,
    )
    return _save(run, out_dir, base, types, settings, train_docs, dev_docs, mlm_texts,
                 reasons, data_info, stats, started)  # fmt: skip


def _save(
    run: _Run,
    out_dir: Path,
    base: Path | None,
    types: list[str],
    settings: NerSettings,
    train_docs: Sequence[Document],
    dev_docs: Sequence[Document],
    mlm_texts: list[str] | None,
    zone_reasons: list[str],
    data_info: dict[str, Any] | None,
    stats: LoopStats,
    started: float,
) -> TrainResult:
    """The best weights, scored on dev, saved with their ``ner.json``; the checkpoint removed."""
    model, st = run.built.model, run.st
    if st.best_state is not None:
        model.load_state_dict(st.best_state)
    model.eval()
    view = _dev_view(settings)
    metrics = dev_scores(run.tagger(), dev_docs, min_confidence=view) if dev_docs else {}
    if metrics:
        undecided = any(
            d.uncertain or any(sp.confidence < settings.min_confidence for sp in d.spans)
            for d in dev_docs
        )
        metrics["view"] = "partial labels" if view is not None and undecided else "plain"
    model.to("cpu")
    parameters = sum(p.numel() for p in model.parameters())
    seconds = time.monotonic() - started
    meta = model_meta(
        labels=run.labels,
        types=types,
        windowing=run.wnd,
        base=base,
        model=model,
        parameters=parameters,
        settings=settings,
        mlm_texts=mlm_texts,
        zone_reasons=zone_reasons,
        data_info=data_info,
        train_docs=train_docs,
        dev_docs=dev_docs,
        train_windows=len(run.rows),
        loop=st,
        plan=run.plan,
        device=run.device,
        seconds=seconds,
        metrics=metrics,
    )
    save_model(out_dir, model, run.built.tokenizer, meta, run.key)
    run.ckpt_path.unlink(missing_ok=True)
    return TrainResult(
        model_dir=out_dir,
        steps=st.step,
        max_steps=run.plan.total,
        resumed_from=run.resumed_from,
        stopped_early=st.stopped_early,
        best_step=st.best_step,
        dev_f1=float(metrics["exact"]["micro"]["f1"]) if metrics else None,
        dev_metrics=metrics,
        train_docs=len(train_docs),
        dev_docs=len(dev_docs),
        train_windows=len(run.rows),
        parameters=parameters,
        tokens_per_second=stats.tokens / max(1e-9, time.monotonic() - stats.started),
        seconds=seconds,
        mlm_steps=run.built.mlm_steps,
        history=st.history,
        zone_reasons=zone_reasons,
    )


# ---------------------------------------------------------------------------
# Self-training rounds


def _round_progress(
    progress: Callable[[TrainProgress], None] | None, k: int, rounds: int
) -> Callable[[TrainProgress], None] | None:
    if progress is None or k == 0:
        return progress
    inner = progress

    def report(p: TrainProgress) -> None:
        inner(replace(p, phase=f"{p.phase} (self-training {k}/{rounds})"))

    return report


def _result_record(result: TrainResult) -> dict[str, Any]:
    return {**dataclasses.asdict(result), "model_dir": str(result.model_dir)}


def _done_round(folder: Path, run_id: str) -> TrainResult | None:
    """The result of a round finished earlier with this fingerprint, else None."""
    try:
        done = json.loads((folder / ROUND_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if done.get("fingerprint") != run_id or not (folder / NER_META).is_file():
        return None
    record = dict(done["result"])
    record["model_dir"] = Path(record["model_dir"])
    return TrainResult(**record)


def _self_train(
    train_docs: Sequence[Document],
    dev_docs: Sequence[Document],
    out_dir: Path,
    settings: NerSettings,
    job: _Job,
) -> TrainResult:
    """Round 0 on the annotator's labels, then students on re-labelled notes while dev improves.

    The teacher of round K is the model of round K-1. With a dev gold file
    (``data_info["dev"]["kind"] == "gold file"``) a student whose dev score
    falls below its teacher's is dropped and the rounds stop there, as they
    do when the score stays level (that student is kept). With a split of the
    annotated notes as dev (it scores agreement with the annotator, which a
    student departs from by design) or no dev signal, every round runs and
    the last is kept; the dev set still picks each round's best weights. The kept round's model is
    saved into ``out_dir`` with the rounds in its ``ner.json``.
    """
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (CHECKPOINT, CHECKPOINT_ENC):  # a single run's, started earlier into this folder
        (out_dir / stale).unlink(missing_ok=True)
    work = out_dir / ROUNDS_DIR
    total = settings.rounds
    single = replace(settings, self_training_rounds=0)
    # A student always reads the teacher's doubts as partial labels.
    student = replace(single, partial_labels=True)
    # Only real gold notes can judge a student: it is trained to depart from the
    # annotator, and a split of the annotated notes counts that as error.
    dev_kind = ((job.data_info or {}).get("dev") or {}).get("kind")
    watch = bool(dev_docs) and settings.dev_signal != "none" and dev_kind == "gold file"
    device = resolve_device(settings.device)
    docs = list(train_docs)
    records: list[dict[str, Any]] = []
    results: list[TrainResult] = []
    kept = 0
    for k in range(total + 1):
        counts: dict[str, int] = {}
        if k > 0:
            teacher = torch_tagger(work / f"round-{kept}", device=device, key=job.key)
            relabelled = relabel(
                train_docs,
                teacher,
                threshold=settings.self_training_threshold,
                min_confidence=settings.min_confidence,
                partial=settings.partial_labels,
            )
            del teacher
            docs, counts = relabelled.docs, relabelled.counts()
        round_settings = single if k == 0 else student
        folder = work / f"round-{k}"
        run_id = fingerprint(round_settings, job.base, docs, dev_docs, job.types, job.mlm_texts)
        result = _done_round(folder, run_id)
        if result is None:
            round_job = replace(job, progress=_round_progress(job.progress, k, total))
            result = _train_once(docs, dev_docs, folder, round_settings, round_job)
            record = {"fingerprint": run_id, "result": _result_record(result)}
            atomic_write(folder / ROUND_FILE, json.dumps(record).encode("utf-8"))
        results.append(result)
        records.append(
            {
                "round": k,
                "steps": result.steps,
                "best_step": result.best_step,
                "dev_f1": result.dev_f1,
                **counts,
            }
        )
        if k == 0:
            continue
        teacher_f1 = results[kept].dev_f1 or 0.0
        f1 = result.dev_f1 or 0.0
        if watch and f1 < teacher_f1:
            records[-1]["stop"] = "dev score below the teacher's: student dropped"
            break
        kept = k
        if watch and f1 == teacher_f1:
            records[-1]["stop"] = "dev score level with the teacher's"
            break
    for r in records:
        r["kept"] = r["round"] == kept
    best = results[kept]
    _save_kept(work / f"round-{kept}", out_dir, settings, records, job.key)
    shutil.rmtree(work, ignore_errors=True)
    return replace(
        best,
        model_dir=out_dir,
        seconds=time.monotonic() - started,
        rounds=records,
        steps=best.steps,
    )


def _save_kept(
    folder: Path,
    out_dir: Path,
    settings: NerSettings,
    records: list[dict[str, Any]],
    key: DataKey | None,
) -> None:
    """The kept round's model saved as ``out_dir``, its ``ner.json`` naming every round."""
    m = load_model(folder, key)
    meta = json.loads((folder / NER_META).read_text(encoding="utf-8"))
    meta.pop("encrypted", None)  # save_model writes it again for an encrypted model
    meta["settings"] = settings.as_dict()
    meta["self_training"] = {
        "rounds": records,
        "kept": next(r["round"] for r in records if r["kept"]),
        "threshold": settings.self_training_threshold,
    }
    save_model(out_dir, m.model, m.tokenizer, meta, key)


# ---------------------------------------------------------------------------
# Workspace wrapper


def model_root(ws: Workspace, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"--name {name!r}: expected a plain folder name such as 'default'")
    return ws.models_dir / "ner" / name


def is_dev(doc_id: str, fraction: float, seed: int) -> bool:
    """Stable dev membership: a hash of the note id, so adding notes never moves one."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_dev(
    docs: Sequence[Document], fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    train = [d for d in docs if not is_dev(d.id, fraction, seed)]
    dev = [d for d in docs if is_dev(d.id, fraction, seed)]
    if not dev and len(train) > 1:
        dev, train = train[-1:], train[:-1]
    return train, dev


def _training_notes(
    ws: Workspace,
    annotations: str,
    train_gold: Path | None,
    gold_format: str,
    inputs: list[dict[str, Any]],
) -> tuple[list[Document], dict[str, Any]]:
    """The notes to train on (a gold file, else the workspace's annotations) and where they came from."""
    if train_gold is not None:
        docs = read_gold(train_gold, gold_format)
        inputs.append(hashed(train_gold, ws.root))
        source: dict[str, Any] = {
            "kind": "gold file",
            "path": str(train_gold),
            "sha256": inputs[-1]["sha256"],
            "note": "trained on this gold file, not on the workspace's annotations",
        }
        return list(docs), source
    try:
        from appliance.corpus import read_annotations
    except ImportError:
        raise WorkspaceError(
            "the annotate stage is not available in this installation; train with --train GOLD"
        ) from None
    docs = read_annotations(ws, annotations)
    ann_manifest = ws.annotation_dir(annotations) / "manifest.json"
    inputs.append(hashed(ann_manifest, ws.root))
    manifest = read_manifest(ws.annotation_dir(annotations)) or {}
    from appliance.corpus import release_manifest

    inputs.append(hashed(release_manifest(ws, manifest.get("corpus", "default")), ws.root))
    source = {
        "kind": "annotations",
        "name": annotations,
        "manifest_sha256": inputs[-1]["sha256"],
        "annotator": manifest.get("annotator"),
        "release": manifest.get("release"),
    }
    return list(docs), source


def _dev_notes(
    ws: Workspace,
    docs: list[Document],
    dev_gold: Path | None,
    gold_format: str,
    settings: NerSettings,
    inputs: list[dict[str, Any]],
) -> tuple[list[Document], list[Document], dict[str, Any]]:
    """(train, dev, where dev came from): a dev gold file, else a stable split of the notes."""
    if dev_gold is not None:
        dev = read_gold(dev_gold, gold_format)
        train = list(docs)
        inputs.append(hashed(dev_gold, ws.root))
        dev_source: dict[str, Any] = {
            "kind": "gold file",
            "path": str(dev_gold),
            "sha256": inputs[-1]["sha256"],
        }
        return train, list(dev), dev_source
    train, dev = split_dev(docs, settings.dev_fraction, settings.seed)
    dev_source = {
        "kind": "split of the training notes",
        "fraction": settings.dev_fraction,
        "ids": [d.id for d in dev],
    }
    return train, dev, dev_source


def _mention_terms(
    ws: Workspace, source: dict[str, Any], train: Sequence[Document], min_confidence: float
) -> tuple[dict[str, list[str]], str]:
    """The terms mention replacement draws from, and where they came from.

    The lexicon the training annotations were made with (public vocabulary:
    many names the notes never use); without one (an LLM annotator, a gold
    file, a lexicon file that changed since), the distinct confident mentions
    of the training notes themselves.
    """
    from appliance.ner.lexicon import training_lexicon

    why = "the training notes' own confident mentions"
    if source.get("kind") == "annotations":
        manifest = read_manifest(ws.annotation_dir(str(source.get("name", "default"))))
        try:
            packed, reason = training_lexicon(source, manifest, ws.root, ws.policy.entity_schema())
        except (WorkspaceError, InputError) as exc:  # gone, changed, or unreadable now
            packed, reason = None, str(exc)
        if packed is not None:
            terms: dict[str, list[str]] = {}
            for entry in packed.lexicon.entries:
                terms.setdefault(entry.label, []).append(entry.surface)
            return terms, "the lexicon of the training annotations"
        why += f" ({reason})"
    terms = {}
    for doc in train:
        for s in doc.spans:
            if s.confidence >= min_confidence:
                terms.setdefault(s.label, []).append(s.text)
    return terms, why


def _with_mention_copies(
    ws: Workspace, train: list[Document], source: dict[str, Any], settings: NerSettings
) -> tuple[list[Document], dict[str, Any] | None]:
    """``train`` plus its mention-replaced copies (none when ``mention_copies`` is 0)."""
    if not settings.mention_copies:
        return train, None
    threshold = max(settings.min_confidence, 0.9)  # only dictionary-sure spans are swapped
    terms, where = _mention_terms(ws, source, train, threshold)
    if settings.holdout_share:
        terms = without_held_out(terms, settings.holdout_share, settings.seed)
    copies, stats = replace_mentions(
        train,
        terms,
        share=settings.mention_share,
        copies=settings.mention_copies,
        min_confidence=threshold,
        seed=settings.seed,
    )
    info = {
        "terms": where,
        "term_count": sum(len(set(v)) for v in terms.values()),
        **stats.as_dict(),
    }
    return [*train, *copies], info


def _schema_types(ws: Workspace, train: Sequence[Document]) -> list[str]:
    """The policy's entity types when the notes use no others (the model keeps their order)."""
    schema_types = ws.policy.entity_schema().labels
    found = {s.label for d in train for s in d.spans}
    return schema_types if found <= set(schema_types) else sorted(found)


def _record_texts(ws: Workspace, inputs: list[dict[str, Any]]) -> list[str]:
    """The real notes of the record store, for --mlm-on-records."""
    from appliance.records.ingest import open_store

    if not (ws.store_manifest).exists():
        raise WorkspaceError(
            f"{ws.root}: --mlm-on-records needs ingested records; run `appliance ingest EXPORT`"
        )
    mlm_texts = [r.text for r in open_store(ws)]
    inputs.append(hashed(ws.store_manifest, ws.root))
    return mlm_texts


def _keep_dev_split(root: Path, dev: list[Document] | None, key: DataKey | None) -> None:
    """Keep the development split with the model (export measures the int8 loss on it).

    Encrypted with ``key`` (a real-zone split: real notes), else plain JSONL;
    a split of an earlier run in the other form, or none (``dev`` None: a dev
    gold file was given), is removed so export never reads a stale one.
    """
    plain, sealed = root / DEV_FILE, root / DEV_FILE_ENC
    if dev is None:
        plain.unlink(missing_ok=True)
        sealed.unlink(missing_ok=True)
    elif key is not None:
        body = "".join(
            json.dumps(document_to_json(d), ensure_ascii=False) + "\n" for d in dev
        ).encode("utf-8")
        write_encrypted(sealed, key, body, label=zones.LABEL_DEV)
        plain.unlink(missing_ok=True)
    else:
        write_jsonl(dev, plain)
        sealed.unlink(missing_ok=True)


def _write_stage_manifest(
    ws: Workspace,
    root: Path,
    *,
    base: str,
    settings: NerSettings,
    started: str,
    inputs: list[dict[str, Any]],
    source: dict[str, Any],
    dev_source: dict[str, Any],
    result: TrainResult,
    key: DataKey | None,
) -> None:
    real = bool(result.zone_reasons)
    notes = []
    if dev_source.get("kind") == "gold file":
        notes.append(
            f"development gold file {Path(str(dev_source.get('path'))).name} "
            f"(sha256 {dev_source.get('sha256')}) scored checkpoints only; no text of it is kept"
        )
    write_manifest(
        root,
        {
            "stage": "ner train",
            "zone": result.zone,
            "zone_reasons": result.zone_reasons,
            "zone_notes": notes,
            "encrypted": {"key_id": key.key_id} if real and key is not None else None,
            "started": started,
            "finished": utc_now(),
            "inputs": inputs,
            "base": base,
            "settings": settings.as_dict(),
            "data": {
                "source": source,
                "dev": {k: v for k, v in dev_source.items() if k != "ids"},
                "train_notes": result.train_docs,
                "dev_notes": result.dev_docs,
                "real_notes_seen": real,
            },
            "model": hashed(root / "model", ws.root),
            "metrics": {"dev": result.dev_metrics},
            "training": {
                "steps": result.steps,
                "best_step": result.best_step,
                "stopped_early": result.stopped_early,
                "resumed_from": result.resumed_from,
                **({"self_training": result.rounds} if result.rounds else {}),
            },
        },
    )


def run(
    ws: Workspace,
    *,
    base: str = "scratch",
    annotations: str = "default",
    train_gold: Path | None = None,
    dev_gold: Path | None = None,
    gold_format: str = "auto",
    name: str = "default",
    mlm_on_records: bool = False,
    settings: NerSettings | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train ``models/ner/<name>/`` on the workspace's annotations (or a gold file), with audit entry."""
    given = settings or NerSettings()
    settings = given.resolved(gold=train_gold is not None)
    if dev_gold is not None and given.term_holdout is None:
        # Real gold notes choose the package's default at export: no term need be withheld.
        settings = replace(settings, term_holdout=0.0)
    root = ws.ner_model_dir(name)
    base_dir = None if base == "scratch" else Path(base).expanduser().resolve()
    args = {
        "base": base,
        "annotations": annotations,
        "train": str(train_gold) if train_gold else None,
        "dev": str(dev_gold) if dev_gold else None,
        "name": name,
        "mlm_on_records": mlm_on_records,
        "settings": settings.as_dict(),
    }
    with ws.stage("ner train", args, interrupted="interrupted (checkpoint kept)") as stage:
        inputs = stage.inputs
        docs, source = _training_notes(ws, annotations, train_gold, gold_format, inputs)
        train, dev, dev_source = _dev_notes(ws, docs, dev_gold, gold_format, settings, inputs)
        train_dev = dev
        if settings.holdout_share:
            train, held = withhold(train, settings.holdout_share, settings.seed)
            if dev_gold is None:  # nor are they scored in training: export judges on them
                train_dev, _ = withhold(dev, settings.holdout_share, settings.seed)
            source = {
                **source,
                "term_holdout": {"share": settings.holdout_share, "seed": settings.seed}
                | held.as_dict(),
            }
        train, replaced = _with_mention_copies(ws, train, source, settings)
        if replaced is not None:
            source = {**source, "mention_replacement": replaced}
        mlm_texts = _record_texts(ws, inputs) if mlm_on_records else None
        reasons = zones.training_reasons(
            source,
            dev_source,
            base_dir,
            len(mlm_texts or []),
            inputs[-1]["sha256"] if mlm_on_records else None,
        )
        real = bool(reasons)
        key = ws.data_key if real or (base_dir and zones.is_encrypted(base_dir)) else None
        types = _schema_types(ws, train)
        root.mkdir(parents=True, exist_ok=True)
        started = utc_now()
        result = train_model(
            train,
            train_dev,
            base=base_dir,
            out_dir=root / "model",
            settings=settings,
            types=types,
            data_info={"source": source, "dev": dev_source, "real_notes_seen": real},
            mlm_texts=mlm_texts,
            zone_reasons=reasons,
            data_key=key,
            progress=progress,
        )
        _keep_dev_split(root, dev if dev_gold is None else None, key if real else None)
        _write_stage_manifest(
            ws,
            root,
            base=base,
            settings=settings,
            started=started,
            inputs=inputs,
            source=source,
            dev_source=dev_source,
            result=result,
            key=key,
        )
        stage.outputs = [hashed(root / "manifest.json", ws.root), hashed(root / "model", ws.root)]
        stage.details = {
            "steps": result.steps,
            "dev_f1": result.dev_f1,
            "train_notes": result.train_docs,
            "dev_notes": result.dev_docs,
            "zone": result.zone,
            "zone_reasons": result.zone_reasons,
            **(
                {"self_training_kept": next(r["round"] for r in result.rounds if r["kept"])}
                if result.rounds
                else {}
            ),
        }
    return result
