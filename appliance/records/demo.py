"""Demo data: a fake hospital export with gold entity spans and fake patients.

``appliance demo-data OUT`` writes what a hospital's export would look like
(CSV, JSONL, a folder of .txt, or FHIR R4 ``DocumentReference`` NDJSON) and a
gold sidecar ``OUT/gold.jsonl`` with every drug, procedure and diagnosis
mention and every patient identifier, with character offsets:

    csv   OUT/notes.csv             one row per note, patient columns, then text
    jsonl OUT/notes.jsonl           {"note_id", ..., "patient": {...}, "text"}
    txt   OUT/notes/N000001.txt     the text only
    fhir  OUT/notes.ndjson          DocumentReference with a contained Patient
    gold  OUT/gold.jsonl            {"id", "text", "entities", "identifiers"}

Patients are fake: mixed Estonian, Finnish, Swedish and English names, a
checksum-valid Estonian isikukood matching birth date and sex, a +372 mobile
number and an invented street in a real Estonian town. About a quarter of
the notes repeat some of these identifiers in the text (recorded in gold).

The notes are the product's demo and test data: a small GPT-2 is trained on
them and an NER model is later trained on lexicon-annotated synthetic notes.
So they are built compositionally (many phrasings per slot, optional and
reordered sections, random numbers, surface variants of every mention) to
keep a language model from simply copying a handful of templates.

How a note is made: clinical content is written as small templates,

    "[Empirical|Intravenous] treatment with {d:ceftriaxone} {dose:ceftriaxone} was started."

where ``[a|b]`` picks one alternative (an empty one makes text optional),
``{d:term}`` / ``{p:term}`` / ``{x:term}`` is a drug / procedure / diagnosis
mention drawn from the vocabularies in ``vocab/*.tsv`` (a term gets a random
surface form: itself, a synonym, brand name or abbreviation; a synonym is
used as written), and other ``{slots}`` are numbers, lab values, dates,
doses or per-note context. Rendering yields pieces (plain text, entity,
identifier), so every gold span is right by construction rather than
searched for afterwards.

Procedure codes in ``vocab/procedures.tsv`` are a local scheme (``PX`` + a
specialty digit + a number: 1 cardiac, 2 digestive, 3 musculoskeletal,
4 neurology, 5 respiratory, 6 urology/gynaecology, 7 imaging, 8 other),
since the real classifications differ by country.
"""

from __future__ import annotations

import base64
import csv
import functools
import json
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO, TypeAlias

from appliance.errors import UsageError
from appliance.identifiers.national_ids import make_isikukood

__all__ = [
    "CSV_HEADER",
    "FORMATS",
    "MAX_NOTES",
    "NOTE_TYPES",
    "DemoResult",
    "VocabEntry",
    "check_knowledge",
    "export_path_for",
    "load_vocabulary",
    "run",
]

FORMATS = ("csv", "jsonl", "txt", "fhir")
MAX_NOTES = 1_000_000
NOTE_TYPES = ("discharge_summary", "procedure_note", "outpatient_visit")
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
VOCAB_FILES = ("drugs.tsv", "procedures.tsv", "diagnoses.tsv")
VOCAB_HEADER = ("term", "label", "code", "synonyms")

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


# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class VocabEntry:
    """One concept: its preferred term, label, code and other surface forms."""

    term: str
    label: str  # DRUG, PROCEDURE or DIAGNOSIS
    code: str  # ATC for drugs, ICD-10 for diagnoses, a local PX code for procedures
    synonyms: tuple[str, ...] = ()

    @property
    def surfaces(self) -> tuple[str, ...]:
        """The term followed by its synonyms: every form a note may use."""
        return (self.term, *self.synonyms)


@functools.cache
def load_vocabulary() -> Mapping[str, VocabEntry]:
    """All packaged vocabulary entries (drugs, procedures, diagnoses), keyed by term.

    Read once and shared (read-only), so the lexicon annotator and the
    generator always agree on terms, synonyms and codes.
    """
    vocab: dict[str, VocabEntry] = {}
    folder = resources.files("appliance.records") / "vocab"
    for name in VOCAB_FILES:
        lines = (folder / name).read_text(encoding="utf-8").splitlines()
        if not lines or tuple(lines[0].split("\t")) != VOCAB_HEADER:
            raise ValueError(f"vocab/{name}: the header must be the columns {VOCAB_HEADER}")
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            term, label, code, synonyms = line.split("\t")
            if term in vocab:
                raise ValueError(f"vocab/{name} line {lineno}: duplicate term {term!r}")
            syns = tuple(s for s in synonyms.split("|") if s)
            vocab[term] = VocabEntry(term, label, code, syns)
    return MappingProxyType(vocab)


# --------------------------------------------------------------------------
# Pieces of a note and the template language
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ent:
    text: str
    label: str
    code: str


@dataclass(frozen=True)
class _Ident:
    text: str
    type: str


_Piece: TypeAlias = str | _Ent | _Ident
_Line: TypeAlias = list[_Piece]


@dataclass(frozen=True)
class _Alt:
    options: tuple[tuple[_Node, ...], ...]


@dataclass(frozen=True)
class _Slot:
    name: str
    arg: str


_Node: TypeAlias = str | _Alt | _Slot


@functools.cache
def _parse(template: str) -> tuple[_Node, ...]:
    """Parse ``[a|b]`` alternatives and ``{name:arg}`` slots (cached: templates repeat)."""
    nodes, i = _parse_seq(template, 0)
    if i != len(template):
        raise ValueError(f"stray '{template[i]}' in template {template!r}")
    return nodes


def _parse_seq(t: str, i: int) -> tuple[tuple[_Node, ...], int]:
    """Parse from ``t[i]`` up to an unmatched '|' or ']' (or the end); return nodes and position."""
    out: list[_Node] = []
    buf: list[str] = []
    while i < len(t):
        c = t[i]
        if c == "[":
            if buf:
                out.append("".join(buf))
                buf = []
            options: list[tuple[_Node, ...]] = []
            i += 1
            while True:
                seq, i = _parse_seq(t, i)
                options.append(seq)
                if i >= len(t):
                    raise ValueError(f"unclosed '[' in template {t!r}")
                i += 1
                if t[i - 1] == "]":
                    break
            out.append(_Alt(tuple(options)))
            continue
        if c == "{":
            j = t.find("}", i)
            if j < 0:
                raise ValueError(f"unclosed '{{' in template {t!r}")
            name, _, arg = t[i + 1 : j].partition(":")
            if buf:
                out.append("".join(buf))
                buf = []
            out.append(_Slot(name, arg))
            i = j + 1
            continue
        if c in "|]":
            break  # closes an alternative; at the top level _parse reports it as stray
        buf.append(c)
        i += 1
    if buf:
        out.append("".join(buf))
    return tuple(out), i


_SPACES = re.compile(r" {2,}")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:)])(?=\s|$|[,.;)])")
_OPEN_PAREN_SPACE = re.compile(r"\( +")


def _clean(pieces: Sequence[_Piece]) -> _Line:
    """Merge adjacent text and tidy spaces that optional alternatives leave behind."""
    merged: _Line = []
    for p in pieces:
        if isinstance(p, str):
            if not p:
                continue
            if merged and isinstance(merged[-1], str):
                merged[-1] += p
                continue
        merged.append(p)
    for k, p in enumerate(merged):
        # Substring checks first: most pieces need no fixing and regexes are the hot path.
        if isinstance(p, str) and " " in p:
            if "  " in p:
                p = _SPACES.sub(" ", p)
            if " ," in p or " ." in p or " ;" in p or " :" in p or " )" in p:
                p = _SPACE_BEFORE_PUNCT.sub(r"\1", p)
            if "( " in p:
                p = _OPEN_PAREN_SPACE.sub("(", p)
            merged[k] = p
        if isinstance(p, str) and ".." in p:
            # "t.i.d." closing a sentence: one full stop, as people write it.
            merged[k] = p.replace("..", ".")
    # Text at the two ends of a line must not carry spaces (no trailing whitespace).
    while merged and isinstance(merged[0], str) and not merged[0].strip():
        merged.pop(0)
    while merged and isinstance(merged[-1], str) and not merged[-1].strip():
        merged.pop()
    if merged and isinstance(merged[0], str):
        merged[0] = merged[0].lstrip()
    if merged and isinstance(merged[-1], str):
        merged[-1] = merged[-1].rstrip()
    return merged


def _first_word_lower(s: str) -> bool:
    word = s.split(" ", 1)[0]
    return word[:1].isalpha() and word == word.lower()


def _cap(line: _Line) -> _Line:
    """Capitalize a sentence start, leaving abbreviations like "eGFR" or "tPA" alone."""
    if not line:
        return line
    first = line[0]
    if isinstance(first, str) and _first_word_lower(first):
        return [first[0].upper() + first[1:], *line[1:]]
    if isinstance(first, _Ent) and _first_word_lower(first.text):
        return [_Ent(first.text[0].upper() + first.text[1:], first.label, first.code), *line[1:]]
    return line


def _join(items: Sequence[_Line], rng: random.Random, *, conj: str = "and") -> _Line:
    """ "a, b and c" (or "a, b, c" now and then, as people write)."""
    if not items:
        return []
    if len(items) == 1:
        return list(items[0])
    out: _Line = []
    last_sep = f" {conj} " if rng.random() < 0.85 else ", "
    for k, item in enumerate(items):
        if k:
            out.append(last_sep if k == len(items) - 1 else ", ")
        out.extend(item)
    return out


# --------------------------------------------------------------------------
# Dosing: regimens per drug, route and frequency surface forms
# --------------------------------------------------------------------------

# term|doses @ROUTE[,ROUTE] @FREQ[/FREQ]; another regimen ...
_DOSING_TABLE = """\
metformin|500 mg,850 mg,1000 mg @PO @BID/TID
gliclazide|30 mg,60 mg,90 mg @PO @OD/MORNING
insulin glargine|10 units,14 units,18 units,22 units,28 units,34 units @SC @ON/OD
insulin aspart|4 units,6 units,8 units,10 units @SC @MEALS
empagliflozin|10 mg,25 mg @PO @OD
dapagliflozin|10 mg @PO @OD
sitagliptin|50 mg,100 mg @PO @OD
semaglutide|0.25 mg,0.5 mg,1 mg @SC @WEEKLY
atorvastatin|10 mg,20 mg,40 mg,80 mg @PO @ON/OD
rosuvastatin|5 mg,10 mg,20 mg,40 mg @PO @OD/ON
simvastatin|20 mg,40 mg @PO @ON
ezetimibe|10 mg @PO @OD
bisoprolol|1.25 mg,2.5 mg,5 mg,7.5 mg,10 mg @PO @OD/MORNING
metoprolol|23.75 mg,47.5 mg,95 mg @PO @OD; 25 mg,50 mg @PO @BID
carvedilol|3.125 mg,6.25 mg,12.5 mg,25 mg @PO @BID
nebivolol|2.5 mg,5 mg @PO @OD
ramipril|1.25 mg,2.5 mg,5 mg,10 mg @PO @OD
enalapril|5 mg,10 mg,20 mg @PO @OD/BID
lisinopril|5 mg,10 mg,20 mg @PO @OD
losartan|25 mg,50 mg,100 mg @PO @OD
valsartan|40 mg,80 mg,160 mg @PO @OD/BID
candesartan|4 mg,8 mg,16 mg,32 mg @PO @OD
sacubitril/valsartan|24/26 mg,49/51 mg,97/103 mg @PO @BID
amlodipine|2.5 mg,5 mg,10 mg @PO @OD
hydrochlorothiazide|12.5 mg,25 mg @PO @OD/MORNING
furosemide|20 mg,40 mg,80 mg @PO @OD/BID/MORNING; 20 mg,40 mg,80 mg @IV @BID/TID
torasemide|5 mg,10 mg,20 mg @PO @OD/MORNING
spironolactone|25 mg,50 mg @PO @OD
eplerenone|25 mg,50 mg @PO @OD
digoxin|0.0625 mg,0.125 mg,0.25 mg @PO @OD
amiodarone|100 mg,200 mg @PO @OD
glyceryl trinitrate|0.4 mg,0.5 mg @SL @PRN
isosorbide mononitrate|30 mg,60 mg @PO @MORNING/OD
acetylsalicylic acid|75 mg,100 mg,150 mg @PO @OD
clopidogrel|75 mg @PO @OD
ticagrelor|90 mg @PO @BID; 60 mg @PO @BID
prasugrel|5 mg,10 mg @PO @OD
warfarin|2.5 mg,3 mg,5 mg,7.5 mg @PO @ON/OD
apixaban|2.5 mg,5 mg @PO @BID
rivaroxaban|15 mg,20 mg @PO @OD
dabigatran|110 mg,150 mg @PO @BID
enoxaparin|40 mg @SC @OD; 60 mg,80 mg,100 mg @SC @BID
heparin|5000 IU @SC @BID/TID
alteplase|0.9 mg/kg @IV @ONCE
paracetamol|500 mg,1 g @PO @QID/TID/PRN/Q6H; 1 g @IV @Q6H/Q8H
ibuprofen|200 mg,400 mg,600 mg @PO @TID/PRN
diclofenac|50 mg,75 mg @PO @BID/TID
metamizole|500 mg,1 g @PO,IV @TID/PRN
tramadol|50 mg,100 mg @PO @BID/TID/PRN
morphine|2.5 mg,5 mg @SC,IV @PRN/Q4H; 10 mg,20 mg @PO @BID
oxycodone|5 mg,10 mg @PO @BID/PRN
fentanyl|12 mcg/h,25 mcg/h @TD @Q72H
omeprazole|20 mg,40 mg @PO @OD/BID
pantoprazole|20 mg,40 mg @PO @OD/BID; 40 mg @IV @BID
ondansetron|4 mg,8 mg @PO,IV @PRN/TID
metoclopramide|10 mg @PO,IV @TID/PRN
lactulose|10 ml,15 ml,20 ml @PO @BID/OD
macrogol|1 sachet,2 sachets @PO @OD/BID
amoxicillin|500 mg,1 g @PO @TID
amoxicillin/clavulanic acid|875/125 mg @PO @BID; 500/125 mg @PO @TID; 1.2 g @IV @Q8H
piperacillin/tazobactam|4.5 g @IV @Q8H/Q6H
ceftriaxone|1 g,2 g @IV @Q24H/OD
cefuroxime|750 mg,1.5 g @IV @Q8H; 500 mg @PO @BID
meropenem|1 g @IV @Q8H
azithromycin|500 mg @PO @OD
clarithromycin|250 mg,500 mg @PO @BID
doxycycline|100 mg @PO @OD/BID
ciprofloxacin|250 mg,500 mg @PO @BID; 400 mg @IV @Q12H
levofloxacin|500 mg,750 mg @PO @OD
nitrofurantoin|50 mg @PO @QID; 100 mg @PO @BID
sulfamethoxazole/trimethoprim|800/160 mg @PO @BID
vancomycin|125 mg @PO @QID; 1 g @IV @Q12H
metronidazole|500 mg @IV @Q8H; 400 mg,500 mg @PO @TID
clindamycin|300 mg,450 mg @PO @TID/QID; 600 mg @IV @Q8H
fluconazole|150 mg @PO @ONCE; 200 mg @PO @OD
oseltamivir|75 mg @PO @BID
prednisolone|5 mg,10 mg,20 mg,30 mg,40 mg @PO @MORNING/OD
methylprednisolone|40 mg,125 mg @IV @OD; 4 mg,8 mg,16 mg @PO @OD
dexamethasone|6 mg @PO,IV @OD
hydrocortisone|100 mg @IV @Q6H/Q8H; 10 mg,20 mg @PO @BID
levothyroxine|25 mcg,50 mcg,75 mcg,88 mcg,100 mcg,125 mcg @PO @MORNING
thiamazole|5 mg,10 mg,20 mg @PO @OD
salbutamol|100 mcg 2 puffs @INH @PRN/QID; 2.5 mg,5 mg @NEB @Q6H/PRN
ipratropium bromide|20 mcg 2 puffs @INH @QID; 0.5 mg @NEB @Q6H
tiotropium|18 mcg,2.5 mcg 2 puffs @INH @OD
budesonide/formoterol|160/4.5 mcg 1 inhalation,160/4.5 mcg 2 inhalations,320/9 mcg 1 inhalation @INH @BID
fluticasone/salmeterol|250/50 mcg 1 inhalation,500/50 mcg 1 inhalation @INH @BID
montelukast|10 mg @PO @ON
sertraline|50 mg,100 mg @PO @OD
escitalopram|5 mg,10 mg,20 mg @PO @OD
mirtazapine|15 mg,30 mg @PO @ON
amitriptyline|10 mg,25 mg @PO @ON
quetiapine|25 mg,50 mg @PO @ON/BID
haloperidol|0.5 mg,1 mg @PO,IM @PRN/BID
zopiclone|3.75 mg,7.5 mg @PO @ON/PRN
diazepam|5 mg,10 mg @PO @TID/PRN
midazolam|1 mg,2 mg,3 mg @IV @ONCE
levetiracetam|250 mg,500 mg,750 mg,1000 mg @PO @BID
gabapentin|300 mg,600 mg @PO @TID
pregabalin|75 mg,150 mg @PO @BID
donepezil|5 mg,10 mg @PO @ON
levodopa/carbidopa|100/25 mg,250/25 mg @PO @TID/QID
allopurinol|100 mg,200 mg,300 mg @PO @OD
colchicine|0.5 mg @PO @BID/TID
alendronic acid|70 mg @PO @WEEKLY
cholecalciferol|1000 IU,2000 IU,4000 IU @PO @OD
ferrous sulfate|100 mg @PO @OD/BID
folic acid|1 mg,5 mg @PO @OD
cyanocobalamin|1000 mcg @IM @MONTHLY; 1 mg @PO @OD
potassium chloride|1 g,20 mmol @PO @BID/TID
tamsulosin|0.4 mg @PO @ON/OD
methotrexate|10 mg,15 mg,20 mg @PO,SC @WEEKLY
norepinephrine|0.05 mcg/kg/min,0.1 mcg/kg/min,0.2 mcg/kg/min @IV @INFUSION
propofol|60 mg,80 mg,100 mg,150 mg @IV @ONCE
lidocaine|1% 5 ml,1% 10 ml,2% 5 ml @LOCAL @ONCE
naloxone|0.4 mg @IV @PRN
tranexamic acid|1 g @IV @ONCE/TID
"""

_ROUTES: dict[str, tuple[str, ...]] = {
    "PO": ("PO", "p.o.", "orally", "per os", "by mouth"),
    "IV": ("IV", "i.v.", "intravenously"),
    "SC": ("SC", "s.c.", "subcutaneously", "subcut"),
    "IM": ("IM", "i.m.", "intramuscularly"),
    "INH": ("inhaled", "inh.", "by inhalation"),
    "NEB": ("nebulised", "via nebuliser", "neb."),
    "SL": ("SL", "sublingually", "s.l."),
    "TD": ("transdermal patch", "TD", "patch"),
    "LOCAL": ("local infiltration", "locally"),
}
_FREQS: dict[str, tuple[str, ...]] = {
    "OD": ("once daily", "daily", "1x1", "OD", "q.d.", "once a day", "1 x daily"),
    "MORNING": ("in the morning", "every morning", "mane", "1-0-0"),
    "ON": ("at night", "nocte", "in the evening", "at bedtime", "0-0-1"),
    "BID": ("BID", "b.i.d.", "twice daily", "1x2", "2 times a day", "morning and evening", "1-0-1"),
    "TID": ("TID", "t.i.d.", "three times daily", "1x3", "1-1-1"),
    "QID": ("QID", "q.i.d.", "four times daily", "1x4"),
    "PRN": ("PRN", "as needed", "when required", "p.r.n.", "if needed"),
    "WEEKLY": ("once weekly", "weekly", "once a week", "1x/week"),
    "MONTHLY": ("monthly", "once a month", "every 4 weeks"),
    "Q4H": ("q4h", "every 4 hours", "4-hourly"),
    "Q6H": ("q6h", "every 6 hours", "6-hourly"),
    "Q8H": ("q8h", "every 8 hours", "8-hourly", "3 times a day"),
    "Q12H": ("q12h", "every 12 hours", "12-hourly"),
    "Q24H": ("q24h", "every 24 hours", "once daily"),
    "Q72H": ("every 72 hours", "every 3 days", "q72h"),
    "ONCE": ("once", "as a single dose", "single dose"),
    "MEALS": ("with meals", "before meals", "TID with meals", "a.c."),
    "INFUSION": ("as continuous infusion", "by infusion", "titrated to MAP > 65 mmHg"),
}


@dataclass(frozen=True)
class _Regimen:
    doses: tuple[str, ...]
    routes: tuple[str, ...]
    freqs: tuple[str, ...]


def _parse_dosing(table: str) -> dict[str, tuple[_Regimen, ...]]:
    dosing: dict[str, tuple[_Regimen, ...]] = {}
    for line in table.splitlines():
        term, _, rest = line.partition("|")
        regimens = []
        for part in rest.split(";"):
            doses, routes, freqs = (s.strip() for s in part.split("@"))
            regimens.append(
                _Regimen(tuple(doses.split(",")), tuple(routes.split(",")), tuple(freqs.split("/")))
            )
        dosing[term] = tuple(regimens)
    return dosing


_DOSING = _parse_dosing(_DOSING_TABLE)


@dataclass(frozen=True)
class _Med:
    """A patient's regular medication: fixed regimen, surface forms vary per note."""

    term: str
    dose: str
    route: str
    freq: str


# --------------------------------------------------------------------------
# Lab values and vitals
# --------------------------------------------------------------------------

_Range: TypeAlias = tuple[float, float] | None


@dataclass(frozen=True)
class _Lab:
    names: tuple[str, ...]
    units: tuple[str, ...]
    normal: tuple[float, float]
    high: _Range
    low: _Range
    decimals: int


_LABS: dict[str, _Lab] = {
    "hb": _Lab(
        ("Hb", "hemoglobin", "haemoglobin", "B-Hb"),
        ("g/L", "g/l"),
        (121, 158),
        (166, 182),
        (64, 104),
        0,
    ),
    "wbc": _Lab(
        ("WBC", "leukocytes", "white cell count", "B-WBC"),
        ("x10^9/L", "×10⁹/L", "E9/L"),
        (4.1, 9.4),
        (11.6, 24.8),
        (1.2, 3.4),
        1,
    ),
    "plt": _Lab(
        ("PLT", "platelets", "thrombocytes"),
        ("x10^9/L", "×10⁹/L"),
        (165, 355),
        (430, 640),
        (28, 115),
        0,
    ),
    "crp": _Lab(
        ("CRP", "C-reactive protein", "S-CRP"), ("mg/L", "mg/l"), (1, 7), (38, 286), None, 0
    ),
    "pct": _Lab(("procalcitonin", "PCT"), ("µg/L", "ng/mL"), (0.02, 0.08), (0.62, 14.5), None, 2),
    "na": _Lab(("Na", "sodium", "S-Na"), ("mmol/L",), (136, 144), (146, 152), (114, 131), 0),
    "k": _Lab(("K", "potassium", "S-K"), ("mmol/L",), (3.6, 4.9), (5.4, 6.6), (2.6, 3.3), 1),
    "crea": _Lab(
        ("creatinine", "S-Crea", "Crea"), ("µmol/L", "umol/L"), (56, 99), (142, 486), None, 0
    ),
    "egfr": _Lab(("eGFR",), ("mL/min/1.73m²", "ml/min/1.73 m2"), (76, 104), None, (17, 56), 0),
    "urea": _Lab(("urea", "S-Urea"), ("mmol/L",), (3.1, 7.4), (9.2, 31.5), None, 1),
    "glu": _Lab(
        ("glucose", "blood glucose", "P-Gluc"), ("mmol/L",), (4.6, 6.4), (9.1, 29.5), (2.1, 3.5), 1
    ),
    "hba1c": _Lab(("HbA1c",), ("%",), (4.9, 5.9), (6.6, 10.8), None, 1),
    "ldl": _Lab(("LDL", "LDL cholesterol", "LDL-C"), ("mmol/L",), (1.4, 2.8), (3.1, 5.8), None, 1),
    "tnt": _Lab(("hs-TnT", "troponin T", "hs-troponin T"), ("ng/L",), (3, 13), (46, 2650), None, 0),
    "bnp": _Lab(("NT-proBNP",), ("ng/L", "pg/mL"), (35, 120), (1240, 18600), None, 0),
    "ddimer": _Lab(("D-dimer",), ("mg/L FEU",), (0.12, 0.45), (1.15, 8.6), None, 2),
    "alt": _Lab(("ALT", "ALAT"), ("U/L",), (11, 39), (78, 420), None, 0),
    "bili": _Lab(
        ("bilirubin", "total bilirubin", "S-Bil"), ("µmol/L",), (5, 19), (36, 148), None, 0
    ),
    "lipase": _Lab(("lipase", "P-Lip"), ("U/L",), (16, 58), (460, 4300), None, 0),
    "inr": _Lab(("INR", "PT-INR"), ("",), (0.9, 1.1), (1.9, 3.4), None, 1),
    "tsh": _Lab(("TSH",), ("mIU/L", "mU/L"), (0.62, 3.8), (6.1, 28.4), (0.01, 0.18), 2),
    "lactate": _Lab(("lactate", "P-Lac"), ("mmol/L",), (0.6, 1.7), (2.6, 7.6), None, 1),
    "alb": _Lab(("albumin", "S-Alb"), ("g/L",), (36, 48), None, (19, 32), 0),
    "ferritin": _Lab(("ferritin",), ("µg/L",), (42, 248), (410, 1420), (3, 14), 0),
    "urate": _Lab(("uric acid", "urate"), ("µmol/L",), (222, 388), (462, 648), None, 0),
    "ph": _Lab(("pH",), ("",), (7.36, 7.44), (7.47, 7.53), (7.04, 7.29), 2),
    "pco2": _Lab(("pCO2", "PaCO2"), ("kPa",), (4.7, 6.0), (6.5, 9.8), (3.1, 4.3), 1),
    "ketones": _Lab(
        ("ketones", "beta-hydroxybutyrate"), ("mmol/L",), (0.0, 0.5), (3.2, 7.8), None, 1
    ),
    "psa": _Lab(("PSA",), ("µg/L", "ng/mL"), (0.4, 3.5), (4.6, 22.5), None, 1),
}


