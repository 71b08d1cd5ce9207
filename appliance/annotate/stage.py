"""The annotate stage: label every released synthetic note, and read the result back.

``run`` reads notes only through the release gate
(:func:`appliance.corpus.released_notes`), so unscreened and
quarantined notes can never reach an annotator, and writes::

    annotations/NAME/
      annotations.jsonl   one line per annotated note: {"id", "text", "entities",
                          "uncertain", "annotator", "tokens", "tags"} (character
                          spans with their confidence, ranges the annotator could
                          not decide on, and word tokens with their IOB2 tags for
                          NER training)
      rejected.jsonl      {"id", "reason", "detail"} per note no annotation was made for
      manifest.json       stage, annotator parameters, the release's hash, counts, QA stats
    annotations/.llm-cache.sqlite   LLM answers, so a rerun re-asks nothing

``read_annotations`` checks the file against its manifest and the manifest
against the current signed release: annotations of an older release are
stale and refused.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance import crashpoints
from appliance.annotate.annotators import AnnotatorOptions, build_members, run_members
from appliance.annotate.cache import AnswerCache
from appliance.corpus import release_manifest, released_notes
from appliance.documents import (
    Document,
    bio_tags,
    document_to_json,
    word_tokens,
)
from appliance.errors import NothingProduced
from appliance.security.audit import utc_now
from appliance.security.crypto import atomic_write
from appliance.workspace import StageRun, Workspace, hashed, write_manifest

__all__ = ["AnnotateResult", "run"]

CACHE_NAME = ".llm-cache.sqlite"


@dataclass
class AnnotateResult:
    name: str
    folder: Path
    notes: int
    annotated: int
    rejected: int
    entities: dict[str, int]
    qa: dict[str, Any]

    def summary(self) -> str:
        ents = ", ".join(f"{k} {v}" for k, v in self.entities.items()) or "none"
        rej = (
            f", {self.rejected} rejected (see {self.folder / 'rejected.jsonl'})"
            if self.rejected
            else ""
        )
        return (
            f"annotated {self.annotated} of {self.notes} released notes into {self.folder} "
            f"(entities: {ents}){rej}"
        )


def _public_options(options: AnnotatorOptions) -> dict[str, Any]:
    out = asdict(options)
    out.pop("api_key", None)

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return {k: plain(v) for k, v in out.items()}


def _rejected_lines(failures: dict[str, tuple[str, str]]) -> bytes:
    return "".join(
        json.dumps({"id": note_id, "reason": kind, "detail": detail}) + "\n"
        for note_id, (kind, detail) in failures.items()
    ).encode()


def _nothing_annotated(
    ws: Workspace,
    corpus: str,
    folder: Path,
    failures: dict[str, tuple[str, str]],
    notes: int,
    stage: StageRun,
) -> str:
    """Write the rejects of a run that annotated no note; the one-line reason."""
    if not notes:
        return f"corpus {corpus!r} has no released notes to annotate (the screen released none)"
    path = folder / "rejected.jsonl"
    atomic_write(path, _rejected_lines(failures))
    stage.outputs = [hashed(path, ws.root)]
    top = ", ".join(f"{n} {k}" for k, n in Counter(k for k, _ in failures.values()).most_common(3))
    return f"no note annotated: all {notes} released notes rejected ({top}); see {path}"


def _annotator_record(records: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    if len(records) == 1:
        return records[0]
    return {"kind": "ensemble", "combine": mode, "members": records}


def run(
    ws: Workspace,
    options: AnnotatorOptions,
    *,
    corpus: str = "default",
    name: str = "default",
    progress: Callable[[int], None] | None = None,
) -> AnnotateResult:
    """Annotate the released notes of ``corpus`` into ``annotations/NAME``."""
    folder = ws.annotation_dir(name)
    args = {**_public_options(options), "corpus": corpus, "name": name}
    schema = ws.policy.entity_schema()
    cache = AnswerCache(ws.annotations_dir / CACHE_NAME) if "llm" in options.annotators else None
    started = utc_now()
    try:
        with ws.stage("annotate", args) as stage:
            members = build_members(
                options,
                schema,
                ws.policy.egress,
                cache=cache,
                language=ws.config.workspace.language,
            )
            release = hashed(release_manifest(ws, corpus), ws.root)
            notes = [(n.id, n.text) for n in released_notes(ws, corpus)]
            combined = run_members(members, notes, options.combine, progress)
            spans, failures, results = combined.spans, combined.failures, combined.members
            folder.mkdir(parents=True, exist_ok=True)
            if not spans:
                # Nothing to train on: keep the reasons, leave an earlier set as it was.
                stage.inputs = [release]
                raise NothingProduced(
                    _nothing_annotated(ws, corpus, folder, failures, len(notes), stage)
                )
            record = _annotator_record([r.record for r in results], options.combine)
            by_type: Counter[str] = Counter()
            per_note_type: Counter[str] = Counter()
            uncertain_by_reason: Counter[str] = Counter()
            empty = 0
            tmp = folder / "annotations.jsonl.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                for note_id, text in notes:
                    if note_id not in spans:
                        continue
                    doc = Document(
                        note_id, text, spans[note_id], uncertain=combined.uncertain.get(note_id, [])
                    )
                    for s in doc.spans:
                        by_type[s.label] += 1
                    uncertain_by_reason.update(u.reason for u in doc.uncertain)
                    per_note_type.update({s.label for s in doc.spans})
                    empty += not doc.spans
                    line = document_to_json(
                        doc, annotator=record, tokens=word_tokens(text), tags=bio_tags(doc)
                    )
                    fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, folder / "annotations.jsonl")
            crashpoints.reached("annotate.output")
            atomic_write(folder / "rejected.jsonl", _rejected_lines(failures))
            annotated = len(spans)
            qa = {
                "members": [r.qa for r in results],
                "rejected_by_reason": dict(Counter(k for k, _ in failures.values())),
                "entities_per_note": {
                    t: round(n / annotated, 3) if annotated else 0.0
                    for t, n in sorted(by_type.items())
                },
                "notes_with_type": dict(sorted(per_note_type.items())),
                "notes_without_entities": empty,
                "uncertain_by_reason": dict(sorted(uncertain_by_reason.items())),
            }
            outputs = {
                "annotations": hashed(folder / "annotations.jsonl", ws.root),
                "rejected": hashed(folder / "rejected.jsonl", ws.root),
            }
            manifest_path = write_manifest(
                folder,
                {
                    "stage": "annotate",
                    "name": name,
                    "corpus": corpus,
                    "release": release,
                    "annotator": {
                        "combine": options.combine,
                        "members": [m.params() for m in members],
                        "record": record,
                    },
                    "parameters": args,
                    "entity_schema": schema.as_dict(),
                    "started": started,
                    "finished": utc_now(),
                    "counts": {
                        "notes": len(notes),
                        "annotated": annotated,
                        "rejected": len(failures),
                        "entities": sum(by_type.values()),
                        "entities_by_type": dict(sorted(by_type.items())),
                        "uncertain": sum(uncertain_by_reason.values()),
                    },
                    "qa": qa,
                    "outputs": outputs,
                },
            )
            stage.inputs = [release]
            stage.outputs = [*outputs.values(), hashed(manifest_path, ws.root)]
            stage.details = {
                "notes": len(notes),
                "annotated": annotated,
                "rejected": len(failures),
                "qa": qa,
            }
    finally:
        if cache is not None:
            cache.close()
    return AnnotateResult(
        name, folder, len(notes), annotated, len(failures), dict(sorted(by_type.items())), qa
    )
