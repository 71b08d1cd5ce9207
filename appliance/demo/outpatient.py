"""Outpatient visits: a problem from ``problems.toml`` seen in clinic, in SOAP order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from appliance.demo.knowledge import EXAM_GENERAL, EXAM_SYSTEMS, PROBLEMS, Problem, home_regimen
from appliance.demo.patients import Patient
from appliance.demo.sections import (
    age_on,
    allergy_line,
    higher_dose,
    history_section,
    meds_section,
    social_lines,
)
from appliance.demo.template import Line, cap, clean, join_items
from appliance.demo.writer import IdPlan, Writer, assemble

__all__ = ["outpatient_visit"]


def outpatient_visit(
    w: Writer, p: Patient, ids: IdPlan, visit: date
) -> tuple[list[Line], str, str]:
    """An outpatient visit note of ``p`` on ``visit``: its lines, diagnosis code and department."""
    pb = _problem(w, p, visit)
    dept = w.pick(pb.depts)
    w.ctx["dx"] = lambda: w.mention(pb.dx)
    usable = _medication_context(w, p, pb)
    title = _title(w, ids, dept, visit)
    others = [t for t in p.problems if t != pb.dx]
    sec_subj = _subjective(w, ids, pb, others, usable)
    sec_hist = history_section(w, p, pb.dx) if w.chance(0.35) else []
    sec_meds = meds_section(w, "meds_now", [(m, "") for m in p.meds]) if w.chance(0.6) else []
    sec_all = w.section("allergies", [allergy_line(w, p)]) if w.chance(0.25) else []
    sec_social = w.section("social", [w.para(social_lines(w, p, visit))]) if w.chance(0.3) else []
    sec_obj = _objective(w, pb)
    sec_labs = _investigations(w, pb)
    sec_assess = _assessment(w, pb, others)
    sec_plan = _plan(w, ids, pb, usable)
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
    return assemble(w, title, order), w.vocab[pb.dx].code, dept


def _problem(w: Writer, p: Patient, visit: date) -> Problem:
    """The visit's problem: mostly one of the patient's own, else one that fits age and sex."""
    rng = w.rng
    age = age_on(p, visit)
    chronic_here = [pb for pb in PROBLEMS if pb.dx in p.problems]
    if chronic_here and w.chance(0.7):
        pb: Problem = w.pick(chronic_here)
        return pb
    eligible = [pb for pb in PROBLEMS if age >= pb.min_age and pb.sex in (None, p.sex)]
    # A patient younger than every problem's minimum age (a small child) still
    # needs a visit reason: fall back to the problems open to their sex.
    eligible = eligible or [pb for pb in PROBLEMS if pb.sex in (None, p.sex)]
    return rng.choices(eligible, weights=[x.weight for x in eligible])[0]


def _medication_context(w: Writer, p: Patient, pb: Problem) -> Callable[[str], bool]:
    """Set the {pmed}, {pmed_dose}, {newdrug} and {newdose} slots; return which steps can use them."""
    rng = w.rng
    own = [m for m in p.meds if m.term in pb.drugs]
    pmed = w.pick(own) if own else (home_regimen(rng, w.pick(pb.drugs)) if pb.drugs else None)
    fresh = [t for t in pb.drugs if t not in {m.term for m in p.meds}]
    newdrug = w.pick(fresh) if fresh else None
    if pmed is not None:
        w.ctx["pmed"] = lambda: w.mention(pmed.term)
        w.ctx["pmed_dose"] = lambda: higher_dose(w, pmed)
    if newdrug is not None:
        w.ctx["newdrug"] = lambda: w.mention(newdrug)
        new_med = home_regimen(rng, newdrug)
        w.ctx["newdose"] = lambda: w.regimen_text(
            new_med.term, dose=new_med.dose, route=new_med.route, freq=new_med.freq
        )

    def usable(step: str) -> bool:
        return (pmed is not None or "{pmed" not in step) and (
            newdrug is not None or "{new" not in step
        )

    return usable


def _title(w: Writer, ids: IdPlan, dept: str, visit: date) -> list[Line]:
    """Heading, visit date and type, then the identifiers the note repeats."""
    title: list[Line] = []
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
    return title


def _subjective(
    w: Writer, ids: IdPlan, pb: Problem, others: list[str], usable: Callable[[str], bool]
) -> list[Line]:
    """The subjective section: who attends, the problem's complaints, other known problems."""
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
    if others and w.chance(0.35):
        subj.append(
            w.s(
                "[Also|In addition,] [known|followed for|has] {o}[|, stable| without new complaints].",
                o=join_items([[w.mention(t)] for t in others[:2]], w.rng),
            )
        )
    return w.section("subjective", [w.para(subj)])


def _objective(w: Writer, pb: Problem) -> list[Line]:
    """Vitals and examination."""
    rng = w.rng
    obj = [w.s("{v}.", v=w.vitals(""))]
    if w.chance(0.5):
        obj.append(w.s(EXAM_GENERAL[0]))
    obj += w.steps(pb.exam, p_optional=0.7)
    if w.chance(0.75):
        obj += [w.s(t) for t in rng.sample(EXAM_SYSTEMS, k=rng.randint(1, 4))]
    # Vitals on a line of their own or leading the exam paragraph: both are common.
    obj_body = [w.para(obj)] if len(obj) == 1 or w.chance(0.6) else [obj[0], w.para(obj[1:])]
    return w.section("objective", obj_body, prose=len(obj_body) == 1)


def _investigations(w: Writer, pb: Problem) -> list[Line]:
    """Tests and recent lab results for the problem."""
    tests = [w.s(s.lstrip("?")) for s in pb.tests if not s.startswith("?") or w.chance(0.5)]
    labs = []
    if pb.labs and w.chance(0.65):
        labs.append(
            w.s(
                "[|Latest results: |Blood tests {date:-"
                + str(w.rng.randint(2, 30))
                + "}: |Today: ]{l}.",
                l=w.labs(pb.labs),
            )
        )
    if not labs and not tests:
        return []
    return w.section("investigations" if tests else "labs", [w.para(labs + tests)])


def _assessment(w: Writer, pb: Problem, others: list[str]) -> list[Line]:
    """The problem with its status, and some of the patient's other problems."""
    rng = w.rng
    status = w.render(w.pick(pb.status))
    assess = [clean([w.mention(pb.dx), w.pick((", ", " - ", " – ", ": ")), *status])]
    for t in others[: rng.randint(0, 2)]:
        assess.append(clean([w.mention(t), w.pick(("", ", stable", " - stable", ", unchanged"))]))
    if len(assess) > 1 and w.chance(0.6):
        return w.section("assessment", w.bullets(assess), prose=False)
    return w.section("assessment", [clean([*cap(join_items(assess, rng, conj=";")), "."])])


def _plan(w: Writer, ids: IdPlan, pb: Problem, usable: Callable[[str], bool]) -> list[Line]:
    """The plan: exactly one medication decision, the problem's other advice, the next visit."""
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
    return w.prose_or_list("plan", plan_lines)
