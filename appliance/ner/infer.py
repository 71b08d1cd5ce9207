"""``appliance infer``: run a signed NER package over a record export.

The export is read with the ingest readers (same formats and column
options), streaming: notes are taken in chunks, their windows batched by
length, and each note's result is written and committed before the next
chunk. A journal beside the output (``<out>.progress``, or ``.progress``
inside a BRAT folder) lists the committed notes with the output's length
after each, so an interrupted run resumes: the output is cut back to the last
committed note and the notes already done are skipped; none is written twice
or lost. Rows the reader rejects, and a note id seen twice, are listed with
their reason in ``<out>.rejects.jsonl`` (never with note text).

Output formats:

* ``jsonl``: one line per note, ``{"id", "chars", "entities": [{"start",
  "end", "label", "text", "confidence"}]}``;
* ``csv``: one row per entity (``note_id, start, end, label, text, confidence``);
* ``brat``: ``<id>.txt`` + ``<id>.ann`` per note (readable by the gold reader);
* ``fhir``: NDJSON, one transaction ``Bundle`` per note (see :func:`fhir_bundle`).

A package that carries a lexicon combines its matches with the model's
entities (``combine``: ``union`` by default, ``model`` or ``lexicon``; see
:mod:`appliance.ner.lexicon`); each entity then also says its ``source``
(``model``, ``lexicon`` or ``both``): a JSONL field, a last CSV column
``source``, a FHIR mention extension. ``model`` writes exactly what the
model alone wrote before packages carried lexicons.

A real-zone package (its model and tokenizer encrypted under the workspace
data key) needs that key (``package_key``): it is decrypted in memory, and
without the key the run stops with a one-line KeyRequired before reading
the export.

``encrypt_key`` writes the output encrypted with the workspace key:
file formats as a sequence of AES-256-GCM frames (each bound to its byte
offset, so frames cannot be reordered or moved), BRAT files one by one;
:func:`read_output` decrypts them.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import hmac
import io
import json
import os
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import crashpoints
from appliance.documents import Record, Reject
from appliance.errors import IntegrityError, UsageError, WorkspaceError
from appliance.ner import zones
from appliance.ner.encoding import Entity
from appliance.ner.lexicon import (
    PackageLexicon,
    check_min_confidence,
    choose_combine,
    lexicon_info,
    load_package_lexicon,
    predict,
)
from appliance.ner.package import verify_package
from appliance.ner.runtime import onnx_tagger
from appliance.normalize.linker import Normalizer, has_normalizer
from appliance.normalize.linker import load as load_normalizer
from appliance.records.readers import ReaderOptions, read_export
from appliance.security.crypto import (
    NONCE_BYTES,
    atomic_write,
    read_encrypted,
    seal,
    unseal,
    write_encrypted,
)
from appliance.security.keys import PURPOSE_ARTIFACT_AEAD, DataKey, load_public_key
from appliance.workspace import hashed

OUTPUT_FORMATS = ("jsonl", "csv", "brat", "fhir")
ENGINES = ("local", "ray")
CSV_HEADER = ["note_id", "start", "end", "label", "text", "confidence"]
SOURCE_COLUMN = "source"  # a CSV column when a lexicon is combined
CODE_COLUMNS = ["code", "code_system", "code_name", "code_score"]  # when the package normalizes
STREAM_MAGIC = b"APLINF01"
PURPOSE_INFER_IDS = "appliance/v1/ner-infer/journal-ids"
MENTION_URL = "urn:appliance:fhir:StructureDefinition/nlp-mention"
NOTE_ID_SYSTEM = "urn:appliance:note-id"


@dataclass
class InferResult:
    out: Path
    format: str
    notes: int = 0  # processed in this run
    resumed: int = 0  # already in the output from an earlier run
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    entities: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    rejects_path: Path | None = None
    encrypted: bool = False
    providers: list[str] = field(default_factory=list)
    combine: str = "model"
    min_confidence: float | None = None
    by_source: Counter[str] = field(default_factory=Counter)
    normalized: bool = False
    coded: int = 0  # entities given a concept code (the rest NIL)
    engine: str = "local"
    workers: int = 1
    restarted: int = 0  # Ray workers restarted during the run

    @property
    def notes_per_second(self) -> float:
        return self.notes / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        types = ", ".join(f"{n} {t}" for t, n in sorted(self.by_type.items())) or "none"
        rej = ""
        if self.rejected:
            top = ", ".join(f"{n} {r}" for r, n in self.reasons.most_common(3))
            rej = f" ({top}; see {self.rejects_path})"
        resumed = f", {self.resumed} already done (resumed)" if self.resumed else ""
        enc = " encrypted" if self.encrypted else ""
        how = ""
        if self.combine != "model":
            sources = ", ".join(f"{n} {s}" for s, n in sorted(self.by_source.items())) or "none"
            if self.combine == "union":
                how = (
                    f"; combined with the package's lexicon by union "
                    f"(min confidence {self.min_confidence})"
                )
            else:
                how = "; the package's lexicon alone (--combine union adds the model's entities)"
            how += f": {sources}"
        if self.normalized:
            how += f"; {self.coded} of {self.entities} entities given a concept code"
        on = ""
        if self.engine == "ray":
            again = f", {self.restarted} restarted" if self.restarted else ""
            on = f" on Ray ({self.workers} workers{again})"
        return (
            f"inferred {self.notes} notes{on}{resumed}, {self.rejected} rejected{rej}; "
            f"{self.entities} entities ({types}){how}; {self.notes_per_second:.1f} notes/s; "
            f"wrote{enc} {self.format} to {self.out}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "format": self.format,
            "notes": self.notes,
            "resumed": self.resumed,
            "rejected": self.rejected,
            "reject_reasons": dict(self.reasons),
            "entities": self.entities,
            "entities_by_type": dict(self.by_type),
            "seconds": round(self.seconds, 3),
            "notes_per_second": round(self.notes_per_second, 2),
            "encrypted": self.encrypted,
            "combine": self.combine,
            "min_confidence": self.min_confidence,
            "entities_by_source": dict(self.by_source),
            "normalized": self.normalized,
            "coded": self.coded,
            "engine": self.engine,
            "workers": self.workers,
            "workers_restarted": self.restarted,
        }


# ---------------------------------------------------------------------------
# Per-note output


def with_concepts(
    normalizer: Normalizer, texts: Sequence[str], entities: Sequence[Sequence[Entity]]
) -> list[list[Entity]]:
    """Each note's ``entities`` with their concept (code or NIL, candidates), linked in one batch."""
    links = normalizer.link_notes(
        texts, [[(e.start, e.end, e.label) for e in es] for es in entities]
    )
    return [
        [dataclasses.replace(e, concept=link.fields()) for e, link in zip(es, ls, strict=True)]
        for es, ls in zip(entities, links, strict=True)
    ]


