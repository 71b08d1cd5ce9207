"""``appliance screen``: decide per synthetic note, *released* or *quarantined*.

Every unscreened note of a synthetic corpus (or of an external file given
with ``--input``) is checked against the workspace's real records by the
detectors in :mod:`appliance.privacy.detectors`, in batches (memory stays
bounded), against the reference index (built once per record set, see
:mod:`appliance.privacy.reference`). A note is quarantined when any
detector's finding says so under the policy; otherwise it is released.

The run writes a report (``reports/screen-*.json`` and a self-contained
``.html``), and, for a corpus, the signed release manifest the later stages
require (:mod:`appliance.corpus`). The report's and the release's
hashes go into the audit log.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.corpus import text_sha256, write_release
from appliance.errors import ApplianceError, InputError, UsageError
from appliance.privacy.detectors import Candidate, Context, Detector, Finding, default_detectors
from appliance.privacy.reference import DEFAULT_HOLDOUT_FRACTION, ReferenceIndex, load_or_build
from appliance.security.audit import utc_now
from appliance.workspace import Workspace, hashed

BATCH = 2048


@dataclass
class Decision:
    id: str
    released: bool
    scores: dict[str, float | None]
    findings: list[Finding]
    tokens: int


@dataclass
class ScreenResult:
    source: str
    corpus: str | None
    screened: int = 0
    released: int = 0
    quarantined: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    by_detector: Counter[str] = field(default_factory=Counter)
    report_json: Path | None = None
    report_html: Path | None = None
    release: Path | None = None
    index_built: bool = False
    seconds: float = 0.0
    index_seconds: float = 0.0
    canaries: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.by_detector.items())) or "none"
        rej = f", {len(self.rejected)} rejected" if self.rejected else ""
        return (
            f"screened {self.screened} notes from {self.source}: {self.released} released, "
            f"{self.quarantined} quarantined ({why}){rej} in {self.seconds:.1f}s; "
            f"report {self.report_html}"
        )


# --------------------------------------------------------------------------- inputs


def read_candidates(path: Path) -> Iterator[tuple[str, str] | tuple[str, None, str]]:
    """Notes of an external file: (id, text), or (id, None, reason) for one that cannot be screened.

    JSONL with ``id`` and ``text`` per line, or a folder of ``.txt`` files (id: the file name).
    """
    from appliance.documents import Reject
    from appliance.records.readers import ReaderOptions, read_export

    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    fmt = "txt" if path.is_dir() else "jsonl"
    if fmt == "jsonl" and path.suffix.lower() not in (".jsonl", ".ndjson", ".json"):
        raise InputError(f"{path}: --input takes JSONL (id and text per line) or a folder of .txt")
    for item in read_export(path, fmt, ReaderOptions()):
        if isinstance(item, Reject):
            yield (item.location, None, item.reason)
        else:
            yield (item.id, item.text)


def _corpus_notes(ws: Workspace, corpus: str) -> Iterator[tuple[str, str]]:
    from appliance.corpus import read_corpus

    for note in read_corpus(ws, corpus):
        yield note.id, note.text


def _batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------- screening


class Screener:
    """Runs the detectors over batches of notes against one reference index."""

    def __init__(
        self,
        ws: Workspace,
        index: ReferenceIndex,
        detectors: Sequence[Detector] | None = None,
    ) -> None:
        from appliance.records.ingest import open_store

        self.ws = ws
        self.index = index
        self.policy = ws.policy
        self.detectors = list(detectors or default_detectors(index, ws.policy))
        self.store = open_store(ws)
        self._real_cache: dict[int, list[str]] = {}
        self.closer_to_training: list[bool] = []

    def _fetch(self, records: set[int]) -> dict[int, list[str]]:
        from appliance.privacy.reference import word_tokens

        missing = [r for r in records if r not in self._real_cache]
        if missing:
            if len(self._real_cache) > 50_000:
                self._real_cache.clear()
            ids = {self.index.record_ids[r]: r for r in missing}
            found = self.store.get_many(ids)
            for rid, rec in found.items():
                self._real_cache[ids[rid]] = word_tokens(rec.text)
            lost = set(ids) - set(found)
            if lost:
                from appliance.errors import IntegrityError

                raise IntegrityError(
                    f"{len(lost)} records of the leakage index are not in the record store; "
                    "the index is stale (rerun `appliance screen`, which rebuilds it)"
                )
        return {r: self._real_cache[r] for r in records}

    def screen(
        self, notes: Sequence[tuple[str, str]], exclude: np.ndarray | None = None
    ) -> list[Decision]:
        batch = [Candidate.of(i, t, self.index) for i, t in notes]
        ctx = Context(self.index, self.policy, exclude=exclude)
        needed: set[int] = set()
        for d in self.detectors:
            needed |= d.needs(batch, ctx)
        ctx.real = self._fetch(needed)
        outcomes = {d.name: d.check(batch, ctx) for d in self.detectors}
        self.closer_to_training += ctx.cache.get("dcr_closer_to_training", [])
        decisions = []
        for i, cand in enumerate(batch):
            findings = [f for d in self.detectors for f in outcomes[d.name][i].findings]
            decisions.append(
                Decision(
                    id=cand.id,
                    released=not any(f.quarantine for f in findings),
                    scores={d.name: outcomes[d.name][i].score for d in self.detectors},
                    findings=findings,
                    tokens=len(cand.tokens),
                )
            )
        return decisions


CALIBRATION_FILE = "calibration.json"
CALIBRATION_NOTES = 2000


def calibrate(ws: Workspace, index: ReferenceIndex, fingerprint: str) -> dict[str, Any]:
    """How much held-out real notes share with the training notes, per detector.

    The same detectors run over (up to 2,000) held-out real notes, compared
    with the training notes only. This is the baseline the report shows
    beside the synthetic notes' scores, and, with ``verbatim_calibrate``,
    it raises the verbatim threshold to what clean held-out notes already
    share (templated notes share long runs that identify no one). Kept
    beside the index (numbers only), keyed by its fingerprint and the policy.
    """
    from appliance.privacy.detectors import (
        LcsRatioDetector,
        NearDuplicateDetector,
        VerbatimDetector,
    )
    from appliance.privacy.reference import INDEX_DIR
    from appliance.records.ingest import open_store

    lk = ws.policy.leakage
    key = {"fingerprint": fingerprint, "leakage": dict(lk.__dict__)}
    path = ws.records_dir / INDEX_DIR / CALIBRATION_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return dict(saved["baseline"])
    held = np.flatnonzero(index.holdout)
    if len(held) > CALIBRATION_NOTES:
        held = np.sort(np.random.default_rng(0).choice(held, CALIBRATION_NOTES, replace=False))
    baseline: dict[str, Any] = {"notes": len(held)}
    if len(held):
        screener = Screener(
            ws, index, [NearDuplicateDetector(), VerbatimDetector(), LcsRatioDetector()]
        )
        store = open_store(ws)
        values: dict[str, list[float]] = {"verbatim": [], "lcs_ratio": [], "near_duplicate": []}
        for s in range(0, len(held), 500):
            ids = [index.record_ids[i] for i in held[s : s + 500].tolist()]
            found = store.get_many(ids)
            notes = [(i, found[i].text) for i in ids if i in found]
            for d in screener.screen(notes, exclude=index.holdout):
                for name in values:
                    v = d.scores.get(name)
                    if v is not None:
                        values[name].append(float(v))
        baseline.update(values)
    path.write_text(json.dumps({"key": key, "baseline": baseline}) + "\n")
    return baseline


def verbatim_limit(ws: Workspace, baseline: dict[str, Any]) -> tuple[int, str]:
    """The effective verbatim threshold and why."""
    lk = ws.policy.leakage
    runs = baseline.get("verbatim") or []
    if not lk.verbatim_calibrate or len(runs) < 20:
        return lk.verbatim_max_tokens, "policy"
    q = float(np.quantile(runs, 1 - max(lk.dcr_quantile, 0.01)))
    calibrated = math.floor(q) + 1
    if calibrated <= lk.verbatim_max_tokens:
        return lk.verbatim_max_tokens, "policy"
    return calibrated, (
        f"raised from {lk.verbatim_max_tokens}: {1 - max(lk.dcr_quantile, 0.01):.0%} of held-out "
        f"real notes share at most {int(q)} tokens with a training note"
    )


def _generator_settings(ws: Workspace) -> tuple[float, list[str], Any]:
    """(holdout fraction, canary secrets, generator or None) of the workspace's generator."""

    manifest = ws.generator_dir / "manifest.json"
    if not manifest.exists():
        return DEFAULT_HOLDOUT_FRACTION, [], None
    from appliance.generator.artifact import load_generator

    gen = load_generator(ws)
    fraction = float(gen.meta.get("holdout", {}).get("fraction", DEFAULT_HOLDOUT_FRACTION))
    secrets = [c["text"].rsplit(" is ", 1)[-1].rstrip(".") for c in gen.meta.get("canaries", [])]
    return fraction, secrets, gen