# --------------------------------------------------------------------------
# Fake people and places
# --------------------------------------------------------------------------

# origin: female given names, male given names, family names (space-separated).
_NAME_POOLS: dict[str, tuple[str, str, str]] = {
    "ee": (
        (
            "Mari Anna Kati Liis Kadri Triin Maarja Kristiina Tiina Eve Piret Helen Merike Ülle "
            "Reet Sirje Malle Tiiu Leida Helju Õie Maie Kersti Pille Katrin Laura Liisa Grete "
            "Kärt Anu Külli Signe Ene Elo Maret Ingrid Aili"
        ),
        (
            "Jaan Peeter Toomas Andres Mart Tõnu Priit Rein Urmas Margus Indrek Kalev Jüri Ants "
            "Aivar Siim Kristjan Rasmus Karl Madis Tarmo Raivo Mihkel Ülo Enn Heino Lembit Arvo "
            "Villu Hannes Taavi Sander Joosep Olev"
        ),
        (
            "Tamm Saar Sepp Mägi Kask Kukk Rebane Ilves Pärn Koppel Kuusk Lepik Raudsepp Karu "
            "Lill Mets Kallas Vaher Kivi Põder Luik Jõgi Teder Tõnisson Männik Kõiv Vares Kruus "
            "Kütt Parts Lõhmus Nõmm Sild Käärik Jürgens Laas Rand Vill Hunt Pihlak"
        ),
    ),
    "fi": (
        (
            "Aino Helmi Sanna Päivi Tuula Riitta Marjatta Anneli Satu Minna Johanna Kaisa Eeva "
            "Hanna Noora Sirkka Pirjo Tarja Outi"
        ),
        (
            "Juhani Matti Mikko Timo Jukka Pekka Antti Ville Kari Heikki Esa Tapio Lauri Eero "
            "Olli Sakari Veikko Jarmo"
        ),
        (
            "Virtanen Korhonen Mäkinen Nieminen Mäkelä Hämäläinen Laine Heikkinen Koskinen "
            "Järvinen Lehtonen Saarinen Salminen Niemi Lahtinen Kinnunen Salonen Turunen Heinonen "
            "Räsänen"
        ),
    ),
    "se": (
        (
            "Eva Maria Karin Kristina Lena Birgitta Elin Sofia Linnea Ebba Margareta Astrid "
            "Sigrid Maja Agneta Ulla"
        ),
        (
            "Lars Anders Johan Erik Per Nils Björn Magnus Oskar Gustav Axel Sven Olof Henrik Mats "
            "Fredrik"
        ),
        (
            "Andersson Johansson Karlsson Nilsson Eriksson Larsson Olsson Persson Svensson "
            "Gustafsson Pettersson Lindberg Lindqvist Bergström Holm Sjöberg Åberg Lundgren "
            "Ekström Dahl"
        ),
    ),
    "en": (
        (
            "Emily Sarah Jessica Emma Olivia Charlotte Margaret Helen Susan Elizabeth Catherine "
            "Rachel Hannah Lucy Mary Patricia Linda"
        ),
        (
            "James John Robert Michael William David Richard Thomas George Daniel Matthew Andrew "
            "Christopher Edward Henry Samuel Jack"
        ),
        (
            "Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson "
            "Evans Walker Roberts Baker Cooper Harris Lewis Morgan Turner Palmer Fletcher"
        ),
    ),
}
_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    origin: (tuple(f.split()), tuple(m.split()), tuple(fam.split()))
    for origin, (f, m, fam) in _NAME_POOLS.items()
}
# Most patients of an Estonian hospital have Estonian names; the rest are mixed in.
_ORIGIN_WEIGHTS = (("ee", 0.62), ("fi", 0.14), ("se", 0.12), ("en", 0.12))

# Real Estonian towns with their postal code ranges; the streets are invented.
_TOWNS: tuple[tuple[str, int, int], ...] = (
    ("Tallinn", 10111, 13925),
    ("Tartu", 50090, 51111),
    ("Narva", 20101, 21020),
    ("Pärnu", 80010, 80050),
    ("Kohtla-Järve", 30101, 31040),
    ("Viljandi", 71001, 71030),
    ("Rakvere", 44301, 44317),
    ("Maardu", 74111, 74120),
    ("Kuressaare", 93801, 93820),
    ("Sillamäe", 40231, 40234),
    ("Võru", 65601, 65610),
    ("Valga", 68201, 68210),
    ("Jõhvi", 41531, 41537),
    ("Haapsalu", 90501, 90508),
    ("Keila", 76601, 76610),
    ("Paide", 72711, 72720),
    ("Põlva", 63301, 63310),
    ("Rapla", 79511, 79515),
    ("Jõgeva", 48301, 48306),
    ("Kärdla", 92411, 92414),
    ("Elva", 61501, 61507),
    ("Türi", 72211, 72213),
    ("Otepää", 67403, 67406),
)
_TOWN_WEIGHTS = (30, 14, 6, 6, 4, 4, 3, 2, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1)
_STREET_ROOTS = (
    "Kase",
    "Männi",
    "Kuuse",
    "Pihlaka",
    "Vahtra",
    "Tamme",
    "Lepa",
    "Paju",
    "Sarapuu",
    "Kadaka",
    "Jõe",
    "Järve",
    "Mere",
    "Metsa",
    "Põllu",
    "Niidu",
    "Aia",
    "Kooli",
    "Veski",
    "Sepa",
    "Kalda",
    "Lille",
    "Mäe",
    "Raba",
    "Vainu",
    "Rukki",
    "Kaera",
    "Lina",
    "Tuule",
    "Päikese",
    "Tähe",
    "Linnu",
    "Kure",
    "Luige",
    "Rebase",
    "Ilvese",
    "Kaarna",
    "Hõbe",
    "Kannikese",
    "Sinilille",
    "Ristikheina",
    "Kullerkupu",
    "Nurme",
    "Allika",
    "Soo",
    "Väljaku",
    "Tiigi",
    "Hobuse",
)
_STREET_TAILS = (
    "",
    "",
    "",
    "oja",
    "välja",
    "mäe",
    "niidu",
    "raja",
    "aru",
    "nurme",
    "lao",
    "salu",
    "kivi",
)
_STREET_TYPES = ("tn", "tn", "tn", "tee", "pst", "põik", "mnt")


@dataclass(frozen=True)
class _Patient:
    patient_id: str
    given: tuple[str, ...]
    family: str
    female: bool
    birth: date
    national_id: str
    phone: str
    address: str
    town: str
    problems: tuple[str, ...]  # chronic problem list (vocab terms)
    meds: tuple[_Med, ...]
    past_procs: tuple[tuple[str, int], ...]  # (procedure term, year)
    allergy: str | None  # a drug term, or None for no known allergies

    @property
    def name(self) -> str:
        return " ".join((*self.given, self.family))

    @property
    def sex(self) -> str:
        return "female" if self.female else "male"


# --------------------------------------------------------------------------
# Clinical knowledge. Templates: [a|b] alternatives, {d:/p:/x:term} mentions,
# {dose:term} a regimen, {n:a-b} / {f:a.b-c.d} numbers, {lab:key:state}, and
# per-note context slots ({dx}, {pr}, {pos}, {age}, {side}, {pmed}, ...).
# A step starting with "?" is optional.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    """A condition seen in clinic: chronic ones also fill patients' problem lists."""

    dx: str
    drugs: tuple[str, ...]
    depts: tuple[str, ...]
    weight: float
    min_age: int
    complaints: tuple[str, ...]
    exam: tuple[str, ...]
    labs: tuple[str, ...]
    tests: tuple[str, ...]
    plans: tuple[str, ...]
    status: tuple[str, ...] = ("stable", "well controlled", "unchanged", "improving")
    chronic: bool = True
    sex: str | None = None  # "female" / "male" when only one sex has it


_STOP_REASONS = (
    "dizziness",
    "ankle edema",
    "a dry cough",
    "gastrointestinal side effects",
    "fatigue",
    "muscle pain",
    "a rash",
    "low blood pressure readings",
    "headache",
)