def jsonl_line(record: Record, entities: Sequence[Entity]) -> str:
    obj = {"id": record.id, "chars": len(record.text), "entities": [e.as_dict() for e in entities]}
    return json.dumps(obj, ensure_ascii=False) + "\n"


def csv_rows(
    record: Record, entities: Sequence[Entity], with_source: bool = False, with_codes: bool = False
) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for e in entities:
        row: list[Any] = [record.id, e.start, e.end, e.label, e.text, f"{e.confidence:.4f}"]
        if with_source:
            row.append(e.source or "")
        if with_codes:
            c = e.concept or {}
            row += [c.get("code") or "", c.get("code_system") or "", c.get("code_name") or ""]
            row.append(f"{c['code_score']:.4f}" if c.get("code_score") is not None else "")
        writer.writerow(row)
    return buf.getvalue()


def _note_reference(note_id: str) -> dict[str, Any]:
    # A logical reference: any note id is valid here, unlike a literal DocumentReference/<id>.
    return {"type": "DocumentReference", "identifier": {"system": NOTE_ID_SYSTEM, "value": note_id}}


def fhir_bundle(record: Record, entities: Sequence[Entity], model: str = "") -> dict[str, Any]:
    """A transaction Bundle with one resource per entity of the note.

    DIAGNOSIS → Condition (verificationStatus unconfirmed), DRUG →
    MedicationStatement (status unknown), PROCEDURE → Procedure (status
    unknown), any other type → Observation (status preliminary, valueString).
    Every resource points to its note (a logical DocumentReference by note
    id) and carries the mention extension: start and end offsets, entity
    type, confidence and the model; the subject is marked unknown with the
    standard data-absent-reason extension, for the integration engine to
    link through the note.
    """
    subject = {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                "valueCode": "unknown",
            }
        ]
    }
    tag = {
        "system": "urn:appliance:fhir:tag",
        "code": "nlp-extracted",
        "display": "extracted by the appliance NER model",
    }
    entries = []
    for i, e in enumerate(entities):
        mention = {
            "url": MENTION_URL,
            "extension": [
                {"url": "document", "valueReference": _note_reference(record.id)},
                {"url": "start", "valueInteger": e.start},
                {"url": "end", "valueInteger": e.end},
                {"url": "type", "valueCode": e.label},
                {"url": "text", "valueString": e.text},
                {"url": "confidence", "valueDecimal": round(e.confidence, 4)},
                *([{"url": "model", "valueString": model}] if model else []),
                *([{"url": "source", "valueCode": e.source}] if e.source else []),
                *(
                    [{"url": "codeScore", "valueDecimal": e.concept["code_score"]}]
                    if e.concept is not None
                    else []
                ),
            ],
        }
        concept: dict[str, Any] = {"text": e.text}
        if e.concept is not None and e.concept.get("code"):
            concept["coding"] = [
                {
                    "system": e.concept["code_system"],
                    "code": e.concept["code"],
                    "display": e.concept["code_name"],
                }
            ]
        base: dict[str, Any] = {"meta": {"tag": [tag]}, "extension": [mention], "subject": subject}
        if e.label == "DIAGNOSIS":
            resource = {
                "resourceType": "Condition",
                **base,
                "code": concept,
                "verificationStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "code": "unconfirmed",
                        }
                    ]
                },
                "evidence": [{"detail": [_note_reference(record.id)]}],
            }
        elif e.label == "DRUG":
            resource = {
                "resourceType": "MedicationStatement",
                **base,
                "status": "unknown",
                "medicationCodeableConcept": concept,
                "derivedFrom": [_note_reference(record.id)],
            }
        elif e.label == "PROCEDURE":
            resource = {"resourceType": "Procedure", **base, "status": "unknown", "code": concept}
        else:
            resource = {
                "resourceType": "Observation",
                **base,
                "status": "preliminary",
                "code": {"text": e.label},
                **(
                    {"valueCodeableConcept": concept}
                    if "coding" in concept
                    else {"valueString": e.text}
                ),
                "derivedFrom": [_note_reference(record.id)],
            }
        # Deterministic ids: a resumed or repeated run posts the same resources.
        full = uuid.uuid5(
            uuid.NAMESPACE_URL, f"{NOTE_ID_SYSTEM}:{record.id}#{i}:{e.start}-{e.end}:{e.label}"
        )
        entries.append(
            {
                "fullUrl": f"urn:uuid:{full}",
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        )
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "identifier": {"system": NOTE_ID_SYSTEM, "value": record.id},
        "meta": {"tag": [tag]},
        "entry": entries,
    }