def run(
    ws: Workspace,
    *,
    corpus: str | None = "default",
    input_path: Path | None = None,
    import_as: str | None = None,
    batch_size: int = BATCH,
    progress: Callable[[int], None] | None = None,
    index_progress: Callable[[int], None] | None = None,
) -> ScreenResult:
    """Screen a synthetic corpus (``corpus``) or an external file (``input_path``).

    With ``input_path`` and ``import_as``, the file's notes are first stored
    as an unscreened corpus of that name, then screened and released like
    generated notes.
    """
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    args = {
        "corpus": corpus,
        "input": str(input_path) if input_path else None,
        "import_as": import_as,
    }
    try:
        with ws.lock("screen"):
            result = _run(ws, corpus, input_path, import_as, batch_size, progress, index_progress)
    except ApplianceError as exc:
        ws.log("screen", args=args, result=f"error: {exc.message}")
        raise
    outputs = [hashed(p, ws.root) for p in (result.report_json, result.report_html) if p]
    if result.release is not None:
        outputs.append(hashed(result.release, ws.root))
    inputs = [hashed(ws.store_manifest, ws.root)]
    if result.corpus is not None:
        inputs.append(hashed(ws.corpus_dir(result.corpus) / "manifest.json", ws.root))
    elif input_path is not None and input_path.is_file():
        inputs.append(hashed(input_path))
    ws.log(
        "screen",
        args=args,
        inputs=inputs,
        outputs=outputs,
        details={
            "screened": result.screened,
            "released": result.released,
            "quarantined": result.quarantined,
            "rejected": len(result.rejected),
            "by_detector": dict(result.by_detector),
            "index_rebuilt": result.index_built,
        },
    )
    return result


