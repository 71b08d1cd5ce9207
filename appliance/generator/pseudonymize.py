"""Replace identifiers by consistent surrogates before the generator sees a note.

The generator may memorize what it is trained on, so it is trained on notes
whose identifiers are replaced: "TAMM, Mari" becomes "KASK, Liis" and "Mrs
Tamm" becomes "Mrs Kask" (the same family name always gets the same
surrogate), an isikukood becomes another checksum-valid isikukood, a phone
number another number of the same shape.

What is replaced: the spans ``find_identifiers`` reports for

* the note's own patient: every identifier of the record with all variants
  (``deny_list_recognizers``, name parts included);
* every other patient of the record set: full names, national ids, phones,
  e-mails, record numbers and addresses, so a name of patient A in patient
  B's note goes too. Not their name parts or birth dates: "Will" or "Hunt"
  alone, or a date, would hit ordinary text of every note;
* identifier-shaped strings nobody listed (``build_recognizers``):
  checksum-valid national ids, phone numbers, e-mails, labelled record
  numbers and birth dates.

Surrogates are chosen by HMAC-SHA256 of the real value under the caller's key:
stable across runs and processes for the same key and record set, and
meaningless without the key. Each part is keyed on its own value, so every
form of an identifier stays consistent:

=============  ==============================================================
PERSON         each name word by its role: given names from given-name pools
               (same sex when the name is in the built-in lists), family
               names from family-name pools; case and punctuation kept
NATIONAL_ID    same scheme, checksum-valid, same sex, birth date moved like
               the date of birth; unknown schemes keep their shape
DATE_OF_BIRTH  moved 15-365 days (keyed on the date), written the same way
PHONE_NUMBER   same country code, first digit and layout; other digits new
EMAIL_ADDRESS  given.family@example.org/.com/.net
ADDRESS        street and town names from pools, street types ("tn",
               "road") kept, house numbers and postal codes of the same shape
MRN            letters and separators kept, digits new
=============  ==============================================================

A surrogate never equals a real identifier (or name, street or town word) of
the record set: a colliding draw is drawn again. The memo of real value ->
surrogate lives in this object only and is never written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from appliance.config import Policy
from appliance.documents import Identifier, Record
from appliance.identifiers.national_ids import (
    PERSONNUMMER_RE,
    hetu_birth_info,
    isikukood_birth_info,
    make_hetu,
    make_isikukood,
    make_personnummer,
    make_ssn,
    personnummer_is_valid,
    ssn_is_valid,
)
from appliance.identifiers.recognizers import (
    DEFAULT_PHONE_REGIONS,
    Finding,
    build_recognizers,
    deny_list_recognizers,
    find_identifiers,
    format_date,
    parse_dates,
    phone_parts,
    split_person_name,
)

__all__ = ["CROSS_RECORD_TYPES", "PseudonymizedText", "Pseudonymizer"]

# Identifier types of *other* patients that are looked for in every note.
CROSS_RECORD_TYPES = frozenset(
    {"PERSON", "NATIONAL_ID", "PHONE_NUMBER", "EMAIL_ADDRESS", "MEDICAL_RECORD_NUMBER", "ADDRESS"}
)

# --------------------------------------------------------------------------- pools
# Our own lists (Estonian, Finnish, Swedish, English). The given names double
# as the lists that tell a real given name's sex.


def _words(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(text.split()))


_FEMALE = _words(
    """
    Aino Airi Aleksandra Anneli Annika Astrid Birgit Brita Carmen Dagmar Eerika Elina Elisabet
    Emma Epp Evelin Gerli Hanna Heli Helena Iiris Ilona Ines Irja Jaana Janika Johanna Kaie
    Kaisa Karoliina Katariina Kerli Kristel Laila Lea Leelo Lembe Liina Linda Lotta Maarit
    Mailis Margit Marika Marta Merle Mirjam Monika Nele Pia Piia Ragne Riina Rita Saara Sigrid
    Silja Sofie Stina Terje Tuuli Ulrika Ursula Vaike Viivi Viktoria Virve Ylva Alice Chloe
    Grace Julia Kate Molly Rose Ruth Sophie Anna Mari Kati Liis Kadri Triin Maarja Kristiina
    Tiina Eve Piret Helen Merike Reet Sirje Malle Tiiu Leida Helju Maie Kersti Pille Katrin
    Laura Liisa Grete Anu Signe Ene Elo Maret Ingrid Aili Helmi Sanna Tuula Riitta Marjatta
    Satu Minna Eeva Noora Sirkka Pirjo Tarja Outi Eva Maria Karin Kristina Lena Birgitta Elin
    Sofia Linnea Ebba Margareta Maja Agneta Ulla Emily Sarah Jessica Olivia Charlotte Margaret
    Susan Elizabeth Catherine Rachel Hannah Lucy Mary Patricia
    """
)
_MALE = _words(
    """
    Aadu Ahti Aleksander Allan Alvar Arne Artur Asko Eerik Egon Einar Elmar Erkki Esko Gunnar
    Hardo Harri Heikki Ilmar Imre Jaak Jarmo Joel Johannes Juhan Kaarel Kalle Kaspar Kaupo
    Kristo Lauri Leo Marek Markus Martin Meelis Mikk Neeme Oliver Ott Paavo Pentti Raimo Rainer
    Reijo Robert Silver Sten Sulev Teet Tiit Tõnu Uku Vello Viljar Voldemar Albin Edvin Hugo
    Ivar Kjell Leif Nils Ragnar Stig Ture Alan Arthur Colin Frank Harold Oscar Peter Philip
    Jaan Peeter Toomas Andres Mart Rein Urmas Margus Indrek Kalev Ants Aivar Siim Kristjan
    Rasmus Karl Madis Tarmo Raivo Mihkel Enn Heino Lembit Arvo Villu Hannes Taavi Sander Joosep
    Olev Juhani Matti Mikko Timo Jukka Pekka Antti Ville Kari Esa Tapio Eero Olli Sakari Veikko
    Lars Anders Johan Erik Per Björn Magnus Oskar Gustav Axel Sven Olof Henrik Mats Fredrik
    James John Michael William David Richard Thomas George Daniel Matthew Andrew Christopher
    Edward Henry Samuel Jack
    """
)
_FAMILY = _words(
    """
    Aavik Allik Annus Arro Hallik Hein Hiie Jaanus Jakobson Järv Kaasik Kalda Kangur Karro
    Kesküla Kiik Kivistik Klaas Kolk Kuld Kurg Laur Leht Lember Liiv Lind Lokk Luts Meri Mölder
    Must Nurk Oja Ots Paju Palm Peterson Pihl Puusepp Raud Reinsalu Roos Rätsep Saks Salu Sarv
    Soosaar Suits Susi Sõber Tali Tiits Toom Tuisk Uibo Unt Valk Veski Vilu Aalto Hakala
    Heikkilä Hirvonen Huttunen Kallio Karjalainen Lindholm Manninen Miettinen Nurmi Ojala Peltonen
    Rantanen Seppälä Toivonen Vainio Berg Blom Ek Engström Falk Forsberg Hedlund Holmberg
    Lundberg Nyberg Sandberg Strand Wallin Adams Bennett Carter Clarke Dixon Ellis Foster
    Graham Hayes Hughes Kelly Marshall Mason Owen Price Reid Shaw Stone Ward Webb Young
    """
)
_STREETS = _words(
    """
    Astri Heina Humala Jaama Kaevu Kanarbiku Karjamaa Kastani Kesk Kirsi Kraavi Kuke Kungla
    Laane Lepiku Liiva Lõuna Maasika Mõisa Nõmme Oja Pargi Pikk Pilvi Pärna Raja Ranna Roosi
    Saare Salu Sepiku Sireli Sõstra Tõru Turu Uus Vabriku Valge Vana Vara Vikerkaare Õuna
    """
)
_TOWNS = _words(
    """
    Aruküla Kehra Kilingi Lihula Loksa Mustvee Põltsamaa Püssi Räpina Saue Suure-Jaani Tapa
    Tõrva Vändra Abja Antsla Kallaste Karksi Mõisaküla Narva-Jõesuu Kärla Tamsalu
    """
)
# Address words kept as they are ("Kase tn", "Mill Road", "lgh 1102"; single
# letters like "12 B" too), and compound endings kept on the replaced word
# ("Storgatan" -> "Pärnagatan").
_STREET_TYPES = frozenset(
    _words(
        """
        tn tänav tee mnt maantee pst puiestee põik plats väljak allee katu tie kuja polku gata
        gatan väg vägen gränd street st road rd avenue ave lane ln drive dr way court ct place
        pl square sq lgh apt flat korter krt as c/o
        """
    )
)
_STREET_SUFFIXES = ("gatan", "vägen", "gata", "väg", "katu", "tie", "kuja", "tänav", "strasse")
_EMAIL_DOMAINS = ("example.org", "example.com", "example.net")
# Syllables for made-up names once a pool has nothing left that is not a real name.
_SYLLABLES = _words("ka ri lu ve ta mo sa ne ko pi ro la mi tu se va no re ki du")
_FAMILY_ENDINGS = ("mäe", "vere", "nen", "berg", "salu", "ste", "ström", "son")

_SEX_OF = {**{n.casefold(): "f" for n in _FEMALE}, **{n.casefold(): "m" for n in _MALE}}
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_TOKEN = re.compile(r"\w+")
_MAX_DRAWS = 64


@dataclass(frozen=True)
class PseudonymizedText:
    """A note with identifiers replaced; ``counts`` says how many spans of each type (never which)."""

    text: str
    counts: Counter[str] = field(default_factory=Counter)


def _shape(like: str, new: str) -> str:
    """``new`` in the letter case of ``like`` ("TAMM" -> "KASK", "tamm" -> "kask")."""
    letters = [c for c in like if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return new.upper()
    if letters and all(c.islower() for c in letters):
        return new.lower()
    return new


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _norm(value: str) -> str:
    """Compare identifiers without case, spaces or separators ("P-230163" = "p230163")."""
    return "".join(c for c in value.casefold() if c.isalnum())


class Pseudonymizer:
    """Consistent, keyed surrogates for the identifiers in records' notes.

    ``identifiers``: the identifiers of the whole record set (all patients),
    so other patients' names and numbers are replaced too and no surrogate
    equals a real value. ``key``: a secret (e.g. the workspace key derived
    for ``PURPOSE_PSEUDONYMS``); the same key and record set give the same
    surrogates in every run.
    """

    def __init__(self, policy: Policy, key: bytes, identifiers: Iterable[Identifier] = ()) -> None:
        if not key:
            raise ValueError("the pseudonymization key must not be empty")
        self.enabled = policy.pseudonymize.enabled
        self.types = frozenset(policy.identifiers.types)
        self._key = bytes(key)
        self._patterns = build_recognizers(policy.identifiers)
        # Real values, to keep surrogates away from them.
        self._names: set[str] = set()  # every given and family name word, casefolded
        self._names_ascii: set[str] = set()  # the same, as e-mail local parts would have them
        self._roles: dict[str, str] = {}  # name word -> "given" / "family"
        self._ids: set[str] = set()
        self._mrns: set[str] = set()
        self._emails: set[str] = set()
        self._phones: set[str] = set()  # national numbers
        self._ccs: set[str] = set()
        self._dobs: set[date] = set()
        self._street_words: set[str] = set()
        self._town_words: set[str] = set()
        self._memo: dict[tuple[str, str], str] = {}
        self._shift_memo: dict[date, date] = {}
        everyone = [i for i in identifiers if i.type in self.types]
        self._learn(everyone)
        self._others = deny_list_recognizers(
            [i for i in everyone if i.type in CROSS_RECORD_TYPES], name_parts=False
        )

    # ----------------------------------------------------------------- public

    def findings(self, record: Record) -> list[Finding]:
        """The identifier spans that ``pseudonymize`` replaces in ``record.text``."""
        own = [i for i in record.identifiers if i.type in self.types]
        self._learn(own)
        # Own values first: on equal spans they decide the type.
        recognizers = [*deny_list_recognizers(own), *self._others, *self._patterns]
        return find_identifiers(record.text, recognizers, self.types)

    def pseudonymize(self, record: Record) -> PseudonymizedText:
        """``record.text`` with every identifier span replaced by its surrogate."""
        if not self.enabled or not self.types:
            return PseudonymizedText(record.text, Counter())
        findings = self.findings(record)
        # A word that is a given name of this patient and a family name of
        # another is this patient's given name here.
        roles: dict[str, str] = {}
        for ident in record.identifiers:
            if ident.type == "PERSON":
                roles.update(self._name_roles(ident))
        own_dobs = {
            d
            for i in record.identifiers
            if i.type == "DATE_OF_BIRTH"
            for d, _ in parse_dates(i.value)
        }
        pieces: list[str] = []
        counts: Counter[str] = Counter()
        pos = 0
        text = record.text
        for f in findings:
            real = text[f.start : f.end]
            pieces += [text[pos : f.start], self._surrogate(f.type, real, roles, own_dobs)]
            counts[f.type] += 1
            pos = f.end
        pieces.append(text[pos:])
        return PseudonymizedText("".join(pieces), counts)

    # ----------------------------------------------------------------- what is real

    @staticmethod
    def _name_roles(ident: Identifier) -> dict[str, str]:
        given, family = split_person_name(ident.value, ident.field)
        roles = {}
        for role, words in (("given", given), ("family", family)):
            for word in words:
                for part in _WORD.findall(word):
                    roles[part.casefold()] = role
        return roles

    def _learn(self, identifiers: Iterable[Identifier]) -> None:
        for ident in identifiers:
            value = ident.value.strip()
            if ident.type == "PERSON":
                for word, role in self._name_roles(ident).items():
                    self._names.add(word)
                    self._names_ascii.add(_ascii(word))
                    self._roles.setdefault(word, role)
            elif ident.type == "NATIONAL_ID":
                self._ids.add(_norm(value))
            elif ident.type == "MEDICAL_RECORD_NUMBER":
                self._mrns.add(_norm(value))
            elif ident.type == "EMAIL_ADDRESS":
                self._emails.add(value.casefold())
            elif ident.type == "PHONE_NUMBER":
                cc, national = phone_parts(value, DEFAULT_PHONE_REGIONS)
                self._phones.add(national)
                if cc:
                    self._ccs.add(cc)
            elif ident.type == "DATE_OF_BIRTH":
                self._dobs.update(d for d, _ in parse_dates(value))
            elif ident.type == "ADDRESS":
                head, _, rest = value.partition(",")
                self._street_words.update(w.casefold() for w in _WORD.findall(head))
                self._town_words.update(w.casefold() for w in _WORD.findall(rest))

    # ----------------------------------------------------------------- keyed choices

    def _h(self, *parts: str) -> int:
        msg = "\x1f".join(parts).encode()
        return int.from_bytes(hmac.new(self._key, msg, hashlib.sha256).digest()[:8], "big")

    def _digits(self, n: int, *parts: str) -> str:
        out = ""
        i = 0
        while len(out) < n:
            out += f"{self._h(*parts, str(i)):020d}"[-18:]
            i += 1
        return out[:n]

    def _memoized(self, kind: str, value: str, make: Callable[[], str]) -> str:
        key = (kind, value)
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def _pick(self, kind: str, value: str, pool: tuple[str, ...], forbidden: set[str]) -> str:
        """A pool entry chosen by the keyed hash of ``value``, never a forbidden (real) one."""
        for attempt in range(_MAX_DRAWS):
            cand = pool[self._h(kind, value, str(attempt)) % len(pool)]
            if cand.casefold() not in forbidden and cand.casefold() != value:
                return cand
        # Every draw was a real name: make one up from syllables (unbounded supply).
        for attempt in range(_MAX_DRAWS, 100 * _MAX_DRAWS):
            h = self._h(kind, value, str(attempt))
            n = 2 + h % 2
            word = "".join(_SYLLABLES[(h >> (5 * k + 2)) % len(_SYLLABLES)] for k in range(n))
            if kind == "family":
                word += _FAMILY_ENDINGS[(h >> 40) % len(_FAMILY_ENDINGS)]
            cand = word.capitalize()
            if cand.casefold() not in forbidden:
                return cand
        raise RuntimeError("no surrogate name left")  # pragma: no cover - needs ~10^5 collisions

    # ----------------------------------------------------------------- per type

    def _surrogate(
        self, kind: str, real: str, roles: Mapping[str, str], own_dobs: set[date]
    ) -> str:
        if kind == "PERSON":
            return _WORD.sub(lambda m: self._name_word(m.group(), roles), real)
        if kind == "NATIONAL_ID":
            return self._memoized(
                "id", real.strip().upper(), lambda: self._national_id(real.strip())
            )
        if kind == "DATE_OF_BIRTH":
            return self._date_of_birth(real, own_dobs)
        if kind == "PHONE_NUMBER":
            return self._phone(real)
        if kind == "EMAIL_ADDRESS":
            return self._memoized("email", real.casefold(), lambda: self._email(real.casefold()))
        if kind == "ADDRESS":
            return self._address(real)
        if kind == "MEDICAL_RECORD_NUMBER":
            return self._memoized("mrn", real, lambda: self._reshape("mrn", real, self._mrns))
        return self._reshape(kind, real, set())

    def _name_word(self, word: str, roles: Mapping[str, str]) -> str:
        low = word.casefold()
        role = roles.get(low) or self._roles.get(low, "family")
        if role == "given":
            sex = _SEX_OF.get(low, "")
            pool = _FEMALE if sex == "f" else _MALE if sex == "m" else _FEMALE + _MALE
        else:
            pool = _FAMILY
        new = self._memoized(role, low, lambda: self._pick(role, low, pool, self._names))
        return _shape(word, new)

    def _shift(self, d: date) -> date:
        """The surrogate of a birth date: 15-365 days away, never another real birth date."""
        if d not in self._shift_memo:
            today = date.today()
            new = d
            for attempt in range(_MAX_DRAWS):
                h = self._h("dob", d.isoformat(), str(attempt))
                days = 15 + h % 351
                later = (h >> 32) & 1 and (today - d).days > days  # no birth dates in the future
                try:
                    new = d + timedelta(days=days if later else -days)
                except OverflowError:  # year 1: only a made-up date gets here
                    new = d + timedelta(days=days)
                if new not in self._dobs:
                    break
            self._shift_memo[d] = new
        return self._shift_memo[d]

    def _date_of_birth(self, real: str, own_dobs: set[date]) -> str:
        readings = parse_dates(real)
        if not readings:
            return self._reshape("dob", real, set())
        # "03/01/1994" reads two ways: prefer the reading that is a known birth date.
        d, style = next(
            (r for r in readings if r[0] in own_dobs),
            next((r for r in readings if r[0] in self._dobs), readings[0]),
        )
        return format_date(self._shift(d), style)

    def _national_id(self, real: str) -> str:
        cand = real
        for attempt in range(_MAX_DRAWS):
            cand = self._draw_national_id(real, str(attempt))
            if _norm(cand) not in self._ids and _norm(cand) != _norm(real):
                return cand
        return cand

    def _draw_national_id(self, real: str, attempt: str) -> str:
        try:
            return self._draw_scheme(real, self._h("id", _norm(real), attempt))
        except ValueError:  # e.g. the moved birth date left the scheme's years (1800-2099)
            return self._reshape("id", real, self._ids, attempt)

    def _draw_scheme(self, real: str, h: int) -> str:
        """A number of the same scheme as ``real``; ``h`` picks serials and check digits follow."""
        if info := isikukood_birth_info(real):
            return make_isikukood(self._shift(info.birth), info.female, h % 1000)
        if info := hetu_birth_info(real):
            serial = 2 + (h % 448) * 2 + (0 if info.female else 1)  # even for women
            return make_hetu(self._shift(info.birth), info.female, serial)
        if personnummer_is_valid(real) and (m := PERSONNUMMER_RE.match(real)):
            century, yy, mm, dd, sep, birth_no, _ = m.groups()
            female = int(birth_no[2]) % 2 == 0
            if century:
                year = int(century) * 100 + int(yy)
            else:  # the latest year not in the future; '+' says 100 years or more ago
                year = 2000 + int(yy) if 2000 + int(yy) <= date.today().year else 1900 + int(yy)
                year -= 100 if sep == "+" else 0
            day = int(dd) - 60 if int(dd) > 60 else int(dd)  # coordination numbers: day + 60
            new_birth = self._shift(date(year, int(mm), day))
            short = make_personnummer(new_birth, female, (h % 500) * 2 + (0 if female else 1))
            head = f"{new_birth.year // 100}" if century else ""
            return f"{head}{short[:6]}{sep}{short[7:]}"
        if ssn_is_valid(real):
            area = 1 + h % 898
            area += 1 if area >= 666 else 0  # 666 is never issued
            ssn = make_ssn(area, 1 + (h >> 16) % 99, 1 + (h >> 32) % 9999)
            return ssn if "-" in real else ssn.replace("-", "")
        raise ValueError("no known scheme")  # other schemes keep their shape, new digits

    def _phone(self, real: str) -> str:
        digits = "".join(c for c in real if c.isdigit())
        body = digits[2:] if digits.startswith("00") else digits
        if real.lstrip().startswith("+") or digits.startswith("00"):
            cc, _ = phone_parts(real, DEFAULT_PHONE_REGIONS)
        else:
            # "372 5141 3739" without a plus: a known country code before a known number.
            cc = next(
                (
                    c
                    for c in self._ccs
                    if body.startswith(c) and body[len(c) :].lstrip("0") in self._phones
                ),
                "",
            )
        national = body[len(cc) :]
        core = national.lstrip("0")
        if not core:
            return real
        new_core = self._memoized("phone", core, lambda: self._phone_core(core))
        # Write the new digits over the last len(core) digits, keeping spaces, dashes and the code.
        out = list(real)
        k = len(new_core)
        for i in range(len(out) - 1, -1, -1):
            if k == 0:
                break
            if out[i].isdigit():
                k -= 1
                out[i] = new_core[k]
        return "".join(out)

    def _phone_core(self, core: str) -> str:
        cand = core
        for attempt in range(_MAX_DRAWS):
            # Keep the first digit: it says mobile or landline (and which area).
            cand = core[0] + self._digits(len(core) - 1, "phone", core, str(attempt))
            if cand not in self._phones and cand != core:
                break
        return cand

    def _email(self, real: str) -> str:
        forbidden = self._names_ascii
        for attempt in range(_MAX_DRAWS):
            tag = f"{real}#{attempt}"
            given = _ascii(self._pick("given", tag, _FEMALE + _MALE, forbidden))
            family = _ascii(self._pick("family", tag, _FAMILY, forbidden))
            domain = _EMAIL_DOMAINS[self._h("domain", tag) % len(_EMAIL_DOMAINS)]
            cand = f"{given}.{family}@{domain}"
            if given not in forbidden and family not in forbidden and cand not in self._emails:
                return cand
        return f"user{self._digits(6, 'email', real)}@example.org"

    def _address(self, real: str) -> str:
        head, comma, rest = real.partition(",")
        street_key = _norm(head)

        numbers = iter(range(1 << 30))  # house, flat: keyed on their place in the street part

        def street(m: re.Match[str]) -> str:
            w = m.group()
            if any(c.isdigit() for c in w):  # "107", "12B": new digits, no leading zero
                out = self._new_digits(w, "house", street_key, str(next(numbers)))
                return str(1 + int(out[0]) % 9) + out[1:] if out[0].isdigit() else out
            if len(w) == 1 or w.casefold() in _STREET_TYPES:
                return w
            suffix = next(
                (s for s in _STREET_SUFFIXES if w.casefold().endswith(s) and len(w) > len(s) + 2),
                "",
            )
            base = w[: len(w) - len(suffix)] if suffix else w
            new = self._memoized(
                "street",
                base.casefold(),
                lambda: self._pick("street", base.casefold(), _STREETS, self._street_words),
            )
            return _shape(base, new) + (w[len(base) :] if suffix else "")

        def town(m: re.Match[str]) -> str:
            w = m.group()
            if any(c.isdigit() for c in w):  # postal code: keep the first digit (the region)
                return w[0] + self._new_digits(w[1:], "postal", w)
            if len(w) == 1 or w.casefold() in _STREET_TYPES:
                return w
            new = self._memoized(
                "town",
                w.casefold(),
                lambda: self._pick("town", w.casefold(), _TOWNS, self._town_words),
            )
            return _shape(w, new)

        return _TOKEN.sub(street, head) + comma + _TOKEN.sub(town, rest)

    def _new_digits(self, text: str, *parts: str) -> str:
        """``text`` with each digit replaced by a keyed one; everything else kept."""
        new = iter(self._digits(sum(c.isdigit() for c in text), *parts))
        return "".join(next(new) if c.isdigit() else c for c in text)

    def _reshape(self, kind: str, real: str, forbidden: set[str], attempt: str = "") -> str:
        """Same letters and separators, new digits: for record numbers and unknown id schemes."""
        cand = real
        for i in range(_MAX_DRAWS):
            cand = self._new_digits(real, kind, _norm(real), attempt, str(i))
            if _norm(cand) not in forbidden and _norm(cand) != _norm(real):
                break
        return cand
