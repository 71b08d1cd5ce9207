"""The demo's clinical knowledge and phrase tables, read from ``data/``.

    problems.toml         conditions of the outpatient clinic (outpatient visits, problem lists)
    admissions.toml       admissions (discharge summaries)
    procedure_types.toml  procedures (procedure notes)
    dosing.tsv            regimens per drug (codes of routes and frequencies)
    labs.toml             lab tests and their value ranges
    phrases.toml          route and frequency surface forms, section titles, exam findings...
    people.toml           name pools, towns, streets, past procedures

Templates in these tables: ``[a|b]`` alternatives, ``{d:/p:/x:term}``
mentions, ``{dose:term}`` a regimen, ``{n:a-b}`` / ``{f:a.b-c.d}`` numbers,
``{lab:key:state}``, and per-note context slots (``{dx}``, ``{pr}``,
``{pos}``, ``{age}``, ``{side}``, ``{pmed}``, ...). A step starting with "?"
is optional. ``check_knowledge`` finds typos in all of them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from appliance.demo.data import read_toml, read_tsv, tuples
from appliance.demo.template import Alt, Node, Slot, parse
from appliance.demo.vocabulary import load_vocabulary

__all__ = [
    "ADMISSIONS",
    "ALLERGY_DRUGS",
    "ALLERGY_REACTIONS",
    "BULLETS",
    "CONSULTS",
    "DOSING",
    "EXAM_GENERAL",
    "EXAM_SYSTEMS",
    "FINDINGS_FOR",
    "FREQS",
    "HEADERS",
    "JOBS",
    "LABS",
    "MONTHS",
    "NAMES",
    "ORIGIN_WEIGHTS",
    "PAST_PROCS",
    "PROBLEMS",
    "PROCEDURE_TYPES",
    "ROUTES",
    "STOP_REASONS",
    "STREET_ROOTS",
    "STREET_TAILS",
    "STREET_TYPES",
    "TOWNS",
    "TOWN_WEIGHTS",
    "Admission",
    "Lab",
    "Med",
    "Problem",
    "ProcedureType",
    "Regimen",
    "check_knowledge",
    "home_regimen",
]


@dataclass(frozen=True)
class Regimen:
    """One way a drug is given: the doses, routes and frequencies that go together."""

    doses: tuple[str, ...]
    routes: tuple[str, ...]
    freqs: tuple[str, ...]


@dataclass(frozen=True)
class Med:
    """A patient's regular medication: fixed regimen, surface forms vary per note."""

    term: str
    dose: str
    route: str
    freq: str


Range: TypeAlias = tuple[float, float] | None


@dataclass(frozen=True)
class Lab:
    """A lab test: printed names and units, value ranges and decimals."""

    names: tuple[str, ...]
    units: tuple[str, ...]
    normal: tuple[float, float]
    high: Range
    low: Range
    decimals: int


@dataclass(frozen=True)
class Problem:
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


@dataclass(frozen=True)
class Admission:
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


@dataclass(frozen=True)
class ProcedureType:
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


# --------------------------------------------------------------------------
# Loading the tables
# --------------------------------------------------------------------------


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


def _load_dosing() -> dict[str, tuple[Regimen, ...]]:
    dosing: dict[str, list[Regimen]] = {}
    for row in read_tsv("dosing.tsv", ("term", "doses", "routes", "frequencies")):
        regimen = Regimen(
            tuple(row["doses"].split("|")),
            tuple(row["routes"].split("|")),
            tuple(row["frequencies"].split("|")),
        )
        dosing.setdefault(row["term"], []).append(regimen)
    return {term: tuple(regs) for term, regs in dosing.items()}


def _load_labs() -> dict[str, Lab]:
    labs = {}
    for key, lab in read_toml("labs.toml").items():
        high, low = lab.get("high"), lab.get("low")
        labs[key] = Lab(
            _strings(lab["names"]),
            _strings(lab["units"]),
            tuples(lab["normal"]),
            tuples(high) if high is not None else None,
            tuples(low) if low is not None else None,
            lab["decimals"],
        )
    return labs


def _load_procedure_types() -> tuple[tuple[ProcedureType, ...], dict[tuple[str, str], str]]:
    procs, findings_for = [], {}
    for row in read_toml("procedure_types.toml")["procedure"]:
        fields = {k: tuples(v) for k, v in row.items() if k != "findings_for"}
        proc = ProcedureType(**fields)
        procs.append(proc)
        for dx, sets in row.get("findings_for", {}).items():
            findings_for[(proc.term, dx)] = sets
    return tuple(procs), findings_for


DOSING = _load_dosing()
LABS = _load_labs()
PROBLEMS: tuple[Problem, ...] = tuple(
    Problem(**{k: tuples(v) for k, v in row.items()})
    for row in read_toml("problems.toml")["problem"]
)
ADMISSIONS: tuple[Admission, ...] = tuple(
    Admission(**{k: tuples(v) for k, v in row.items()})
    for row in read_toml("admissions.toml")["admission"]
)
# FINDINGS_FOR: which finding sets (by index) fit which (procedure, indication);
# unlisted pairs may use any set.
PROCEDURE_TYPES, FINDINGS_FOR = _load_procedure_types()