def _run(
    ws: Workspace,
    corpus: str | None,
    input_path: Path | None,
    import_as: str | None,
    batch_size: int,
    progress: Callable[[int], None] | None,
    index_progress: Callable[[int], None] | None,
) -> ScreenResult:
    from appliance.privacy.report import write_report

    started = time.monotonic()
    rejected: list[tuple[str, str]] = []
    if input_path is not None:
        if import_as is not None:
            from appliance.corpus import import_corpus

            good: list[tuple[str, str, dict[str, str]]] = []
            ids: set[str] = set()
            for item in read_candidates(input_path):
                if len(item) == 3:
                    rejected.append((item[0], str(item[2])))
                elif item[0] in ids:
                    rejected.append((item[0], "duplicate note id (the first one was screened)"))
                else:
                    ids.add(item[0])
                    good.append((item[0], str(item[1]), {}))
            import_corpus(ws, import_as, good, source=str(input_path))
            corpus = import_as
        else:
            corpus = None
    elif corpus is None:
        raise UsageError("give a corpus (--corpus NAME) or a file of notes (--input FILE)")

    fraction, canaries, gen = _generator_settings(ws)
    t0 = time.monotonic()
    index, built = load_or_build(
        ws, holdout_fraction=fraction, canaries=canaries, progress=index_progress
    )
    from appliance.privacy.detectors import VerbatimDetector
    from appliance.privacy.reference import fingerprint as index_fingerprint

    baseline = calibrate(ws, index, index_fingerprint(ws, fraction, canaries))
    index_seconds = time.monotonic() - t0
    screener = Screener(ws, index)
    limit, limit_why = verbatim_limit(ws, baseline)
    for det in screener.detectors:
        if isinstance(det, VerbatimDetector):
            det.limit = limit
    result = ScreenResult(
        source=f"corpus '{corpus}'" if corpus is not None else str(input_path),
        corpus=corpus,
        index_built=built,
        index_seconds=index_seconds,
    )
    result.rejected = rejected

    if corpus is not None:
        notes: Iterable[tuple[str, str]] = _corpus_notes(ws, corpus)
    else:
        assert input_path is not None

        def external() -> Iterator[tuple[str, str]]:
            for item in read_candidates(input_path):
                if len(item) == 3:
                    rejected.append((item[0], str(item[2])))
                else:
                    yield item[0], str(item[1])

        notes = external()

    seen: set[str] = set()
    released: list[tuple[str, str]] = []  # (id, sha256 of the text)
    quarantined_ids: list[str] = []
    decisions_out: list[dict[str, Any]] = []
    quarantined_detail: list[dict[str, Any]] = []
    scores: dict[str, list[float]] = {d.name: [] for d in screener.detectors}

    def unique(items: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
        for note_id, text in items:
            if note_id in seen:
                rejected.append((note_id, "duplicate note id (the first one was screened)"))
                continue
            seen.add(note_id)
            if not text.strip():
                rejected.append((note_id, "empty note"))
                continue
            yield note_id, text

    texts: dict[str, str] = {}
    for batch in _batched(unique(notes), batch_size):
        texts = dict(batch)
        for d in screener.screen(batch):
            result.screened += 1
            for name, value in d.scores.items():
                if value is not None:
                    scores[name].append(float(value))
            if d.released:
                result.released += 1
                released.append((d.id, text_sha256(texts[d.id])))
            else:
                result.quarantined += 1
                quarantined_ids.append(d.id)
                for name in sorted({f.detector for f in d.findings if f.quarantine}):
                    result.by_detector[name] += 1
                from appliance.privacy.report import masked_findings

                quarantined_detail.append(
                    {
                        "id": d.id,
                        "tokens": d.tokens,
                        "findings": masked_findings(texts[d.id], d.findings, index, ws),
                    }
                )
            decisions_out.append(
                {
                    "id": d.id,
                    "decision": "released" if d.released else "quarantined",
                    "scores": {
                        k: (None if v is None else round(v, 4)) for k, v in d.scores.items()
                    },
                    "reported": sum(1 for f in d.findings if not f.quarantine),
                }
            )
        if progress is not None:
            progress(len(batch))
    texts = {}

    if gen is not None and canaries:
        from appliance.privacy.canary import exposures

        result.canaries = exposures(gen, [c["text"] for c in gen.meta["canaries"]])

    result.seconds = time.monotonic() - started
    closer = screener.closer_to_training
    report = {
        "created": utc_now(),
        "source": result.source,
        "corpus": corpus,
        "input": str(input_path) if input_path else None,
        "policy": {
            "path": ws.rel(ws.policy.path),
            "sha256": ws.policy.sha256,
            "leakage": dict(ws.policy.leakage.__dict__),
            "identifiers": {
                "types": ws.policy.identifiers.types,
                "quarantine_generic": ws.policy.identifiers.quarantine_generic,
            },
        },
        "index": {
            "records": len(index.record_ids),
            "holdout_records": int(index.holdout.sum()),
            "rebuilt": built,
            "seconds": round(index_seconds, 2),
        },
        "counts": {
            "screened": result.screened,
            "released": result.released,
            "quarantined": result.quarantined,
            "rejected": len(result.rejected),
            "by_detector": dict(result.by_detector),
        },
        "detectors": {
            d.name: {
                "description": d.description,
                "quarantined": result.by_detector.get(d.name, 0),
                "scores": _summary(scores[d.name]),
            }
            for d in screener.detectors
        },
        "dcr": _dcr_summary(screener, closer),
        "verbatim_threshold": {"tokens": limit, "source": limit_why},
        "baseline": {
            "notes": baseline.get("notes", 0),
            **{k: _summary(v) for k, v in baseline.items() if isinstance(v, list)},
        },
        "canaries": result.canaries,
        "quarantined": quarantined_detail,
        "rejected": [{"id": i, "reason": r} for i, r in result.rejected],
        "notes": decisions_out,
        "seconds": round(result.seconds, 2),
    }
    result.report_json, result.report_html = write_report(ws, report, scores, index, baseline)
    if corpus is not None:
        result.release = write_release(
            ws,
            corpus,
            released=released,
            quarantined=quarantined_ids,
            report={
                "json": hashed(result.report_json, ws.root),
                "html": hashed(result.report_html, ws.root),
            },
        )
    result.seconds = time.monotonic() - started
    return result


def _summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "count": len(a),
        "min": round(float(a.min()), 4),
        "median": round(float(np.median(a)), 4),
        "p95": round(float(np.quantile(a, 0.95)), 4),
        "max": round(float(a.max()), 4),
    }


