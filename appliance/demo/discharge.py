"""Discharge summaries: an admission from ``admissions.toml`` written up at discharge."""

from __future__ import annotations

import random
from datetime import date, timedelta

from appliance.demo.knowledge import (
    ADMISSIONS,
    CONSULTS,
    STOP_REASONS,
    Admission,
    Med,
    home_regimen,
)
from appliance.demo.patients import Patient
from appliance.demo.sections import (
    age_on,
    allergy_line,
    exam_findings,
    history_section,
    meds_section,
    social_lines,
)
from appliance.demo.template import Line, cap, clean, join_items
from appliance.demo.writer import IdPlan, Writer, assemble

__all__ = ["discharge_summary"]


def discharge_summary(
    w: Writer, p: Patient, ids: IdPlan, visit: date
) -> tuple[list[Line], str, str]:
    """A discharge summary of ``p`` on ``visit``: its lines, diagnosis code and department."""
    rng = w.rng
    sc, los, dept = _admission(w, p, visit)
    entry = w.vocab[sc.dx]
    w.ctx["dx"] = lambda: w.mention(sc.dx)
    syms = [
        w.render(s) for s in rng.sample(sc.symptoms, k=min(len(sc.symptoms), rng.randint(1, 3)))
    ]
    hist_terms = [t for t in p.problems if t != sc.dx]
    rng.shuffle(hist_terms)
    hist: list[Line] = [[w.mention(t)] for t in hist_terms[: rng.randint(1, 3)]]

    title = _title(w, ids, dept, los, visit)
    sec_reason = _reason(w, ids, hist, syms)
    sec_dx = _diagnoses(w, p, sc)
    # The admission vitals are drawn once: the course and the admission
    # examination, when both appear, must agree.
    adm_vitals = w.vitals(sc.vitals)
    sec_course = _course(w, p, ids, sc, adm_vitals)

    # Procedures performed
    procs = w.steps(sc.procs, p_optional=0.5)
    sec_procs = (
        w.section("procedures", w.bullets(procs), prose=False) if procs and w.chance(0.7) else []
    )

    # Labs on discharge
    sec_labs: list[Line] = []
    if sc.labs and w.chance(0.4):
        specs = [f"{s.split(':')[0]}:{'n' if w.chance(0.7) else s.split(':')[1]}" for s in sc.labs]
        sec_labs = w.section(
            "labs_dc",
            [clean([w.pick(("", "On discharge: ", "At discharge ")), w.labs(specs), "."])],
        )

    sec_meds = _medications(w, p, sc)
    sec_allergy = w.section("allergies", [allergy_line(w, p)]) if w.chance(0.45) else []
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
    sec_follow = _followup(w, ids, sc)
    sign = _signature(w, dept)

    sec_exam = (
        w.section("exam_adm", [w.para([w.s("{v}.", v=adm_vitals), *exam_findings(w)])])
        if w.chance(0.4)
        else []
    )
    sec_social = w.section("social", [w.para(social_lines(w, p, visit))]) if w.chance(0.3) else []
    sec_consults: list[Line] = []
    if w.chance(0.3):
        consults = [w.s(t) for t in rng.sample(CONSULTS, k=rng.randint(1, 3))]
        sec_consults = w.prose_or_list("consults", consults)
    order = [
        sec_reason,
        history_section(w, p, sc.dx) if w.chance(0.65) else [],
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
    return assemble(w, title, order), entry.code, dept


def _admission(w: Writer, p: Patient, visit: date) -> tuple[Admission, int, str]:
    """The admission (likelier when it fits the patient's problems), its length and department."""
    rng = w.rng
    eligible = [
        sc for sc in ADMISSIONS if age_on(p, visit) >= sc.min_age and sc.sex in (None, p.sex)
    ]
    eligible = eligible or [sc for sc in ADMISSIONS if sc.sex in (None, p.sex)]  # a young child
    weights = [
        sc.weight * (3 if sc.dx in p.problems or set(sc.secondary) & set(p.problems) else 1)
        for sc in eligible
    ]
    sc = rng.choices(eligible, weights=weights)[0]
    los = rng.randint(*sc.los)
    w.adm = visit - timedelta(days=los)
    dept = w.pick(sc.depts)
    return sc, los, dept


def _title(w: Writer, ids: IdPlan, dept: str, los: int, visit: date) -> list[Line]:
    """Heading, department and stay dates, then the identifiers the note repeats."""
    title: list[Line] = []
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
    return title


def _reason(w: Writer, ids: IdPlan, hist: list[Line], syms: list[Line]) -> list[Line]:
    """The reason for admission: who came in how, with what, since when."""
    rng = w.rng
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
            hist=join_items(hist, rng),
            sym=join_items(syms, rng),
        )
    else:
        opening = w.s(
            "{subj} " + how + " [with|because of|due to] {sym}" + when + ".",
            subj=ids.subject(),
            sym=join_items(syms, rng),
        )
    reason = [opening]
    reason += w.steps(
        (
            "?[{pr} had [taken|used] {d:paracetamol} at home without [relief|effect]|Symptoms had gradually worsened despite rest|{pr} had been unwell for some days before|The GP had started {d:amoxicillin} {n:2-4} days earlier without improvement].",
            "?{living}.",
        ),
        p_optional=0.35,
    )
    return w.section("reason", [w.para(reason)])


