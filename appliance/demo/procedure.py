"""Procedure notes: a procedure from ``procedure_types.toml`` with its indication and result."""

from __future__ import annotations

from datetime import date

from appliance.demo.knowledge import FINDINGS_FOR, PROCEDURE_TYPES, Med, ProcedureType
from appliance.demo.patients import Patient
from appliance.demo.sections import age_on
from appliance.demo.template import Line, clean, join_items
from appliance.demo.writer import IdPlan, Writer, assemble

__all__ = ["procedure_note"]

# Medications paused around invasive procedures.
_ANTITHROMBOTICS = (
    "apixaban",
    "rivaroxaban",
    "warfarin",
    "dabigatran",
    "clopidogrel",
    "ticagrelor",
)


def procedure_note(w: Writer, p: Patient, ids: IdPlan, visit: date) -> tuple[list[Line], str, str]:
    """A procedure note of ``p`` on ``visit``: its lines, diagnosis code and department."""
    pr, ind_term, ind_template, dept = _choose(w, p, visit)
    title, style = _title(w, ids, pr, dept, visit)
    anticoag = [m for m in p.meds if m.term in _ANTITHROMBOTICS]
    sec_ind = _indication(w, p, pr, ind_term, ind_template, anticoag)
    sec_an = (
        w.section("anesthesia", [w.s(w.pick(pr.anesthesia))])
        if pr.anesthesia and w.chance(0.85)
        else []
    )
    sec_tech = _technique(w, pr, style)
    allowed = FINDINGS_FOR.get((pr.term, ind_term))
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
    sec_comp = _complications(w, pr)
    sec_impr = _impression(w)
    sec_plan = _plan(w, ids, pr, follow_up, anticoag)
    order = [sec_ind, sec_an, sec_tech, sec_find, sec_spec, sec_comp, sec_impr, sec_plan]
    if w.chance(0.3):
        order.insert(4, order.pop(6))  # impression right after findings
    return assemble(w, title, order), w.vocab[ind_term].code, dept


def _choose(w: Writer, p: Patient, visit: date) -> tuple[ProcedureType, str, str, str]:
    """The procedure (likelier when it fits the patient's problems), indication and department."""
    rng = w.rng
    age = age_on(p, visit)
    eligible = [pr for pr in PROCEDURE_TYPES if age >= pr.min_age and pr.sex in (None, p.sex)]
    eligible = eligible or [
        pr for pr in PROCEDURE_TYPES if pr.sex in (None, p.sex)
    ]  # a young child
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
    return pr, ind_term, ind_template, dept


def _title(
    w: Writer, ids: IdPlan, pr: ProcedureType, dept: str, visit: date
) -> tuple[list[Line], int]:
    """The title block and its style (styles 2 and up do not name the procedure)."""
    rng = w.rng
    title: list[Line] = []
    style = rng.randrange(5)
    if style == 0:
        title.append(clean([w.mention(pr.term, upper=True), w.pick((" REPORT", "", " - REPORT"))]))
    elif style == 1:
        title.append(
            clean([w.pick(("Procedure note: ", "Procedure: ", "Report: ")), w.mention(pr.term)])
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
    return title, style


def _indication(
    w: Writer,
    p: Patient,
    pr: ProcedureType,
    ind_term: str,
    ind_template: str,
    anticoag: list[Med],
) -> list[Line]:
    """The indication: why, background, referral, consent or comparison, paused anticoagulation."""
    rng = w.rng
    ind = [w.s(ind_template + ".")]
    background = [t for t in p.problems if t != ind_term]
    if background and w.chance(0.4):
        ind.append(
            w.s(
                "[Background|Comorbidities|Known]: {h}.",
                h=join_items([[w.mention(t)] for t in background[:3]], rng),
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
    if anticoag and pr.kind in ("endoscopy", "surgery", "bedside") and w.chance(0.7):
        med = w.pick(anticoag)
        ind.append(
            w.s(
                "{m} was [paused|held|withheld] {n:24-72} hours before the procedure.",
                m=[w.mention(med.term)],
            )
        )
    return w.section("indication", [w.para(ind)])


def _technique(w: Writer, pr: ProcedureType, style: int) -> list[Line]:
    """How the procedure was done, with vitals, monitoring and radiation dose where they apply."""
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
    return w.prose_or_list("technique", tech, 0.6)


def _complications(w: Writer, pr: ProcedureType) -> list[Line]:
    """Complications of an intervention (imaging and tests have none to report)."""
    if pr.kind in ("imaging", "test"):
        return []
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
    return w.section("complications", [w.s(comp)])


def _impression(w: Writer) -> list[Line]:
    """A short impression now and then."""
    if not w.chance(0.4):
        return []
    return w.section(
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


def _plan(
    w: Writer, ids: IdPlan, pr: ProcedureType, follow_up: list[Line], anticoag: list[Med]
) -> list[Line]:
    """What follows from the findings, the procedure's plan, observation and restarting drugs."""
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
    return w.prose_or_list("plan_proc", plan)
