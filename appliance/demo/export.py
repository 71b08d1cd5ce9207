"""Writing a demo export in one of the four formats, with its gold sidecar.

csv   OUT/notes.csv             one row per note, patient columns, then text
jsonl OUT/notes.jsonl           {"note_id", ..., "patient": {...}, "text"}
txt   OUT/notes/N000001.txt     the text only
fhir  OUT/notes.ndjson          DocumentReference with a contained Patient
gold  OUT/gold.jsonl            {"id", "text", "entities", "identifiers"}
"""

from __future__ import annotations

import base64
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from appliance.demo.generate import Note, generate
from appliance.errors import UsageError

__all__ = [
    "CSV_HEADER",
    "FORMATS",
    "GOLD_NAME",
    "MAX_NOTES",
    "DemoResult",
    "export_path_for",
    "run",
]

FORMATS = ("csv", "jsonl", "txt", "fhir")
MAX_NOTES = 1_000_000
CSV_HEADER = (
    "note_id",
    "patient_id",
    "patient_name",
    "national_id",
    "birth_date",
    "sex",
    "phone",
    "address",
    "note_type",
    "department",
    "visit_date",
    "diagnosis_code",
    "text",
)
GOLD_NAME = "gold.jsonl"

# LOINC document types for the FHIR export.
_LOINC = {
    "discharge_summary": ("18842-5", "Discharge summary"),
    "procedure_note": ("28570-0", "Procedure note"),
    "outpatient_visit": ("11506-3", "Progress note"),
}
_EE_PERSONAL_CODE_OID = "urn:oid:1.3.6.1.4.1.28284.6.2.2.1"
_MRN_SYSTEM = "urn:appliance:demo:mrn"


@dataclass(frozen=True)
class DemoResult:
    """What ``run`` wrote: the export, its gold sidecar and counts."""

    export_path: Path
    gold_path: Path
    notes: int
    patients: int
    entities: int  # gold entity spans over all notes
    format: str


def export_path_for(out: Path, fmt: str) -> Path:
    """Where ``run`` writes the export of format ``fmt`` inside ``out`` (a folder for txt)."""
    names = {"csv": "notes.csv", "jsonl": "notes.jsonl", "txt": "notes", "fhir": "notes.ndjson"}
    if fmt not in names:
        raise UsageError(f"unknown demo format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    return out / names[fmt]


def _csv_row(n: Note) -> list[str]:
    p = n.patient
    return [
        n.note_id,
        p.patient_id,
        p.name,
        p.national_id,
        p.birth.isoformat(),
        p.sex,
        p.phone,
        p.address,
        n.note_type,
        n.department,
        n.visit.date().isoformat(),
        n.diagnosis_code,
        n.text,
    ]


def _jsonl_obj(n: Note) -> dict[str, Any]:
    p = n.patient
    return {
        "note_id": n.note_id,
        "note_type": n.note_type,
        "department": n.department,
        "visit_date": n.visit.date().isoformat(),
        "diagnosis_code": n.diagnosis_code,
        "patient": {
            "patient_id": p.patient_id,
            "name": p.name,
            "national_id": p.national_id,
            "birth_date": p.birth.isoformat(),
            "sex": p.sex,
            "phone": p.phone,
            "address": p.address,
        },
        "text": n.text,
    }


def _fhir_obj(n: Note) -> dict[str, Any]:
    p = n.patient
    code, display = _LOINC[n.note_type]
    return {
        "resourceType": "DocumentReference",
        "id": n.note_id,
        "status": "current",
        "type": {
            "coding": [{"system": "http://loinc.org", "code": code, "display": display}],
            "text": n.note_type,
        },
        "subject": {"reference": f"Patient/{p.patient_id}", "display": p.name},
        "date": n.visit.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "contained": [
            {
                "resourceType": "Patient",
                "id": "patient",
                "identifier": [
                    {"system": _EE_PERSONAL_CODE_OID, "value": p.national_id},
                    {"system": _MRN_SYSTEM, "value": p.patient_id},
                ],
                "name": [{"text": p.name, "family": p.family, "given": list(p.given)}],
                "gender": p.sex,
                "birthDate": p.birth.isoformat(),
                "telecom": [{"system": "phone", "value": p.phone}],
                "address": [{"text": p.address}],
            }
        ],
        "context": {
            "event": [
                {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": n.diagnosis_code}]}
            ],
            "practiceSetting": {"text": n.department},
        },
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "language": "en",
                    "title": f"{display} - {n.department}",
                    "data": base64.b64encode(n.text.encode("utf-8")).decode("ascii"),
                }
            }
        ],
    }


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def run(out: Path, *, notes: int = 200, fmt: str = "csv", seed: int = 0) -> DemoResult:
    """Write a fake hospital export of ``notes`` notes in format ``fmt`` and its gold sidecar into ``out``.

    The same (notes, fmt, seed) always gives byte-identical files, and a seed
    gives the same note texts in every format. Raises ``UsageError`` for bad
    arguments or when the export or ``gold.jsonl`` already exists.
    """
    if isinstance(notes, bool) or not isinstance(notes, int) or not 1 <= notes <= MAX_NOTES:
        raise UsageError(f"--notes must be an integer from 1 to {MAX_NOTES:,}, not {notes!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"--seed must be an integer, not {seed!r}")
    out = Path(out)
    export = export_path_for(out, fmt)
    gold = out / GOLD_NAME
    for path in (export, gold):
        if path.exists():
            raise UsageError(
                f"{path} already exists; refusing to overwrite it (choose an empty folder)"
            )
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {out}: {exc.strerror or exc}") from exc

    n_patients, stream = generate(notes, seed)
    n_entities = 0
    # "x" mode: never clobber a file that appeared after the check above.
    with open(gold, "x", encoding="utf-8", newline="\n") as gold_f:
        export_f: TextIO | None = None
        try:
            if fmt == "txt":
                export.mkdir()
            else:
                export_f = open(export, "x", encoding="utf-8", newline="" if fmt == "csv" else "\n")  # noqa: SIM115
            writer = (
                csv.writer(export_f, quoting=csv.QUOTE_MINIMAL)
                if fmt == "csv" and export_f
                else None
            )
            if writer is not None:
                writer.writerow(CSV_HEADER)
            for note in stream:
                n_entities += len(note.entities)
                gold_f.write(
                    _dumps(
                        {
                            "id": note.note_id,
                            "text": note.text,
                            "entities": note.entities,
                            "identifiers": note.identifiers,
                        }
                    )
                )
                if writer is not None:
                    writer.writerow(_csv_row(note))
                elif fmt == "jsonl" and export_f:
                    export_f.write(_dumps(_jsonl_obj(note)))
                elif fmt == "fhir" and export_f:
                    export_f.write(_dumps(_fhir_obj(note)))
                else:
                    (export / f"{note.note_id}.txt").write_text(
                        note.text, encoding="utf-8", newline=""
                    )
        finally:
            if export_f is not None:
                export_f.close()
    return DemoResult(
        export_path=export,
        gold_path=gold,
        notes=notes,
        patients=n_patients,
        entities=n_entities,
        format=fmt,
    )