_PHRASES = read_toml("phrases.toml")
ROUTES: dict[str, tuple[str, ...]] = {k: _strings(v) for k, v in _PHRASES["routes"].items()}
FREQS: dict[str, tuple[str, ...]] = {k: _strings(v) for k, v in _PHRASES["frequencies"].items()}
HEADERS: dict[str, tuple[str, ...]] = {k: _strings(v) for k, v in _PHRASES["headers"].items()}
MONTHS = _strings(_PHRASES["months"])
BULLETS = _strings(_PHRASES["bullets"])  # "#" means numbered
EXAM_GENERAL = _strings(_PHRASES["exam_general"])
EXAM_SYSTEMS = _strings(_PHRASES["exam_systems"])
CONSULTS = _strings(_PHRASES["consults"])
JOBS = _strings(_PHRASES["jobs"])
STOP_REASONS = _strings(_PHRASES["stop_reasons"])
ALLERGY_DRUGS = _strings(_PHRASES["allergy_drugs"])
ALLERGY_REACTIONS = _strings(_PHRASES["allergy_reactions"])

_PEOPLE = read_toml("people.toml")
# origin: female given names, male given names, family names.
NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    origin: (
        tuple(pools["female"].split()),
        tuple(pools["male"].split()),
        tuple(pools["family"].split()),
    )
    for origin, pools in _PEOPLE["names"].items()
}
# Most patients of an Estonian hospital have Estonian names; the rest are mixed in.
ORIGIN_WEIGHTS: tuple[tuple[str, float], ...] = tuple(_PEOPLE["origins"].items())
# Real Estonian towns with their postal code ranges; the streets are invented.
TOWNS: tuple[tuple[str, int, int], ...] = tuple((t[0], t[1], t[2]) for t in _PEOPLE["towns"])
TOWN_WEIGHTS: tuple[int, ...] = tuple(t[3] for t in _PEOPLE["towns"])
STREET_ROOTS = _strings(_PEOPLE["street_roots"])
STREET_TAILS = _strings(_PEOPLE["street_tails"])
STREET_TYPES = _strings(_PEOPLE["street_types"])
# Procedures a patient may have had in the past (history sections):
# (term, sex or None, youngest age at which it appears in a history).
PAST_PROCS: tuple[tuple[str, str | None, int], ...] = tuple(
    (p["term"], p.get("sex"), p["min_age"]) for p in _PEOPLE["past_procedure"]
)


def home_regimen(rng: random.Random, term: str) -> Med:
    """A regimen a patient can take at home: not intravenous or nebulised when another exists."""
    home = [r for r in DOSING[term] if set(r.routes) - {"IV", "NEB"}]
    reg = rng.choice(home or list(DOSING[term]))
    routes = [r for r in reg.routes if r not in ("IV", "NEB")] or list(reg.routes)
    return Med(term, rng.choice(reg.doses), rng.choice(routes), rng.choice(reg.freqs))


# --------------------------------------------------------------------------
# Consistency check
# --------------------------------------------------------------------------


def all_templates() -> Iterator[str]:
    """Every template string in the clinical tables (for the consistency check)."""

    def walk(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value.lstrip("!?")
        elif isinstance(value, tuple):
            for v in value:
                yield from walk(v)

    for table in (PROBLEMS, ADMISSIONS, PROCEDURE_TYPES):
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
            if isinstance(item, ProcedureType):
                yield from (t for _, t in item.indications)
    yield from EXAM_GENERAL
    yield from EXAM_SYSTEMS
    yield from CONSULTS


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

    def visit(nodes: tuple[Node, ...], template: str) -> None:
        for node in nodes:
            if isinstance(node, Alt):
                for option in node.options:
                    visit(option, template)
            elif isinstance(node, Slot):
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
                    if term not in DOSING:
                        problems.append(f"no dosing for {term!r} in {template!r}")
                    elif route and not any(route in r.routes for r in DOSING[term]):
                        problems.append(f"no {route} regimen for {term!r} in {template!r}")
                elif kind == "lab" and arg.split(":")[0] not in LABS:
                    problems.append(f"unknown lab {arg!r} in {template!r}")
                elif kind not in ("dose", "lab", "n", "f", "adate", "date") and kind not in context:
                    problems.append(f"unknown slot {{{kind}}} in {template!r}")

    for template in all_templates():
        try:
            visit(parse(template), template)
        except ValueError as exc:
            problems.append(str(exc))
    for pb in PROBLEMS:
        for term in (pb.dx, *pb.drugs):
            if term not in vocab:
                problems.append(f"unknown term {term!r} in the entry for {pb.dx!r}")
    for sc in ADMISSIONS:
        for term in (sc.dx, *sc.new_drugs, *sc.secondary):
            if term not in vocab:
                problems.append(f"unknown term {term!r} in the entry for {sc.dx!r}")
    for pr in PROCEDURE_TYPES:
        for term in (pr.term, *(t for t, _ in pr.indications)):
            if term not in vocab:
                problems.append(f"unknown term {term!r} in the entry for {pr.term!r}")
        for _, template in pr.indications:
            if "{ind}" not in template:  # the note's diagnosis code must be mentioned
                problems.append(f"indication without {{ind}}: {template!r}")
    for term in (*DOSING, *ALLERGY_DRUGS, *(t for t, _, _ in PAST_PROCS)):
        if term not in vocab:
            problems.append(f"unknown term {term!r} in a table")
    for entry in vocab.values():
        if entry.label == "DRUG" and entry.term not in DOSING:
            problems.append(f"drug {entry.term!r} has no dosing")
    return problems
