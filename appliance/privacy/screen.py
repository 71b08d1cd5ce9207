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
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.corpus import import_corpus, read_corpus, text_sha256, write_release
from appliance.documents import Reject
from appliance.errors import InputError, IntegrityError, UsageError
from appliance.generator.artifact import load_generator
from appliance.privacy.canary import exposures
from appliance.privacy.detectors import (
    CALIBRATED,
    DETECTORS,
    Candidate,
    Context,
    Detector,
    Finding,
    default_detectors,
)
from appliance.privacy.detectors.base import summary
from appliance.privacy.reference import (
    DEFAULT_HOLDOUT_FRACTION,
    IndexView,
    ReferenceIndex,
    load_or_build,
    word_tokens,
)
from appliance.privacy.reference import fingerprint as index_fingerprint
from appliance.privacy.report import masked_findings, write_report
from appliance.records.ingest import open_store
from appliance.records.readers import ReaderOptions, read_export
from appliance.security.audit import utc_now
from appliance.workspace import Workspace, hashed

BATCH = 2048
# Notes screened against one view of the index: each round reads the on-disk tables once.
ROUND = 16384


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

        self.ws = ws
        self.index = index
        self.policy = ws.policy
        self.detectors = list(detectors or default_detectors(index, ws.policy))
        self.store = open_store(ws)
        self._real_cache: dict[int, list[str]] = {}

    def _fetch(self, records: set[int]) -> dict[int, list[str]]:
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
                raise IntegrityError(
                    f"{len(lost)} records of the leakage index are not in the record store; "
                    "the index is stale (rerun `appliance screen`, which rebuilds it)"
                )
        return {r: self._real_cache[r] for r in records}

    def screen(
        self,
        notes: Sequence[tuple[str, str]],
        exclude: np.ndarray | None = None,
        *,
        batch_size: int = BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> list[Decision]:
        """Decisions for ``notes`` (one round): one view of the index, then the detectors by batch."""
        candidates = [Candidate.of(i, t, self.index) for i, t in notes]
        dcr = any(getattr(d, "enabled", False) for d in self.detectors if d.name == "dcr")
        view = self.index.view(candidates, dcr=dcr)
        decisions: list[Decision] = []
        for s in range(0, len(candidates), batch_size):
            batch = candidates[s : s + batch_size]
            decisions += self._batch(batch, view, exclude)
            if progress is not None:
                progress(len(batch))
        return decisions

    def _batch(
        self, batch: Sequence[Candidate], view: IndexView, exclude: np.ndarray | None
    ) -> list[Decision]:
        ctx = Context(view, self.policy, exclude=exclude)
        needed: set[int] = set()
        for d in self.detectors:
            needed |= d.needs(batch, ctx)
        ctx.real = self._fetch(needed)
        outcomes = {d.name: d.check(batch, ctx) for d in self.detectors}
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

    The detectors listed in ``CALIBRATED`` run over (up to 2,000) held-out
    real notes, compared with the training notes only. This is the baseline
    the report shows beside the synthetic notes' scores, and each detector's
    ``calibrate`` may set its threshold from it (with ``verbatim_calibrate``,
    the verbatim threshold rises to what clean held-out notes already share:
    templated notes share long runs that identify no one). Kept beside the
    index (numbers only), keyed by its fingerprint and the policy.
    """

    lk = ws.policy.leakage
    key = {"fingerprint": fingerprint, "leakage": dict(lk.__dict__)}
    path = ws.leakage_index_dir / CALIBRATION_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return dict(saved["baseline"])
    held = np.flatnonzero(index.holdout)
    if len(held) > CALIBRATION_NOTES:
        held = np.sort(np.random.default_rng(0).choice(held, CALIBRATION_NOTES, replace=False))
    baseline: dict[str, Any] = {"notes": len(held)}
    if len(held):
        # In screening order (the LCS detector uses the near-duplicate candidates).
        detectors = [cls.create(index, ws.policy) for cls in DETECTORS if cls in CALIBRATED]
        screener = Screener(ws, index, detectors)
        store = open_store(ws)
        values: dict[str, list[float]] = {cls.name: [] for cls in CALIBRATED}
        notes: list[tuple[str, str]] = []
        for s in range(0, len(held), 500):
            ids = [index.record_ids[i] for i in held[s : s + 500].tolist()]
            found = store.get_many(ids)
            notes += [(i, found[i].text) for i in ids if i in found]
        for d in screener.screen(notes, exclude=index.holdout, batch_size=500):
            for name in values:
                v = d.scores.get(name)
                if v is not None:
                    values[name].append(float(v))
        baseline.update(values)
    path.write_text(json.dumps({"key": key, "baseline": baseline}) + "\n")
    return baseline


def _generator_settings(ws: Workspace) -> tuple[float, list[str], Any]:
    """(holdout fraction, canary secrets, generator or None) of the workspace's generator."""

    manifest = ws.generator_dir / "manifest.json"
    if not manifest.exists():
        return DEFAULT_HOLDOUT_FRACTION, [], None

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
    with ws.stage("screen", args) as stage:
        result = _run(ws, corpus, input_path, import_as, batch_size, progress, index_progress)
        stage.outputs = [hashed(p, ws.root) for p in (result.report_json, result.report_html) if p]
        if result.release is not None:
            stage.outputs.append(hashed(result.release, ws.root))
        stage.inputs = [hashed(ws.store_manifest, ws.root)]
        if result.corpus is not None:
            stage.inputs.append(hashed(ws.corpus_dir(result.corpus) / "manifest.json", ws.root))
        elif input_path is not None and input_path.is_file():
            stage.inputs.append(hashed(input_path))
        stage.details = {
            "screened": result.screened,
            "released": result.released,
            "quarantined": result.quarantined,
            "rejected": len(result.rejected),
            "by_detector": dict(result.by_detector),
            "index_rebuilt": result.index_built,
        }
    return result


# --------------------------------------------------------------------------- the steps of a run


def _run(
    ws: Workspace,
    corpus: str | None,
    input_path: Path | None,
    import_as: str | None,
    batch_size: int,
    progress: Callable[[int], None] | None,
    index_progress: Callable[[int], None] | None,
) -> ScreenResult:
    started = time.monotonic()
    rejected: list[tuple[str, str]] = []
    corpus = _source_corpus(ws, corpus, input_path, import_as, rejected)
    ref = _reference(ws, index_progress)
    result = ScreenResult(
        source=f"corpus '{corpus}'" if corpus is not None else str(input_path),
        corpus=corpus,
        index_built=ref.built,
        index_seconds=ref.seconds,
    )
    result.rejected = rejected
    tally = _Tally({d.name: [] for d in ref.screener.detectors})
    notes = _notes(ws, corpus, input_path, rejected)
    for round_ in _batched(_unique(notes, rejected), max(ROUND, batch_size)):
        texts = dict(round_)
        for d in ref.screener.screen(round_, batch_size=batch_size, progress=progress):
            tally.add(d, texts[d.id], result, ref.index, ws)
    if ref.gen is not None and ref.canaries:
        result.canaries = exposures(ref.gen, [c["text"] for c in ref.gen.meta["canaries"]])
    result.seconds = time.monotonic() - started
    report = _report(ws, result, input_path, ref, tally)
    result.report_json, result.report_html = write_report(
        ws, report, tally.scores, ref.index, ref.baseline
    )
    if corpus is not None:
        result.release = write_release(
            ws,
            corpus,
            released=tally.released,
            quarantined=tally.quarantined_ids,
            report={
                "json": hashed(result.report_json, ws.root),
                "html": hashed(result.report_html, ws.root),
            },
        )
    result.seconds = time.monotonic() - started
    return result


def _source_corpus(
    ws: Workspace,
    corpus: str | None,
    input_path: Path | None,
    import_as: str | None,
    rejected: list[tuple[str, str]],
) -> str | None:
    """The corpus to screen: ``corpus``, the file imported as ``import_as``, or None (the file as is).

    An import stores the file's good notes (the first of each id) as an
    unscreened corpus; the notes it leaves out go to ``rejected``.
    """
    if input_path is None:
        if corpus is None:
            raise UsageError("give a corpus (--corpus NAME) or a file of notes (--input FILE)")
        return corpus
    if import_as is None:
        return None

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
    return import_as


@dataclass
class _Reference:
    """What a run screens against: the index, its held-out baseline and the calibrated detectors."""

    index: ReferenceIndex
    built: bool
    seconds: float  # loading or building the index, and calibrating
    baseline: dict[str, Any]
    screener: Screener
    canaries: list[str]
    gen: Any  # the workspace's generator (for canary exposure), or None


def _reference(ws: Workspace, index_progress: Callable[[int], None] | None) -> _Reference:
    """Load (or build) the reference index, calibrate on held-out notes, set up the detectors."""
    fraction, canaries, gen = _generator_settings(ws)
    t0 = time.monotonic()
    index, built = load_or_build(
        ws, holdout_fraction=fraction, canaries=canaries, progress=index_progress
    )
    baseline = calibrate(ws, index, index_fingerprint(ws, fraction, canaries))
    seconds = time.monotonic() - t0
    screener = Screener(ws, index)
    for det in screener.detectors:
        det.calibrate(baseline, ws.policy)
    return _Reference(index, built, seconds, baseline, screener, canaries, gen)


def _notes(
    ws: Workspace, corpus: str | None, input_path: Path | None, rejected: list[tuple[str, str]]
) -> Iterator[tuple[str, str]]:
    """(id, text) of the notes to screen, read lazily; a file's unreadable notes go to ``rejected``."""
    if corpus is not None:
        yield from _corpus_notes(ws, corpus)
        return
    assert input_path is not None
    for item in read_candidates(input_path):
        if len(item) == 3:
            rejected.append((item[0], str(item[2])))
        else:
            yield item[0], str(item[1])


def _unique(
    items: Iterable[tuple[str, str]], rejected: list[tuple[str, str]]
) -> Iterator[tuple[str, str]]:
    """The notes with a new id and some text; the others go to ``rejected``."""
    seen: set[str] = set()
    for note_id, text in items:
        if note_id in seen:
            rejected.append((note_id, "duplicate note id (the first one was screened)"))
            continue
        seen.add(note_id)
        if not text.strip():
            rejected.append((note_id, "empty note"))
            continue
        yield note_id, text


@dataclass
class _Tally:
    """The decisions of a run as they come, batch by batch, for the report and the release."""

    scores: dict[str, list[float]]  # per detector, every note's score
    released: list[tuple[str, str]] = field(default_factory=list)  # (id, sha256 of the text)
    quarantined_ids: list[str] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)  # with masked findings

    def add(
        self, d: Decision, text: str, result: ScreenResult, index: ReferenceIndex, ws: Workspace
    ) -> None:
        result.screened += 1
        for name, value in d.scores.items():
            if value is not None:
                self.scores[name].append(float(value))
        if d.released:
            result.released += 1
            self.released.append((d.id, text_sha256(text)))
        else:
            result.quarantined += 1
            self.quarantined_ids.append(d.id)
            for name in sorted({f.detector for f in d.findings if f.quarantine}):
                result.by_detector[name] += 1
            self.quarantined.append(
                {
                    "id": d.id,
                    "tokens": d.tokens,
                    "findings": masked_findings(text, d.findings, index, ws),
                }
            )
        self.decisions.append(
            {
                "id": d.id,
                "decision": "released" if d.released else "quarantined",
                "scores": {k: (None if v is None else round(v, 4)) for k, v in d.scores.items()},
                "reported": sum(1 for f in d.findings if not f.quarantine),
            }
        )


def _report(
    ws: Workspace, result: ScreenResult, input_path: Path | None, ref: _Reference, tally: _Tally
) -> dict[str, Any]:
    """The JSON report of a run (the HTML page shows the same)."""
    index, detectors = ref.index, ref.screener.detectors
    # Each detector's own entries (thresholds and how they were set), in name order.
    sections = dict(sorted(((k, v) for d in detectors for k, v in d.report_sections().items())))
    return {
        "created": utc_now(),
        "source": result.source,
        "corpus": result.corpus,
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
            "rebuilt": ref.built,
            "seconds": round(ref.seconds, 2),
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
                "scores": summary(tally.scores[d.name]),
            }
            for d in detectors
        },
        **sections,
        "baseline": {
            "notes": ref.baseline.get("notes", 0),
            **{k: summary(v) for k, v in ref.baseline.items() if isinstance(v, list)},
        },
        "canaries": result.canaries,
        "quarantined": tally.quarantined,
        "rejected": [{"id": i, "reason": r} for i, r in result.rejected],
        "notes": tally.decisions,
        "seconds": round(result.seconds, 2),
    }