_PROBLEMS: tuple[_Problem, ...] = (
    _Problem(
        dx="essential hypertension",
        drugs=(
            "amlodipine",
            "ramipril",
            "losartan",
            "bisoprolol",
            "hydrochlorothiazide",
            "valsartan",
            "candesartan",
            "enalapril",
            "lisinopril",
            "nebivolol",
        ),
        depts=("Family Medicine", "Cardiology", "Internal Medicine"),
        weight=10,
        min_age=30,
        complaints=(
            "[Comes|Came|Attends] for [a routine|a scheduled|the {n:3-12}-month|a] [follow-up|control visit] of {dx}.",
            "?Home blood pressure readings [mostly|usually|typically] {n:126-168}/{n:76-99} mmHg[| in the mornings| according to {pos} diary].",
            "?[Occasional|Intermittent|Some] [morning headaches|dizziness when standing up|ankle swelling in the evenings|palpitations after coffee].",
            "?Takes {pmed} [regularly|every day|as prescribed][|, no side effects noted|, tolerates it well].",
            "?Denies [chest pain|exertional chest discomfort][|, dyspnea| or shortness of breath][| and {x:syncope}].",
        ),
        exam=(
            "?[Repeat|Second] blood pressure after {n:5-10} minutes {n:124-162}/{n:72-96} mmHg.",
        ),
        labs=("crea:n", "k:n", "na:n", "egfr:n", "ldl:n"),
        tests=(
            "{p:electrocardiography} [today|at this visit]: sinus rhythm {n:56-92}/min[|, no acute changes|, left ventricular hypertrophy by voltage criteria|, incomplete right bundle branch block].",
            "?Referral for {p:transthoracic echocardiography} to assess left ventricular wall thickness.",
            "?Ambulatory blood pressure monitoring [ordered|planned] for [the next visit|{n:2-4} weeks from now].",
        ),
        plans=(
            "[Increase|Uptitrate] {pmed} to {pmed_dose}.",
            "[Add|Start] {newdrug} {newdose}[| to reach the target].",
            "Continue {pmed} [unchanged|at the same dose|as before].",
            "?[Salt restriction|Reducing salt intake], [regular exercise|regular physical activity] and weight control [discussed|advised|recommended].",
            "?[Home BP diary|Home blood pressure measurements] for {n:2-4} weeks[| and bring the readings to the next visit].",
        ),
        status=(
            "well controlled",
            "not at target",
            "borderline controlled",
            "improved since the last visit",
            "suboptimally controlled",
        ),
    ),
    _Problem(
        dx="type 2 diabetes mellitus",
        drugs=(
            "metformin",
            "gliclazide",
            "empagliflozin",
            "sitagliptin",
            "semaglutide",
            "dapagliflozin",
            "insulin glargine",
        ),
        depts=("Family Medicine", "Endocrinology", "Internal Medicine"),
        weight=8,
        min_age=35,
        complaints=(
            "[Follow-up|Control visit|Regular review] for {dx}[| diagnosed in {year}| known since {year}].",
            "?Self-monitored fasting glucose [mostly|usually|between] {f:5.8-9.6}[| to {f:9.8-12.4}] mmol/L.",
            "?[No hypoglycemic episodes|One mild hypoglycemic episode last month|No symptomatic hypos] [reported|since the last visit].",
            "?[Reports|Mentions|Describes] [increased thirst|tingling in both feet|blurred vision in the evenings|nocturia twice a night|no new symptoms].",
            "?Uses {pmed} [regularly|as prescribed][|, occasional loose stools|, good tolerance].",
            "?Last eye [screening|examination] {n:6-20} months ago[|, no retinopathy|, mild background retinopathy].",
        ),
        exam=(
            "?Feet: [intact skin, pulses palpable|dry skin, monofilament sensation reduced on the {side}|no ulcers, callus on the {side} first metatarsal head].",
        ),
        labs=("hba1c:h", "glu:h", "crea:n", "egfr:n", "ldl:h"),
        tests=(
            "?[Urine albumin-creatinine ratio|UACR] {f:0.4-12.5} mg/mmol.",
            "?Referral to [the diabetes nurse|ophthalmology for retinal screening|the podiatrist].",
        ),
        plans=(
            "[Increase|Uptitrate] {pmed} to {pmed_dose}.",
            "[Add|Start|Initiate] {newdrug} {newdose}[| given the cardiovascular risk| for better glycemic control].",
            "Continue {pmed} [unchanged|at the current dose].",
            "?Diet and [physical activity|exercise] counselling[| repeated|, referred to a dietitian].",
            "?HbA1c [target|goal] below {f:6.5-7.5}%.",
        ),
        status=(
            "well controlled",
            "not at target",
            "suboptimally controlled",
            "improving",
            "at target",
        ),
    ),
    _Problem(
        dx="hyperlipidemia",
        drugs=("atorvastatin", "rosuvastatin", "simvastatin", "ezetimibe"),
        depts=("Family Medicine", "Cardiology"),
        weight=6,
        min_age=35,
        complaints=(
            "[Review of|Follow-up of|Comes to discuss] lipid [results|profile][| and {dx} treatment].",
            "?[Muscle aches|Mild myalgia|Leg cramps] since starting {pmed}[|, not limiting daily activities].",
            "?[Tolerates|Takes] {pmed} [well|without problems|regularly].",
        ),
        exam=(),
        labs=("ldl:h", "alt:n"),
        tests=(
            "?Total cholesterol {f:4.2-7.8} mmol/L, HDL {f:0.9-1.9} mmol/L, triglycerides {f:0.8-3.6} mmol/L.",
        ),
        plans=(
            "[Increase|Uptitrate] {pmed} to {pmed_dose}.",
            "[Add|Start] {newdrug} {newdose}[| as LDL remains above target].",
            "?[Repeat lipids|Control lipid panel] in {n:6-12} weeks.",
            "?Dietary advice [given|repeated][|, Mediterranean-type diet recommended].",
        ),
        status=("at target", "not at target", "improving", "LDL above goal"),
    ),
    _Problem(
        dx="atrial fibrillation",
        drugs=(
            "apixaban",
            "rivaroxaban",
            "warfarin",
            "dabigatran",
            "bisoprolol",
            "metoprolol",
            "digoxin",
        ),
        depts=("Cardiology", "Internal Medicine", "Family Medicine"),
        weight=4,
        min_age=50,
        complaints=(
            "Follow-up of [paroxysmal|persistent|permanent] {dx}[| first detected in {year}].",
            "?[Palpitations|Episodes of irregular heartbeat] [about once a month|a few times a week|less often than before|lasting up to {n:1-6} hours].",
            "?No [bleeding|signs of bleeding|nosebleeds or dark stools] on {pmed}.",
            "?[Mild|Some] exertional [dyspnea|fatigue][| when climbing stairs].",
        ),
        exam=("?Pulse [irregularly irregular|irregular], apical rate {n:68-118}/min.",),
        labs=("hb:n", "crea:n", "egfr:n", "tsh:n"),
        tests=(
            "{p:ECG}: [{x:atrial fibrillation} with ventricular rate {n:64-112}/min|sinus rhythm {n:58-80}/min|{x:AF}, rate controlled].",
            "?{p:Holter monitoring} [ordered|planned] to assess rate control.",
            "?[Referral|Referred] for [{p:catheter ablation}|{p:electrical cardioversion}][| after discussion of options].",
        ),
        plans=(
            "Continue {pmed} [unchanged|at the same dose].",
            "[Start|Add] {newdrug} {newdose}.",
            "?CHA2DS2-VASc score {n:2-6}, HAS-BLED {n:1-3}; anticoagulation [continued|indicated].",
            "?[Kidney function|Creatinine] to be checked [every {n:6-12} months|annually] for dosing.",
        ),
        status=("rate controlled", "symptomatic", "stable", "well controlled"),
    ),
    _Problem(
        dx="heart failure",
        drugs=(
            "furosemide",
            "torasemide",
            "spironolactone",
            "sacubitril/valsartan",
            "bisoprolol",
            "carvedilol",
            "dapagliflozin",
            "eplerenone",
        ),
        depts=("Cardiology", "Internal Medicine"),
        weight=3,
        min_age=55,
        complaints=(
            "Follow-up of {dx}[| with reduced ejection fraction| NYHA class {roman}].",
            "?[Weight|Body weight] [stable|up {f:1.0-3.5} kg|down {f:1.0-2.5} kg] [since the last visit|over the past month].",
            "?[Dyspnea|Shortness of breath] [after one flight of stairs|on moderate exertion|when walking about {n:100-500} m].",
            "?[Sleeps with {n:2-3} pillows|Orthopnea denied|No paroxysmal nocturnal dyspnea].",
            "?[Ankle swelling|Leg edema] [in the evenings|improved on {pmed}|unchanged].",
        ),
        exam=(
            "?[JVP not raised|JVP raised {n:3-5} cm|Jugular veins not distended].",
            "?[Fine crackles at both bases|Lungs clear|Reduced breath sounds at the {side} base].",
        ),
        labs=("bnp:h", "na:n", "k:n", "crea:n", "egfr:l"),
        tests=(
            "?{p:echocardiography} [last year|in {year}] showed LVEF {n:25-45}%.",
            "?{p:ECG}: [sinus rhythm|{x:atrial fibrillation}], QRS {n:90-150} ms.",
        ),
        plans=(
            "[Uptitrate|Increase] {pmed} to {pmed_dose}.",
            "[Add|Start] {newdrug} {newdose}.",
            "?Daily weights; [contact the clinic|call] if weight rises more than 2 kg in 3 days.",
            "?Fluid restriction {f:1.5-2.0} L/day[| discussed].",
            "?[Control|Repeat] electrolytes and creatinine in {n:1-2} weeks.",
        ),
        status=("compensated", "NYHA II", "NYHA III", "stable", "mildly decompensated"),
    ),
    _Problem(
        dx="coronary artery disease",
        drugs=(
            "acetylsalicylic acid",
            "atorvastatin",
            "clopidogrel",
            "isosorbide mononitrate",
            "bisoprolol",
            "glyceryl trinitrate",
            "rosuvastatin",
        ),
        depts=("Cardiology", "Family Medicine"),
        weight=4,
        min_age=50,
        complaints=(
            "Follow-up of {dx}[| after {p:PCI} in {year}| after {p:CABG} in {year}].",
            "?[Chest tightness|Chest discomfort|Retrosternal pressure] on [brisk walking|climbing stairs|exertion in cold weather], relieved by rest[| or {d:glyceryl trinitrate}].",
            "?[No rest pain|No symptoms at rest|Exercise tolerance unchanged].",
            "?Uses {d:GTN} spray [about once a week|rarely|not at all since the last visit].",
        ),
        exam=(),
        labs=("ldl:h", "hb:n", "crea:n"),
        tests=(
            "{p:ECG}: sinus rhythm {n:54-84}/min[|, old Q waves inferiorly|, no ischemic changes|, T-wave inversions in V4-V6].",
            "?[Referral for|Ordered] {p:exercise stress test}.",
            "?[Referral for|Ordered] {p:coronary angiography} because of [progressive symptoms|a positive stress test].",
        ),
        plans=(
            "Continue {pmed} [unchanged|long-term].",
            "[Add|Start] {newdrug} {newdose}.",
            "?Cardiac rehabilitation [recommended|discussed].",
            "?LDL target below 1.4 mmol/L[|; statin intensified].",
        ),
        status=("stable", "stable symptoms", "CCS class {n:1-2}", "well controlled"),
    ),
    _Problem(
        dx="chronic obstructive pulmonary disease",
        drugs=(
            "tiotropium",
            "budesonide/formoterol",
            "salbutamol",
            "fluticasone/salmeterol",
            "ipratropium bromide",
        ),
        depts=("Pulmonology", "Family Medicine"),
        weight=3,
        min_age=50,
        complaints=(
            "Follow-up of {dx}[| GOLD {n:2-3}| group {abcd}].",
            "?[Chronic cough with white sputum|Morning cough|Cough with occasional yellow sputum][| in the mornings].",
            "?[Breathless|Dyspneic] after [{n:50-300} m on the flat|one flight of stairs|dressing]; mMRC {n:1-3}.",
            "?[Exacerbations|Flare-ups] in the last year: {n:0-3}[| treated with {d:prednisolone}].",
            "?[Smokes|Still smoking] {n:5-25} cigarettes a day[|, about {n:20-60} pack-years].",
            "?[Uses|Needs] {d:salbutamol} [inhaler|] [once|twice|three times|four times|several times] a day.",
        ),
        exam=(
            "?[Prolonged expiration|Scattered wheeze|Quiet breath sounds] [bilaterally|over both lungs].",
        ),
        labs=("hb:n", "crp:n"),
        tests=(
            "?{p:spirometry}: FEV1 {n:32-68}% of predicted, FEV1/FVC {f:0.42-0.68}[| after bronchodilator].",
            "?{p:chest X-ray} [ordered|planned][| to exclude other pathology].",
        ),
        plans=(
            "Continue {pmed}[| with inhaler technique reviewed].",
            "[Add|Start] {newdrug} {newdose}.",
            "?Smoking cessation [discussed|strongly advised|support offered].",
            "?[Seasonal flu and pneumococcal vaccination|Annual flu vaccination] recommended.",
            "?Pulmonary rehabilitation [referral|recommended].",
        ),
        status=("stable", "frequent exacerbator", "symptomatic", "moderately severe"),
    ),
    _Problem(
        dx="asthma",
        drugs=("budesonide/formoterol", "salbutamol", "montelukast", "fluticasone/salmeterol"),
        depts=("Pulmonology", "Family Medicine"),
        weight=3,
        min_age=18,
        complaints=(
            "Follow-up of {dx}[| since childhood| diagnosed in {year}].",
            "?[Night-time symptoms|Nocturnal cough|Wheeze] [about once a week|twice in the last month|none recently].",
            "?[Triggers|Symptoms triggered by] [cold air|exercise|pollen in spring|colds|cats].",
            "?Reliever use {n:0-5} times per week.",
            "?ACT score {n:14-25}.",
        ),
        exam=("?[No wheeze|Mild expiratory wheeze] on auscultation.",),
        labs=(),
        tests=(
            "?{p:spirometry} with reversibility: FEV1 {n:68-98}% predicted, [+{n:6-18}%|+{n:150-420} ml] after {d:salbutamol}.",
        ),
        plans=(
            "Continue {pmed}[| as maintenance and reliever therapy].",
            "[Add|Start] {newdrug} {newdose}.",
            "?Written action plan [given|updated].",
            "?Inhaler technique [checked|demonstrated|reviewed].",
        ),
        status=("well controlled", "partly controlled", "uncontrolled", "stable"),
    ),
    _Problem(
        dx="hypothyroidism",
        drugs=("levothyroxine",),
        depts=("Endocrinology", "Family Medicine"),
        weight=3,
        min_age=25,
        complaints=(
            "Follow-up of {dx}[| on {pmed}| after thyroiditis].",
            "?[Feels well|Some fatigue|Mild cold intolerance|Weight gain of {n:2-5} kg] [since the last visit|recently|].",
            "?Takes {pmed} [on an empty stomach|in the morning before breakfast|regularly].",
        ),
        exam=("?Thyroid [not enlarged|slightly enlarged, no nodules palpable].",),
        labs=("tsh:n",),
        tests=("?[Free T4|fT4] {f:11.0-21.5} pmol/L.",),
        plans=(
            "[Increase|Adjust] {pmed} to {pmed_dose}.",
            "Continue {pmed} [unchanged|at the same dose].",
            "?[Repeat|Control] TSH in {n:6-12} weeks.",
        ),
        status=("euthyroid", "well substituted", "undertreated", "stable"),
    ),
    _Problem(
        dx="gastroesophageal reflux disease",
        drugs=("omeprazole", "pantoprazole"),
        depts=("Family Medicine", "Gastroenterology"),
        weight=3,
        min_age=20,
        complaints=(
            "[Heartburn|Retrosternal burning|Acid regurgitation] [after meals|at night|when lying down] for [{n:2-8} weeks|several months].",
            "?[No dysphagia|No weight loss|No vomiting or black stools].",
            "?[Partial|Good|No] relief from {pmed}.",
        ),
        exam=("?Epigastrium [mildly tender|non-tender] on palpation.",),
        labs=("hb:n",),
        tests=(
            "?{p:gastroscopy} [ordered|to be considered] if symptoms persist[| or alarm symptoms appear].",
        ),
        plans=(
            "Continue {pmed}[| for {n:4-8} weeks, then step down].",
            "[Start|Trial of] {newdrug} {newdose}.",
            "?Advice: [avoid late meals|raise the head of the bed|reduce coffee and alcohol|weight reduction].",
        ),
        status=("symptomatic", "improved", "controlled on PPI", "stable"),
    ),
    _Problem(
        dx="depression",
        drugs=("sertraline", "escitalopram", "mirtazapine"),
        depts=("Family Medicine", "Psychiatry"),
        weight=3,
        min_age=18,
        complaints=(
            "Follow-up of {dx}[| diagnosed in {year}| on {pmed}].",
            "?[Mood|Sleep|Energy] [better|somewhat improved|unchanged|worse] [since the last visit|over the past weeks].",
            "?PHQ-9 score {n:5-19}[| (previously {n:12-22})].",
            "?[Denies suicidal ideation|No thoughts of self-harm|No suicidal thoughts].",
            "?[Works part-time|On sick leave|Retired|Studying], [lives with {pos} partner|lives alone|lives with family].",
        ),
        exam=(
            "?[Calm, cooperative, mood low, affect restricted|Appropriately dressed, mood neutral, speech normal].",
        ),
        labs=(),
        tests=("?[Referral to|Offered] cognitive behavioural therapy.",),
        plans=(
            "[Increase|Uptitrate] {pmed} to {pmed_dose}.",
            "[Start|Add] {newdrug} {newdose}.",
            "Continue {pmed} for at least {n:6-12} months[| after remission].",
            "?[Sleep hygiene|Regular activity] advice given.",
        ),
        status=("in partial remission", "improving", "moderate", "stable"),
    ),
    _Problem(
        dx="chronic kidney disease",
        drugs=("furosemide", "cholecalciferol", "dapagliflozin", "ramipril"),
        depts=("Nephrology", "Internal Medicine"),
        weight=2,
        min_age=55,
        complaints=(
            "Follow-up of {dx}[| stage {n:3-4}| G{n:3-4}A{n:1-3}].",
            "?[No uremic symptoms|Mild fatigue|Reduced appetite|Nocturia {n:1-3} times].",
            "?[Avoids|Has been told to avoid] NSAIDs.",
        ),
        exam=("?[No edema|Mild ankle edema].",),
        labs=("crea:h", "egfr:l", "k:n", "hb:n", "urea:h"),
        tests=(
            "?{p:abdominal ultrasound}: [kidneys {n:8-10} cm, cortex thinned|no hydronephrosis].",
        ),
        plans=(
            "Continue {pmed}[| unchanged].",
            "[Start|Add] {newdrug} {newdose}[| for renal protection].",
            "?Blood pressure target below 130/80 mmHg.",
            "?[Repeat|Control] kidney function in {n:3-6} months.",
        ),
        status=("stable", "slowly progressive", "stable kidney function"),
    ),
    _Problem(
        dx="osteoporosis",
        drugs=("alendronic acid", "cholecalciferol"),
        depts=("Family Medicine", "Endocrinology", "Rheumatology"),
        weight=2,
        min_age=60,
        sex="female",
        complaints=(
            "Follow-up of {dx}[| after a {x:wrist fracture} in {year}| diagnosed on {p:DEXA scan} in {year}].",
            "?Takes {pmed} [correctly|as instructed|with water before breakfast][| with no heartburn].",
            "?[No new fractures|No falls|One fall at home without injury] since the last visit.",
        ),
        exam=("?[Height {n:150-168} cm, kyphosis mild|No spinal tenderness].",),
        labs=("crea:n",),
        tests=(
            "?[Repeat|Control] {p:bone densitometry} in {n:1-2} years[|: T-score {tscore} at the femoral neck].",
        ),
        plans=(
            "Continue {pmed}.",
            "[Start|Add] {newdrug} {newdose}.",
            "?Fall prevention and calcium-rich diet advised.",
        ),
        status=("stable", "on treatment", "no new fractures"),
    ),
    _Problem(
        dx="gout",
        drugs=("allopurinol", "colchicine"),
        depts=("Family Medicine", "Rheumatology"),
        weight=2,
        min_age=40,
        complaints=(
            "[Painful|Red, swollen and painful|Hot and swollen] [right|left] [big toe|first MTP joint|ankle|knee] since [yesterday|{n:2-4} days][| after a festive dinner].",
            "?[Previous attacks|Similar episodes] {n:1-4} times in the past [year|two years].",
            "?[No fever|Afebrile]; [no trauma|denies injury].",
        ),
        exam=(
            "?[First MTP joint|Ankle] [swollen, red and warm|markedly tender], range of motion limited by pain.",
        ),
        labs=("urate:h", "crp:h", "crea:n"),
        tests=(),
        plans=(
            "[Start|Prescribed] {d:colchicine} {dose:colchicine} for [the acute attack|{n:3-7} days].",
            "[Start|Continue] {d:allopurinol} {dose:allopurinol}[| once the attack settles|, target urate below 360 µmol/L].",
            "?[Avoid|Reduce] alcohol[|, red meat| and sugary drinks].",
        ),
        status=("acute flare", "recurrent", "improving"),
    ),
    _Problem(
        dx="benign prostatic hyperplasia",
        drugs=("tamsulosin",),
        depts=("Urology", "Family Medicine"),
        weight=2,
        min_age=55,
        sex="male",
        complaints=(
            "[Weak urinary stream|Nocturia {n:2-4} times|Hesitancy and frequency|Incomplete emptying] for [{n:3-12} months|some time].",
            "?IPSS {n:8-24}[|, quality of life score {n:2-5}].",
            "?[No hematuria|No dysuria|No urinary retention].",
        ),
        exam=(
            "?Digital rectal examination: prostate [enlarged, smooth, non-tender|about {n:30-60} ml, firm, no nodules].",
        ),
        labs=("psa:n", "crea:n"),
        tests=("?[Post-void residual|Residual urine] {n:20-180} ml on bladder scan.",),
        plans=(
            "[Start|Continue] {pmed}[| {pmed_dose}].",
            "?[Referral|Refer] to urology for [{p:TURP}|{p:cystoscopy}] if symptoms persist.",
            "?[Reduce fluids in the evening|Limit evening fluid intake].",
        ),
        status=("moderate LUTS", "symptomatic", "improved on treatment"),
    ),
    _Problem(
        dx="knee osteoarthritis",
        drugs=("paracetamol", "ibuprofen", "diclofenac"),
        depts=("Family Medicine", "Orthopaedics"),
        weight=3,
        min_age=50,
        complaints=(
            "[Pain in the {side} knee|Bilateral knee pain|{side} knee pain] [on walking|on stairs|after prolonged standing][| for {n:1-5} years].",
            "?[Morning stiffness|Stiffness after rest] [under 30 minutes|about {n:10-25} minutes].",
            "?[Walking distance|Can walk] about {n:200-1500} m[| with a stick].",
            "?[Partial|Some|No] relief from {pmed}.",
        ),
        exam=(
            "?{side} knee: [crepitus, no effusion|small effusion, flexion {n:90-120} degrees|varus deformity, medial joint line tenderness].",
        ),
        labs=(),
        tests=(
            "?X-ray of the knee: [joint space narrowing medially|osteophytes, Kellgren-Lawrence grade {n:2-4}].",
        ),
        plans=(
            "Continue {pmed} [as needed|regularly].",
            "[Try|Start] {newdrug} {newdose}[| for up to {n:2-3} weeks].",
            "?Physiotherapy and weight loss [recommended|advised].",
            "?[Referral|Referred] to orthopaedics to discuss {p:total knee arthroplasty}.",
        ),
        status=("symptomatic", "progressive", "stable"),
    ),
    _Problem(
        dx="rheumatoid arthritis",
        drugs=("methotrexate", "folic acid", "prednisolone"),
        depts=("Rheumatology",),
        weight=1,
        min_age=30,
        complaints=(
            "Follow-up of seropositive {dx}[| diagnosed in {year}].",
            "?[Morning stiffness|Stiffness of the hands] for about {n:15-90} minutes.",
            "?[Swollen joints|Painful joints]: [both wrists|MCP 2-3 bilaterally|{side} wrist and knee].",
            "?Tolerates {pmed}[| well|, mild nausea the day after].",
        ),
        exam=("?DAS28-CRP {f:2.1-5.2}; [{n:1-6} swollen and {n:2-8} tender joints|no synovitis].",),
        labs=("crp:h", "alt:n", "hb:n", "wbc:n"),
        tests=(),
        plans=(
            "Continue {d:methotrexate} {dose:methotrexate} with {d:folic acid} {dose:folic acid}.",
            "?Short course of {d:prednisolone} {dose:prednisolone} with taper.",
            "?[Blood tests|Liver tests and blood count] every {n:8-12} weeks.",
        ),
        status=("moderate disease activity", "low disease activity", "in remission"),
    ),
    _Problem(
        dx="epilepsy",
        drugs=("levetiracetam",),
        depts=("Neurology",),
        weight=1,
        min_age=18,
        complaints=(
            "Follow-up of {dx}[| with focal seizures| with generalized tonic-clonic seizures].",
            "?[Last seizure|Most recent seizure] {n:2-30} months ago.",
            "?Takes {pmed} [regularly|as prescribed][|, mild irritability].",
        ),
        exam=("?Neurological status without focal deficits.",),
        labs=(),
        tests=("?{p:EEG} [ordered|planned][| before considering dose reduction].",),
        plans=(
            "Continue {pmed} [unchanged|{pmed_dose}].",
            "?Driving [restrictions|rules] discussed.",
        ),
        status=("seizure-free", "well controlled", "stable"),
    ),
    _Problem(
        dx="Parkinson's disease",
        drugs=("levodopa/carbidopa",),
        depts=("Neurology",),
        weight=1,
        min_age=60,
        complaints=(
            "Follow-up of {dx}[| diagnosed in {year}].",
            "?[Tremor of the {side} hand|Slowness|Shuffling gait] [unchanged|slightly worse|better on treatment].",
            "?[Wearing-off|End-of-dose wearing-off] about {n:3-4} hours after each dose.",
        ),
        exam=(
            "?[Rigidity|Cogwheel rigidity] of the {side} arm, [bradykinesia|reduced arm swing].",
        ),
        labs=(),
        tests=(),
        plans=(
            "[Adjust|Increase] {pmed} to {pmed_dose}.",
            "?Physiotherapy [continued|recommended].",
        ),
        status=("stable", "slowly progressive", "motor fluctuations"),
    ),
    _Problem(
        dx="dementia",
        drugs=("donepezil", "quetiapine"),
        depts=("Geriatrics", "Neurology"),
        weight=1,
        min_age=70,
        complaints=(
            "[Accompanied by {pos} daughter|Comes with {pos} son|Comes with {pos} spouse], follow-up of {dx}.",
            "?MMSE {n:14-24}/30[| (previously {n:18-26}/30)].",
            "?[Increasing forgetfulness|Occasional nocturnal confusion|Getting lost in familiar places].",
        ),
        exam=(),
        labs=("hb:n", "tsh:n", "na:n"),
        tests=(),
        plans=("Continue {pmed}.", "?[Social worker|Home care] [assessment|support] arranged."),
        status=("mild", "moderate", "slowly progressive"),
    ),
    _Problem(
        dx="obesity",
        drugs=("semaglutide",),
        depts=("Family Medicine", "Endocrinology"),
        weight=2,
        min_age=25,
        complaints=(
            "[Weight management|{dx}] visit[|; weight has increased by {n:3-12} kg in {n:1-3} years].",
            "?[Tried several diets|Exercises {n:0-3} times a week|Snacking in the evenings].",
        ),
        exam=(),
        labs=("hba1c:n", "ldl:h", "alt:n"),
        tests=(),
        plans=(
            "?[Start|Discussed] {d:semaglutide} {dose:semaglutide}.",
            "Lifestyle [counselling|advice]; target weight loss {n:5-10}%.",
        ),
        status=("BMI {n:30-42}", "class I", "class II"),
    ),
    _Problem(
        dx="obstructive sleep apnea",
        drugs=(),
        depts=("Pulmonology", "Family Medicine"),
        weight=1,
        min_age=35,
        complaints=(
            "[Loud snoring|Witnessed apneas|Daytime sleepiness] [reported by {pos} partner|for several years].",
            "?Epworth sleepiness score {n:8-18}.",
        ),
        exam=("?Neck circumference {n:38-48} cm.",),
        labs=(),
        tests=("[Referral for|Ordered] {p:polysomnography}[| to confirm {dx}].",),
        plans=(
            "?CPAP [discussed|considered] depending on the AHI.",
            "Weight loss and avoiding alcohol in the evening advised.",
        ),
        status=("suspected", "moderate", "on CPAP"),
    ),
    _Problem(
        dx="iron deficiency anemia",
        drugs=("ferrous sulfate",),
        depts=("Family Medicine", "Internal Medicine"),
        weight=1,
        min_age=18,
        complaints=(
            "[Fatigue|Tiredness and reduced exercise tolerance] for [{n:2-6} months|some time].",
            "?[No visible bleeding|No melena|Heavy menstrual bleeding reported].",
        ),
        exam=("?[Pale conjunctivae|Pale skin].",),
        labs=("hb:l", "ferritin:l"),
        tests=("?[Referral for|Ordered] {p:gastroscopy} and {p:colonoscopy}.",),
        plans=("[Start|Continue] {pmed} {pmed_dose}.", "?Repeat blood count in {n:4-8} weeks."),
        status=("improving", "newly diagnosed", "persistent"),
    ),
    _Problem(
        dx="peripheral arterial disease",
        drugs=("acetylsalicylic acid", "clopidogrel", "atorvastatin"),
        depts=("Vascular Surgery", "Family Medicine"),
        weight=1,
        min_age=55,
        complaints=(
            "[Calf pain|Cramping pain in the {side} calf] after walking about {n:100-400} m, relieved by rest.",
            "?[Smokes|Former smoker,] {n:10-40} pack-years.",
        ),
        exam=("?Foot pulses [not palpable on the {side}|weak bilaterally]; ABI {f:0.52-0.88}.",),
        labs=("ldl:h",),
        tests=("?[Referral|Referred] for [{p:peripheral angioplasty}|duplex imaging].",),
        plans=("Continue {pmed}.", "Supervised walking exercise [recommended|prescribed]."),
        status=("claudication", "stable", "Fontaine IIa", "Fontaine IIb"),
    ),
    _Problem(
        dx="anxiety disorder",
        drugs=("escitalopram", "sertraline"),
        depts=("Family Medicine", "Psychiatry"),
        weight=1,
        min_age=18,
        complaints=(
            "[Worries|Persistent worry|Tension and restlessness] [most days|for several months][| affecting work].",
            "?GAD-7 score {n:8-18}.",
            "?[Panic attacks|Palpitations when anxious] [twice a month|occasionally].",
        ),
        exam=(),
        labs=("tsh:n",),
        tests=(),
        plans=("[Start|Continue] {pmed} {pmed_dose}.", "?Psychotherapy [referral|recommended]."),
        status=("improving", "moderate", "stable"),
    ),
    _Problem(
        dx="type 1 diabetes mellitus",
        drugs=("insulin glargine", "insulin aspart"),
        depts=("Endocrinology",),
        weight=1,
        min_age=18,
        complaints=(
            "Follow-up of {dx} since [childhood|{year}][| on basal-bolus insulin].",
            "?[Sensor data|CGM]: time in range {n:45-82}%[|, time below range {n:1-6}%].",
            "?[Hypoglycemia|Hypos] {n:0-4} times a week[|, mostly at night].",
        ),
        exam=(
            "?Injection sites [without lipohypertrophy|with mild lipohypertrophy on the abdomen].",
        ),
        labs=("hba1c:h", "crea:n"),
        tests=(),
        plans=(
            "[Adjust|Reduce|Increase] {pmed} to {pmed_dose}.",
            "?Carbohydrate counting [reviewed|refreshed].",
        ),
        status=("suboptimally controlled", "well controlled", "stable"),
    ),
    _Problem(
        dx="migraine",
        drugs=("ibuprofen", "paracetamol", "amitriptyline"),
        depts=("Neurology", "Family Medicine"),
        weight=1,
        min_age=18,
        complaints=(
            "[Headache attacks|Recurrent one-sided headaches] {n:2-8} times a month[| with nausea and light sensitivity].",
            "?[Aura|Visual aura] [before some attacks|not present].",
        ),
        exam=("?Neurological examination normal[| including fundoscopy].",),
        labs=(),
        tests=(),
        plans=(
            "[Use|Take] {pmed} at the onset of an attack.",
            "?[Start|Consider] {d:amitriptyline} {dose:amitriptyline} as prophylaxis.",
            "?Headache diary.",
        ),
        status=("episodic", "frequent", "improving"),
    ),
    # Acute problems seen in clinic; they do not join the chronic problem list.
    _Problem(
        dx="low back pain",
        drugs=("ibuprofen", "paracetamol", "diclofenac"),
        depts=("Family Medicine", "Orthopaedics"),
        weight=3,
        min_age=18,
        chronic=False,
        complaints=(
            "{dx} for {n:2-21} days[| after lifting| after gardening| without trauma].",
            "?[No radiation|Radiating to the {side} buttock|Radiating down the {side} leg to the knee].",
            "?[No numbness, no bladder or bowel symptoms|No saddle anesthesia|Bladder and bowel function normal].",
        ),
        exam=(
            "?Lumbar paraspinal tenderness, [Lasègue negative|straight leg raise negative|SLR positive at {n:40-60} degrees on the {side}].",
        ),
        labs=(),
        tests=("?[No imaging indicated|Imaging not needed at this stage].",),
        plans=(
            "[Start|Prescribed] {newdrug} {newdose} for [{n:5-10} days|up to 2 weeks].",
            "Stay active[|, avoid bed rest].",
            "?Physiotherapy referral.",
        ),
        status=("acute", "nonspecific", "improving"),
    ),
    _Problem(
        dx="acute bronchitis",
        drugs=("salbutamol", "paracetamol"),
        depts=("Family Medicine",),
        weight=2,
        min_age=18,
        chronic=False,
        complaints=(
            "Cough for {n:5-14} days[| after a cold][| with {sputum} sputum].",
            "?[Low-grade fever|Temperature up to {f:37.5-38.4} °C] [for the first {n:2-3} days|initially].",
            "?[No shortness of breath|Mild chest tightness when coughing].",
        ),
        exam=("?[Scattered rhonchi|Lungs clear], no crackles.",),
        labs=("crp:n",),
        tests=("?{p:chest X-ray} not indicated[| at present].",),
        plans=(
            "Symptomatic treatment with {newdrug} {newdose}.",
            "?Antibiotics not indicated.",
            "?Return if [fever persists beyond 3 days|breathing worsens].",
        ),
        status=("uncomplicated", "viral", "resolving"),
    ),
    _Problem(
        dx="urinary tract infection",
        drugs=("nitrofurantoin", "sulfamethoxazole/trimethoprim", "ciprofloxacin"),
        depts=("Family Medicine",),
        weight=2,
        min_age=18,
        chronic=False,
        complaints=(
            "[Dysuria and frequency|Burning on urination|Urgency and suprapubic discomfort] for {n:1-4} days.",
            "?[No fever|No flank pain|No vaginal discharge].",
        ),
        exam=("?[Suprapubic tenderness|No costovertebral angle tenderness].",),
        labs=(),
        tests=(
            "?Urine dipstick: leukocytes {n:2-3}+, nitrite [positive|negative].",
            "?Urine culture sent.",
        ),
        plans=(
            "[Start|Prescribed] {newdrug} {newdose} for {n:3-7} days.",
            "?Fluids; return if fever or flank pain.",
        ),
        status=("uncomplicated", "lower", "recurrent"),
    ),
    _Problem(
        dx="cellulitis",
        drugs=("cefuroxime", "clindamycin", "amoxicillin/clavulanic acid"),
        depts=("Family Medicine", "Infectious Diseases"),
        weight=1,
        min_age=18,
        chronic=False,
        complaints=(
            "[Redness|Red, warm swelling] of the {side} [lower leg|foot|forearm] for {n:2-5} days[| after a small cut| after an insect bite].",
            "?[Fever up to {f:37.8-38.9} °C|No fever].",
        ),
        exam=(
            "?Erythema about {n:6-18} x {n:4-12} cm, warm and tender[|, borders marked with pen].",
        ),
        labs=("crp:h", "wbc:h"),
        tests=(),
        plans=(
            "[Start|Prescribed] {newdrug} {newdose} for {n:7-10} days.",
            "Elevate the limb[| and mark the borders].",
            "?Review in {n:2-3} days.",
        ),
        status=("mild", "uncomplicated", "improving"),
    ),
    _Problem(
        dx="deep vein thrombosis",
        drugs=("rivaroxaban", "apixaban"),
        depts=("Internal Medicine", "Family Medicine"),
        weight=1,
        min_age=25,
        chronic=False,
        complaints=(
            "Swelling and pain of the {side} calf for {n:2-7} days[| after a long flight| after knee surgery| without obvious cause].",
        ),
        exam=(
            "?{side} calf circumference {n:2-4} cm larger than the other side, [tender|pitting edema].",
        ),
        labs=("ddimer:h",),
        tests=(
            "{p:venous duplex ultrasound}: [thrombus in the popliteal vein|thrombosis of the {side} femoral and popliteal veins|occlusive calf vein thrombosis].",
        ),
        plans=(
            "[Start|Started] {newdrug} {newdose}[| for at least 3 months].",
            "?Compression stocking [prescribed|advised].",
        ),
        status=("provoked", "unprovoked", "confirmed"),
    ),
)


@dataclass(frozen=True)
class _Acute:
    """An admission: what brought the patient in, what was done, what follows."""

    dx: str
    depts: tuple[str, ...]
    symptoms: tuple[str, ...]
    vitals: str  # modifiers for the admission vitals: fever tachy hypox hypot hypert
    labs: tuple[str, ...]  # "key:state" on admission
    course: tuple[str, ...]
    procs: tuple[str, ...]  # lines of the procedures section; {adate:N} = admission day + N
    new_drugs: tuple[str, ...]  # started in hospital, continued after discharge
    followup: tuple[str, ...]
    secondary: tuple[str, ...] = ()
    los: tuple[int, int] = (3, 8)
    weight: float = 1.0
    min_age: int = 18
    sex: str | None = None


