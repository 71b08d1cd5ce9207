"""Sections that several note types share: examination, social and medical history,
medication lists and allergies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from appliance.demo.knowledge import (
    ALLERGY_REACTIONS,
    DOSING,
    EXAM_GENERAL,
    EXAM_SYSTEMS,
    JOBS,
    Med,
)
from appliance.demo.patients import Patient
from appliance.demo.template import Line, cap, clean, join_items
from appliance.demo.writer import Writer

__all__ = [
    "age_on",
    "allergy_line",
    "exam_findings",
    "higher_dose",
    "history_items",
    "history_section",
    "meds_section",
    "social_lines",
]


def exam_findings(w: Writer, n_max: int = 4) -> list[Line]:
    out = [w.s(EXAM_GENERAL[0])] if w.chance(0.6) else []
    return out + [w.s(t) for t in w.rng.sample(EXAM_SYSTEMS, k=w.rng.randint(1, n_max))]


def social_lines(w: Writer, p: Patient, visit: date) -> list[Line]:
    age = age_on(p, visit)
    job = w.pick(JOBS)
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


def history_items(w: Writer, p: Patient, skip: str = "") -> list[Line]:
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
    return [clean(i) for i in items]


def history_section(w: Writer, p: Patient, skip: str = "") -> list[Line]:
    items = history_items(w, p, skip)
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
    return w.section("history", [clean([*cap(join_items(items, w.rng)), "."])])


def meds_section(
    w: Writer, key: str, meds: Sequence[tuple[Med, str]], extra: Sequence[Line] = ()
) -> list[Line]:
    if not meds:
        body = [w.s(w.pick(("No regular medications.", "None.", "No regular medication.")))]
        return w.section(key, [*body, *extra])
    items = []
    for med, note in meds:
        line = w.med_line(med)
        if note:
            line = [*line, note]
        items.append(clean(line))
    if w.chance(0.7):
        return [*w.section(key, w.bullets(items), prose=False), *extra]
    lead = w.pick(
        ("Continue ", "", "Discharged on ")
        if key == "meds_dc"
        else ("Takes ", "", "Uses ", "Current: ")
    )
    return w.section(key, [clean([*cap([lead, *join_items(items, w.rng)]), "."]), *extra])


def allergy_line(w: Writer, p: Patient) -> Line:
    if p.allergy is None:
        return w.s(
            w.pick(("No known drug allergies.", "NKDA.", "None known.", "No known allergies."))
        )
    return w.s(
        "{d:" + p.allergy + "} ([" + "|".join(ALLERGY_REACTIONS) + "])[|, documented in {year}]."
    )


def higher_dose(w: Writer, med: Med) -> str:
    """The next dose step up for ``med`` (or the same one at the top of the range)."""
    for reg in DOSING[med.term]:
        if med.dose in reg.doses and med.route in reg.routes:
            k = reg.doses.index(med.dose)
            dose = reg.doses[min(k + 1, len(reg.doses) - 1)]
            return w.regimen_text(med.term, dose=dose, route=med.route, freq=med.freq)
    return w.regimen_text(med.term)


def age_on(p: Patient, on: date) -> int:
    """The patient's age in whole years on ``on``."""
    return on.year - p.birth.year - ((on.month, on.day) < (p.birth.month, p.birth.day))
