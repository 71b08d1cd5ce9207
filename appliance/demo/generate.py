"""Generating notes: one builder per note type, then the text with its gold spans."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from appliance.demo.discharge import discharge_summary
from appliance.demo.outpatient import outpatient_visit
from appliance.demo.patients import Patient, make_patients, plan_notes
from appliance.demo.procedure import procedure_note
from appliance.demo.template import Ent, Line, clean
from appliance.demo.vocabulary import load_vocabulary
from appliance.demo.writer import IdPlan, Writer

__all__ = ["BUILDERS", "Note", "generate"]


@dataclass
class Note:
    """One generated note before it is written in any format."""

    note_id: str
    patient: Patient
    note_type: str
    department: str
    visit: datetime
    diagnosis_code: str
    text: str
    entities: list[dict[str, Any]]
    identifiers: list[dict[str, Any]]


BUILDERS: dict[str, Callable[[Writer, Patient, IdPlan, date], tuple[list[Line], str, str]]] = {
    "discharge_summary": discharge_summary,
    "procedure_note": procedure_note,
    "outpatient_visit": outpatient_visit,
}


def tidy_lines(lines: list[Line]) -> list[Line]:
    """No blank lines at either end and never two in a row."""
    out: list[Line] = []
    for line in lines:
        line = clean(line)
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def render_lines(lines: list[Line]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Join lines into the note text, recording each entity's and identifier's offsets."""
    parts: list[str] = []
    entities: list[dict[str, Any]] = []
    identifiers: list[dict[str, Any]] = []
    pos = 0
    for k, line in enumerate(lines):
        if k:
            parts.append("\n")
            pos += 1
        for piece in line:
            if isinstance(piece, str):
                text = piece
            else:
                text = piece.text
                if isinstance(piece, Ent):
                    entities.append(
                        {
                            "start": pos,
                            "end": pos + len(text),
                            "label": piece.label,
                            "text": text,
                            "code": piece.code,
                        }
                    )
                else:
                    identifiers.append(
                        {"type": piece.type, "value": text, "start": pos, "end": pos + len(text)}
                    )
            parts.append(text)
            pos += len(text)
    return "".join(parts), entities, identifiers


def generate(notes: int, seed: int) -> tuple[int, Iterator[Note]]:
    """The patient count and a lazy stream of notes (lazy so a million notes fit in memory)."""
    rng = random.Random(seed)
    vocab = load_vocabulary()
    patients = make_patients(rng, max(1, round(notes / 3)) if notes >= 3 else 1)
    plan = plan_notes(rng, notes, patients)

    def stream() -> Iterator[Note]:
        w = Writer(rng, vocab)
        for k, (when, owner, note_type) in enumerate(plan, start=1):
            p = patients[owner]
            w.start_note(p, when.date())
            ids = IdPlan(w, p, enabled=rng.random() < 0.25)
            lines, code, dept = BUILDERS[note_type](w, p, ids, when.date())
            text, entities, in_text = render_lines(tidy_lines(lines))
            meta = [
                {"type": "PERSON", "value": p.name, "start": None, "end": None},
                {"type": "NATIONAL_ID", "value": p.national_id, "start": None, "end": None},
                {"type": "PHONE_NUMBER", "value": p.phone, "start": None, "end": None},
                {"type": "ADDRESS", "value": p.address, "start": None, "end": None},
                {"type": "DATE_OF_BIRTH", "value": p.birth.isoformat(), "start": None, "end": None},
                {
                    "type": "MEDICAL_RECORD_NUMBER",
                    "value": p.patient_id,
                    "start": None,
                    "end": None,
                },
            ]
            yield Note(f"N{k:06d}", p, note_type, dept, when, code, text, entities, meta + in_text)

    return len(patients), stream()