_ACUTE: tuple[_Acute, ...] = (
    _Acute(
        dx="community-acquired pneumonia",
        depts=("Internal Medicine", "Pulmonology", "Infectious Diseases"),
        symptoms=(
            "fever",
            "productive cough",
            "shortness of breath",
            "pleuritic chest pain",
            "chills",
            "general weakness",
        ),
        vitals="fever tachy hypox",
        labs=("crp:h", "wbc:h", "pct:h", "na:n", "crea:n"),
        course=(
            "{p:chest X-ray} [showed|revealed|demonstrated] [a consolidation in the {side} lower lobe|patchy infiltrates in the {side} lower zone|bilateral basal infiltrates|a {side}-sided consolidation with air bronchograms][| without {x:pleural effusion}].",
            "[Empirical|Intravenous] treatment with {d:ceftriaxone} {dose:ceftriaxone}[| and {d:clarithromycin} {dose:clarithromycin}] was started[| on admission| in the emergency department].",
            "?Blood cultures [remained negative|were negative after 5 days|grew Streptococcus pneumoniae, sensitive to penicillin].",
            "?Urinary pneumococcal antigen was [positive|negative].",
            "[The fever resolved|{pr} became afebrile] [on day {n:2-4}|within {n:48-72} hours] and CRP [decreased|fell] to {n:12-60} mg/L.",
            "?Oxygen [was given via nasal cannula at {n:1-4} L/min|was needed for the first {n:2-4} days] and was [weaned|stopped] [on day {n:3-5}|before discharge].",
            "[Antibiotics were switched|Treatment was stepped down] to oral {d:amoxicillin/clavulanic acid} {dose:amoxicillin/clavulanic acid@PO} [on day {n:3-5}|after {n:3-4} days][| to complete {n:5-7} days in total].",
            "?There was no [evidence|sign] of {x:sepsis}[| and no {x:pleural effusion}].",
        ),
        procs=("{p:chest X-ray} ({adate:0})", "?{p:chest X-ray} control ({adate:4})"),
        new_drugs=("amoxicillin/clavulanic acid",),
        followup=(
            "[Control|Follow-up] {p:chest X-ray} in {n:6-8} weeks to document resolution.",
            "?Complete the course of {d:amoxicillin/clavulanic acid}[| for another {n:2-5} days].",
            "[GP review|Visit to the family physician|Review by the GP] in {n:1-2} weeks[| with CRP| with a blood count].",
        ),
        secondary=("acute kidney injury", "hyponatremia", "delirium"),
        los=(3, 9),
        weight=4,
    ),
    _Acute(
        dx="acute exacerbation of COPD",
        depts=("Pulmonology", "Internal Medicine"),
        symptoms=(
            "worsening shortness of breath",
            "increased sputum volume",
            "purulent sputum",
            "wheeze",
            "cough",
        ),
        vitals="tachy hypox",
        labs=("crp:h", "wbc:n", "pco2:h", "ph:n"),
        course=(
            "[Arterial blood gas on admission|Initial blood gas] showed pH {f:7.28-7.38}, pCO2 {f:6.4-8.9} kPa[| and pO2 {f:6.8-8.4} kPa].",
            "{p:chest X-ray} [showed hyperinflation without consolidation|showed no infiltrates|was without acute changes].",
            "?{pr} [required|was treated with] {p:NIV} for {n:1-3} days[| because of hypercapnic respiratory failure].",
            "Treatment included {d:salbutamol} and {d:ipratropium bromide} nebulisations, {d:prednisolone} {dose:prednisolone} for {n:5-7} days and {d:doxycycline} {dose:doxycycline}.",
            "?Oxygen was titrated to a saturation target of 88-92%.",
            "[Breathing improved|The dyspnea gradually settled|{pr} improved steadily] and {pr} was mobilised with physiotherapy.",
            "?Inhaler technique was reviewed[| and {d:tiotropium} was added].",
        ),
        procs=(
            "{p:chest X-ray} ({adate:0})",
            "?{p:non-invasive ventilation} ({adate:0} to {adate:2})",
        ),
        new_drugs=("tiotropium", "prednisolone"),
        followup=(
            "Pulmonology outpatient follow-up in {n:4-8} weeks with {p:spirometry}.",
            "?Smoking cessation support [offered|arranged|recommended].",
            "?[Seek medical help|Return] if breathlessness worsens or sputum becomes purulent again.",
        ),
        secondary=("chronic obstructive pulmonary disease", "heart failure"),
        los=(4, 10),
        weight=3,
        min_age=45,
    ),
    _Acute(
        dx="NSTEMI",
        depts=("Cardiology",),
        symptoms=(
            "retrosternal chest pain",
            "chest pressure radiating to the left arm",
            "sweating",
            "nausea",
            "shortness of breath",
        ),
        vitals="hypert tachy",
        labs=("tnt:h", "hb:n", "crea:n", "k:n", "ldl:h"),
        course=(
            "{p:ECG} on arrival showed [ST changes in V4-V6|T-wave inversions in the lateral leads|no ST elevation] and troponin [rose|increased] to {n:180-2600} ng/L.",
            "{pr} was loaded with {d:aspirin} 300 mg and {d:ticagrelor} 180 mg and started on {d:enoxaparin} {dose:enoxaparin}.",
            "{p:coronary angiography} [on day {n:1-2}|within 24 hours] showed [a {n:75-95}% stenosis of the proximal LAD|a critical stenosis of the circumflex artery|a {n:80-99}% lesion in the mid RCA|three-vessel disease].",
            "[{p:PCI} with a drug-eluting stent was performed|The culprit lesion was treated with {p:PCI} and {n:1-2} drug-eluting stents|{p:PCI} of the lesion was successful][| without complications].",
            "?{p:TTE} showed LVEF {n:40-60}% with [hypokinesia of the anterior wall|inferior hypokinesia|no regional wall motion abnormalities].",
            "?The patient was [pain-free|asymptomatic] after the intervention and mobilised [on day {n:2-3}|without problems].",
            "?[Access site|Radial access site] [without hematoma|healed well].",
        ),
        procs=(
            "{p:coronary angiography} ({adate:1})",
            "{p:percutaneous coronary intervention} with DES ({adate:1})",
            "?{p:echocardiography} ({adate:2})",
        ),
        new_drugs=("acetylsalicylic acid", "ticagrelor", "atorvastatin", "bisoprolol", "ramipril"),
        followup=(
            "Dual antiplatelet therapy with {d:aspirin} and {d:ticagrelor} for 12 months[|, then {d:aspirin} alone].",
            "Cardiology outpatient visit in {n:4-8} weeks[| with lipid panel].",
            "?Cardiac rehabilitation [referral made|recommended].",
            "?No heavy lifting for {n:1-2} weeks[| because of the radial puncture].",
        ),
        secondary=("essential hypertension", "hyperlipidemia", "type 2 diabetes mellitus"),
        los=(3, 6),
        weight=3,
        min_age=40,
    ),
    _Acute(
        dx="STEMI",
        depts=("Cardiology",),
        symptoms=("crushing chest pain", "chest pain radiating to the jaw", "sweating", "vomiting"),
        vitals="tachy hypot",
        labs=("tnt:h", "hb:n", "crea:n", "ldl:h", "glu:h"),
        course=(
            "{p:ECG} [in the ambulance|on arrival] showed ST elevation in [V1-V4|II, III and aVF|the anterior leads].",
            "Primary {p:PCI} was performed [within {n:45-110} minutes of first medical contact|immediately]; the [LAD|RCA|circumflex artery] was occluded and treated with [a drug-eluting stent|{n:2-3} drug-eluting stents].",
            "{pr} received {d:heparin} during the procedure and was loaded with {d:ticagrelor} and {d:ASA}.",
            "?{p:echocardiography} on day {n:1-3}: LVEF {n:35-55}%, [anterior akinesia|inferior hypokinesia|apical hypokinesia][|, no thrombus].",
            "?[Short runs of|No] ventricular arrhythmias [on telemetry|were recorded].",
            "?Peak troponin T was {n:2400-9800} ng/L.",
        ),
        procs=("Primary {p:PCI} ({adate:0})", "?{p:TTE} ({adate:2})"),
        new_drugs=("acetylsalicylic acid", "ticagrelor", "atorvastatin", "metoprolol", "ramipril"),
        followup=(
            "Dual antiplatelet therapy for 12 months.",
            "Cardiology follow-up in {n:4-6} weeks[| with {p:echocardiography}].",
            "?Cardiac rehabilitation programme.",
            "?Sick leave for {n:2-6} weeks.",
        ),
        secondary=("hyperlipidemia", "essential hypertension"),
        los=(4, 7),
        weight=2,
        min_age=40,
    ),
    _Acute(
        dx="heart failure",
        depts=("Cardiology", "Internal Medicine"),
        symptoms=(
            "progressive shortness of breath",
            "orthopnea",
            "leg swelling",
            "weight gain",
            "reduced exercise tolerance",
        ),
        vitals="tachy hypox",
        labs=("bnp:h", "na:n", "k:n", "crea:h", "hb:n"),
        course=(
            "{p:chest X-ray} showed [pulmonary congestion|interstitial edema][| and bilateral {x:pleural effusion}| with small effusions bilaterally].",
            "{pr} was treated with intravenous {d:furosemide} {dose:furosemide@IV} with [good|adequate|a slow] diuretic response[|, weight down {n:3-9} kg].",
            "?{p:echocardiography}: LVEF {n:20-40}%, [dilated left ventricle|moderate {x:mitral regurgitation}|diffuse hypokinesia].",
            "[Guideline-directed|Disease-modifying] therapy was [optimised|started]: {d:sacubitril/valsartan}, {d:bisoprolol}, {d:spironolactone} and {d:dapagliflozin}.",
            "?Potassium and creatinine were [monitored|followed] [daily|every other day][| and remained stable].",
            "?[Possible precipitants|Triggers] were [reviewed|discussed]: [dietary indiscretion|missed diuretic doses|a respiratory infection|{x:atrial fibrillation} with rapid rate].",
        ),
        procs=("{p:chest X-ray} ({adate:0})", "{p:echocardiography} ({adate:2})"),
        new_drugs=("sacubitril/valsartan", "spironolactone", "dapagliflozin", "furosemide"),
        followup=(
            "[Cardiac nurse|Specialist nurse] [visit|follow-up] in {n:1-2} weeks.",
            "Daily weights; [contact the clinic|seek help] if weight rises more than 2 kg in 3 days.",
            "[Electrolytes|Potassium] and creatinine in {n:5-10} days.",
        ),
        secondary=("atrial fibrillation", "chronic kidney disease", "essential hypertension"),
        los=(5, 12),
        weight=4,
        min_age=50,
    ),
    _Acute(
        dx="atrial fibrillation",
        depts=("Cardiology", "Internal Medicine"),
        symptoms=(
            "palpitations",
            "dizziness",
            "shortness of breath",
            "chest discomfort",
            "fatigue",
        ),
        vitals="tachy",
        labs=("tsh:n", "k:n", "hb:n", "crea:n", "tnt:n"),
        course=(
            "{p:ECG} showed {x:AF} with [a ventricular rate of {n:128-172}/min|rapid ventricular response ({n:130-165}/min)].",
            "Rate control with [{d:metoprolol} IV and then orally|{d:bisoprolol}|{d:digoxin} and {d:metoprolol}] was started.",
            "?{p:TEE} excluded left atrial appendage thrombus and {p:electrical cardioversion} with {n:150-200} J restored sinus rhythm.",
            "?{p:transthoracic echocardiography}: LVEF {n:45-62}%, left atrium {n:40-52} mm[|, no significant valve disease].",
            "CHA2DS2-VASc score {n:2-6}; anticoagulation with {d:apixaban} {dose:apixaban} was [started|commenced].",
            "?[Thyroid function was normal|TSH within the normal range].",
        ),
        procs=(
            "{p:ECG} ({adate:0})",
            "?{p:TEE} and {p:DC cardioversion} ({adate:1})",
            "?{p:echocardiography} ({adate:1})",
        ),
        new_drugs=("apixaban", "bisoprolol"),
        followup=(
            "Cardiology follow-up in {n:6-12} weeks[| with {p:Holter monitoring}].",
            "?[Discuss|Consider] {p:catheter ablation} if symptoms recur.",
            "?Anticoagulation is [lifelong|long-term] unless bleeding risk changes.",
        ),
        secondary=("essential hypertension", "heart failure", "hyperthyroidism"),
        los=(2, 5),
        weight=3,
        min_age=40,
    ),
    _Acute(
        dx="ischemic stroke",
        depts=("Neurology",),
        symptoms=(
            "sudden weakness of the {side} arm and leg",
            "slurred speech",
            "facial droop",
            "difficulty finding words",
            "visual disturbance",
        ),
        vitals="hypert",
        labs=("glu:n", "inr:n", "ldl:h", "crea:n", "plt:n"),
        course=(
            "NIHSS on arrival was {n:3-16}[|; symptom onset {n:45-180} minutes before arrival].",
            "{p:CT head} showed no [bleeding|hemorrhage|signs of {x:intracerebral hemorrhage}][|; CT angiography showed occlusion of the {side} M1 segment].",
            "[{pr} received {p:intravenous thrombolysis} with {d:alteplase} {dose:alteplase}|{p:thrombolysis} with {d:tPA} was given|{p:thrombolysis} was contraindicated because of the time window][|, followed by {p:mechanical thrombectomy} with TICI 2b-3 reperfusion].",
            "?{p:MRI of the brain} confirmed [an acute infarct in the {side} MCA territory|small acute infarcts in the {side} hemisphere|a lacunar infarct in the internal capsule].",
            "?{p:carotid duplex ultrasound} showed [no significant stenosis|a {n:30-60}% stenosis of the {side} internal carotid artery].",
            "?{p:Holter monitoring} [showed no {x:atrial fibrillation}|revealed paroxysmal {x:AF}].",
            "Secondary prevention with {d:clopidogrel} {dose:clopidogrel} and {d:atorvastatin} {dose:atorvastatin} was started.",
            "?Swallowing was assessed by the speech therapist before oral intake.",
            "?At discharge NIHSS {n:0-6}; [mild residual weakness of the {side} hand|mild dysarthria persists|no residual deficit].",
        ),
        procs=(
            "{p:CT of the head} ({adate:0})",
            "?{p:IVT} ({adate:0})",
            "{p:MRI of the brain} ({adate:1})",
            "?{p:carotid ultrasound} ({adate:2})",
        ),
        new_drugs=("clopidogrel", "atorvastatin"),
        followup=(
            "Neurology outpatient follow-up in {n:2-3} months.",
            "?Rehabilitation [at the rehabilitation ward|as an outpatient|at home] with physiotherapy and speech therapy.",
            "Blood pressure target below 130/80 mmHg.",
            "?No driving for at least {n:1-3} months.",
        ),
        secondary=(
            "essential hypertension",
            "atrial fibrillation",
            "hyperlipidemia",
            "type 2 diabetes mellitus",
        ),
        los=(4, 12),
        weight=3,
        min_age=45,
    ),
    _Acute(
        dx="pulmonary embolism",
        depts=("Internal Medicine", "Pulmonology", "Cardiology"),
        symptoms=(
            "sudden shortness of breath",
            "pleuritic chest pain",
            "palpitations",
            "cough with blood-streaked sputum",
        ),
        vitals="tachy hypox",
        labs=("ddimer:h", "tnt:h", "bnp:h", "crea:n"),
        course=(
            "{p:CTPA} showed [bilateral segmental emboli|a saddle embolus|emboli in the {side} lower lobe arteries|subsegmental emboli in the {side} lung].",
            "?{p:echocardiography} [showed mild right ventricular dilatation|showed no right ventricular strain].",
            "?{p:venous duplex ultrasound} [revealed a {x:DVT} in the {side} popliteal vein|showed no {x:deep vein thrombosis}].",
            "Anticoagulation with {d:enoxaparin} {dose:enoxaparin} was started and switched to {d:rivaroxaban} [on day {n:2-4}|before discharge].",
            "?sPESI {n:0-2}; {pr} remained hemodynamically stable.",
            "?[No provoking factor was found|The embolism was considered provoked by recent surgery|A long car journey preceded the symptoms].",
        ),
        procs=(
            "{p:CT pulmonary angiography} ({adate:0})",
            "?{p:TTE} ({adate:1})",
            "?{p:compression ultrasonography} ({adate:1})",
        ),
        new_drugs=("rivaroxaban",),
        followup=(
            "Anticoagulation for at least [3|6] months, then reassess.",
            "?Outpatient review in {n:3-6} months.",
            "?[Age-appropriate cancer screening|Screening for malignancy as appropriate].",
        ),
        secondary=("deep vein thrombosis",),
        los=(3, 7),
        weight=2,
    ),
    _Acute(
        dx="acute pyelonephritis",
        depts=("Internal Medicine", "Urology", "Infectious Diseases"),
        symptoms=("fever with chills", "{side} flank pain", "dysuria", "vomiting"),
        vitals="fever tachy",
        labs=("crp:h", "wbc:h", "crea:n", "pct:h"),
        course=(
            "Urine culture grew [Escherichia coli|E. coli|Klebsiella pneumoniae] [sensitive to {d:ceftriaxone} and {d:ciprofloxacin}|more than 10^5 CFU/ml].",
            "{p:abdominal ultrasound} [showed no hydronephrosis or stones|showed mild pelvic dilatation on the {side}|was unremarkable].",
            "{pr} was treated with {d:ceftriaxone} {dose:ceftriaxone} and [IV fluids|intravenous fluids]; fever settled [within {n:48-72} hours|on day {n:2-3}].",
            "Treatment was switched to oral {d:ciprofloxacin} {dose:ciprofloxacin@PO} to complete {n:7-14} days.",
            "?There were no signs of {x:urosepsis} [after the first day|on follow-up].",
        ),
        procs=("{p:abdominal ultrasound} ({adate:0})",),
        new_drugs=("ciprofloxacin",),
        followup=(
            "?Repeat urine culture only if symptoms recur.",
            "[GP|Family physician] review in {n:1-2} weeks.",
            "Drink plenty of fluids.",
        ),
        secondary=("acute kidney injury", "type 2 diabetes mellitus"),
        los=(3, 6),
        weight=2,
    ),
    _Acute(
        dx="sepsis",
        depts=("Internal Medicine", "Infectious Diseases", "Intensive Care"),
        symptoms=("fever", "confusion", "rigors", "low blood pressure", "reduced urine output"),
        vitals="fever tachy hypot",
        labs=("lactate:h", "crp:h", "pct:h", "wbc:h", "crea:h", "plt:l"),
        course=(
            "[Initial resuscitation|The resuscitation protocol] was started: blood cultures, {n:20-30} ml/kg crystalloid and {d:piperacillin/tazobactam} {dose:piperacillin/tazobactam}.",
            "?Due to persistent hypotension {pr} required {d:norepinephrine} {dose:norepinephrine} for {n:1-3} days via {p:central line placement}.",
            "The source was [a {x:urinary tract infection}|{x:pneumonia}|{x:cellulitis} of the {side} leg|an intra-abdominal focus].",
            "Blood cultures grew [Escherichia coli|Staphylococcus aureus (MSSA)|Streptococcus pyogenes|no pathogen]; antibiotics were [de-escalated|narrowed] accordingly.",
            "?{x:AKI} [resolved with fluids|improved, creatinine {n:110-160} µmol/L at discharge].",
            "?[{p:Foley catheter insertion} was performed|{p:urinary catheterization} was needed] for urine output monitoring.",
        ),
        procs=(
            "?{p:central venous catheter insertion} ({adate:0})",
            "?{p:Foley catheter insertion} ({adate:0})",
            "{p:chest X-ray} ({adate:0})",
        ),
        new_drugs=("amoxicillin/clavulanic acid",),
        followup=(
            "Complete oral antibiotics [for another {n:3-7} days|as instructed].",
            "[GP|Family doctor] control with blood tests in {n:1-2} weeks.",
        ),
        secondary=("acute kidney injury", "delirium", "type 2 diabetes mellitus"),
        los=(6, 14),
        weight=2,
        min_age=40,
    ),
    _Acute(
        dx="cellulitis",
        depts=("Infectious Diseases", "Internal Medicine", "Dermatology"),
        symptoms=("red, swollen {side} lower leg", "fever", "pain in the {side} leg"),
        vitals="fever",
        labs=("crp:h", "wbc:h", "crea:n"),
        course=(
            "Erythema extended from the ankle to [mid-calf|the knee], borders were marked on admission.",
            "?{p:venous Doppler} excluded {x:DVT}.",
            "[Intravenous|IV] {d:cefuroxime} [1.5 g|750 mg] [q8h|three times daily] [was started|was given for {n:3-5} days][| followed by oral {d:clindamycin} {dose:clindamycin@PO}].",
            "?Tinea pedis was treated as a possible entry point.",
            "[Redness and swelling|The erythema] receded [within {n:3-5} days|steadily]; [CRP fell|inflammatory markers decreased] to {n:15-45} mg/L.",
        ),
        procs=("?{p:venous duplex ultrasound} ({adate:0})",),
        new_drugs=("clindamycin",),
        followup=(
            "Elevate the leg; compression once the infection has settled.",
            "[GP|Family physician] review in {n:5-10} days.",
        ),
        secondary=("type 2 diabetes mellitus", "obesity", "varicose veins"),
        los=(3, 7),
        weight=2,
    ),
    _Acute(
        dx="acute pancreatitis",
        depts=("Gastroenterology", "General Surgery", "Internal Medicine"),
        symptoms=("severe epigastric pain radiating to the back", "vomiting", "nausea"),
        vitals="tachy",
        labs=("lipase:h", "crp:h", "alt:h", "bili:n", "crea:n"),
        course=(
            "{p:abdominal ultrasound} [showed {x:gallstones} without bile duct dilatation|showed an edematous pancreas, no {x:gallstones}|was limited by bowel gas].",
            "?{p:CT abdomen} on day {n:2-4} showed [interstitial edematous pancreatitis without necrosis|peripancreatic fluid, no necrosis].",
            "{pr} was treated with IV fluids, analgesia with {d:paracetamol} and {d:metamizole}[| and {d:morphine} as needed] and {d:ondansetron} for nausea.",
            "?The etiology was considered [biliary|alcohol-related|unclear]; [{x:alcohol use disorder} was discussed|alcohol intake was discussed].",
            "Oral intake was [resumed|restarted] on day {n:2-4} and tolerated well.",
        ),
        procs=("{p:abdominal ultrasound} ({adate:0})", "?{p:CT of the abdomen} ({adate:2})"),
        new_drugs=("pantoprazole",),
        followup=(
            "?[Elective|Planned] {p:laparoscopic cholecystectomy} [within 4 weeks|during this admission episode].",
            "No alcohol.",
            "[Surgical|Gastroenterology] outpatient review in {n:4-6} weeks.",
        ),
        secondary=("cholelithiasis", "alcohol use disorder"),
        los=(4, 10),
        weight=2,
    ),
    _Acute(
        dx="acute cholecystitis",
        depts=("General Surgery",),
        symptoms=("right upper quadrant pain", "fever", "nausea and vomiting"),
        vitals="fever",
        labs=("crp:h", "wbc:h", "bili:n", "alt:n", "lipase:n"),
        course=(
            "{p:abdominal ultrasound} showed [a thickened gallbladder wall with {x:gallstones} and pericholecystic fluid|a distended gallbladder with an impacted stone in the neck][| and a positive sonographic Murphy sign].",
            "{pr} received {d:ceftriaxone} {dose:ceftriaxone} and {d:metronidazole} {dose:metronidazole}.",
            "{p:laparoscopic cholecystectomy} was performed on day {n:1-3}[| without complications|; the gallbladder was gangrenous].",
            "?Histology confirmed {x:acute cholecystitis}[| with no malignancy].",
            "Postoperative recovery was uneventful[|; {pr} was mobilised on the day of surgery].",
        ),
        procs=(
            "{p:abdominal ultrasound} ({adate:0})",
            "{p:laparoscopic cholecystectomy} ({adate:1})",
        ),
        new_drugs=("paracetamol",),
        followup=(
            "Wound check and suture removal at the family physician in {n:7-10} days.",
            "No heavy lifting for {n:2-4} weeks.",
            "?Return if fever, jaundice or increasing pain.",
        ),
        secondary=("obesity", "type 2 diabetes mellitus"),
        los=(2, 6),
        weight=2,
    ),
    _Acute(
        dx="acute appendicitis",
        depts=("General Surgery",),
        symptoms=(
            "pain in the right lower abdomen",
            "periumbilical pain migrating to the right iliac fossa",
            "nausea",
            "fever",
        ),
        vitals="fever",
        labs=("crp:h", "wbc:h"),
        course=(
            "[Alvarado score {n:6-9}|Clinical signs of peritoneal irritation in the right lower quadrant].",
            "?{p:CT of the abdomen} confirmed [{x:acute appendicitis}|an inflamed appendix of {n:9-14} mm] [without perforation|with a small periappendiceal fluid collection].",
            "{p:laparoscopic appendectomy} was performed [the same day|on the night of admission][| without complications].",
            "{pr} received perioperative {d:cefuroxime} and {d:metronidazole}.",
            "?Postoperative course was uneventful; {pr} tolerated a normal diet on day {n:1-2}.",
        ),
        procs=("?{p:abdominal CT} ({adate:0})", "{p:appendectomy} ({adate:0})"),
        new_drugs=("paracetamol", "ibuprofen"),
        followup=(
            "Suture removal in {n:7-10} days.",
            "Sick leave for {n:1-3} weeks.",
            "?Histology results at the follow-up visit.",
        ),
        secondary=(),
        los=(1, 4),
        weight=2,
        min_age=18,
    ),
    _Acute(
        dx="upper gastrointestinal bleeding",
        depts=("Gastroenterology", "Internal Medicine"),
        symptoms=("black tarry stools", "vomiting of blood", "dizziness", "collapse at home"),
        vitals="tachy hypot",
        labs=("hb:l", "urea:h", "inr:n", "plt:n"),
        course=(
            "Glasgow-Blatchford score {n:8-15}; {pr} received [{n:1-3} units of|] packed red cells[ ({p:RBC transfusion})|].",
            "High-dose {d:pantoprazole} [infusion|{dose:pantoprazole@IV}] was started.",
            "{p:gastroscopy} [within 24 hours|on day {n:1-2}] showed [a {n:8-20} mm duodenal ulcer with a visible vessel|a gastric ulcer with an adherent clot|multiple gastric erosions], treated with [adrenaline injection and clips|clips|thermal coagulation].",
            "?Biopsies were positive for {x:H. pylori infection}; eradication with {d:amoxicillin}, {d:clarithromycin} and {d:pantoprazole} was started.",
            "?{d:ASA} and {d:ibuprofen} were [stopped|discontinued][| on admission].",
            "Hemoglobin remained stable at {n:88-112} g/L [thereafter|after the procedure].",
        ),
        procs=(
            "{p:gastroscopy} with hemostasis ({adate:0})",
            "?{p:red blood cell transfusion} ({adate:0})",
        ),
        new_drugs=("pantoprazole",),
        followup=(
            "Repeat {p:gastroscopy} in {n:6-8} weeks[| to document healing].",
            "Avoid NSAIDs.",
            "Blood count [at the GP|in {n:1-2} weeks].",
        ),
        secondary=("peptic ulcer disease", "iron deficiency anemia"),
        los=(3, 7),
        weight=2,
        min_age=30,
    ),
    _Acute(
        dx="femoral neck fracture",
        depts=("Orthopaedics", "Traumatology"),
        symptoms=("a fall at home", "pain in the {side} hip", "inability to bear weight"),
        vitals="",
        labs=("hb:n", "crea:n", "na:n", "inr:n"),
        course=(
            "X-ray confirmed a displaced {x:femoral neck fracture} on the {side}[| (Garden {n:3-4})].",
            "[{p:hemiarthroplasty}|{p:total hip arthroplasty}] was performed under spinal anesthesia on day {n:0-1}.",
            "{d:tranexamic acid} and {d:cefuroxime} were given perioperatively; thromboprophylaxis with {d:enoxaparin} {dose:enoxaparin}.",
            "?Postoperative hemoglobin {n:86-104} g/L[|; no transfusion needed|; {n:1-2} units of red cells transfused].",
            "Mobilised with a walker on day {n:1-2}[| with full weight bearing].",
            "?{pr} had a short episode of postoperative {x:delirium} that settled.",
            "?[{x:osteoporosis}|Bone health] [assessment|work-up] recommended after discharge.",
        ),
        procs=("{p:hip hemiarthroplasty} ({adate:1})",),
        new_drugs=("enoxaparin", "paracetamol", "oxycodone"),
        followup=(
            "Thromboprophylaxis with {d:enoxaparin} for {n:4-5} weeks.",
            "?Staples out at {n:12-14} days.",
            "Physiotherapy; full weight bearing as tolerated.",
            "?{p:DEXA scan} and {x:osteoporosis} treatment [to be considered|recommended].",
        ),
        secondary=("osteoporosis", "dementia", "essential hypertension"),
        los=(5, 12),
        weight=2,
        min_age=65,
    ),
    _Acute(
        dx="diabetic ketoacidosis",
        depts=("Endocrinology", "Internal Medicine", "Intensive Care"),
        symptoms=("vomiting", "abdominal pain", "polyuria", "excessive thirst", "drowsiness"),
        vitals="tachy",
        labs=("glu:h", "ph:l", "ketones:h", "k:n", "crea:h"),
        course=(
            "[{x:DKA} protocol|A fixed-rate insulin infusion] was started with {d:insulin aspart} IV and IV fluids.",
            "{d:potassium chloride} was added to the fluids when potassium fell to {f:3.2-3.8} mmol/L.",
            "Ketoacidosis resolved within {n:12-30} hours and {pr} was switched to subcutaneous basal-bolus insulin ({d:Lantus} and {d:NovoRapid}).",
            "?The trigger was [missed insulin doses|a gastrointestinal infection|an insulin pump failure|unclear].",
            "?The diabetes nurse reviewed sick-day rules and injection technique.",
        ),
        procs=(),
        new_drugs=("insulin glargine", "insulin aspart"),
        followup=(
            "Endocrinology follow-up in {n:2-4} weeks.",
            "Sick-day rules [reviewed|explained]; check ketones if glucose above 14 mmol/L.",
        ),
        secondary=("type 1 diabetes mellitus",),
        los=(2, 5),
        weight=1,
        min_age=18,
    ),
    _Acute(
        dx="hyponatremia",
        depts=("Internal Medicine", "Endocrinology"),
        symptoms=("confusion", "falls", "nausea", "unsteady gait"),
        vitals="",
        labs=("na:l", "k:n", "glu:n", "tsh:n"),
        course=(
            "Sodium on admission was {n:112-126} mmol/L; serum osmolality {n:238-266} mOsm/kg.",
            "{d:hydrochlorothiazide} was [stopped|discontinued] as the likely cause[| together with {d:sertraline}].",
            "Sodium was corrected [slowly|by less than 8 mmol/L per 24 hours] with [fluid restriction|isotonic saline] and reached {n:130-136} mmol/L at discharge.",
            "?Cortisol and thyroid function were normal.",
        ),
        procs=(),
        new_drugs=(),
        followup=(
            "Sodium [control|check] in {n:3-7} days at the GP.",
            "Do not restart the thiazide.",
        ),
        secondary=("essential hypertension", "depression"),
        los=(3, 7),
        weight=1,
        min_age=60,
    ),
    _Acute(
        dx="acute kidney injury",
        depts=("Nephrology", "Internal Medicine"),
        symptoms=("reduced urine output", "diarrhea and vomiting for several days", "dizziness"),
        vitals="hypot",
        labs=("crea:h", "k:h", "urea:h", "na:n"),
        course=(
            "Creatinine on admission {n:210-520} µmol/L[| (baseline {n:70-110})].",
            "{d:ramipril}, {d:furosemide} and {d:metformin} were [paused|withheld].",
            "{p:abdominal ultrasound} [showed normal-sized kidneys without hydronephrosis|excluded obstruction].",
            "IV fluids were given and kidney function improved; creatinine at discharge {n:110-180} µmol/L.",
            "?{p:hemodialysis} was not needed.",
            "?Hyperkalemia of {f:5.8-6.6} mmol/L was treated with insulin-glucose[| and resolved].",
        ),
        procs=("{p:abdominal ultrasound} ({adate:0})", "?{p:urinary catheterization} ({adate:0})"),
        new_drugs=(),
        followup=(
            "Creatinine and potassium in {n:3-7} days.",
            "Restart {d:ramipril} only when kidney function has recovered.",
            "?Sick-day rules explained.",
        ),
        secondary=("chronic kidney disease", "essential hypertension", "type 2 diabetes mellitus"),
        los=(3, 8),
        weight=1,
        min_age=50,
    ),
    _Acute(
        dx="COVID-19",
        depts=("Infectious Diseases", "Internal Medicine"),
        symptoms=("fever", "dry cough", "shortness of breath", "loss of smell", "fatigue"),
        vitals="fever hypox",
        labs=("crp:h", "ddimer:h", "wbc:n", "lactate:n"),
        course=(
            "SARS-CoV-2 PCR was positive.",
            "{p:chest X-ray} showed [bilateral peripheral opacities|patchy bilateral infiltrates].",
            "{pr} needed oxygen up to {n:2-6} L/min and received {d:dexamethasone} {dose:dexamethasone} for {n:5-10} days.",
            "Thromboprophylaxis with {d:enoxaparin} {dose:enoxaparin} was given.",
            "?Oxygen was weaned by day {n:4-8}[|; saturation {n:93-97}% on room air at discharge].",
        ),
        procs=("{p:chest X-ray} ({adate:0})",),
        new_drugs=(),
        followup=(
            "Isolation [according to current guidance|as instructed].",
            "?Follow-up {p:CXR} in {n:6-8} weeks.",
            "[GP|Family physician] contact if breathing worsens.",
        ),
        secondary=("type 2 diabetes mellitus", "obesity", "essential hypertension"),
        los=(4, 11),
        weight=1,
    ),
    _Acute(
        dx="syncope",
        depts=("Cardiology", "Internal Medicine"),
        symptoms=(
            "a transient loss of consciousness",
            "dizziness before the episode",
            "a fall with a facial bruise",
        ),
        vitals="brady",
        labs=("hb:n", "na:n", "k:n", "tnt:n", "glu:n"),
        course=(
            "{p:ECG} showed [sinus bradycardia {n:38-48}/min|first-degree AV block|intermittent {x:complete heart block}|normal sinus rhythm].",
            "?Telemetry recorded [pauses up to {n:3-6} seconds|intermittent {x:third-degree AV block}|no significant arrhythmia].",
            "?{p:echocardiography} showed [normal LV function|mild {x:aortic stenosis}|no structural heart disease].",
            "?[A dual-chamber|A] {p:pacemaker implantation} was performed on day {n:1-3} without complications.",
            "?Orthostatic test was [positive|negative]; [{d:amlodipine}|{d:tamsulosin}] was stopped.",
        ),
        procs=(
            "{p:ECG} ({adate:0})",
            "?{p:Holter ECG} ({adate:1})",
            "?{p:pacemaker implantation} ({adate:2})",
        ),
        new_drugs=(),
        followup=(
            "?Pacemaker check in {n:4-8} weeks.",
            "?No driving for {n:1-4} weeks.",
            "Cardiology follow-up in {n:1-3} months.",
        ),
        secondary=("essential hypertension", "sick sinus syndrome"),
        los=(1, 5),
        weight=2,
        min_age=50,
    ),
    _Acute(
        dx="diverticulitis",
        depts=("General Surgery", "Gastroenterology"),
        symptoms=("left lower abdominal pain", "fever", "change in bowel habit"),
        vitals="fever",
        labs=("crp:h", "wbc:h", "crea:n"),
        course=(
            "{p:CT abdomen} showed [uncomplicated {x:sigmoid diverticulitis}|{x:sigmoid diverticulitis} with a {n:2-4} cm pericolic abscess|inflammation of the sigmoid colon without free air].",
            "{pr} was treated with {d:amoxicillin/clavulanic acid} [IV then orally|{dose:amoxicillin/clavulanic acid}] and a liquid diet.",
            "Pain and fever settled within {n:2-4} days.",
        ),
        procs=("{p:CT of the abdomen} ({adate:0})",),
        new_drugs=("amoxicillin/clavulanic acid",),
        followup=(
            "{p:colonoscopy} in {n:6-8} weeks to exclude malignancy.",
            "High-fiber diet after recovery.",
        ),
        secondary=("diverticulosis",),
        los=(2, 6),
        weight=1,
        min_age=40,
    ),
    _Acute(
        dx="delirium",
        depts=("Geriatrics", "Internal Medicine"),
        symptoms=("acute confusion", "agitation at night", "reduced oral intake"),
        vitals="fever",
        labs=("na:n", "crp:h", "wbc:h", "crea:n", "glu:n"),
        course=(
            "The trigger was [a {x:UTI}|constipation and urinary retention|a new opioid|dehydration].",
            "[Urine culture grew E. coli and|A urine sample was sent and] {d:nitrofurantoin} {dose:nitrofurantoin} was given.",
            "?{d:haloperidol} {dose:haloperidol} was used [once|twice] for agitation.",
            "?{d:zopiclone} and anticholinergic drugs were stopped.",
            "?{p:CT of the head} showed [age-related atrophy only|no acute changes].",
            "Orientation gradually improved with [non-pharmacological measures|reorientation, hydration and mobilisation].",
        ),
        procs=("?{p:head CT} ({adate:0})",),
        new_drugs=(),
        followup=(
            "Memory assessment after recovery.",
            "?Home care [arranged|increased].",
            "[Family informed|Relatives informed] about signs of recurrence.",
        ),
        secondary=("dementia", "urinary tract infection"),
        los=(4, 10),
        weight=1,
        min_age=72,
    ),
    _Acute(
        dx="epilepsy",
        depts=("Neurology",),
        symptoms=(
            "a generalized seizure",
            "a witnessed seizure with tongue bite",
            "postictal confusion",
        ),
        vitals="",
        labs=("na:n", "glu:n", "crea:n"),
        course=(
            "{p:CT head} showed [no acute pathology|an old infarct in the {side} hemisphere].",
            "{p:EEG} [showed {side} temporal epileptiform discharges|was normal|showed generalized spike-wave activity].",
            "?{p:brain MRI} [showed hippocampal sclerosis on the {side}|was without structural lesion].",
            "{d:levetiracetam} {dose:levetiracetam} was started[| and tolerated well].",
            "?No further seizures occurred during the stay.",
        ),
        procs=(
            "{p:CT of the head} ({adate:0})",
            "{p:electroencephalography} ({adate:1})",
            "?{p:MRI of the brain} ({adate:2})",
        ),
        new_drugs=("levetiracetam",),
        followup=(
            "Neurology follow-up in {n:2-3} months.",
            "No driving [for 6 months|until cleared by neurology].",
        ),
        secondary=(),
        los=(2, 5),
        weight=1,
    ),
    _Acute(
        dx="Clostridioides difficile infection",
        depts=("Infectious Diseases", "Internal Medicine"),
        symptoms=("watery diarrhea", "abdominal cramps", "fever"),
        vitals="fever",
        labs=("wbc:h", "crp:h", "crea:n", "alb:l"),
        course=(
            "{pr} had recently received {d:clindamycin}[| for a dental infection|].",
            "Stool PCR and toxin for C. difficile were positive.",
            "Treatment with oral {d:vancomycin} {dose:vancomycin@PO} for 10 days was started.",
            "?Contact isolation was maintained[| until 48 hours without diarrhea].",
            "Diarrhea [decreased|settled] after {n:3-5} days.",
        ),
        procs=(),
        new_drugs=("vancomycin",),
        followup=(
            "Complete {d:vancomycin} as prescribed.",
            "Avoid unnecessary antibiotics and PPIs.",
        ),
        secondary=("chronic kidney disease",),
        los=(3, 8),
        weight=1,
        min_age=40,
    ),
)


