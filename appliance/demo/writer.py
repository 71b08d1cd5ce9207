"""The ``Writer`` renders templates into pieces with one note's context; ``IdPlan`` decides
which of the patient's identifiers a note repeats in its text (about a quarter of notes).

All randomness comes from the one ``random.Random`` the writer holds, in a
fixed order: the same seed gives the same notes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from appliance.demo.knowledge import BULLETS, DOSING, FREQS, HEADERS, LABS, MONTHS, ROUTES, Med
from appliance.demo.patients import Patient
from appliance.demo.template import Alt, Ent, Ident, Line, Node, Piece, Slot, cap, clean, parse
from appliance.demo.vocabulary import VocabEntry

__all__ = ["IdPlan", "Writer", "assemble"]


class Writer:
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
            return f"{d.day} {MONTHS[d.month - 1]} {d.year}"
        return f"{d.day:02d}/{d.month:02d}/{d.year}"

    # -- mentions, doses, labs -------------------------------------------------

    def mention(self, key: str, *, upper: bool = False) -> Ent:
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
        return Ent(text, entry.label, entry.code)

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
            regs = DOSING[term]
            if route is not None:  # the sentence already says "oral" or "intravenous"
                regs = tuple(r for r in regs if route in r.routes)
            reg = self.pick(regs)
            dose, freq = self.pick(reg.doses), self.pick(reg.freqs)
            route = route if route is not None else self.pick(reg.routes)
        f = self.pick(FREQS[freq])
        if route == "PO" and self.chance(0.55):
            return f"{dose} {f}"
        r = self.pick(ROUTES[route])
        if self.chance(0.15):
            return f"{dose}, {r}, {f}"
        return f"{dose} {r} {f}"

    def med_line(self, med: Med) -> Line:
        return [
            self.mention(med.term),
            " ",
            self.regimen_text(med.term, dose=med.dose, route=med.route, freq=med.freq),
        ]

    def lab(self, key: str, state: str = "n") -> str:
        lab = LABS[key]
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

    def _emit(self, nodes: tuple[Node, ...], out: list[Piece]) -> None:
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, Alt):
                self._emit(self.pick(node.options), out)
            else:
                self._slot(node, out)

    def _slot(self, slot: Slot, out: list[Piece]) -> None:
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
            if isinstance(value, (str, Ent, Ident)):
                out.append(value)
            else:
                out.extend(value)

    def render(self, template: str, **extra: Any) -> Line:
        """Render a template with the note's context (plus ``extra``) into tidy pieces."""
        saved = {k: self.ctx.get(k) for k in extra}
        self.ctx.update(extra)
        out: list[Piece] = []
        try:
            self._emit(parse(template), out)
        finally:
            for k, v in saved.items():
                if v is None:
                    self.ctx.pop(k, None)
                else:
                    self.ctx[k] = v
        return clean(out)

    def s(self, template: str, **extra: Any) -> Line:
        """A sentence: rendered, tidied and capitalized."""
        return cap(self.render(template, **extra))

    def steps(self, steps: Sequence[str], *, p_optional: float = 0.55) -> list[Line]:
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

    def para(self, sentences: Sequence[Line]) -> Line:
        line: Line = []
        for k, sentence in enumerate(sentences):
            if k:
                line.append(" ")
            line.extend(sentence)
        return clean(line)

    def bullets(self, items: Sequence[Line]) -> list[Line]:
        out = []
        for k, item in enumerate(items, start=1):
            mark = f"{k}. " if self.bullet == "#" else self.bullet
            out.append(clean([mark, *cap(item)]) if mark else cap(item))
        return out

    def section(self, key: str, body: list[Line], *, prose: bool = True) -> list[Line]:
        if not body:
            return []
        title = self.pick(HEADERS[key])
        style = self.header_style
        if style == "plain" and len(title) <= 2:
            style = "colon"  # "S" or "Dg" alone on a line reads as noise
        if style == "inline" and prose and len(body) == 1:
            return [clean([f"{title}: ", *body[0]])]
        head = {
            "upper": f"{title.upper()}:",
            "colon": f"{title}:",
            "plain": title,
            "inline": f"{title}:",
        }[style]
        return [[head], *body]

    def prose_or_list(self, key: str, sentences: list[Line], p_prose: float = 0.5) -> list[Line]:
        """A section written as one paragraph or as one item per line."""
        if self.chance(p_prose):
            return self.section(key, [self.para(sentences)])
        return self.section(key, self.bullets(sentences), prose=False)

    def start_note(self, patient: Patient, today: date) -> None:
        """Pick the note's layout style and set the context every template may use."""
        rng = self.rng
        self.today = today
        self.adm = today
        self.date_style = rng.choices((0, 1, 2, 3), weights=(5, 3, 2, 1))[0]
        self.header_style = rng.choices(
            ("upper", "colon", "inline", "plain"), weights=(4, 4, 3, 1)
        )[0]
        self.bullet = self.pick(BULLETS)
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