# ---------------------------------------------------------------------------
# Writers with a commit journal


def _private(path: Path, mode: str) -> Any:
    """Open for writing with mode 0600: inference outputs are real-zone data."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8")


class _Journal:
    """``<out>.progress``: one line per committed note (id, or its keyed hash when encrypting)."""

    def __init__(self, path: Path, key: DataKey | None) -> None:
        self.path = path
        self.mac_key = key.derive(PURPOSE_INFER_IDS) if key is not None else None
        self.done: set[str] = set()
        self.offset = 0
        self.shape: dict[str, Any] | None = None  # what the output was started as (first entry)
        if path.exists():
            raw = path.read_bytes()
            good = raw[: raw.rfind(b"\n") + 1]  # a line cut by a crash is not a commit
            for line in good.decode("utf-8").splitlines():
                entry = json.loads(line)
                self.done.add(entry["id"])
                self.offset = int(entry.get("offset", 0))
                if self.shape is None and isinstance(entry.get("shape"), dict):
                    self.shape = entry["shape"]
            if len(good) != len(raw):
                with open(path, "r+b") as fh:
                    fh.truncate(len(good))
        self.fh = _private(path, "a")

    def tag(self, note_id: str) -> str:
        if self.mac_key is None:
            return note_id
        return hmac.new(self.mac_key, note_id.encode(), hashlib.sha256).hexdigest()

    def is_done(self, note_id: str) -> bool:
        return self.tag(note_id) in self.done

    def commit(self, note_id: str, offset: int, shape: dict[str, Any] | None = None) -> None:
        entry: dict[str, Any] = {"id": self.tag(note_id), "offset": offset}
        if shape is not None:
            entry["shape"] = shape
        self.fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.done.add(self.tag(note_id))
        crashpoints.reached("infer.journal")

    def close(self) -> None:
        self.fh.close()


class _StreamWriter:
    """jsonl / csv / fhir: one file, appended note by note, optionally as encrypted frames."""

    def __init__(
        self,
        out: Path,
        fmt: str,
        key: DataKey | None,
        model: str,
        with_source: bool = False,
        with_codes: bool = False,
    ) -> None:
        self.out, self.fmt, self.key, self.model = out, fmt, key, model
        self.with_source, self.with_codes = with_source, with_codes
        header = [
            *CSV_HEADER,
            *([SOURCE_COLUMN] if with_source else []),
            *(CODE_COLUMNS if with_codes else []),
        ]
        # What every line of this output carries: a resumed run must write the same.
        shape = {"format": fmt, "source": with_source, "codes": with_codes, "model": model}
        journal_path = out.with_name(out.name + ".progress")
        if out.exists() and not journal_path.exists():
            raise UsageError(
                f"{out} exists and is not the output of an interrupted inference run; "
                "choose another --out or remove it"
            )
        if not out.exists():
            journal_path.unlink(missing_ok=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.journal = _Journal(journal_path, key)
        if self.journal.offset and self.journal.shape not in (None, shape):
            was = self.journal.shape or {}
            self.journal.close()
            raise UsageError(
                f"{out} was started with another package or other options ("
                + ", ".join(
                    f"{k} {was.get(k)!r} now {v!r}" for k, v in shape.items() if was.get(k) != v
                )
                + "); resume it with the same ones, or choose another --out"
            )
        self.fh = _private(out, "ab")
        self.fh.truncate(self.journal.offset)  # drop a note written but not committed
        self.fh.seek(self.journal.offset)
        self.aead = key.derive(PURPOSE_ARTIFACT_AEAD) if key is not None else None
        self.header = STREAM_MAGIC + bytes.fromhex(key.key_id) if key is not None else b""
        if self.journal.offset == 0:
            start = (
                self.header + self._frame(",".join(header).encode() + b"\n", len(self.header))
                if fmt == "csv"
                else self.header
            )
            self.fh.write(start)
            self.fh.flush()
            self.journal.commit("", self.fh.tell(), shape)

    def _frame(self, data: bytes, offset: int) -> bytes:
        if self.aead is None:
            return data
        sealed = seal(self.aead, data, self.header + struct.pack(">Q", offset))
        return struct.pack(">I", len(sealed)) + sealed

    def write(self, record: Record, entities: Sequence[Entity]) -> None:
        if self.fmt == "jsonl":
            text = jsonl_line(record, entities)
        elif self.fmt == "csv":
            text = csv_rows(record, entities, self.with_source, self.with_codes)
        else:
            text = json.dumps(fhir_bundle(record, entities, self.model), ensure_ascii=False) + "\n"
        if text:
            self.fh.write(self._frame(text.encode("utf-8"), self.fh.tell()))
            self.fh.flush()
            os.fsync(self.fh.fileno())
            crashpoints.reached("infer.frame")
        self.journal.commit(record.id, self.fh.tell())

    def close(self) -> None:
        self.fh.close()
        self.journal.close()


class _BratWriter:
    """A folder of ``<id>.txt`` + ``<id>.ann``; the .ann is written last and the journal commits it."""

    def __init__(self, out: Path, key: DataKey | None) -> None:
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out} exists and is not a folder; BRAT output is a folder")
        if out.is_dir() and any(out.iterdir()) and not (out / ".progress").exists():
            raise UsageError(
                f"{out} is not empty and not the output of an interrupted inference run; choose another --out"
            )
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.key = out, key
        self.journal = _Journal(out / ".progress", key)

    @staticmethod
    def file_name(note_id: str) -> str:
        safe = (
            "".join(c if c.isalnum() or c in "._-" else "_" for c in note_id).strip("._") or "note"
        )
        if safe != note_id:  # keep distinct ids distinct after cleaning
            safe += "_" + hashlib.sha256(note_id.encode()).hexdigest()[:8]
        return safe[:200]

    def _put(self, path: Path, data: bytes) -> None:
        if self.key is not None:
            write_encrypted(
                path.with_name(path.name + ".enc"), self.key, data, label="ner/infer/brat"
            )
        else:
            atomic_write(path, data, 0o600)

    def write(self, record: Record, entities: Sequence[Entity]) -> None:
        name = self.file_name(record.id)
        self._put(self.out / f"{name}.txt", record.text.encode("utf-8"))
        lines = []
        for i, e in enumerate(entities, 1):
            shown = e.text.replace("\r", " ").replace("\n", " ")
            lines.append(f"T{i}\t{e.label} {e.start} {e.end}\t{shown}\n")
            if e.concept is not None and e.concept.get("code"):
                lines.append(
                    f"N{i}\tReference T{i} {e.concept['code']}\t{e.concept['code_name']}\n"
                )
        self._put(self.out / f"{name}.ann", "".join(lines).encode("utf-8"))
        self.journal.commit(record.id, 0)

    def close(self) -> None:
        self.journal.close()


def read_output(path: Path, key: DataKey) -> bytes:
    """Decrypt an encrypted jsonl/csv/fhir output (or a BRAT ``.enc`` file)."""
    blob = path.read_bytes()
    if path.suffix == ".enc":
        return read_encrypted(path, key, label="ner/infer/brat")
    header = blob[: len(STREAM_MAGIC) + 8]
    if not header.startswith(STREAM_MAGIC):
        raise IntegrityError(f"{path}: not an encrypted inference output")
    if header[len(STREAM_MAGIC) :].hex() != key.key_id:
        raise IntegrityError(f"{path}: encrypted with another workspace key")
    aead = key.derive(PURPOSE_ARTIFACT_AEAD)
    out, pos = bytearray(), len(header)
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise IntegrityError(f"{path}: truncated frame at byte {pos}")
        (n,) = struct.unpack(">I", blob[pos : pos + 4])
        if n < NONCE_BYTES + 16 or pos + 4 + n > len(blob):
            raise IntegrityError(f"{path}: truncated frame at byte {pos}")
        out += unseal(
            aead,
            blob[pos + 4 : pos + 4 + n],
            header + struct.pack(">Q", pos),
            f"{path} at byte {pos}",
        )
        pos += 4 + n
    return bytes(out)


# ---------------------------------------------------------------------------
# What tags a chunk of notes: the same in this process and on a Ray worker


@dataclass(frozen=True)
class PredictSettings:
    """How a package tags notes: the combine rule, its threshold, normalization, batching, device."""

    mode: str  # model | lexicon | union
    threshold: float
    normalize: bool
    batch_size: int
    device: str
    threads: int | None

    @classmethod
    def for_package(
        cls,
        package: Path,
        combine: str | None,
        min_confidence: float | None,
        normalize: bool,
        batch_size: int,
        device: str,
        threads: int | None,
    ) -> PredictSettings:
        mode, default_min = choose_combine(combine, lexicon_info(package), package)
        threshold = default_min if min_confidence is None else min_confidence
        return cls(mode, threshold, normalize, batch_size, device, threads)


@dataclass
class Predictor:
    """A verified package loaded for tagging: its model, lexicon and normalizer."""

    settings: PredictSettings
    tagger: Any
    lexicon: PackageLexicon | None
    normalizer: Normalizer | None

    @classmethod
    def load(
        cls, package: Path, settings: PredictSettings, package_key: DataKey | None
    ) -> Predictor:
        """Load a package folder (verify it first: this does not)."""
        lexicon = None
        if settings.mode != "model":
            lexicon = load_package_lexicon(package, package_key)
        tagger = onnx_tagger(
            package, device=settings.device, threads=settings.threads, key=package_key
        )
        normalizer = None
        if settings.normalize and has_normalizer(package):
            normalizer = load_normalizer(package, device=settings.device, key=package_key)
        return cls(settings, tagger, lexicon, normalizer)

    def __call__(self, texts: Sequence[str]) -> list[list[Entity]]:
        s = self.settings
        found = predict(self.tagger, self.lexicon, texts, s.mode, s.threshold, s.batch_size)
        if self.normalizer is not None:
            found = with_concepts(self.normalizer, texts, found)
        return found


# ---------------------------------------------------------------------------
# The run


def _reason_key(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


def run(
    export_path: Path,
    package: Path,
    out: Path,
    fmt: str = "jsonl",
    *,
    trusted_public_key: Any,
    reader_format: str = "auto",
    options: ReaderOptions | None = None,
    batch_size: int = 32,
    chunk_notes: int = 256,
    device: str = "auto",
    threads: int | None = None,
    encrypt_key: DataKey | None = None,
    package_key: DataKey | None = None,
    progress: Callable[[int, float], None] | None = None,
    stop_after: int | None = None,
    combine: str | None = None,
    min_confidence: float | None = None,
    normalize: bool = True,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> InferResult:
    """Verify ``package`` with ``trusted_public_key``, then tag every note of the export into ``out``.

    ``package_key`` decrypts a real-zone package. ``stop_after`` ends the run
    after that many notes (as an interruption would). ``combine``: ``model``,
    ``lexicon`` or ``union`` (default: ``union`` for a package that carries a
    lexicon, else ``model``); ``min_confidence``: the union rule's threshold
    (default: the package's, 0.5). ``normalize``: give every entity a
    concept code when the package carries a normalizer.

    ``engine``: ``local`` (this process) or ``ray`` (an actor pool on the
    Ray cluster at ``address``, or on a Ray instance started on this machine
    when it is None; ``workers`` actors; see :mod:`appliance.ner.cluster`).
    Both write the same output; ``log`` gets the Ray engine's one-line news.
    """

    if fmt not in OUTPUT_FORMATS:
        raise UsageError(
            f"unknown output format '{fmt}'; choose one of: {', '.join(OUTPUT_FORMATS)}"
        )
    if batch_size < 1 or chunk_notes < 1:
        raise UsageError("--batch-size must be at least 1")
    check_min_confidence(min_confidence)
    if engine not in ENGINES:
        raise UsageError(f"unknown engine '{engine}'; choose one of: {', '.join(ENGINES)}")
    manifest = verify_package(package, trusted_public_key)
    settings = PredictSettings.for_package(
        package, combine, min_confidence, normalize, batch_size, device, threads
    )
    pool: Any = None
    if engine == "ray":
        from appliance.ner.cluster import RayPool

        pool = RayPool.start(
            package,
            trusted_public_key,
            manifest,
            settings,
            package_key=package_key,
            address=address,
            workers=workers,
            log=log,
        )
        providers = pool.providers
        with_codes = pool.normalized
    else:
        predictor = Predictor.load(package, settings, package_key)
        providers = list(predictor.tagger.info.get("providers", []))
        with_codes = predictor.normalizer is not None
    mode, threshold = settings.mode, settings.threshold
    model_tag = f"appliance-ner {manifest.get('precision', '')} {hashlib.sha256(json.dumps(manifest['files'], sort_keys=True).encode()).hexdigest()[:16]}"
    try:
        items = read_export(export_path, reader_format, options or ReaderOptions())
        writer: _StreamWriter | _BratWriter = (
            _BratWriter(out, encrypt_key)
            if fmt == "brat"
            else _StreamWriter(
                out,
                fmt,
                encrypt_key,
                model_tag,
                with_source=mode != "model",
                with_codes=with_codes,
            )
        )
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    result = InferResult(
        out=out,
        format=fmt,
        encrypted=encrypt_key is not None,
        providers=providers,
        combine=mode,
        min_confidence=threshold if mode == "union" else None,
        normalized=with_codes,
        engine=engine,
        workers=pool.size if pool is not None else 1,
    )
    rejects_path = out.with_name(out.name + ".rejects.jsonl")
    rejects_tmp = rejects_path.with_name(rejects_path.name + ".tmp")
    seen: set[str] = set()
    started = time.monotonic()

    def chunks(rej: Any) -> Iterator[list[Record]]:
        """The export's notes still to do, in chunks; rejects and duplicates go to ``rej``."""
        chunk: list[Record] = []
        for item in items:
            if isinstance(item, Reject):
                rej.write(json.dumps(item.as_dict(), ensure_ascii=False) + "\n")
                result.rejected += 1
                result.reasons[_reason_key(item.reason)] += 1
                continue
            if item.id in seen:
                where = item.source.rsplit(":", 1)
                reject = Reject(
                    where[0],
                    where[-1],
                    "duplicate id (an earlier note of this export has it)",
                    item.id,
                )
                rej.write(json.dumps(reject.as_dict(), ensure_ascii=False) + "\n")
                result.rejected += 1
                result.reasons["duplicate id"] += 1
                continue
            seen.add(item.id)
            if writer.journal.is_done(item.id):
                result.resumed += 1
                continue
            if stop_after is not None and taken[0] + len(chunk) >= stop_after:
                break
            chunk.append(item)
            if len(chunk) >= chunk_notes:
                taken[0] += len(chunk)
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    taken = [0]  # notes handed to the model so far
    tagged: Callable[[Iterator[list[Record]]], Iterator[tuple[list[Record], list[list[Entity]]]]]
    if pool is not None:
        tagged = pool.map
    else:
        tagged = lambda cs: ((c, predictor([r.text for r in c])) for c in cs)  # noqa: E731
    try:
        with _private(rejects_tmp, "w") as rej:
            for chunk, found in tagged(chunks(rej)):
                for record, entities in zip(chunk, found, strict=True):
                    writer.write(record, entities)
                    result.notes += 1
                    result.entities += len(entities)
                    result.by_type.update(e.label for e in entities)
                    result.by_source.update(e.source for e in entities if e.source)
                    result.coded += sum(1 for e in entities if e.concept and e.concept["code"])
                result.seconds = time.monotonic() - started
                if progress is not None:
                    progress(result.notes + result.resumed, result.notes_per_second)
        if pool is not None:
            result.restarted = pool.restarted()
    finally:
        writer.close()
        if pool is not None:
            pool.close()
        result.seconds = time.monotonic() - started
    if result.rejected:
        rejects_tmp.replace(rejects_path)
        result.rejects_path = rejects_path
    else:
        rejects_tmp.unlink(missing_ok=True)
        rejects_path.unlink(missing_ok=True)
    return result


def run_ws(
    ws: Any,
    export_path: Path,
    *,
    package: Path | None,
    out: Path,
    fmt: str = "jsonl",
    name: str = "default",
    encrypt: bool = False,
    public_key: Path | None = None,
    package_key: DataKey | None = None,
    **kwargs: Any,
) -> InferResult:
    """``run`` inside a workspace: its public key (or ``public_key``), its data key for ``--encrypt``, an audit entry.

    A real-zone package is decrypted with ``package_key``, else the workspace's data key.
    """

    package = package or ws.ner_model_dir(name) / "package"
    key_path = public_key or ws.signing_key_path.with_suffix(".pub")
    args = {
        "export": str(export_path),
        "model": str(package),
        "out": str(out),
        "format": fmt,
        "encrypt": encrypt,
        "public_key": str(key_path),
        "combine": kwargs.get("combine"),
        "min_confidence": kwargs.get("min_confidence"),
        # where the notes went: this machine, or a Ray cluster (the audit names it)
        "engine": kwargs.get("engine", "local"),
        "address": kwargs.get("address"),
    }
    with ws.stage("infer", args, lock=False) as stage:
        if not package.is_dir():
            raise WorkspaceError(
                f"{package}: no model package; run `appliance export` or pass --model PACKAGE"
            )
        if (package / "manifest.json").is_file():
            stage.inputs.append(hashed(package / "manifest.json", ws.root))
        if Path(export_path).exists():
            stage.inputs.append(hashed(Path(export_path), ws.root))
        if package_key is None and zones.needs_key(package):
            package_key = ws.data_key
        result = run(
            export_path,
            package,
            out,
            fmt,
            trusted_public_key=load_public_key(key_path),
            encrypt_key=ws.data_key if encrypt else None,
            package_key=package_key,
            **kwargs,
        )
        stage.outputs = [hashed(out, ws.root)] if out.exists() else []
        stage.details = result.as_dict()
    return result