@dataclass(frozen=True)
class _Proc:
    """A procedure note: indication, how it was done, what was found, what next."""

    term: str
    kind: str  # endoscopy, cardiac, surgery, bedside, imaging, test
    depts: tuple[str, ...]
    indications: tuple[
        tuple[str, str], ...
    ]  # (diagnosis term for the code, template; {ind} = its mention)
    technique: tuple[str, ...]
    findings: tuple[tuple[str, ...], ...]  # alternative sets of finding steps
    plan: tuple[str, ...]
    anesthesia: tuple[str, ...] = ()
    specimens: tuple[str, ...] = ()
    weight: float = 1.0
    min_age: int = 18
    sex: str | None = None


_PROCS: tuple[_Proc, ...] = (
    _Proc(
        term="colonoscopy",
        kind="endoscopy",
        depts=("Gastroenterology", "General Surgery"),
        indications=(
            (
                "iron deficiency anemia",
                "{ind}[| with ferritin {n:4-12} µg/L][| and positive fecal immunochemical test]",
            ),
            (
                "colonic polyp",
                "Surveillance after [previous|earlier] {p:polypectomy} of {ind} [in {year}|{n:3-5} years ago]",
            ),
            (
                "colorectal cancer",
                "Positive FIT in the screening programme; [rule out|exclude] {ind}",
            ),
            ("diverticulitis", "Follow-up after {ind}[| treated in {year}| {n:6-10} weeks ago]"),
            ("ulcerative colitis", "Assessment of {ind}[| activity| before treatment change]"),
            ("Crohn's disease", "[Activity assessment|Follow-up] of {ind}"),
        ),
        anesthesia=(
            "[Conscious sedation|Sedation] with {d:midazolam} {dose:midazolam}[| and {d:fentanyl} 50 mcg IV].",
            "[Without sedation|No sedation, at the patient's request].",
            "Deep sedation with {d:propofol} {dose:propofol} administered by the anesthesia team.",
        ),
        technique=(
            "Bowel preparation [adequate|good|fair], Boston Bowel Preparation Scale {n:5-9}.",
            "The [cecum|caecum] was reached in {n:4-16} minutes[| and identified by the appendiceal orifice and ileocecal valve][|; the terminal ileum was inspected].",
            "?Withdrawal time {n:6-14} minutes.",
        ),
        findings=(
            (
                "A {n:4-9} mm sessile {x:colonic polyp} in the [sigmoid|ascending|transverse] colon, removed by cold snare {p:polypectomy}.",
                "?[Scattered {x:diverticulosis}|{x:diverticular disease}] in the sigmoid colon.",
                "?Small internal {x:hemorrhoids}.",
            ),
            (
                "[A circumferential|An ulcerated, friable] mass at {n:15-40} cm from the anal verge, [partly obstructing the lumen|passable with the scope], suspicious of {x:colon cancer}.",
                "Biopsies taken and the lesion tattooed.",
                "![Referral to|Discussion at] the colorectal multidisciplinary meeting[| with staging {p:CT abdomen}].",
            ),
            (
                "[Normal|Unremarkable] mucosa throughout the colon[| and terminal ileum].",
                "?No polyps or mass lesions.",
            ),
            (
                "[Continuous|Diffuse] inflammation from the rectum to {n:20-45} cm with loss of vascular pattern and erosions, Mayo endoscopic score {n:1-3}.",
                "Biopsies taken for histology.",
            ),
        ),
        specimens=(
            "[Polyp|Biopsies] sent for histology.",
            "[{n:2-8}|Multiple] biopsies sent to pathology.",
            "No specimens.",
        ),
        plan=(
            "[Histology results|Results] will be sent to the referring physician[| in {n:2-3} weeks].",
            "?Next {p:colonoscopy} in [{n:3-5} years|{n:1-3} years depending on histology].",
            "?Continue {d:ferrous sulfate} {dose:ferrous sulfate}.",
        ),
        weight=4,
        min_age=40,
    ),
    _Proc(
        term="gastroscopy",
        kind="endoscopy",
        depts=("Gastroenterology",),
        indications=(
            ("gastroesophageal reflux disease", "{ind} [not responding to PPI|with dysphagia]"),
            ("iron deficiency anemia", "{ind}"),
            ("upper gastrointestinal bleeding", "Suspected {ind}[| with melena]"),
            ("liver cirrhosis", "Variceal screening in {ind}"),
            ("peptic ulcer disease", "Control of healing after {ind}"),
        ),
        anesthesia=(
            "Topical pharyngeal anaesthesia with {d:lidocaine} spray.",
            "[Light sedation|Sedation] with {d:midazolam} {dose:midazolam}.",
            "Without sedation.",
        ),
        technique=(
            "The scope was passed [without difficulty|easily] to the second part of the duodenum.",
            "?Retroflexion in the stomach performed.",
        ),
        findings=(
            (
                "[LA grade {abcd}|Los Angeles grade {abcd}] {x:reflux esophagitis}.",
                "?A {n:2-5} cm {x:hiatal hernia}.",
                "Stomach and duodenum normal.",
            ),
            (
                "A {n:6-18} mm [clean-based|fibrin-covered] ulcer in the [gastric antrum|duodenal bulb][|, Forrest III].",
                "Rapid urease test [positive|negative].",
                "?Biopsies taken from the ulcer edge.",
                "!?[Eradication therapy|Eradication] for {x:Helicobacter pylori infection} if histology is positive.",
            ),
            (
                "[Grade {n:2-3} esophageal varices with red signs|Large varices in the distal esophagus].",
                "{p:variceal band ligation} with {n:3-6} bands.",
                "?Portal hypertensive gastropathy.",
                "![Continue|Start] {d:carvedilol} as [primary|secondary] prophylaxis.",
            ),
            (
                "Normal esophagus, stomach and duodenum.",
                "?Biopsies taken for [H. pylori|celiac disease].",
            ),
        ),
        specimens=("Biopsies sent for histology.", "No specimens."),
        plan=(
            "?[Continue|Start] {d:pantoprazole} {dose:pantoprazole} for {n:4-8} weeks.",
            "?Repeat {p:gastroscopy} [in {n:6-8} weeks|after eradication].",
            "[Results|Histology] to the referring doctor.",
        ),
        weight=3,
        min_age=25,
    ),
    _Proc(
        term="coronary angiography",
        kind="cardiac",
        depts=("Cardiology",),
        indications=(
            (
                "stable angina",
                "{ind}, CCS class {n:2-3}[| with a positive {p:exercise stress test}]",
            ),
            ("NSTEMI", "{ind} with troponin rise to {n:120-2400} ng/L"),
            ("unstable angina", "{ind}"),
            ("aortic stenosis", "Pre-operative assessment before valve intervention for {ind}"),
            ("heart failure", "Newly diagnosed {ind} with LVEF {n:25-40}%"),
        ),
        anesthesia=(
            "Local anesthesia with {d:lidocaine} {dose:lidocaine}.",
            "Local anaesthesia at the access site.",
        ),
        technique=(
            "[Right radial|Left radial|Right femoral] access, {n:5-6} F sheath.",
            "{d:heparin} [5000 IU|{n:50-100} IU/kg] IV.",
            "?Contrast volume {n:60-240} ml, fluoroscopy time {f:3.2-22.5} min.",
        ),
        findings=(
            (
                "Left main without stenosis.",
                "LAD: [{n:70-95}% stenosis proximally|{n:50-70}% stenosis in the mid segment|chronic total occlusion].",
                "LCx: [no significant stenosis|{n:40-60}% stenosis].",
                "RCA: [dominant, no stenosis|{n:70-90}% stenosis in the mid segment].",
                "?{p:PCI} of the LAD with a {f:2.5-4.0} x {n:12-38} mm drug-eluting stent, good result, TIMI 3 flow.",
                "!?Dual antiplatelet therapy with {d:acetylsalicylic acid} {dose:acetylsalicylic acid} and {d:ticagrelor} {dose:ticagrelor} for 12 months.",
            ),
            (
                "[Smooth coronary arteries|No significant {x:coronary artery disease}|Minor wall irregularities only].",
            ),
            (
                "Three-vessel disease[| with diffuse calcification][; SYNTAX score {n:23-40}|].",
                "Heart team discussion regarding {p:CABG}.",
                "!?[Referral to|Discussion with] cardiac surgery.",
            ),
        ),
        plan=(
            "?Continue {d:atorvastatin} {dose:atorvastatin}.",
            "[Radial band|Compression] removed after {n:2-4} hours[|; check the access site].",
        ),
        weight=3,
        min_age=40,
    ),
    _Proc(
        term="electrical cardioversion",
        kind="cardiac",
        depts=("Cardiology",),
        indications=(
            (
                "atrial fibrillation",
                "Persistent {ind}[| of {n:2-10} weeks' duration][| despite rate control]",
            ),
        ),
        anesthesia=(
            "Short anesthesia with {d:propofol} {dose:propofol} given by the anesthesiologist.",
        ),
        technique=(
            "Anticoagulation with [{d:apixaban}|{d:rivaroxaban}|{d:warfarin}] for more than 3 weeks[| confirmed| documented][|, INR {f:2.1-3.2}].",
            "?{p:TEE} before the procedure showed no thrombus in the left atrial appendage.",
            "[Synchronized biphasic shock|DC shock] [{n:120-200} J|of {n:150-200} J][, {n:1-3} attempts|].",
        ),
        findings=(
            (
                "Sinus rhythm was restored[| after the first shock| after the second shock][|, rate {n:52-78}/min].",
            ),
            ("No conversion after {n:3} shocks; {x:AF} persists.",),
        ),
        plan=(
            "Continue anticoagulation for at least 4 weeks[| and long-term according to CHA2DS2-VASc].",
            "?Start {d:amiodarone} {dose:amiodarone} to maintain sinus rhythm.",
            "?{p:ECG} control in {n:1-4} weeks.",
        ),
        weight=1,
        min_age=40,
    ),
    _Proc(
        term="transthoracic echocardiography",
        kind="test",
        depts=("Cardiology",),
        indications=(
            ("heart failure", "[Assessment of|Follow-up of] {ind}"),
            ("aortic stenosis", "Follow-up of {ind}"),
            ("atrial fibrillation", "Newly diagnosed {ind}"),
            ("ischemic stroke", "Cardioembolic source after {ind}"),
            ("essential hypertension", "{ind}, [assess|evaluate] LV hypertrophy"),
        ),
        technique=("[Image quality good|Adequate image quality|Suboptimal acoustic window].",),
        findings=(
            (
                "LV [normal in size|mildly dilated], LVEF {n:52-66}% (biplane Simpson).",
                "[No regional wall motion abnormalities|Normal wall motion].",
                "?[Mild|Trivial] {x:mitral regurgitation}.",
                "No pericardial effusion.",
            ),
            (
                "LV dilated, LVEDD {n:58-68} mm, LVEF {n:22-38}% with global hypokinesia.",
                "[Moderate|Moderate to severe] functional {x:mitral insufficiency}.",
                "?Estimated RV systolic pressure {n:38-55} mmHg.",
            ),
            (
                "Calcified aortic valve, Vmax {f:3.1-4.8} m/s, mean gradient {n:22-52} mmHg, AVA {f:0.7-1.3} cm².",
                "[Moderate|Severe] {x:aortic stenosis}.",
                "LVEF {n:50-65}%.",
                "!?[Referral to|Discussion at] the heart team regarding {p:TAVI}.",
            ),
            (
                "Concentric LV hypertrophy, septum {n:12-15} mm.",
                "LVEF {n:55-68}%, grade {n:1-2} diastolic dysfunction.",
            ),
        ),
        plan=(
            "?[Repeat|Control] {p:echocardiography} in {n:6-12} months.",
            "Results discussed with the referring physician.",
        ),
        weight=3,
        min_age=30,
    ),
    _Proc(
        term="thoracentesis",
        kind="bedside",
        depts=("Pulmonology", "Internal Medicine"),
        indications=(
            (
                "pleural effusion",
                "[Symptomatic|Large] {side}-sided {ind}[| of unknown cause| in known malignancy| in {x:heart failure}]",
            ),
        ),
        anesthesia=("Local anesthesia with {d:lidocaine} {dose:lidocaine}.",),
        technique=(
            "Ultrasound-guided puncture in the {side} posterior axillary line, {n:7-9}th intercostal space.",
            "?Patient seated, leaning forward.",
        ),
        findings=(
            (
                "{f:0.6-1.8} L of [straw-coloured|serous|blood-stained|turbid] fluid drained.",
                "Pleural fluid sent for protein, LDH, glucose, cytology and culture.",
                "?Light's criteria: [exudate|transudate].",
            ),
        ),
        plan=(
            "{p:chest X-ray} after the procedure: no {x:pneumothorax}[| and reduced effusion].",
            "?[Repeat drainage|Pleurodesis] if fluid reaccumulates.",
            "Cytology results [pending|awaited].",
        ),
        weight=1,
        min_age=35,
    ),
    _Proc(
        term="paracentesis",
        kind="bedside",
        depts=("Gastroenterology", "Internal Medicine"),
        indications=(
            ("liver cirrhosis", "Tense {x:ascites} in {ind}[| Child-Pugh {abc}]"),
            ("ascites", "Diagnostic tap of new {ind}"),
        ),
        anesthesia=("Local anesthesia with {d:lidocaine}.",),
        technique=("Ultrasound-guided puncture in the [left|right] lower quadrant.",),
        findings=(
            (
                "{f:2.5-7.5} L of [clear yellow|straw-coloured|cloudy] ascitic fluid [drained|removed].",
                "Cell count and culture sent[|; neutrophils {n:40-600}/µl].",
            ),
        ),
        plan=(
            "Albumin replacement given per protocol.",
            "?Continue {d:spironolactone} {dose:spironolactone} and {d:furosemide} {dose:furosemide@PO}.",
            "?Salt restriction; weigh daily.",
        ),
        weight=1,
        min_age=35,
    ),
    _Proc(
        term="lumbar puncture",
        kind="bedside",
        depts=("Neurology", "Infectious Diseases"),
        indications=(
            ("bacterial meningitis", "Suspected {ind} with fever, headache and neck stiffness"),
            ("migraine", "Atypical headache in known {ind}, exclude subarachnoid hemorrhage"),
        ),
        anesthesia=("Local anesthesia with {d:lidocaine} {dose:lidocaine}.",),
        technique=(
            "Patient in the left lateral position; puncture at [L3-L4|L4-L5|L2-L3] with a {n:20-22} G atraumatic needle[| at the first attempt| at the second attempt].",
            "?Opening pressure {n:12-32} cm H2O.",
        ),
        findings=(
            (
                "CSF [clear and colourless|slightly turbid|clear].",
                "Samples sent for cell count, protein, glucose[, culture| and oligoclonal bands][| and PCR panel].",
            ),
        ),
        plan=(
            "[Bed rest is not required|Mobilise as tolerated]; plenty of fluids.",
            "?Results to the ward physician.",
            "?[Empirical|Continue] {d:ceftriaxone} {dose:ceftriaxone} until results are available.",
        ),
        weight=1,
    ),
    _Proc(
        term="laparoscopic cholecystectomy",
        kind="surgery",
        depts=("General Surgery",),
        indications=(
            ("cholelithiasis", "Symptomatic {ind}[| with recurrent biliary colic]"),
            ("acute cholecystitis", "{ind}"),
        ),
        anesthesia=(
            "General anesthesia with {p:endotracheal intubation}.",
            "General endotracheal anaesthesia.",
        ),
        technique=(
            "[Four-port|Three-port] technique, pneumoperitoneum via [open Hasson|Veress] entry at the umbilicus.",
            "Critical view of safety [achieved|obtained]; cystic duct and artery clipped and divided.",
            "Gallbladder removed from the liver bed with diathermy and extracted in a bag.",
            "?Hemostasis checked, [no drain|a drain left in the subhepatic space].",
        ),
        findings=(
            (
                "[Chronically inflamed|Acutely inflamed, edematous|Thin-walled] gallbladder with [multiple|a few|a single large] stones.",
                "?Adhesions to the omentum [released|divided].",
            ),
        ),
        specimens=("Gallbladder sent for histology.",),
        plan=(
            "[Analgesia with|Pain relief:] {d:paracetamol} {dose:paracetamol} and {d:ibuprofen} {dose:ibuprofen}[| as needed].",
            "?Mobilise and eat [the same day|from the evening].",
            "Discharge [the next day|on postoperative day {n:1-2}] if well.",
            "Suture removal at the family physician in {n:7-10} days.",
        ),
        weight=2,
        min_age=20,
    ),
    _Proc(
        term="total knee arthroplasty",
        kind="surgery",
        depts=("Orthopaedics",),
        indications=(
            (
                "knee osteoarthritis",
                "{side}-sided {ind}[, Kellgren-Lawrence grade 4|] [after failed conservative treatment|with night pain]",
            ),
        ),
        anesthesia=(
            "Spinal anesthesia with sedation.",
            "Spinal anaesthesia[| and adductor canal block].",
        ),
        technique=(
            "Tourniquet [not used|{n:60-95} minutes].",
            "Medial parapatellar approach; [cemented|cementless] [posterior-stabilized|cruciate-retaining] prosthesis implanted.",
            "{d:tranexamic acid} {dose:tranexamic acid} and {d:cefuroxime} 1.5 g IV given before incision.",
            "?Patella [not resurfaced|resurfaced].",
        ),
        findings=(
            (
                "[Severe|Advanced] tricompartmental [wear|degeneration] with bone-on-bone contact medially.",
                "Estimated blood loss {n:100-400} ml.",
            ),
        ),
        plan=(
            "Full weight bearing as tolerated with crutches.",
            "Thromboprophylaxis with {d:enoxaparin} {dose:enoxaparin} for [14 days|{n:2-5} weeks].",
            "?[Physiotherapy|Range of motion exercises] from day 1.",
            "Outpatient control in {n:6-8} weeks with X-ray.",
        ),
        weight=2,
        min_age=50,
    ),
    _Proc(
        term="total hip arthroplasty",
        kind="surgery",
        depts=("Orthopaedics",),
        indications=(
            ("hip osteoarthritis", "{side}-sided {ind}"),
            ("femoral neck fracture", "Displaced {ind} on the {side}"),
        ),
        anesthesia=("Spinal anesthesia.", "General anaesthesia with a laryngeal mask."),
        technique=(
            "[Posterior|Anterolateral|Direct anterior] approach.",
            "[Cementless|Cemented|Hybrid] prosthesis, [ceramic-on-polyethylene|metal-on-polyethylene] bearing, head {n:32-36} mm.",
            "{d:TXA} 1 g IV and {d:cefuroxime} prophylaxis given.",
        ),
        findings=(
            (
                "Stable hip through the full range of motion, leg length equal.",
                "Estimated blood loss {n:200-600} ml.",
            ),
        ),
        plan=(
            "Mobilise with full weight bearing from day 1.",
            "Hip precautions for {n:6} weeks.",
            "Thromboprophylaxis with {d:enoxaparin} for {n:4-5} weeks.",
            "?Outpatient visit with X-ray in {n:6-8} weeks.",
        ),
        weight=2,
        min_age=50,
    ),
    _Proc(
        term="cataract surgery",
        kind="surgery",
        depts=("Ophthalmology",),
        indications=(
            (
                "cataract",
                "[Age-related|Progressive] {ind} of the {side} eye, visual acuity {f:0.1-0.5}",
            ),
        ),
        anesthesia=("Topical anesthesia[| with intracameral {d:lidocaine}].",),
        technique=(
            "{p:phacoemulsification} through a {f:2.2-2.8} mm clear corneal incision.",
            "Foldable intraocular lens +{f:16.0-24.5} D implanted in the capsular bag.",
        ),
        findings=(("Uncomplicated surgery; posterior capsule intact.",),),
        plan=(
            "{d:dexamethasone} eye drops four times daily for {n:3-4} weeks.",
            "Control at the ophthalmologist in {n:1-4} weeks.",
            "Avoid rubbing the eye.",
        ),
        weight=2,
        min_age=55,
    ),
    _Proc(
        term="transurethral resection of the prostate",
        kind="surgery",
        depts=("Urology",),
        indications=(
            (
                "benign prostatic hyperplasia",
                "{ind} with [recurrent urinary retention|LUTS not responding to {d:tamsulosin}]",
            ),
        ),
        anesthesia=("Spinal anesthesia.",),
        technique=(
            "Bipolar resection; [about|approximately] {n:20-60} g of tissue resected.",
            "Three-way catheter with irrigation placed.",
        ),
        findings=(
            (
                "[Trilobar enlargement|Enlarged lateral lobes], bladder [trabeculated|without tumors].",
            ),
        ),
        specimens=("Prostatic chips sent for histology.",),
        plan=(
            "Irrigation until clear, catheter removal on day {n:2-3}.",
            "?Stop {d:tamsulosin} after a successful trial without catheter.",
        ),
        weight=1,
        min_age=55,
        sex="male",
    ),
    _Proc(
        term="bronchoscopy",
        kind="endoscopy",
        depts=("Pulmonology",),
        indications=(
            (
                "lung cancer",
                "Suspected {ind}: [a {n:2-6} cm mass in the {side} upper lobe|hilar mass] on CT",
            ),
            ("community-acquired pneumonia", "Non-resolving {ind}"),
        ),
        anesthesia=("Topical {d:lidocaine} and sedation with {d:midazolam} {dose:midazolam}.",),
        technique=(
            "Flexible scope introduced [transnasally|orally]; airways inspected to the subsegmental level.",
        ),
        findings=(
            (
                "[Endobronchial tumor|Exophytic lesion] obstructing the {side} upper lobe bronchus.",
                "Biopsies and brushings taken.",
                "?Minor bleeding controlled with cold saline.",
            ),
            (
                "No endobronchial lesions; purulent secretions in the {side} lower lobe.",
                "Bronchoalveolar lavage sent for culture and cytology.",
            ),
        ),
        specimens=("Samples sent for histology, cytology and microbiology.",),
        plan=(
            "Results at the thoracic oncology team meeting.",
            "?{p:chest X-ray} not needed; no {x:pneumothorax} suspected.",
        ),
        weight=1,
        min_age=40,
    ),
    _Proc(
        term="CT of the head",
        kind="imaging",
        depts=("Radiology",),
        indications=(
            ("ischemic stroke", "Acute neurological deficit, suspected {ind}"),
            ("concussion", "Head trauma[| on anticoagulation], suspected {ind}"),
            ("dementia", "Cognitive decline, suspected {ind}"),
        ),
        technique=("Non-contrast axial images[| with coronal and sagittal reconstructions].",),
        findings=(
            (
                "No intracranial [hemorrhage|bleeding].",
                "[No early ischemic changes|Subtle hypodensity in the {side} insula], ASPECTS {n:7-10}.",
                "Ventricles and sulci [age-appropriate|mildly prominent].",
            ),
            (
                "[Periventricular white matter changes|Generalized atrophy] [consistent with small vessel disease|more than expected for age].",
                "No mass effect or midline shift.",
            ),
            (
                "No fracture, no intracranial bleeding.",
                "Soft tissue swelling over the {side} parietal region.",
            ),
        ),
        plan=(
            "?[Consider|Recommend] {p:MRI of the brain} if clinically indicated.",
            "Findings reported to the referring physician.",
        ),
        weight=2,
        min_age=30,
    ),
    _Proc(
        term="abdominal ultrasound",
        kind="imaging",
        depts=("Radiology",),
        indications=(
            ("cholelithiasis", "Right upper quadrant pain, suspected {ind}"),
            ("liver cirrhosis", "Surveillance in {ind}"),
            ("chronic kidney disease", "Kidney size in {ind}"),
        ),
        technique=("Fasting examination[| with a curved transducer].",),
        findings=(
            (
                "Liver normal in size and echotexture.",
                "Gallbladder contains [several|multiple|a single {n:8-24} mm] {x:gallstones}, wall {n:2-6} mm.",
                "Common bile duct {n:3-7} mm.",
                "!?Surgical referral[| to discuss {p:laparoscopic cholecystectomy}].",
            ),
            (
                "Liver [coarse and nodular|with an irregular surface], spleen {n:12-16} cm.",
                "[Small amount of|Moderate] {x:ascites}.",
                "No focal liver lesions.",
            ),
            (
                "Kidneys {n:9-11} cm, cortex [normal|thinned], no hydronephrosis.",
                "?Simple cyst of {n:1-4} cm in the {side} kidney.",
            ),
        ),
        plan=("Findings reported to the referring physician.",),
        weight=2,
        min_age=20,
    ),
    _Proc(
        term="spirometry",
        kind="test",
        depts=("Pulmonology",),
        indications=(
            ("chronic obstructive pulmonary disease", "Follow-up of {ind}"),
            ("asthma", "Suspected {ind}"),
        ),
        technique=("Acceptable and repeatable manoeuvres.",),
        findings=(
            (
                "FEV1 {f:0.9-2.4} L ({n:35-70}% of predicted), FVC {f:2.2-4.1} L, FEV1/FVC {f:0.40-0.68}.",
                "After {d:salbutamol} 400 mcg: FEV1 +{n:2-9}%, not significantly reversible.",
            ),
            (
                "FEV1 {n:70-92}% of predicted, FEV1/FVC {f:0.62-0.74}.",
                "After {d:salbutamol} 400 mcg: FEV1 +{n:12-24}% ({n:210-480} ml), significant reversibility.",
            ),
        ),
        plan=(
            "[Consistent with|Compatible with] [obstructive|fixed obstructive|reversible obstructive] ventilatory impairment.",
            "Results to the referring physician.",
        ),
        weight=1,
        min_age=25,
    ),
    _Proc(
        term="pacemaker implantation",
        kind="cardiac",
        depts=("Cardiology",),
        indications=(
            ("complete heart block", "Symptomatic {ind}"),
            ("sick sinus syndrome", "{ind} with pauses up to {n:4-7} seconds"),
        ),
        anesthesia=("Local anesthesia with {d:lidocaine} {dose:lidocaine}.",),
        technique=(
            "{side} [cephalic vein cutdown|subclavian puncture].",
            "[Dual-chamber|Single-chamber] system; atrial lead in the right atrial appendage, ventricular lead [septal|apical].",
            "R wave {n:6-18} mV, threshold {f:0.4-1.0} V at 0.4 ms.",
            "{d:cefuroxime} 1.5 g IV prophylaxis.",
        ),
        findings=(("Procedure without complications; device programmed DDD {n:50-60}/min.",),),
        plan=(
            "{p:chest X-ray} to exclude {x:pneumothorax}.",
            "Wound check in {n:7-10} days; device check in {n:4-8} weeks.",
            "Avoid lifting the arm above shoulder level for {n:4} weeks.",
        ),
        weight=1,
        min_age=55,
    ),
    _Proc(
        term="endoscopic retrograde cholangiopancreatography",
        kind="endoscopy",
        depts=("Gastroenterology",),
        indications=(
            (
                "choledocholithiasis",
                "{ind} on imaging[| with cholestasis][|, bilirubin {n:40-140} µmol/L]",
            ),
        ),
        anesthesia=("Deep sedation with {d:propofol}.",),
        technique=(
            "Selective bile duct cannulation[| after a precut].",
            "Endoscopic sphincterotomy.",
        ),
        findings=(
            (
                "Dilated common bile duct {n:9-14} mm with [{n:1-3} stones|a {n:6-12} mm stone].",
                "Stones extracted with a balloon; [clear cholangiogram|a plastic stent placed].",
            ),
        ),
        plan=(
            "Monitor for post-ERCP pancreatitis; lipase after {n:4-6} hours.",
            "?{p:lap chole} [within 6 weeks|to be scheduled].",
        ),
        weight=1,
        min_age=30,
    ),
    _Proc(
        term="inguinal hernia repair",
        kind="surgery",
        depts=("General Surgery",),
        indications=(("inguinal hernia", "Symptomatic {side} {ind}"),),
        anesthesia=("Spinal anesthesia.", "Local anesthesia with {d:lidocaine} and sedation."),
        technique=(
            "Open {p:Lichtenstein repair} with polypropylene mesh.",
            "Ilioinguinal nerve identified and preserved.",
        ),
        findings=(("[Indirect|Direct] hernia, sac [reduced|excised].",),),
        plan=(
            "Day surgery; home the same day.",
            "Analgesia with {d:paracetamol} {dose:paracetamol}.",
            "No heavy lifting for {n:2-4} weeks.",
        ),
        weight=1,
        min_age=25,
    ),
)