def _dcr_summary(screener: Screener, closer: Sequence[bool]) -> dict[str, Any]:
    from appliance.privacy.detectors import DistanceToClosestDetector

    det = next((d for d in screener.detectors if isinstance(d, DistanceToClosestDetector)), None)
    if det is None:
        return {"enabled": False, "why": "not among the detectors"}
    if not det.enabled:
        if screener.policy.leakage.dcr_quantile <= 0:
            return {"enabled": False, "why": "dcr_quantile is 0 in the policy"}
        return {
            "enabled": False,
            "why": f"fewer than {det.min_holdout} held-out real notes of at least "
            f"{det.min_tokens} tokens to compare with ({len(det.baseline)}); "
            "the quantile would be noise",
        }
    return {
        "enabled": True,
        "threshold_similarity": round(det.threshold, 4),
        "quantile": screener.policy.leakage.dcr_quantile,
        "threshold_rank": det.rank,
        "holdout_notes": len(det.baseline),
        "min_tokens": det.min_tokens,
        "rule": "the ⌈(n + 1)(1 − q)⌉-th smallest held-out similarity (split conformal): "
        "a new real note lies above it with probability at most q",
        "baseline": _summary(det.baseline.tolist()),
        "share_closer_to_training_than_holdout": (
            round(sum(closer) / len(closer), 4) if closer else None
        ),
        "expected_share": 0.5,
    }
