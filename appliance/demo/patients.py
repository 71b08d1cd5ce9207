"""Fake patients and the plan of notes: who is seen when, for which kind of note.

Patients are fake: mixed Estonian, Finnish, Swedish and English names, a
checksum-valid Estonian isikukood matching birth date and sex, a +372 mobile
number and an invented street in a real Estonian town.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from appliance.demo.knowledge import (
    ALLERGY_DRUGS,
    NAMES,
    ORIGIN_WEIGHTS,
    PAST_PROCS,
    PROBLEMS,
    STREET_ROOTS,
    STREET_TAILS,
    STREET_TYPES,
    TOWN_WEIGHTS,
    TOWNS,
    Med,
    home_regimen,
)
from appliance.identifiers.national_ids import make_isikukood

__all__ = ["NOTE_TYPES", "Patient", "make_patients", "plan_notes"]

NOTE_TYPES = ("discharge_summary", "procedure_note", "outpatient_visit")


@dataclass(frozen=True)
class Patient:
    """A fake patient: identifiers, and the clinical background every note about them shares."""

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
    meds: tuple[Med, ...]
    past_procs: tuple[tuple[str, int], ...]  # (procedure term, year)
    allergy: str | None  # a drug term, or None for no known allergies

    @property
    def name(self) -> str:
        return " ".join((*self.given, self.family))

    @property
    def sex(self) -> str:
        return "female" if self.female else "male"


_FIRST_VISIT = date(2018, 1, 1)
_LAST_VISIT = date(2025, 12, 31)
_BIRTH_FIRST = date(1930, 1, 1)
_BIRTH_LAST = date(2005, 12, 31)


def make_patients(rng: random.Random, count: int) -> list[Patient]:
    used_codes: set[str] = set()
    used_mrns: set[str] = set()
    used_phones: set[str] = set()
    origins = [o for o, _ in ORIGIN_WEIGHTS]
    origin_weights = [wt for _, wt in ORIGIN_WEIGHTS]
    chronic = [pb for pb in PROBLEMS if pb.chronic]
    patients = []
    for _ in range(count):
        female = rng.random() < 0.52
        origin = rng.choices(origins, weights=origin_weights)[0]
        fem, mal, fam = NAMES[origin]
        if rng.random() < 0.15:  # mixed families: given name from another pool
            fem, mal, _ = NAMES[rng.choice(origins)]
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
        town, lo, hi = rng.choices(TOWNS, weights=TOWN_WEIGHTS)[0]
        street = rng.choice(STREET_ROOTS) + rng.choice(STREET_TAILS)
        house = str(rng.randint(1, 140)) + (f"-{rng.randint(1, 60)}" if rng.random() < 0.45 else "")
        address = f"{street} {rng.choice(STREET_TYPES)} {house}, {rng.randint(lo, hi)} {town}"

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
        meds: list[Med] = []
        for dx in problems:
            pb = next(x for x in chronic if x.dx == dx)
            for term in rng.sample(pb.drugs, k=min(len(pb.drugs), 1 if rng.random() < 0.7 else 2)):
                if all(m.term != term for m in meds):
                    meds.append(home_regimen(rng, term))
        past: list[tuple[str, int]] = []
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3)) if age >= 40 else rng.choice((0, 0, 0, 1))):
            term, sex, min_age = rng.choice(PAST_PROCS)
            earliest = max(
                birth.year + min_age, 1990
            )  # done at a plausible age, before the notes start
            if (
                earliest <= 2017
                and sex in (None, "female" if female else "male")
                and all(t != term for t, _ in past)
            ):
                past.append((term, rng.randint(earliest, 2017)))
        allergy = rng.choice(ALLERGY_DRUGS) if rng.random() < 0.15 else None
        patients.append(
            Patient(
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


def plan_notes(
    rng: random.Random, notes: int, patients: list[Patient]
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