# Which finding sets (by index) fit which indication; unlisted pairs may use any set.
_FINDINGS_FOR: dict[tuple[str, str], str] = {
    ("colonoscopy", "iron deficiency anemia"): "012",
    ("colonoscopy", "colonic polyp"): "02",
    ("colonoscopy", "colorectal cancer"): "012",
    ("colonoscopy", "diverticulitis"): "02",
    ("colonoscopy", "ulcerative colitis"): "3",
    ("colonoscopy", "Crohn's disease"): "3",
    ("gastroscopy", "gastroesophageal reflux disease"): "03",
    ("gastroscopy", "iron deficiency anemia"): "13",
    ("gastroscopy", "upper gastrointestinal bleeding"): "1",
    ("gastroscopy", "liver cirrhosis"): "23",
    ("gastroscopy", "peptic ulcer disease"): "13",
    ("transthoracic echocardiography", "heart failure"): "1",
    ("transthoracic echocardiography", "aortic stenosis"): "2",
    ("transthoracic echocardiography", "atrial fibrillation"): "03",
    ("transthoracic echocardiography", "ischemic stroke"): "03",
    ("transthoracic echocardiography", "essential hypertension"): "03",
    ("CT of the head", "ischemic stroke"): "0",
    ("CT of the head", "concussion"): "2",
    ("CT of the head", "dementia"): "1",
    ("abdominal ultrasound", "cholelithiasis"): "0",
    ("abdominal ultrasound", "liver cirrhosis"): "1",
    ("abdominal ultrasound", "chronic kidney disease"): "2",
    ("spirometry", "chronic obstructive pulmonary disease"): "0",
    ("spirometry", "asthma"): "1",
    ("bronchoscopy", "lung cancer"): "0",
    ("bronchoscopy", "community-acquired pneumonia"): "1",
    ("coronary angiography", "aortic stenosis"): "12",
}

# Procedures a patient may have had in the past (history sections), with sex limits.
_PAST_PROCS: tuple[tuple[str, str | None, int], ...] = (
    # (term, sex or None, youngest age at which it appears in a history)
    ("cataract surgery", None, 60),
    ("laparoscopic cholecystectomy", None, 25),
    ("laparoscopic appendectomy", None, 18),
    ("total hip arthroplasty", None, 60),
    ("total knee arthroplasty", None, 60),
    ("percutaneous coronary intervention", None, 50),
    ("inguinal hernia repair", None, 25),
    ("hysterectomy", "female", 40),
    ("transurethral resection of the prostate", "male", 60),
    ("thyroidectomy", None, 30),
    ("carpal tunnel release", None, 35),
    ("coronary artery bypass grafting", None, 55),
    ("knee arthroscopy", None, 20),
    ("pacemaker implantation", None, 65),
)
_ALLERGY_DRUGS = (
    "amoxicillin",
    "clarithromycin",
    "ciprofloxacin",
    "sulfamethoxazole/trimethoprim",
    "ibuprofen",
    "metamizole",
    "diclofenac",
)
_ALLERGY_REACTIONS = (
    "rash",
    "urticaria",
    "angioedema",
    "nausea",
    "itching",
    "hives",
    "swelling of the lips",
)

_HEADERS: dict[str, tuple[str, ...]] = {
    "reason": (
        "Reason for admission",
        "Presenting complaint",
        "Chief complaint",
        "Admission reason",
        "Referral reason",
        "Complaints on admission",
    ),
    "history": (
        "Past medical history",
        "Medical history",
        "Background",
        "Previous history",
        "PMH",
        "Anamnesis",
        "Comorbidities",
    ),
    "diagnoses": (
        "Diagnoses",
        "Discharge diagnoses",
        "Final diagnoses",
        "Diagnosis",
        "Dg",
        "Diagnoses at discharge",
    ),
    "course": (
        "Hospital course",
        "Course in hospital",
        "Course",
        "Clinical course",
        "Treatment and course",
        "Summary of hospital stay",
    ),
    "procedures": (
        "Procedures",
        "Procedures performed",
        "Investigations and procedures",
        "Interventions",
    ),
    "labs_dc": (
        "Laboratory results",
        "Labs on discharge",
        "Laboratory",
        "Lab results at discharge",
        "Relevant labs",
    ),
    "meds_dc": (
        "Medications on discharge",
        "Discharge medications",
        "Medications",
        "Medication at discharge",
        "Drugs on discharge",
        "Medication list",
    ),
    "allergies": ("Allergies", "Drug allergies", "Allergy status"),
    "condition": ("Condition on discharge", "Status at discharge", "Discharge condition"),
    "followup": (
        "Follow-up",
        "Follow up",
        "Recommendations",
        "Plan after discharge",
        "Further management",
        "Instructions",
    ),
    "subjective": (
        "Subjective",
        "S",
        "Complaints",
        "Chief complaint",
        "Reason for visit",
        "History of present illness",
        "HPI",
    ),
    "meds_now": (
        "Current medications",
        "Medications",
        "Regular medications",
        "Current treatment",
        "Medication",
    ),
    "objective": (
        "Objective",
        "O",
        "Examination",
        "Physical examination",
        "Status praesens",
        "Exam",
        "Clinical findings",
    ),
    "labs": ("Labs", "Laboratory", "Recent results", "Blood tests", "Laboratory results"),
    "investigations": ("Investigations", "Labs and tests", "Results", "Diagnostics", "Tests"),
    "social": ("Social history", "Social", "Lifestyle", "SH", "Social and lifestyle"),
    "consults": ("Consultations", "Consults", "Other specialists", "Consultations during the stay"),
    "exam_adm": (
        "Examination on admission",
        "Status on admission",
        "Physical examination",
        "Clinical status at admission",
        "Objective findings on admission",
    ),
    "assessment": ("Assessment", "A", "Impression", "Diagnosis", "Dg", "Assessment and diagnosis"),
    "plan": ("Plan", "P", "Recommendations", "Management", "Plan and recommendations"),
    "plan_proc": (
        "Plan",
        "Recommendations",
        "Post-procedure plan",
        "Further plan",
        "Plan and recommendations",
    ),
    "indication": ("Indication", "Indications", "Reason for procedure", "Clinical indication"),
    "anesthesia": ("Anaesthesia", "Anesthesia", "Sedation", "Anesthesia/sedation", "Premedication"),
    "technique": (
        "Procedure",
        "Procedure performed",
        "Description of procedure",
        "Technique",
        "Procedure details",
    ),
    "findings": ("Findings", "Result", "Results", "Findings and interventions"),
    "complications": ("Complications", "Adverse events", "Complications/adverse events"),
    "specimens": ("Specimens", "Samples", "Histology"),
    "impression": ("Impression", "Conclusion", "Summary"),
}
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_BULLETS = ("- ", "• ", "* ", "#", "")  # "#" means numbered


@dataclass
class _Note:
    """One generated note before it is written in any format."""

    note_id: str
    patient: _Patient
    note_type: str
    department: str
    visit: datetime
    diagnosis_code: str
    text: str
    entities: list[dict[str, Any]]
    identifiers: list[dict[str, Any]]


class _Writer:
    """Renders templates into pieces with one note's context; all randomness from ``rng``."""

    def __init__(self, rng: random.Random, vocab: Mapping[str, VocabEntry]) -> None:
        self.rng = rng
        self.vocab = vocab
        self.by_surface: dict[str, VocabEntry] = {}
        for entry in vocab.values():
            for s in entry.synonyms:
                self.by_surface.setdefault(s, entry)
        self.ctx: dict[str, Any] = {}
        self.today = date(2020, 1, 1)
        self.adm = self.today
        self.date_style = 0
        self.header_style = "upper"
        self.bullet = "- "

    # -- small random helpers ------------------------------------------------

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[self.rng.randrange(len(seq))]

    def fmt_date(self, d: date, style: int | None = None) -> str:
        style = self.date_style if style is None else style
        if style == 0:
            return f"{d.day:02d}.{d.month:02d}.{d.year}"
        if style == 1:
            return d.isoformat()
        if style == 2:
            return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"
        return f"{d.day:02d}/{d.month:02d}/{d.year}"

    # -- mentions, doses, labs -------------------------------------------------

    def mention(self, key: str, *, upper: bool = False) -> _Ent:
        """A mention of ``key``: a term gets a random surface form, a synonym is used as given."""
        if key in self.vocab:
            entry = self.vocab[key]
            forms = entry.surfaces
            text = forms[0] if len(forms) == 1 or self.chance(0.5) else self.pick(forms[1:])
            if text == text.lower() and text[:1].isalpha():
                # Notes capitalize drug and disease names at random, and some
                # systems print drug names in capitals: the NER must see both.
                r = self.rng.random()
                if r < 0.07:
                    text = text[0].upper() + text[1:]
                elif r < 0.085 and entry.label == "DRUG":
                    text = text.upper()
        else:
            entry = self.by_surface[key]
            text = key
        if upper:
            text = text.upper()
        return _Ent(text, entry.label, entry.code)

    def regimen_text(
        self,
        term: str,
        *,
        dose: str | None = None,
        route: str | None = None,
        freq: str | None = None,
    ) -> str:
        """A dose, route and frequency as written in notes, e.g. "5 mg p.o. 1x1"."""
        if dose is None or route is None or freq is None:
            regs = _DOSING[term]
            if route is not None:  # the sentence already says "oral" or "intravenous"
                regs = tuple(r for r in regs if route in r.routes)
            reg = self.pick(regs)
            dose, freq = self.pick(reg.doses), self.pick(reg.freqs)
            route = route if route is not None else self.pick(reg.routes)
        f = self.pick(_FREQS[freq])
        if route == "PO" and self.chance(0.55):
            return f"{dose} {f}"
        r = self.pick(_ROUTES[route])
        if self.chance(0.15):
            return f"{dose}, {r}, {f}"
        return f"{dose} {r} {f}"

    def med_line(self, med: _Med) -> _Line:
        return [
            self.mention(med.term),
            " ",
            self.regimen_text(med.term, dose=med.dose, route=med.route, freq=med.freq),
        ]

    def lab(self, key: str, state: str = "n") -> str:
        lab = _LABS[key]
        span = {"n": lab.normal, "h": lab.high, "l": lab.low}[state] or lab.normal
        value = f"{self.rng.uniform(*span):.{lab.decimals}f}"
        name, unit = self.pick(lab.names), self.pick(lab.units)
        text = f"{name} {value}" if not unit or self.chance(0.12) else f"{name} {value} {unit}"
        if state != "n" and self.chance(0.2):
            text += (
                self.pick((" (H)", " ↑", "↑")) if state == "h" else self.pick((" (L)", " ↓", "↓"))
            )
        return text

    def labs(self, specs: Sequence[str]) -> str:
        return ", ".join(self.lab(*spec.split(":")) for spec in specs)

    def vitals(self, mods: str) -> str:
        rng = self.rng
        if "hypot" in mods:
            bp = (rng.randint(78, 98), rng.randint(42, 60))
        elif "hypert" in mods:
            bp = (rng.randint(152, 198), rng.randint(88, 112))
        else:
            bp = (rng.randint(112, 148), rng.randint(64, 92))
        hr = (
            rng.randint(104, 148)
            if "tachy" in mods
            else rng.randint(36, 49)
            if "brady" in mods
            else rng.randint(58, 94)
        )
        temp = rng.uniform(38.1, 39.8) if "fever" in mods else rng.uniform(36.2, 37.2)
        sat = rng.randint(84, 92) if "hypox" in mods else rng.randint(94, 99)
        resp = rng.randint(22, 32) if "hypox" in mods or "tachy" in mods else rng.randint(12, 18)
        parts = [
            self.pick(
                ("BP {}/{} mmHg", "RR {}/{} mmHg", "blood pressure {}/{}", "BP {}/{}")
            ).format(*bp),
            self.pick(
                ("HR {}/min", "pulse {} bpm", "HR {} bpm", "P {}/min", "heart rate {}")
            ).format(hr),
            self.pick(
                ("SpO2 {}%", "SatO2 {}%", "saturation {}%", "SpO2 {}% on room air", "sat {}% RA")
            ).format(sat),
            self.pick(("T {:.1f} °C", "temp {:.1f}", "temperature {:.1f} °C", "T {:.1f}C")).format(
                temp
            ),
        ]
        if self.chance(0.5):
            parts.append(
                self.pick(("RF {}/min", "resp. rate {}/min", "respiratory rate {}")).format(resp)
            )
        if self.chance(0.3):
            parts.append(f"weight {rng.randint(48, 128)} kg")
        keep = [parts[0], *(x for x in parts[1:] if self.chance(0.8))]
        return self.pick((", ", "; ", ", ")).join(keep)

    # -- templates -------------------------------------------------------------

    def _emit(self, nodes: tuple[_Node, ...], out: list[_Piece]) -> None:
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Alt):
                self._emit(self.pick(node.options), out)
            else:
                self._slot(node, out)

    def _slot(self, slot: _Slot, out: list[_Piece]) -> None:
        name, arg = slot.name, slot.arg
        if name in ("d", "p", "x"):
            out.append(self.mention(arg))
        elif name in ("D", "P", "X"):
            out.append(self.mention(arg, upper=True))
        elif name == "dose":
            term, _, route = arg.partition("@")  # {dose:term@PO}: only regimens by that route
            out.append(self.regimen_text(term, route=route or None))
        elif name == "n":
            lo, _, hi = arg.partition("-")
            out.append(str(self.rng.randint(int(lo), int(hi or lo))))
        elif name == "f":
            lo, _, hi = arg.partition("-")
            decimals = len(lo.partition(".")[2])
            out.append(f"{self.rng.uniform(float(lo), float(hi)):.{decimals}f}")
        elif name == "lab":
            out.append(self.lab(*arg.split(":")))
        elif name == "adate":
            out.append(self.fmt_date(self.adm + timedelta(days=int(arg))))
        elif name == "date":
            out.append(self.fmt_date(self.today + timedelta(days=int(arg))))
        else:
            value = self.ctx[name]
            if callable(value):
                value = value()
            if isinstance(value, (str, _Ent, _Ident)):
                out.append(value)
            else:
                out.extend(value)

    def render(self, template: str, **extra: Any) -> _Line:
        """Render a template with the note's context (plus ``extra``) into tidy pieces."""
        saved = {k: self.ctx.get(k) for k in extra}
        self.ctx.update(extra)
        out: list[_Piece] = []
        try:
            self._emit(_parse(template), out)
        finally:
            for k, v in saved.items():
                if v is None:
                    self.ctx.pop(k, None)
                else:
                    self.ctx[k] = v
        return _clean(out)

    def s(self, template: str, **extra: Any) -> _Line:
        """A sentence: rendered, tidied and capitalized."""
        return _cap(self.render(template, **extra))

    def steps(self, steps: Sequence[str], *, p_optional: float = 0.55) -> list[_Line]:
        """Render steps in order; those starting with "?" only now and then."""
        out = []
        for step in steps:
            if step.startswith("?"):
                if not self.chance(p_optional):
                    continue
                step = step[1:]
            out.append(self.s(step))
        return out

    # -- layout ----------------------------------------------------------------

    def para(self, sentences: Sequence[_Line]) -> _Line:
        line: _Line = []
        for k, sentence in enumerate(sentences):
            if k:
                line.append(" ")
            line.extend(sentence)
        return _clean(line)

    def bullets(self, items: Sequence[_Line]) -> list[_Line]:
        out = []
        for k, item in enumerate(items, start=1):
            mark = f"{k}. " if self.bullet == "#" else self.bullet
            out.append(_clean([mark, *_cap(item)]) if mark else _cap(item))
        return out

    def section(self, key: str, body: list[_Line], *, prose: bool = True) -> list[_Line]:
        if not body:
            return []
        title = self.pick(_HEADERS[key])
        style = self.header_style
        if style == "plain" and len(title) <= 2:
            style = "colon"  # "S" or "Dg" alone on a line reads as noise
        if style == "inline" and prose and len(body) == 1:
            return [_clean([f"{title}: ", *body[0]])]
        head = {
            "upper": f"{title.upper()}:",
            "colon": f"{title}:",
            "plain": title,
            "inline": f"{title}:",
        }[style]
        return [[head], *body]

    def prose_or_list(self, key: str, sentences: list[_Line], p_prose: float = 0.5) -> list[_Line]:
        """A section written as one paragraph or as one item per line."""
        if self.chance(p_prose):
            return self.section(key, [self.para(sentences)])
        return self.section(key, self.bullets(sentences), prose=False)

    def start_note(self, patient: _Patient, today: date) -> None:
        """Pick the note's layout style and set the context every template may use."""
        rng = self.rng
        self.today = today
        self.adm = today
        self.date_style = rng.choices((0, 1, 2, 3), weights=(5, 3, 2, 1))[0]
        self.header_style = rng.choices(
            ("upper", "colon", "inline", "plain"), weights=(4, 4, 3, 1)
        )[0]
        self.bullet = self.pick(_BULLETS)
        age = (
            today.year
            - patient.birth.year
            - ((today.month, today.day) < (patient.birth.month, patient.birth.day))
        )
        female = patient.female
        self.ctx = {
            "age": str(age),
            "a": "an" if str(age).startswith("8") or age in (11, 18) else "a",
            "pr": "she" if female else "he",
            "pos": "her" if female else "his",
            "obj": "her" if female else "him",
            "man": (lambda: self.pick(("woman", "female", "female patient", "lady")))
            if female
            else (lambda: self.pick(("man", "male", "male patient", "gentleman"))),
            "side": lambda: self.pick(("left", "right")),
            # A past year at which the patient was old enough for the event, at most 15 years back.
            "year": lambda: str(
                rng.randint(
                    min(max(patient.birth.year + 12, today.year - 15), today.year - 1),
                    today.year - 1,
                )
            ),
            "roman": lambda: self.pick(("II", "III", "II-III")),
            "abcd": lambda: self.pick(("A", "B", "C", "D")),
            "abc": lambda: self.pick(("A", "B", "C")),
            "sputum": lambda: self.pick(("white", "yellow", "green", "clear")),
            "tscore": lambda: f"-{rng.uniform(2.5, 3.8):.1f}",
            # Nursing homes, walkers and dependence belong to the old.
            "living": lambda: self.render(
                "{pr} lives [alone|with {pos} spouse|with {pos} daughter|in a nursing home|in a care home] and is [independent|partly dependent|dependent on help] in daily activities"
                if age >= 70
                else "{pr} lives [alone|with {pos} partner|with {pos} family|with {pos} parents] and is independent in daily activities"
            ),
            "dest": lambda: self.render(
                "[home|to {pos} home|to a nursing home|to the rehabilitation ward|to {pos} daughter's home][|, mobile with a walker|, mobile independently]"
                if age >= 70
                else "[home|to {pos} home][|, mobile independently]"
            ),
        }