def _diagnoses(w: Writer, p: Patient, sc: Admission) -> list[Line]:
    """Main and secondary diagnoses, with or without their codes, in one of three layouts."""
    rng = w.rng
    show_codes = w.chance(0.6)
    secondary_terms = [t for t in sc.secondary if w.chance(0.3)] + [
        t for t in p.problems if t != sc.dx and w.chance(0.5)
    ]
    seen: list[str] = []
    for t in secondary_terms:
        if t not in seen and t != sc.dx:
            seen.append(t)

    def dx_item(term: str) -> Line:
        code = w.vocab[term].code
        return clean([w.mention(term), f" ({code})" if show_codes else ""])

    dx_style = rng.randrange(3)
    if dx_style == 0:
        body = [
            clean(
                [w.pick(("Main diagnosis: ", "Main: ", "Principal diagnosis: ")), *dx_item(sc.dx)]
            )
        ]
        if seen:
            body.append(
                clean(
                    [
                        w.pick(
                            ("Secondary: ", "Comorbidities: ", "Other diagnoses: ", "Concomitant: ")
                        ),
                        *join_items([dx_item(t) for t in seen], rng),
                    ]
                )
            )
        return w.section("diagnoses", body, prose=False)
    if dx_style == 1:
        return w.section(
            "diagnoses", w.bullets([dx_item(sc.dx), *(dx_item(t) for t in seen)]), prose=False
        )
    line = [*cap(dx_item(sc.dx)), "."]
    if seen:
        line += [
            w.pick((" Secondary: ", " Concomitant: ", " Also: ")),
            *join_items([dx_item(t) for t in seen], rng),
            ".",
        ]
    return w.section("diagnoses", [clean(line)])


def _course(w: Writer, p: Patient, ids: IdPlan, sc: Admission, adm_vitals: str) -> list[Line]:
    """The hospital course: admission vitals and labs, the admission's course, routine care."""
    rng = w.rng
    course: list[Line] = []
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
    return w.section("course", course_body, prose=len(course_body) == 1)


def _medications(w: Writer, p: Patient, sc: Admission) -> list[Line]:
    """Medications on discharge: the regular ones (a few stopped) and those started in hospital."""
    rng: random.Random = w.rng
    meds: list[tuple[Med, str]] = []
    stopped: list[Line] = []
    for med in p.meds:
        if w.chance(0.06):
            stopped.append(
                w.s(
                    "[Stopped|Discontinued|Paused]: {m} [due to|because of] {why}.",
                    m=[w.mention(med.term)],
                    why=w.pick(STOP_REASONS),
                )
            )
            continue
        meds.append((med, w.pick(("", "", "", " (unchanged)", " - continue"))))
    have = {m.term for m, _ in meds}
    for term in sc.new_drugs:
        if term not in have and w.chance(0.8):
            meds.append(
                (
                    home_regimen(rng, term),
                    w.pick((" (new)", " - NEW", " - started in hospital", " (new)", "")),
                )
            )
    if w.chance(0.3):
        rng.shuffle(meds)
    return meds_section(w, "meds_dc", meds, stopped)


def _followup(w: Writer, ids: IdPlan, sc: Admission) -> list[Line]:
    """Follow-up: the admission's own, sick leave, prescriptions, when to come back."""
    follow = w.steps(sc.followup)
    follow += w.steps(
        (
            "?[Sick leave|Certificate of incapacity for work] until {date:"
            + str(w.rng.randint(5, 21))
            + "}.",
            "?Prescriptions [were sent electronically|are in the digital prescription system].",
            "?[Return to the emergency department|Seek medical attention|Call 112] if [symptoms worsen|fever returns|chest pain recurs|breathing gets worse].",
        ),
        p_optional=0.35,
    )
    follow += ids.contact()
    return w.prose_or_list("followup", follow)


def _signature(w: Writer, dept: str) -> list[Line]:
    """A signature line now and then."""
    if not w.chance(0.35):
        return []
    return [
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
