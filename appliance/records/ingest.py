"""Ingest: read an export into the encrypted record store.

Every input row ends in exactly one of three places: stored, already stored
(an identical record from an earlier ingest: re-ingesting adds nothing
twice), or the rejects report with its row and reason. The report never
holds note text.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.documents import Record, Reject
from appliance.errors import IntegrityError, NothingProduced
from appliance.records.readers import ReaderOptions, detect_format, read_export
from appliance.records.store import RecordStore
from appliance.security.audit import utc_now
from appliance.security.crypto import atomic_write
from appliance.workspace import Workspace, hashed, read_manifest, write_manifest

STORE_MANIFEST = "records/store.json"


@dataclass
class IngestResult:
    export: Path
    format: str
    stored: int = 0
    unchanged: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    total_records: int = 0
    shards_written: int = 0
    rejects_path: Path | None = None
    removed_uncommitted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return self.stored + self.unchanged + self.rejected

    def summary(self) -> str:
        extra = ""
        if self.rejected:
            top = ", ".join(f"{n} {r}" for r, n in self.reasons.most_common(3))
            extra = f" ({top}); see {self.rejects_path}"
        return (
            f"ingested {self.export.name} ({self.format}): {self.rows} rows, {self.stored} stored, "
            f"{self.unchanged} already stored, {self.rejected} rejected{extra}; "
            f"store holds {self.total_records} records"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "export": str(self.export),
            "format": self.format,
            "rows": self.rows,
            "stored": self.stored,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "reject_reasons": dict(self.reasons),
            "total_records": self.total_records,
            "shards_written": self.shards_written,
            "seconds": round(self.seconds, 3),
        }


def open_store(ws: Workspace) -> RecordStore:
    """Open the record store, checking it is the state the audit log vouches for.

    The store manifest is authenticated, but an older authentic manifest
    could be put back (records would silently disappear). The audit log's
    authenticated chain records the hash of every store state a command
    produced, so the current one must be the last of them, or, when a
    command was stopped while changing it, one of the two states its
    ``intent`` line names (the one before and the one after). Under the
    workspace lock, which of the two was found is then recorded; each later
    change of the store logs its intent first (see SECURITY.md, "Crash
    safety").
    """
    store = RecordStore(
        ws.records_dir,
        ws.data_key,
        shard_max_records=ws.config.store.shard_max_records,
        shard_max_bytes=ws.config.store.shard_max_bytes,
    )
    state = ws.recorded_state(STORE_MANIFEST)
    current = hashed(store.manifest_path)["sha256"] if store.manifest_path.exists() else None
    if not state.accepts(current):
        if current is None:
            raise IntegrityError(
                f"{store.manifest_path}: missing, but the audit log records a store"
            )
        raise IntegrityError(
            f"{store.manifest_path}: not the store state the audit log last recorded "
            "(the record store was rolled back or replaced outside the appliance)"
        )
    ws.settle(state, current)
    store.before_manifest = lambda old, new: ws.intend(STORE_MANIFEST, new, old)
    return store


def _reason_key(reason: str) -> str:
    # Group "text too long (2000001 characters...)" under "text too long" for the summary.
    return reason.split(" (")[0].split(":")[0]


def run(
    ws: Workspace,
    export: Path,
    *,
    fmt: str = "auto",
    options: ReaderOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Ingest ``export`` into ``ws``'s record store and write a rejects report."""
    options = options or ReaderOptions(max_note_chars=ws.policy.ingest.max_note_chars)
    started = time.monotonic()
    args = {"export": str(export), "format": fmt}
    state: dict[str, Any] = {"opened": False}
    with ws.stage("ingest", args) as stage:
        # Shards may already be committed when the ingest fails: record the
        # store state it left, but only if the store passed its checks (a
        # rolled-back store must not be blessed by the audit line of the
        # command that detected it).
        stage.outputs_on_error = lambda: (
            [hashed(ws.store_manifest, ws.root)]
            if state["opened"] and ws.store_manifest.exists()
            else []
        )
        result = _ingest(ws, export, fmt, options, progress, state, started)
        stage.inputs = [hashed(export)]
        if ws.store_manifest.exists():
            stage.outputs.append(hashed(ws.store_manifest, ws.root))
        if result.rejects_path:
            stage.outputs.append(hashed(result.rejects_path, ws.root))
        stage.details = result.as_dict()
        if not (result.stored or result.unchanged):
            raise NothingProduced(_nothing_ingested(result), result)
    return result


def _nothing_ingested(result: IngestResult) -> str:
    if not result.rejected:
        return f"{result.export}: no records in the export; nothing ingested"
    top = ", ".join(f"{n} {r}" for r, n in result.reasons.most_common(3))
    return (
        f"{result.export}: nothing ingested, all {result.rejected} rows rejected ({top}); "
        f"see {result.rejects_path}"
    )


def _ingest(
    ws: Workspace,
    export: Path,
    fmt: str,
    options: ReaderOptions,
    progress: Callable[[int], None] | None,
    state: dict[str, Any],
    started: float,
) -> IngestResult:
    fmt = detect_format(export) if fmt == "auto" else fmt
    store = open_store(ws)
    state["opened"] = True
    result = IngestResult(export=export, format=fmt)
    result.removed_uncommitted = store.remove_uncommitted()
    existing = store.index()
    # id_mac -> (text_mac, where it was first seen in this export)
    seen: dict[bytes, tuple[bytes, str]] = {}
    rejects: list[Reject] = []

    def reject(r: Reject) -> None:
        rejects.append(r)
        result.rejected += 1
        result.reasons[_reason_key(r.reason)] += 1

    with store.writer() as writer:
        for n, item in enumerate(read_export(export, fmt, options), 1):
            if progress is not None and n % 500 == 0:
                progress(n)
            if isinstance(item, Reject):
                reject(item)
                continue
            record: Record = item
            where = record.source.rsplit(":", 1)[-1] if record.source else f"item {n}"
            id_mac, text_mac = store.id_mac(record.id), store.text_mac(record.text)
            if id_mac in seen:
                first_text, first_where = seen[id_mac]
                same = first_text == text_mac
                reject(
                    Reject(
                        source=record.source.rsplit(":", 1)[0],
                        location=where,
                        reason=(
                            f"duplicate id (identical to {first_where})"
                            if same
                            else f"duplicate id with different text (first at {first_where})"
                        ),
                        record_id=record.id,
                    )
                )
                continue
            seen[id_mac] = (text_mac, where)
            known = existing.get(id_mac)
            if known is not None:
                if known.text_mac == text_mac:
                    result.unchanged += 1
                else:
                    reject(
                        Reject(
                            source=record.source.rsplit(":", 1)[0],
                            location=where,
                            reason="id already stored with different text (stored records are immutable; give the new version a new id)",
                            record_id=record.id,
                        )
                    )
                continue
            writer.add(record, id_mac, text_mac)
            result.stored += 1
    result.shards_written = len(writer.committed)
    result.total_records = len(store)
    if rejects:
        result.rejects_path = _write_rejects(ws, export, rejects)
    result.seconds = time.monotonic() - started
    _update_manifest(ws, store, result)
    return result


def _write_rejects(ws: Workspace, export: Path, rejects: list[Reject]) -> Path:
    folder = ws.reports_dir / "ingest"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = utc_now().replace(":", "").replace("-", "").replace(".", "")
    path = folder / f"rejects-{stamp}-{export.name}.jsonl"
    lines = [
        json.dumps({"export": str(export), **r.as_dict()}, ensure_ascii=False) for r in rejects
    ]
    atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"), 0o600)
    return path


def _update_manifest(ws: Workspace, store: RecordStore, result: IngestResult) -> None:
    previous = read_manifest(ws.records_dir) or {}
    history = list(previous.get("ingests", []))
    history.append({"time": utc_now(), **result.as_dict()})
    write_manifest(
        ws.records_dir,
        {
            "stage": "ingest",
            "records": len(store),
            "shards": len(store.shards),
            "store_sha256": hashed(store.manifest_path)["sha256"]
            if store.manifest_path.exists()
            else None,
            "policy_sha256": ws.policy.sha256,
            "ingests": history,
        },
    )