# --------------------------------------------------------------------------
# Identifiers inside the text (about a quarter of notes)
# --------------------------------------------------------------------------


class _IdPlan:
    """Which of the patient's identifiers this note repeats in its text, and how."""

    def __init__(self, w: _Writer, p: _Patient, enabled: bool) -> None:
        self.w, self.p = w, p
        self.kinds: set[str] = set()
        if enabled:
            # Membership checks only: iterating a set of str would depend on hash seeds.
            for kind, prob in (
                ("name", 0.7),
                ("nid", 0.55),
                ("dob", 0.35),
                ("mrn", 0.25),
                ("surname", 0.3),
                ("phone", 0.3),
                ("address", 0.2),
                ("name_open", 0.2),
            ):
                if w.chance(prob):
                    self.kinds.add(kind)
            # The header is the one place every note type has, so it always carries one.
            if not self.kinds & {"name", "nid", "dob", "mrn"}:
                self.kinds.add(w.pick(("name", "nid")))

    def name(self) -> _Ident:
        p, w = self.p, self.w
        given = " ".join(p.given)
        text = w.pick(
            (
                f"{given} {p.family}",
                f"{given} {p.family}",
                f"{p.family}, {given}",
                f"{p.family.upper()} {given}",
            )
        )
        return _Ident(text, "PERSON")

    def surname(self) -> _Line:
        title = self.w.pick(("Mrs", "Ms", "Mrs.")) if self.p.female else self.w.pick(("Mr", "Mr."))
        return [f"{title} ", _Ident(self.p.family, "PERSON")]

    def header(self) -> list[_Line]:
        w, p = self.w, self.p
        items: list[tuple[str, _Piece]] = []
        if "name" in self.kinds:
            items.append((w.pick(("Patient", "Name", "Patient name")), self.name()))
        if "nid" in self.kinds:
            items.append(
                (
                    w.pick(("Personal code", "Isikukood", "ID code", "Personal ID", "IK")),
                    _Ident(p.national_id, "NATIONAL_ID"),
                )
            )
        if "dob" in self.kinds:
            items.append(
                (
                    w.pick(("DOB", "Date of birth", "Born")),
                    _Ident(w.fmt_date(p.birth, w.pick((0, 0, 1, 2))), "DATE_OF_BIRTH"),
                )
            )
        if "mrn" in self.kinds:
            items.append(
                (
                    w.pick(("MRN", "Case no.", "Patient no.", "Hospital ID")),
                    _Ident(p.patient_id, "MEDICAL_RECORD_NUMBER"),
                )
            )
        if not items:
            return []
        if w.chance(0.5):
            return [[f"{label}: ", value] for label, value in items]
        line: _Line = []
        for k, (label, value) in enumerate(items):
            if k:
                line.append(w.pick((", ", "; ")))
            line.extend([f"{label} " if w.chance(0.5) else f"{label}: ", value])
        return [line]

    def contact(self) -> list[_Line]:
        w, p = self.w, self.p
        out = []
        if "phone" in self.kinds:
            phone = p.phone if w.chance(0.7) else p.phone.removeprefix("+372 ")
            out.append(
                w.s(
                    "[Contact phone|The patient can be reached at|Phone|Contact number|Reachable by phone at] {ph}.",
                    ph=[_Ident(phone, "PHONE_NUMBER")],
                )
            )
        if "address" in self.kinds:
            addr = p.address if w.chance(0.7) else p.address.split(",")[0]
            out.append(
                w.s(
                    "[Home address|Lives at|Address|Home care visits at] {ad}.",
                    ad=[_Ident(addr, "ADDRESS")],
                )
            )
        return out

    def subject(self) -> _Line:
        """The subject of an opening sentence: "A 67-year-old woman" or the patient's name."""
        if "name_open" in self.kinds:
            return [
                self.name(),
                self.w.pick((" ({age} y)", " ({age} years)", ", {age},")).replace(
                    "{age}", self.w.ctx["age"]
                ),
            ]
        return self.w.render("[{a}|this] {age}-year-old {man}")

    def mention_sentence(self) -> list[_Line]:
        if "surname" not in self.kinds:
            return []
        return [
            self.w.s(
                "[The findings were discussed with|The plan was explained to|Results were given to] {who}[| and {pos} family| by phone].",
                who=self.surname(),
            )
        ]


# --------------------------------------------------------------------------
# Note builders
# --------------------------------------------------------------------------


def _assemble(w: _Writer, title: list[_Line], sections: list[list[_Line]]) -> list[_Line]:
    """Title block and sections, with or without blank lines between sections."""
    blank = w.chance(0.75)
    lines = list(title)
    for sec in sections:
        if not sec:
            continue
        if lines and blank:
            lines.append([])
        lines.extend(sec)
    return lines


_EXAM_GENERAL = (
    "[Alert and oriented|Conscious, oriented|Awake and cooperative|General condition [good|fair|satisfactory]|Oriented to time and place][|, in no acute distress|, comfortable at rest|, mildly dyspneic when talking|, looks tired].",
)
_EXAM_SYSTEMS = (
    "[Heart sounds regular|Regular rhythm|Heart: rhythmic|Heart sounds [clear|muffled], [regular|irregular]][, no murmurs|, no added sounds|, soft systolic murmur {n:1-3}/6 at the apex|, systolic murmur {n:2-3}/6 over the aortic area|].",
    "[Vesicular breathing bilaterally|Lungs clear to auscultation|Breath sounds symmetrical|Lungs: [fine basal crackles on the {side}|coarse crackles at both bases|scattered expiratory wheeze|reduced breath sounds at the {side} base]][|, no crackles|, no wheeze|, no crackles or wheeze].",
    "Abdomen [soft|soft and non-tender|flat, soft|obese, soft|mildly distended][|, no guarding|, bowel sounds present|, tender in the epigastrium][|, liver not palpable|, no organomegaly].",
    "[No peripheral edema|No leg edema|Mild ankle edema bilaterally|Trace pitting edema at the ankles|Pitting edema up to the mid-shin].",
    "[Calves soft and non-tender|No calf tenderness|Peripheral pulses palpable].",
    "[Neurologically [grossly intact|without focal deficits]|Pupils equal and reactive, no focal weakness|GCS 15, speech clear].",
    "[Skin warm and dry|Skin pale|No rashes|Mucous membranes [moist|dry]].",
    "[Throat not red, no lymphadenopathy|No cervical lymphadenopathy|Thyroid not palpable].",
)
_CONSULTS = (
    "[Dietitian|Nutritionist]: [reduced oral intake, oral nutritional supplements started|diet counselling given|weight {n:48-120} kg, no {x:malnutrition}].",
    "Physiotherapy: [mobilised with a walker|stair training completed|independent on the ward|breathing exercises taught].",
    "Social worker: [home care arranged|no needs identified|application for a care home started|transport home organised].",
    "[Cardiology|Internal medicine|Neurology|Surgical|Psychiatry] consultation: [no acute intervention needed|recommendations followed, see course|outpatient follow-up advised].",
    "Occupational therapy: [aids for bathing provided|home visit planned|no needs].",
    "Speech therapist: [normal swallowing|modified diet advised|no dysphagia].",
)
_JOBS = (
    "teacher",
    "bus driver",
    "accountant",
    "nurse",
    "farmer",
    "IT specialist",
    "shop assistant",
    "engineer",
    "cleaner",
    "construction worker",
    "student",
    "civil servant",
)


def _exam(w: _Writer, n_max: int = 4) -> list[_Line]:
    out = [w.s(_EXAM_GENERAL[0])] if w.chance(0.6) else []
    return out + [w.s(t) for t in w.rng.sample(_EXAM_SYSTEMS, k=w.rng.randint(1, n_max))]


def _social(w: _Writer, p: _Patient, visit: date) -> list[_Line]:
    age = _age(p, visit)
    job = w.pick(_JOBS)
    job_a = ("an " if job[0] in "aeiouAEIOU" else "a ") + job
    if age >= 65:
        work = f"[Retired|Pensioner|Retired, formerly {job_a}]"
        home = "[Lives alone|Lives with {pos} spouse|Lives in a nursing home|Lives with {pos} daughter]"
    else:
        work = f"[Works as {job_a}|Employed as {job_a}|Occupation: {job}]"
        home = "[Lives alone|Lives with {pos} partner|Lives with {pos} family|Lives with {pos} parents]"
    return w.steps(
        (
            "[Non-smoker|Never smoked|Former smoker, quit in {year}|Smokes {n:5-25} cigarettes a day|Ex-smoker, {n:10-40} pack-years].",
            "?[Alcohol occasionally|No alcohol|Alcohol {n:2-14} units per week|Drinks alcohol rarely|Alcohol: socially].",
            "?"
            + home
            + "[| in "
            + p.town
            + "][| in a second-floor flat without a lift| in a private house].",
            "?" + work + ".",
        ),
        p_optional=0.6,
    )


def _history_items(w: _Writer, p: _Patient, skip: str = "") -> list[_Line]:
    items = []
    for dx in p.problems:
        if dx == skip:
            continue
        items.append(
            w.render("{x:" + dx + "}[| since {year}| (since {year})| diagnosed in {year}||]")
        )
    for term, year in p.past_procs:
        items.append(
            w.render("[s/p |Status post |]{p:" + term + "}[ in Y| (Y)| Y]".replace("Y", str(year)))
        )
    return [_clean(i) for i in items]


def _history_section(w: _Writer, p: _Patient, skip: str = "") -> list[_Line]:
    items = _history_items(w, p, skip)
    if not items:
        return w.section(
            "history",
            [
                w.s(
                    w.pick(
                        (
                            "No significant past medical history.",
                            "Previously healthy.",
                            "No chronic illnesses.",
                            "Nothing of note.",
                        )
                    )
                )
            ],
        )
    if w.chance(0.5):
        return w.section("history", w.bullets(items), prose=False)
    return w.section("history", [_clean([*_cap(_join(items, w.rng)), "."])])


def _meds_section(
    w: _Writer, key: str, meds: Sequence[tuple[_Med, str]], extra: Sequence[_Line] = ()
) -> list[_Line]:
    if not meds:
        body = [w.s(w.pick(("No regular medications.", "None.", "No regular medication.")))]
        return w.section(key, [*body, *extra])
    items = []
    for med, note in meds:
        line = w.med_line(med)
        if note:
            line = [*line, note]
        items.append(_clean(line))
    if w.chance(0.7):
        return [*w.section(key, w.bullets(items), prose=False), *extra]
    lead = w.pick(
        ("Continue ", "", "Discharged on ")
        if key == "meds_dc"
        else ("Takes ", "", "Uses ", "Current: ")
    )
    return w.section(key, [_clean([*_cap([lead, *_join(items, w.rng)]), "."]), *extra])


def _allergy_line(w: _Writer, p: _Patient) -> _Line:
    if p.allergy is None:
        return w.s(
            w.pick(("No known drug allergies.", "NKDA.", "None known.", "No known allergies."))
        )
    return w.s(
        "{d:" + p.allergy + "} ([" + "|".join(_ALLERGY_REACTIONS) + "])[|, documented in {year}]."
    )


def _home_regimen(rng: random.Random, term: str) -> _Med:
    """A regimen a patient can take at home: not intravenous or nebulised when another exists."""
    home = [r for r in _DOSING[term] if set(r.routes) - {"IV", "NEB"}]
    reg = rng.choice(home or list(_DOSING[term]))
    routes = [r for r in reg.routes if r not in ("IV", "NEB")] or list(reg.routes)
    return _Med(term, rng.choice(reg.doses), rng.choice(routes), rng.choice(reg.freqs))


def _discharge(w: _Writer, p: _Patient, ids: _IdPlan, visit: date) -> tuple[list[_Line], str, str]:
    rng = w.rng
    eligible = [sc for sc in _ACUTE if _age(p, visit) >= sc.min_age and sc.sex in (None, p.sex)]
    eligible = eligible or [sc for sc in _ACUTE if sc.sex in (None, p.sex)]  # a young child
    weights = [
        sc.weight * (3 if sc.dx in p.problems or set(sc.secondary) & set(p.problems) else 1)
        for sc in eligible
    ]
    sc = rng.choices(eligible, weights=weights)[0]
    los = rng.randint(*sc.los)
    w.adm = visit - timedelta(days=los)
    dept = w.pick(sc.depts)
    entry = w.vocab[sc.dx]
    w.ctx["dx"] = lambda: w.mention(sc.dx)
    syms = [
        w.render(s) for s in rng.sample(sc.symptoms, k=min(len(sc.symptoms), rng.randint(1, 3)))
    ]
    hist_terms = [t for t in p.problems if t != sc.dx]
    rng.shuffle(hist_terms)
    hist: list[_Line] = [[w.mention(t)] for t in hist_terms[: rng.randint(1, 3)]]

    # Title block
    title: list[_Line] = []
    heading = w.pick(
        (
            "DISCHARGE SUMMARY",
            "Discharge summary",
            "EPICRISIS",
            "Discharge epicrisis",
            "DISCHARGE LETTER",
            "",
            f"{dept} - discharge summary",
            f"{dept.upper()}",
        )
    )
    if heading:
        title.append([heading])
    if w.chance(0.7):
        if w.chance(0.5):
            title.append([f"Department: {dept}"])
        a, d = w.fmt_date(w.adm), w.fmt_date(visit)
        title.append(
            [
                w.pick(
                    (
                        f"Admitted: {a}, discharged: {d}",
                        f"Hospital stay: {a} - {d} ({los} days)",
                        f"Date of admission: {a}",
                        f"Stay {a}-{d}",
                        f"Inpatient period {a} to {d}",
                    )
                )
            ]
        )
    title.extend(ids.header())

    # Reason for admission
    how = "[was admitted|presented to the emergency department|was referred by {pos} GP|was brought in by ambulance|was admitted via the ED|came to the ED]"
    when = "[| of {n:2-7} days' duration| for {n:2-5} days| since yesterday| that started {n:2-12} hours before admission| for about a week]"
    if hist and w.chance(0.7):
        opening = w.s(
            "{subj} [with a [background|history] of {hist}|known with {hist}|with known {hist}] "
            + how
            + " [with|because of|due to] {sym}"
            + when
            + ".",
            subj=ids.subject(),
            hist=_join(hist, rng),
            sym=_join(syms, rng),
        )
    else:
        opening = w.s(
            "{subj} " + how + " [with|because of|due to] {sym}" + when + ".",
            subj=ids.subject(),
            sym=_join(syms, rng),
        )
    reason = [opening]
    reason += w.steps(
        (
            "?[{pr} had [taken|used] {d:paracetamol} at home without [relief|effect]|Symptoms had gradually worsened despite rest|{pr} had been unwell for some days before|The GP had started {d:amoxicillin} {n:2-4} days earlier without improvement].",
            "?{living}.",
        ),
        p_optional=0.35,
    )
    sec_reason = w.section("reason", [w.para(reason)])

    # Diagnoses
    show_codes = w.chance(0.6)
    secondary_terms = [t for t in sc.secondary if w.chance(0.3)] + [
        t for t in p.problems if t != sc.dx and w.chance(0.5)
    ]
    seen: list[str] = []
    for t in secondary_terms:
        if t not in seen and t != sc.dx:
            seen.append(t)

    def dx_item(term: str) -> _Line:
        code = w.vocab[term].code
        return _clean([w.mention(term), f" ({code})" if show_codes else ""])

    dx_style = rng.randrange(3)
    if dx_style == 0:
        body = [
            _clean(
                [w.pick(("Main diagnosis: ", "Main: ", "Principal diagnosis: ")), *dx_item(sc.dx)]
            )
        ]
        if seen:
            body.append(
                _clean(
                    [
                        w.pick(
                            ("Secondary: ", "Comorbidities: ", "Other diagnoses: ", "Concomitant: ")
                        ),
                        *_join([dx_item(t) for t in seen], rng),
                    ]
                )
            )
        sec_dx = w.section("diagnoses", body, prose=False)
    elif dx_style == 1:
        sec_dx = w.section(
            "diagnoses", w.bullets([dx_item(sc.dx), *(dx_item(t) for t in seen)]), prose=False
        )
    else:
        line = [*_cap(dx_item(sc.dx)), "."]
        if seen:
            line += [
                w.pick((" Secondary: ", " Concomitant: ", " Also: ")),
                *_join([dx_item(t) for t in seen], rng),
                ".",
            ]
        sec_dx = w.section("diagnoses", [_clean(line)])

    # Hospital course. The admission vitals are drawn once: the course and the
    # admission examination, when both appear, must agree.
    adm_vitals = w.vitals(sc.vitals)
    course: list[_Line] = []
    if w.chance(0.7):
        course.append(w.s("[On admission|At presentation|In the ED|On arrival] {v}.", v=adm_vitals))
    if sc.labs and w.chance(0.8):
        course.append(
            w.s(
                "[Labs|Blood tests|Laboratory] [on admission|at presentation|initially]: {l}.",
                l=w.labs(sc.labs),
            )
        )
    course += w.steps(sc.course)
    generic = [
        "?[Regular|Home] medications were continued[| unchanged][| during the stay].",
        "?Thromboprophylaxis with {d:enoxaparin} {dose:enoxaparin} was given[| during the stay| while immobile].",
        "?{pr} was [seen|assessed] by the physiotherapist[| and mobilised independently| and walks with a walker| and was mobilised gradually].",
        "?[No falls|No pressure sores|No new complications] [occurred|were recorded] during the stay.",
        "?[Discussed with|Information was given to] {pos} [daughter|son|spouse|family] [by phone|at the bedside][| with the patient's consent].",
    ]
    if "type 2 diabetes mellitus" in p.problems or "type 1 diabetes mellitus" in p.problems:
        generic.append(
            "?Blood glucose was monitored [four times daily|before meals] and [ranged {f:5.5-7.5}-{f:11.0-16.5} mmol/L|was acceptable|required correction doses of {d:insulin aspart}]."
        )
    course += w.steps(generic, p_optional=0.3)
    course += ids.mention_sentence()
    if len(course) > 4 and w.chance(0.45):
        cut = rng.randint(2, len(course) - 2)
        course_body = [w.para(course[:cut]), w.para(course[cut:])]
    else:
        course_body = [w.para(course)]
    sec_course = w.section("course", course_body, prose=len(course_body) == 1)

    # Procedures performed
    procs = w.steps(sc.procs, p_optional=0.5)
    sec_procs = (
        w.section("procedures", w.bullets(procs), prose=False) if procs and w.chance(0.7) else []
    )

    # Labs on discharge
    sec_labs: list[_Line] = []
    if sc.labs and w.chance(0.4):
        specs = [f"{s.split(':')[0]}:{'n' if w.chance(0.7) else s.split(':')[1]}" for s in sc.labs]
        sec_labs = w.section(
            "labs_dc",
            [_clean([w.pick(("", "On discharge: ", "At discharge ")), w.labs(specs), "."])],
        )

    # Medications
    meds: list[tuple[_Med, str]] = []
    stopped: list[_Line] = []
    for med in p.meds:
        if w.chance(0.06):
            stopped.append(
                w.s(
                    "[Stopped|Discontinued|Paused]: {m} [due to|because of] {why}.",
                    m=[w.mention(med.term)],
                    why=w.pick(_STOP_REASONS),
                )
            )
            continue
        meds.append((med, w.pick(("", "", "", " (unchanged)", " - continue"))))
    have = {m.term for m, _ in meds}
    for term in sc.new_drugs:
        if term not in have and w.chance(0.8):
            meds.append(
                (
                    _home_regimen(rng, term),
                    w.pick((" (new)", " - NEW", " - started in hospital", " (new)", "")),
                )
            )
    if w.chance(0.3):
        rng.shuffle(meds)
    sec_meds = _meds_section(w, "meds_dc", meds, stopped)

    sec_allergy = w.section("allergies", [_allergy_line(w, p)]) if w.chance(0.45) else []
    sec_cond = (
        w.section(
            "condition",
            [
                w.s(
                    "[Discharged|{pr} was discharged] {dest} in [stable|good|satisfactory|improved] condition[|, afebrile|, pain controlled]."
                )
            ],
        )
        if w.chance(0.5)
        else []
    )

    follow = w.steps(sc.followup)
    follow += w.steps(
        (
            "?[Sick leave|Certificate of incapacity for work] until {date:"
            + str(rng.randint(5, 21))
            + "}.",
            "?Prescriptions [were sent electronically|are in the digital prescription system].",
            "?[Return to the emergency department|Seek medical attention|Call 112] if [symptoms worsen|fever returns|chest pain recurs|breathing gets worse].",
        ),
        p_optional=0.35,
    )
    follow += ids.contact()
    sec_follow = w.prose_or_list("followup", follow)
    sign = (
        [
            [
                w.pick(
                    (
                        "Electronically signed by the attending physician.",
                        "Signed: attending physician",
                        "Resident on behalf of the attending physician",
                        f"Department of {dept}",
                    )
                )
            ]
        ]
        if w.chance(0.35)
        else []
    )

    sec_exam = (
        w.section("exam_adm", [w.para([w.s("{v}.", v=adm_vitals), *_exam(w)])])
        if w.chance(0.4)
        else []
    )
    sec_social = w.section("social", [w.para(_social(w, p, visit))]) if w.chance(0.3) else []
    sec_consults: list[_Line] = []
    if w.chance(0.3):
        consults = [w.s(t) for t in rng.sample(_CONSULTS, k=rng.randint(1, 3))]
        sec_consults = w.prose_or_list("consults", consults)
    order = [
        sec_reason,
        _history_section(w, p, sc.dx) if w.chance(0.65) else [],
        sec_social,
        sec_exam,
        sec_dx,
        sec_course,
        sec_procs,
        sec_consults,
        sec_labs,
        sec_meds,
        sec_allergy,
        sec_cond,
        sec_follow,
        sign,
    ]
    if w.chance(0.35):
        order.insert(0, order.pop(4))  # diagnoses first, as many hospitals do
    return _assemble(w, title, order), entry.code, dept