class IdPlan:
    """Which of the patient's identifiers this note repeats in its text, and how."""

    def __init__(self, w: Writer, p: Patient, enabled: bool) -> None:
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

    def name(self) -> Ident:
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
        return Ident(text, "PERSON")

    def surname(self) -> Line:
        title = self.w.pick(("Mrs", "Ms", "Mrs.")) if self.p.female else self.w.pick(("Mr", "Mr."))
        return [f"{title} ", Ident(self.p.family, "PERSON")]

    def header(self) -> list[Line]:
        w, p = self.w, self.p
        items: list[tuple[str, Piece]] = []
        if "name" in self.kinds:
            items.append((w.pick(("Patient", "Name", "Patient name")), self.name()))
        if "nid" in self.kinds:
            items.append(
                (
                    w.pick(("Personal code", "Isikukood", "ID code", "Personal ID", "IK")),
                    Ident(p.national_id, "NATIONAL_ID"),
                )
            )
        if "dob" in self.kinds:
            items.append(
                (
                    w.pick(("DOB", "Date of birth", "Born")),
                    Ident(w.fmt_date(p.birth, w.pick((0, 0, 1, 2))), "DATE_OF_BIRTH"),
                )
            )
        if "mrn" in self.kinds:
            items.append(
                (
                    w.pick(("MRN", "Case no.", "Patient no.", "Hospital ID")),
                    Ident(p.patient_id, "MEDICAL_RECORD_NUMBER"),
                )
            )
        if not items:
            return []
        if w.chance(0.5):
            return [[f"{label}: ", value] for label, value in items]
        line: Line = []
        for k, (label, value) in enumerate(items):
            if k:
                line.append(w.pick((", ", "; ")))
            line.extend([f"{label} " if w.chance(0.5) else f"{label}: ", value])
        return [line]

    def contact(self) -> list[Line]:
        w, p = self.w, self.p
        out = []
        if "phone" in self.kinds:
            phone = p.phone if w.chance(0.7) else p.phone.removeprefix("+372 ")
            out.append(
                w.s(
                    "[Contact phone|The patient can be reached at|Phone|Contact number|Reachable by phone at] {ph}.",
                    ph=[Ident(phone, "PHONE_NUMBER")],
                )
            )
        if "address" in self.kinds:
            addr = p.address if w.chance(0.7) else p.address.split(",")[0]
            out.append(
                w.s(
                    "[Home address|Lives at|Address|Home care visits at] {ad}.",
                    ad=[Ident(addr, "ADDRESS")],
                )
            )
        return out

    def subject(self) -> Line:
        """The subject of an opening sentence: "A 67-year-old woman" or the patient's name."""
        if "name_open" in self.kinds:
            return [
                self.name(),
                self.w.pick((" ({age} y)", " ({age} years)", ", {age},")).replace(
                    "{age}", self.w.ctx["age"]
                ),
            ]
        return self.w.render("[{a}|this] {age}-year-old {man}")

    def mention_sentence(self) -> list[Line]:
        if "surname" not in self.kinds:
            return []
        return [
            self.w.s(
                "[The findings were discussed with|The plan was explained to|Results were given to] {who}[| and {pos} family| by phone].",
                who=self.surname(),
            )
        ]


def assemble(w: Writer, title: list[Line], sections: list[list[Line]]) -> list[Line]:
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