def _procedure(w: _Writer, p: _Patient, ids: _IdPlan, visit: date) -> tuple[list[_Line], str, str]:
    rng = w.rng
    age = _age(p, visit)
    eligible = [pr for pr in _PROCS if age >= pr.min_age and pr.sex in (None, p.sex)]
    eligible = eligible or [pr for pr in _PROCS if pr.sex in (None, p.sex)]  # a young child
    weights = [
        pr.weight * (3 if any(t in p.problems for t, _ in pr.indications) else 1) for pr in eligible
    ]
    pr = rng.choices(eligible, weights=weights)[0]
    matching = [ind for ind in pr.indications if ind[0] in p.problems]
    ind_term, ind_template = (
        w.pick(matching) if matching and w.chance(0.7) else w.pick(pr.indications)
    )
    dept = w.pick(pr.depts)
    w.ctx["ind"] = lambda: w.mention(ind_term)

    title: list[_Line] = []
    style = rng.randrange(5)
    if style == 0:
        title.append(_clean([w.mention(pr.term, upper=True), w.pick((" REPORT", "", " - REPORT"))]))
    elif style == 1:
        title.append(
            _clean([w.pick(("Procedure note: ", "Procedure: ", "Report: ")), w.mention(pr.term)])
        )
    elif style == 2:
        title.append(
            [
                w.pick(
                    (
                        "PROCEDURE NOTE",
                        "Procedure report",
                        "OPERATIVE NOTE" if pr.kind == "surgery" else "PROCEDURE REPORT",
                        "Examination report",
                    )
                )
            ]
        )
    elif style == 3:
        title.append([f"{dept} - {w.pick(('procedure note', 'procedure report', 'report'))}"])
    meta = []
    if w.chance(0.7):
        meta.append(
            f"{w.pick(('Date', 'Date of procedure', 'Performed on', 'Examination date'))}: {w.fmt_date(visit)}"
        )
    if w.chance(0.4):
        meta.append(
            f"{w.pick(('Setting', 'Patient type'))}: {w.pick(('inpatient', 'outpatient', 'day case', 'elective', 'emergency'))}"
        )
    if w.chance(0.4) and pr.kind != "imaging":
        meta.append(
            f"{w.pick(('Operator', 'Performed by', 'Physician'))}: {w.pick(('consultant', 'consultant ' + dept.lower(), 'resident under supervision', 'specialist'))}"
        )
    title += [[m] for m in meta] if w.chance(0.6) else ([[" | ".join(meta)]] if meta else [])
    title += ids.header()

    ind = [w.s(ind_template + ".")]
    background = [t for t in p.problems if t != ind_term]
    if background and w.chance(0.4):
        ind.append(
            w.s(
                "[Background|Comorbidities|Known]: {h}.",
                h=_join([[w.mention(t)] for t in background[:3]], rng),
            )
        )
    ind += w.steps(
        (
            "?[Referred by|Referral from] [the family physician|{pos} GP|the ward|the outpatient clinic|the emergency department].",
        ),
        p_optional=0.45,
    )
    if pr.kind not in ("imaging", "test"):
        ind += w.steps(
            (
                "?[Written informed consent obtained|Informed consent signed|The procedure, risks and alternatives were explained and consent was obtained].",
            ),
            p_optional=0.5,
        )
    else:
        ind += w.steps(
            (
                "?[Comparison|Previous examinations]: [none available|{date:-"
                + str(rng.randint(30, 900))
                + "}|previous study from {year}].",
            ),
            p_optional=0.5,
        )
    anticoag = [
        m
        for m in p.meds
        if m.term
        in ("apixaban", "rivaroxaban", "warfarin", "dabigatran", "clopidogrel", "ticagrelor")
    ]
    if anticoag and pr.kind in ("endoscopy", "surgery", "bedside") and w.chance(0.7):
        med = w.pick(anticoag)
        ind.append(
            w.s(
                "{m} was [paused|held|withheld] {n:24-72} hours before the procedure.",
                m=[w.mention(med.term)],
            )
        )
    sec_ind = w.section("indication", [w.para(ind)])

    sec_an = (
        w.section("anesthesia", [w.s(w.pick(pr.anesthesia))])
        if pr.anesthesia and w.chance(0.85)
        else []
    )
    tech = w.steps(pr.technique, p_optional=0.6)
    if style >= 2 and w.chance(0.7):  # the title did not name the procedure
        tech.insert(
            0,
            w.s(
                "{p:"
                + pr.term
                + "}[ was performed| performed][| as planned| without difficulty| in the usual manner]."
            ),
        )
    if pr.kind not in ("imaging", "test") and w.chance(0.4):
        tech.insert(0, w.s("[Pre-procedure|Before the procedure|Baseline]: {v}.", v=w.vitals("")))
    if pr.kind not in ("imaging", "test") and w.chance(0.4):
        tech.append(
            w.s(
                "[Monitoring|Continuous monitoring] with [{p:ECG}, pulse oximetry and blood pressure|pulse oximetry][| throughout]; lowest SpO2 {n:90-97}%."
            )
        )
    if pr.kind == "imaging" and pr.term.startswith("CT") and w.chance(0.6):
        tech.append(
            w.s("[DLP|Radiation dose (DLP)] {n:380-1250} mGy·cm[|, CTDIvol {n:28-62} mGy].")
        )
    sec_tech = w.prose_or_list("technique", tech, 0.6)
    allowed = _FINDINGS_FOR.get((pr.term, ind_term))
    sets = [f for k, f in enumerate(pr.findings) if allowed is None or str(k) in allowed]
    chosen = w.pick(sets)
    # Steps marked "!" are recommendations that follow from these findings: they go to the plan.
    findings = w.steps([x for x in chosen if not x.startswith("!")], p_optional=0.6)
    follow_up = w.steps([x[1:] for x in chosen if x.startswith("!")])
    sec_find = w.prose_or_list("findings", findings)
    sec_spec = (
        w.section("specimens", [w.s(w.pick(pr.specimens))])
        if pr.specimens and w.chance(0.7)
        else []
    )
    sec_comp: list[_Line] = []
    if pr.kind not in ("imaging", "test"):
        comp = w.pick(
            (
                "None.",
                "No immediate complications.",
                "None immediate.",
                "No complications.",
                "[Minor bleeding|Minimal oozing], controlled [with compression|locally].",
                "Transient desaturation to {n:86-91}%, resolved with oxygen.",
                "[Vasovagal reaction|Transient hypotension], resolved [spontaneously|with fluids].",
            )
        )
        sec_comp = w.section("complications", [w.s(comp)])
    sec_impr: list[_Line] = []
    if w.chance(0.4):
        sec_impr = w.section(
            "impression",
            [
                w.s(
                    w.pick(
                        (
                            "As described above.",
                            "See findings.",
                            "Findings as above; to be correlated clinically.",
                            "Result discussed with the patient.",
                            "Findings as described; clinical question: {ind}.",
                            "Examination performed for {ind}; see findings above.",
                        )
                    )
                )
            ],
        )
    plan = follow_up + w.steps(pr.plan)
    if pr.kind not in ("imaging", "test"):
        plan += w.steps(
            (
                "?[Observation|Monitoring] for {n:1-4} hours after the procedure[| with vital signs every 30 minutes| in the recovery unit].",
                "?[Discharged home|Returned to the ward|Back to the day unit] [in good condition|accompanied by a relative|after recovery|when fully awake].",
            ),
            p_optional=0.45,
        )
    if anticoag and pr.kind in ("endoscopy", "surgery", "bedside") and w.chance(0.5):
        plan.append(
            w.s(
                "[Restart|Resume] {m} [the next day|after {n:24-48} hours|if there is no bleeding].",
                m=[w.mention(w.pick(anticoag).term)],
            )
        )
    plan += ids.mention_sentence() + ids.contact()
    sec_plan = w.prose_or_list("plan_proc", plan)
    order = [sec_ind, sec_an, sec_tech, sec_find, sec_spec, sec_comp, sec_impr, sec_plan]
    if w.chance(0.3):
        order.insert(4, order.pop(6))  # impression right after findings
    return _assemble(w, title, order), w.vocab[ind_term].code, dept


def _outpatient(w: _Writer, p: _Patient, ids: _IdPlan, visit: date) -> tuple[list[_Line], str, str]:
    rng = w.rng
    age = _age(p, visit)
    chronic_here = [pb for pb in _PROBLEMS if pb.dx in p.problems]
    if chronic_here and w.chance(0.7):
        pb = w.pick(chronic_here)
    else:
        eligible = [pb for pb in _PROBLEMS if age >= pb.min_age and pb.sex in (None, p.sex)]
        # A patient younger than every problem's minimum age (a small child) still
        # needs a visit reason: fall back to the problems open to their sex.
        eligible = eligible or [pb for pb in _PROBLEMS if pb.sex in (None, p.sex)]
        pb = rng.choices(eligible, weights=[x.weight for x in eligible])[0]
    dept = w.pick(pb.depts)
    w.ctx["dx"] = lambda: w.mention(pb.dx)
    own = [m for m in p.meds if m.term in pb.drugs]
    pmed = w.pick(own) if own else (_home_regimen(rng, w.pick(pb.drugs)) if pb.drugs else None)
    fresh = [t for t in pb.drugs if t not in {m.term for m in p.meds}]
    newdrug = w.pick(fresh) if fresh else None
    if pmed is not None:
        w.ctx["pmed"] = lambda: w.mention(pmed.term)
        w.ctx["pmed_dose"] = lambda: _higher_dose(w, pmed)
    if newdrug is not None:
        w.ctx["newdrug"] = lambda: w.mention(newdrug)
        new_med = _home_regimen(rng, newdrug)
        w.ctx["newdose"] = lambda: w.regimen_text(
            new_med.term, dose=new_med.dose, route=new_med.route, freq=new_med.freq
        )

    def usable(step: str) -> bool:
        return (pmed is not None or "{pmed" not in step) and (
            newdrug is not None or "{new" not in step
        )

    title: list[_Line] = []
    heading = w.pick(
        (
            "OUTPATIENT VISIT",
            "Outpatient clinic note",
            f"{dept} outpatient clinic",
            "Follow-up visit",
            "Consultation",
            "",
            f"{dept.upper()} CLINIC",
            "Clinic visit",
        )
    )
    if heading:
        title.append([heading])
    if w.chance(0.6):
        title.append([f"{w.pick(('Visit date', 'Date', 'Seen on'))}: {w.fmt_date(visit)}"])
    if w.chance(0.3):
        title.append(
            [
                f"{w.pick(('Visit type', 'Type'))}: {w.pick(('follow-up', 'first visit', 'control visit', 'acute visit', 'scheduled visit'))}"
            ]
        )
    title += ids.header()

    subj = []
    if "name_open" in ids.kinds or w.chance(0.25):
        subj.append(
            w.s(
                "{subj} [comes|attends|was seen|presents] [today|in clinic|for a scheduled visit|for a control visit].",
                subj=ids.subject(),
            )
        )
    subj += [
        w.s(s) if not s.startswith("?") else w.s(s[1:])
        for s in pb.complaints
        if usable(s) and (not s.startswith("?") or w.chance(0.6))
    ]
    others = [t for t in p.problems if t != pb.dx]
    if others and w.chance(0.35):
        subj.append(
            w.s(
                "[Also|In addition,] [known|followed for|has] {o}[|, stable| without new complaints].",
                o=_join([[w.mention(t)] for t in others[:2]], rng),
            )
        )
    sec_subj = w.section("subjective", [w.para(subj)])

    sec_hist = _history_section(w, p, pb.dx) if w.chance(0.35) else []
    sec_meds = _meds_section(w, "meds_now", [(m, "") for m in p.meds]) if w.chance(0.6) else []
    sec_all = w.section("allergies", [_allergy_line(w, p)]) if w.chance(0.25) else []
    sec_social = w.section("social", [w.para(_social(w, p, visit))]) if w.chance(0.3) else []

    obj = [w.s("{v}.", v=w.vitals(""))]
    if w.chance(0.5):
        obj.append(w.s(_EXAM_GENERAL[0]))
    obj += w.steps(pb.exam, p_optional=0.7)
    if w.chance(0.75):
        obj += [w.s(t) for t in rng.sample(_EXAM_SYSTEMS, k=rng.randint(1, 4))]
    # Vitals on a line of their own or leading the exam paragraph: both are common.
    obj_body = [w.para(obj)] if len(obj) == 1 or w.chance(0.6) else [obj[0], w.para(obj[1:])]
    sec_obj = w.section("objective", obj_body, prose=len(obj_body) == 1)
    tests = [w.s(s.lstrip("?")) for s in pb.tests if not s.startswith("?") or w.chance(0.5)]
    labs = []
    if pb.labs and w.chance(0.65):
        labs.append(
            w.s(
                "[|Latest results: |Blood tests {date:-"
                + str(rng.randint(2, 30))
                + "}: |Today: ]{l}.",
                l=w.labs(pb.labs),
            )
        )
    sec_labs = (
        w.section("investigations" if tests else "labs", [w.para(labs + tests)])
        if labs or tests
        else []
    )

    status = w.render(w.pick(pb.status))
    assess = [_clean([w.mention(pb.dx), w.pick((", ", " - ", " – ", ": ")), *status])]
    for t in others[: rng.randint(0, 2)]:
        assess.append(_clean([w.mention(t), w.pick(("", ", stable", " - stable", ", unchanged"))]))
    if len(assess) > 1 and w.chance(0.6):
        sec_assess = w.section("assessment", w.bullets(assess), prose=False)
    else:
        sec_assess = w.section("assessment", [_clean([*_cap(_join(assess, rng, conj=";")), "."])])

    # Exactly one medication decision (increase, start, continue...), so the plan never contradicts itself.
    plans = [s for s in pb.plans if usable(s)]
    med_actions = [s for s in plans if "{pmed" in s or "{new" in s or "{d:" in s]
    chosen = [w.pick(med_actions)] if med_actions else []
    chosen += [
        s for s in plans if s not in med_actions and (not s.startswith("?") or w.chance(0.5))
    ]
    plan_lines = [w.s(s.lstrip("?")) for s in chosen]
    plan_lines += w.steps(
        (
            "[Next visit|Follow-up|Control visit|Review] in {n:2-12} [weeks|months][| with blood tests| with fasting labs| or earlier if needed].",
            "?[The patient|{pr}] [agrees with|understands and agrees with|was informed about] the plan.",
            "?Prescription[s| renewals] [sent electronically|issued for {n:3-12} months].",
        )
    )
    plan_lines += ids.mention_sentence() + ids.contact()
    sec_plan = w.prose_or_list("plan", plan_lines)
    order = [
        sec_subj,
        sec_hist,
        sec_meds,
        sec_all,
        sec_social,
        sec_obj,
        sec_labs,
        sec_assess,
        sec_plan,
    ]
    if w.chance(0.25):
        order.insert(1, order.pop(2))  # medications before history
    return _assemble(w, title, order), w.vocab[pb.dx].code, dept


def _higher_dose(w: _Writer, med: _Med) -> str:
    """The next dose step up for ``med`` (or the same one at the top of the range)."""
    for reg in _DOSING[med.term]:
        if med.dose in reg.doses and med.route in reg.routes:
            k = reg.doses.index(med.dose)
            dose = reg.doses[min(k + 1, len(reg.doses) - 1)]
            return w.regimen_text(med.term, dose=dose, route=med.route, freq=med.freq)
    return w.regimen_text(med.term)


def _age(p: _Patient, on: date) -> int:
    return on.year - p.birth.year - ((on.month, on.day) < (p.birth.month, p.birth.day))


def _all_templates() -> Iterator[str]:
    """Every template string in the clinical tables (for the consistency check)."""

    def walk(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value.lstrip("!?")
        elif isinstance(value, tuple):
            for v in value:
                yield from walk(v)

    for table in (_PROBLEMS, _ACUTE, _PROCS):
        for item in table:
            for name in (
                "complaints",
                "exam",
                "tests",
                "plans",
                "status",
                "course",
                "procs",
                "followup",
                "technique",
                "findings",
                "plan",
                "anesthesia",
                "specimens",
            ):
                yield from walk(getattr(item, name, ()))
            if isinstance(item, _Proc):
                yield from (t for _, t in item.indications)
    yield from _EXAM_GENERAL
    yield from _EXAM_SYSTEMS
    yield from _CONSULTS


def check_knowledge() -> list[str]:
    """Problems in the clinical tables: unknown vocabulary terms, doses, labs or slots.

    Empty when all is well; the test suite runs it so a typo in a template
    fails a test instead of a demo run.
    """
    vocab = load_vocabulary()
    surfaces = {s: e for e in vocab.values() for s in e.synonyms}
    labels = {"d": "DRUG", "p": "PROCEDURE", "x": "DIAGNOSIS"}
    context = {
        "living",
        "dest",
        "dx",
        "ind",
        "pr",
        "pos",
        "obj",
        "man",
        "side",
        "year",
        "roman",
        "abcd",
        "abc",
        "sputum",
        "tscore",
        "age",
        "a",
        "pmed",
        "pmed_dose",
        "newdrug",
        "newdose",
    }
    problems: list[str] = []

    def visit(nodes: tuple[_Node, ...], template: str) -> None:
        for node in nodes:
            if isinstance(node, _Alt):
                for option in node.options:
                    visit(option, template)
            elif isinstance(node, _Slot):
                kind, arg = node.name, node.arg
                if kind.lower() in labels:
                    entry = vocab.get(arg) or surfaces.get(arg)
                    if entry is None:
                        problems.append(f"unknown term {arg!r} in {template!r}")
                    elif entry.label != labels[kind.lower()]:
                        problems.append(
                            f"{arg!r} is a {entry.label}, not a {labels[kind.lower()]}, in {template!r}"
                        )
                elif kind == "dose":
                    term, _, route = arg.partition("@")
                    if term not in _DOSING:
                        problems.append(f"no dosing for {term!r} in {template!r}")
                    elif route and not any(route in r.routes for r in _DOSING[term]):
                        problems.append(f"no {route} regimen for {term!r} in {template!r}")
                elif kind == "lab" and arg.split(":")[0] not in _LABS:
                    problems.append(f"unknown lab {arg!r} in {template!r}")
                elif kind not in ("dose", "lab", "n", "f", "adate", "date") and kind not in context:
                    problems.append(f"unknown slot {{{kind}}} in {template!r}")

    for template in _all_templates():
        try:
            visit(_parse(template), template)
        except ValueError as exc:
            problems.append(str(exc))
    for pb in _PROBLEMS:
        for term in (pb.dx, *pb.drugs):
            if term not in vocab:
                problems.append(f"unknown term {term!r} in the entry for {pb.dx!r}")
    for sc in _ACUTE:
        for term in (sc.dx, *sc.new_drugs, *sc.secondary):
            if term not in vocab:
                problems.append(f"unknown term {term!r} in the entry for {sc.dx!r}")
    for pr in _PROCS:
        for term in (pr.term, *(t for t, _ in pr.indications)):
            if term not in vocab:
                problems.append(f"unknown term {term!r} in the entry for {pr.term!r}")
        for _, template in pr.indications:
            if "{ind}" not in template:  # the note's diagnosis code must be mentioned
                problems.append(f"indication without {{ind}}: {template!r}")
    for term in (*_DOSING, *_ALLERGY_DRUGS, *(t for t, _, _ in _PAST_PROCS)):
        if term not in vocab:
            problems.append(f"unknown term {term!r} in a table")
    for entry in vocab.values():
        if entry.label == "DRUG" and entry.term not in _DOSING:
            problems.append(f"drug {entry.term!r} has no dosing")
    return problems


# --------------------------------------------------------------------------
# Patients and the note plan
# --------------------------------------------------------------------------

_FIRST_VISIT = date(2018, 1, 1)
_LAST_VISIT = date(2025, 12, 31)
_BIRTH_FIRST = date(1930, 1, 1)
_BIRTH_LAST = date(2005, 12, 31)


def _make_patients(rng: random.Random, count: int) -> list[_Patient]:
    used_codes: set[str] = set()
    used_mrns: set[str] = set()
    used_phones: set[str] = set()
    origins = [o for o, _ in _ORIGIN_WEIGHTS]
    origin_weights = [wt for _, wt in _ORIGIN_WEIGHTS]
    chronic = [pb for pb in _PROBLEMS if pb.chronic]
    patients = []
    for _ in range(count):
        female = rng.random() < 0.52
        origin = rng.choices(origins, weights=origin_weights)[0]
        fem, mal, fam = _NAMES[origin]
        if rng.random() < 0.15:  # mixed families: given name from another pool
            fem, mal, _ = _NAMES[rng.choice(origins)]
        pool = fem if female else mal
        given: tuple[str, ...] = (rng.choice(pool),)
        if rng.random() < 0.12:
            second = rng.choice(pool)
            if second != given[0]:
                given = (
                    (f"{given[0]}-{second}",)
                    if origin == "ee" and rng.random() < 0.5
                    else (given[0], second)
                )
        family = rng.choice(fam)
        birth = _BIRTH_FIRST + timedelta(days=rng.randrange((_BIRTH_LAST - _BIRTH_FIRST).days + 1))
        while True:
            code = make_isikukood(birth, female, rng.randint(1, 999))
            if code not in used_codes:
                used_codes.add(code)
                break
        while True:
            mrn = f"P{rng.randint(1, 999_999):06d}"
            if mrn not in used_mrns:
                used_mrns.add(mrn)
                break
        while True:
            phone = f"+372 5{rng.randint(0, 999):03d} {rng.randint(0, 9999):04d}"
            if phone not in used_phones:
                used_phones.add(phone)
                break
        town, lo, hi = rng.choices(_TOWNS, weights=_TOWN_WEIGHTS)[0]
        street = rng.choice(_STREET_ROOTS) + rng.choice(_STREET_TAILS)
        house = str(rng.randint(1, 140)) + (f"-{rng.randint(1, 60)}" if rng.random() < 0.45 else "")
        address = f"{street} {rng.choice(_STREET_TYPES)} {house}, {rng.randint(lo, hi)} {town}"

        age = 2022 - birth.year
        n_problems = rng.choice(
            (0, 0, 1, 1, 2) if age < 40 else (0, 1, 2, 2, 3) if age < 65 else (1, 2, 3, 3, 4, 5)
        )
        eligible = [
            pb
            for pb in chronic
            if age >= pb.min_age and pb.sex in (None, "female" if female else "male")
        ]
        problems: list[str] = []
        for _ in range(n_problems if eligible else 0):
            pb = rng.choices(eligible, weights=[x.weight for x in eligible])[0]
            if pb.dx not in problems:
                problems.append(pb.dx)
        meds: list[_Med] = []
        for dx in problems:
            pb = next(x for x in chronic if x.dx == dx)
            for term in rng.sample(pb.drugs, k=min(len(pb.drugs), 1 if rng.random() < 0.7 else 2)):
                if all(m.term != term for m in meds):
                    meds.append(_home_regimen(rng, term))
        past: list[tuple[str, int]] = []
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3)) if age >= 40 else rng.choice((0, 0, 0, 1))):
            term, sex, min_age = rng.choice(_PAST_PROCS)
            earliest = max(
                birth.year + min_age, 1990
            )  # done at a plausible age, before the notes start
            if (
                earliest <= 2017
                and sex in (None, "female" if female else "male")
                and all(t != term for t, _ in past)
            ):
                past.append((term, rng.randint(earliest, 2017)))
        allergy = rng.choice(_ALLERGY_DRUGS) if rng.random() < 0.15 else None
        patients.append(
            _Patient(
                mrn,
                given,
                family,
                female,
                birth,
                code,
                phone,
                address,
                town,
                tuple(problems),
                tuple(meds),
                tuple(past),
                allergy,
            )
        )
    return patients


def _plan_notes(
    rng: random.Random, notes: int, patients: list[_Patient]
) -> list[tuple[datetime, int, str]]:
    """(visit time, patient index, note type) for every note, in visit order."""
    owners = list(range(len(patients))) + [
        rng.randrange(len(patients)) for _ in range(notes - len(patients))
    ]
    rng.shuffle(owners)
    plan = []
    for owner in owners:
        p = patients[owner]
        adult = date(p.birth.year + 18, p.birth.month, min(p.birth.day, 28))
        first = max(_FIRST_VISIT, adult)
        day = first + timedelta(days=rng.randrange((_LAST_VISIT - first).days + 1))
        when = datetime(
            day.year, day.month, day.day, rng.randint(7, 19), rng.randint(0, 59), rng.randint(0, 59)
        )
        note_type = rng.choices(NOTE_TYPES, weights=(35, 30, 35))[0]
        plan.append((when, owner, note_type))
    plan.sort(key=lambda x: (x[0], x[1]))
    return plan


_BUILDERS: dict[str, Callable[[_Writer, _Patient, _IdPlan, date], tuple[list[_Line], str, str]]] = {
    "discharge_summary": _discharge,
    "procedure_note": _procedure,
    "outpatient_visit": _outpatient,
}


def _tidy_lines(lines: list[_Line]) -> list[_Line]:
    """No blank lines at either end and never two in a row."""
    out: list[_Line] = []
    for line in lines:
        line = _clean(line)
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def _render(lines: list[_Line]) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
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
                if isinstance(piece, _Ent):
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


def _generate(notes: int, seed: int) -> tuple[int, Iterator[_Note]]:
    """The patient count and a lazy stream of notes (lazy so a million notes fit in memory)."""
    rng = random.Random(seed)
    vocab = load_vocabulary()
    patients = _make_patients(rng, max(1, round(notes / 3)) if notes >= 3 else 1)
    plan = _plan_notes(rng, notes, patients)

    def stream() -> Iterator[_Note]:
        w = _Writer(rng, vocab)
        for k, (when, owner, note_type) in enumerate(plan, start=1):
            p = patients[owner]
            w.start_note(p, when.date())
            ids = _IdPlan(w, p, enabled=rng.random() < 0.25)
            lines, code, dept = _BUILDERS[note_type](w, p, ids, when.date())
            text, entities, in_text = _render(_tidy_lines(lines))
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
            yield _Note(f"N{k:06d}", p, note_type, dept, when, code, text, entities, meta + in_text)

    return len(patients), stream()


# --------------------------------------------------------------------------
# Writing the export
# --------------------------------------------------------------------------


def _csv_row(n: _Note) -> list[str]:
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


def _jsonl_obj(n: _Note) -> dict[str, Any]:
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


def _fhir_obj(n: _Note) -> dict[str, Any]:
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

    n_patients, stream = _generate(notes, seed)
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
