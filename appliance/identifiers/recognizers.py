"""Identifier recognizers: presidio pattern and deny-list recognizers that never touch the network.

Two kinds, both plain presidio ``EntityRecognizer`` objects (``analyze(text,
entities, nlp_artifacts)``), so the leakage screen and the pseudonymizer run
the same code:

* ``build_recognizers(policy)``: identifier-*shaped* strings. Checksum-valid
  national ids (EE isikukood, SE personnummer, FI HETU, US SSN), phone
  numbers (a phone-shaped pattern, then ``phonenumbers`` decides, offline),
  e-mail addresses, and record numbers / birth dates that follow a label
  ("MRN: ...", "DOB: ..."). Each is a ``PatternRecognizer`` with class-level
  ``PATTERNS`` and a ``validate_result`` hook, presidio style.
* ``deny_list_recognizers(identifiers)``: the *known real* identifiers of
  patients, with the variants notes use ("Tamm, Mari", "MÄGI Taavi", "Mrs
  Tamm", "03.01.1994", "5141 3739" for "+372 5141 3739").

Offline by construction. No NLP engine (no spaCy model): ``find_identifiers``
calls ``analyze(text, entities, None)`` on each recognizer directly instead of
going through an ``AnalyzerEngine``. presidio's own e-mail and URL
recognizers are not used: they validate with ``tldextract``, which downloads
the public-suffix list on first use; our e-mail recognizer checks the domain
shape instead.

Deny lists scale by indexing, not by regex alternation: presidio's
``deny_list`` turns the words into one alternation that is tried at every
position, so thousands of patients' values would cost thousands of
comparisons per character. Here all known values of all types go into one
token trie (text split into word and punctuation tokens, casefolded), so a
note is scanned once and each token costs a dictionary lookup, whatever the
number of patients. Matching on tokens also makes every match whole-word and
indifferent to spacing ("Tamm ,  Mari"). Phone numbers are matched on their
digits instead (any spacing, dashes, with or without the country code).

Overlaps are resolved in ``find_identifiers`` by one rule: the longest span
wins; among equally long spans the higher score; then the recognizer that
comes first in the sequence given.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, cast

import phonenumbers
import regex
from phonenumbers import NumberParseException
from presidio_analyzer import (
    EntityRecognizer,
    LocalRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerResult,
)

from appliance.config import IdentifierPolicy
from appliance.documents import Identifier
from appliance.identifiers.dates import MONTHS
from appliance.identifiers.national_ids import (
    hetu_is_valid,
    isikukood_is_valid,
    personnummer_is_valid,
    ssn_is_valid,
)
from appliance.identifiers.phones import (
    DEFAULT_PHONE_REGIONS,
    digit_runs,
    number_forms,
    phone_parts,
)

if TYPE_CHECKING:
    from presidio_analyzer.nlp_engine import NlpArtifacts

__all__ = [
    "DEFAULT_PHONE_REGIONS",
    "PRESIDIO_ENTITY_TYPES",
    "DateStyle",
    "DenyListPhoneRecognizer",
    "DenyListRecognizer",
    "EeIsikukoodRecognizer",
    "EmailRecognizer",
    "FiHetuRecognizer",
    "Finding",
    "LabelledDateOfBirthRecognizer",
    "LabelledMrnRecognizer",
    "PhonePatternRecognizer",
    "SePersonnummerRecognizer",
    "UsSsnRecognizer",
    "build_recognizers",
    "date_variants",
    "deny_list_recognizers",
    "find_identifiers",
    "format_date",
    "parse_dates",
    "phone_parts",
    "split_person_name",
]


@dataclass(frozen=True)
class Finding:
    """An identifier span in a text: appliance type, offsets, score and the recognizer's name."""

    type: str
    start: int
    end: int
    score: float
    source: str


# presidio entity names -> the appliance's identifier types, so presidio's
# predefined recognizers can be mixed in. Unlisted names pass through unchanged.
PRESIDIO_ENTITY_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "US_SSN": "NATIONAL_ID",
        "FI_PERSONAL_IDENTITY_CODE": "NATIONAL_ID",
        "SE_PERSONNUMMER": "NATIONAL_ID",
        "UK_NHS": "NATIONAL_ID",
        "UK_NINO": "NATIONAL_ID",
        "PHONE_NUMBER": "PHONE_NUMBER",
        "EMAIL_ADDRESS": "EMAIL_ADDRESS",
        "PERSON": "PERSON",
        "MEDICAL_RECORD_NUMBER": "MEDICAL_RECORD_NUMBER",
        "DATE_OF_BIRTH": "DATE_OF_BIRTH",
        "ADDRESS": "ADDRESS",
        "NATIONAL_ID": "NATIONAL_ID",
    }
)

# presidio's default flags include IGNORECASE; check characters (HETU) are upper case.
_CASE_SENSITIVE = int(re.DOTALL | re.MULTILINE)
_CASE_INSENSITIVE = int(re.DOTALL | re.MULTILINE | re.IGNORECASE)

# Not glued to a longer token, a '+' (a phone's country code), a range/path or
# a decimal ("12.37605030299"); "…30299." ends a sentence, "…30299.5" is a number.
_L = r"(?<![\w+\-/])(?<!\d[.,])"
_R = r"(?![\w\-/]|[.,]\d)"


# --------------------------------------------------------------------------- pattern recognizers


class _IdentifierPatternRecognizer(PatternRecognizer):
    """Base of the pattern recognizers: subclasses set ENTITY, NAME, PATTERNS, CONTEXT, FLAGS."""

    ENTITY: ClassVar[str] = "NATIONAL_ID"
    NAME: ClassVar[str] = ""
    PATTERNS: ClassVar[list[Pattern]] = []
    CONTEXT: ClassVar[list[str]] = []
    FLAGS: ClassVar[int] = _CASE_SENSITIVE
    # A plain regex that every match of PATTERNS contains. A text without it
    # cannot match, so ``find_identifiers`` skips the recognizer there (most
    # notes have no 6-digit run, no "@", no record-number label).
    REQUIRES: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__(
            supported_entity=self.ENTITY,
            name=self.NAME or type(self).__name__,
            patterns=list(self.PATTERNS),
            context=list(self.CONTEXT),
            global_regex_flags=self.FLAGS,
        )
        self.requires = re.compile(self.REQUIRES, self.FLAGS) if self.REQUIRES else None


class EeIsikukoodRecognizer(_IdentifierPatternRecognizer):
    """Estonian isikukood: 11 digits, valid birth date and mod-11 check digit."""

    NAME = "EE_ISIKUKOOD"
    PATTERNS: ClassVar[list[Pattern]] = [Pattern("isikukood", _L + r"[1-6]\d{10}" + _R, 0.5)]
    CONTEXT: ClassVar[list[str]] = ["isikukood", "personal code", "id code", "ik"]
    REQUIRES = r"\d{11}"

    def validate_result(self, pattern_text: str) -> bool:
        return isikukood_is_valid(pattern_text)


class SePersonnummerRecognizer(_IdentifierPatternRecognizer):
    """Swedish personnummer: YYMMDD-NNNC, YYMMDD+NNNC, YYYYMMDD[-]NNNC, bare 10 digits; Luhn."""

    NAME = "SE_PERSONNUMMER"
    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern("personnummer (12 digits)", _L + r"(?:18|19|20)\d{6}-?\d{4}" + _R, 0.5),
        Pattern("personnummer (10 digits)", _L + r"\d{6}[-+]\d{4}" + _R, 0.5),
        # Bare 10 digits are also phone-number shaped: only the checksum and date tell.
        Pattern("personnummer (10 digits, bare)", _L + r"\d{10}" + _R, 0.2),
    ]
    CONTEXT: ClassVar[list[str]] = ["personnummer", "personnr", "pnr"]
    REQUIRES = r"\d{6}"

    def validate_result(self, pattern_text: str) -> bool:
        return personnummer_is_valid(pattern_text)


class FiHetuRecognizer(_IdentifierPatternRecognizer):
    """Finnish HETU: DDMMYY, century sign, individual number, mod-31 check character."""

    NAME = "FI_HETU"
    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern("hetu", _L + r"\d{6}[-+A-FU-Y]\d{3}[0-9A-FHJ-NPR-Y]" + _R, 0.5)
    ]
    CONTEXT: ClassVar[list[str]] = ["hetu", "henkilötunnus", "sotu"]
    REQUIRES = r"\d{6}"

    def validate_result(self, pattern_text: str) -> bool:
        return hetu_is_valid(pattern_text)


class UsSsnRecognizer(_IdentifierPatternRecognizer):
    """US social security number AAA-GG-SSSS (dashed only: bare 9 digits are too common)."""

    NAME = "US_SSN"
    PATTERNS: ClassVar[list[Pattern]] = [Pattern("ssn", _L + r"\d{3}-\d{2}-\d{4}" + _R, 0.5)]
    CONTEXT: ClassVar[list[str]] = ["ssn", "social security"]
    REQUIRES = r"\d{3}-\d{2}-\d{4}"

    def validate_result(self, pattern_text: str) -> bool:
        return ssn_is_valid(pattern_text)

    def invalidate_result(self, pattern_text: str) -> bool:
        # Placeholders people type: all one digit, or the counting sequence.
        digits = pattern_text.replace("-", "")
        return len(set(digits)) == 1 or digits in ("123456789", "987654321")


_NATIONAL_ID_RECOGNIZERS: dict[str, type[_IdentifierPatternRecognizer]] = {
    "EE_ISIKUKOOD": EeIsikukoodRecognizer,
    "SE_PERSONNUMMER": SePersonnummerRecognizer,
    "FI_HETU": FiHetuRecognizer,
    "US_SSN": UsSsnRecognizer,
}


# Digit strings that are dates or SSNs, never phone numbers.
_DATE_SHAPED = re.compile(
    r"(\d{4})[-/ .](\d{1,2})[-/ .](\d{1,2})|(\d{1,2})[-/ .](\d{1,2})[-/ .](\d{4})"
)
_SSN_SHAPED = re.compile(r"\d{3}-\d{2}-\d{4}")
# Where a greedy phone candidate may be cut: before a digit group.
_GROUP_CUT = re.compile(r"[ \-]+(?=[\d(])")


def _is_date(text: str) -> bool:
    """True for a real date written in digits ("2018-01-04", "4.1.2018", "20180104")."""
    if m := _DATE_SHAPED.fullmatch(text):
        y, mo, d = (m[1], m[2], m[3]) if m[1] else (m[6], m[5], m[4])
        return _valid_date(int(y), int(mo), int(d)) is not None
    if len(text) == 8 and text.isdigit():
        for y, mo, d in ((text[:4], text[4:6], text[6:]), (text[4:], text[2:4], text[:2])):
            if 1800 <= int(y) <= 2199 and _valid_date(int(y), int(mo), int(d)) is not None:
                return True
    return False


class PhonePatternRecognizer(_IdentifierPatternRecognizer):
    """Phone numbers: a phone-shaped span, then the offline ``phonenumbers`` library decides.

    presidio's ``PhoneRecognizer`` runs ``PhoneNumberMatcher`` once per region:
    slow on long notes, and for FI/SE/DE it takes dates ("08.01.2018") and
    blood pressures for numbers. Here only digit groups joined by spaces or
    dashes (or one bare run) are candidates; "+"/"00" numbers must be valid
    for their country code, others for one of ``regions``. Date-shaped
    digits ("2018-01-04", "20180104") are never phones.
    """

    ENTITY = "PHONE_NUMBER"
    NAME = "PHONE"
    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern(
            "phone (international)",
            r"(?<![\w+])(?:\+|\b00)\d(?:[ \-]?(?:\(\d{1,4}\)|\d)){6,16}" + _R,
            0.6,
        ),
        Pattern(
            "phone (national)",
            _L + r"(?:\(\d{1,5}\)[ \-]?)?\d{1,5}(?:[ \-]\d{2,5}){1,4}" + _R,
            0.4,
        ),
        Pattern("phone (bare)", _L + r"0?\d{7,10}" + _R, 0.3),
    ]
    CONTEXT: ClassVar[list[str]] = ["phone", "telephone", "mobile", "tel", "contact number"]
    REQUIRES = r"\d"

    def __init__(self, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        self.regions = tuple(regions)
        # The ``regex`` module (presidio's engine) runs these lookbehinds about 3× faster than ``re``.
        self._candidates = regex.compile("|".join(p.regex for p in self.PATTERNS), self.FLAGS)
        super().__init__()

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        # The patterns are greedy: "+372 5141 3739 12" is one candidate and no
        # valid number. Such candidates are retried without their last groups.
        found = {(r.start, r.end) for r in results}
        for m in self._candidates.finditer(text):
            if (m.start(), m.end()) in found or any(s <= m.start() < e for s, e in found):
                continue
            cand = m.group()
            for cut in reversed([c.start() for c in _GROUP_CUT.finditer(cand)]):
                if self.validate_result(cand[:cut]) and not self.invalidate_result(cand[:cut]):
                    found.add((m.start(), m.start() + cut))
                    results.append(
                        RecognizerResult(
                            self.ENTITY,
                            m.start(),
                            m.start() + cut,
                            EntityRecognizer.MAX_SCORE,
                            recognition_metadata={
                                RecognizerResult.RECOGNIZER_NAME_KEY: self.NAME,
                                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                            },
                        )
                    )
                    break
        return results

    def validate_result(self, pattern_text: str) -> bool:
        # Dates and SSNs first: presidio drops an invalidated match whatever
        # validation says, and this regex is far cheaper than phonenumbers.
        if self.invalidate_result(pattern_text):
            return False
        return _valid_phone(pattern_text, self.regions)

    def invalidate_result(self, pattern_text: str) -> bool:
        return bool(_SSN_SHAPED.fullmatch(pattern_text)) or _is_date(pattern_text)


@functools.lru_cache(maxsize=65536)
def _valid_phone(pattern_text: str, regions: tuple[str, ...]) -> bool:
    """Whether phonenumbers takes a phone-shaped string for a valid number (cached: notes repeat them)."""
    digits = re.sub(r"\D", "", pattern_text)
    if pattern_text.startswith(("+", "00")):
        body = digits[2:] if pattern_text.startswith("00") else digits
        if not 8 <= len(body) <= 15:
            return False
        try:
            return phonenumbers.is_valid_number(phonenumbers.parse("+" + body, None))
        except NumberParseException:
            return False
    if not 7 <= len(digits) <= 12:
        return False
    for region in regions:
        try:
            number = phonenumbers.parse(digits, region)
        except NumberParseException:
            continue
        if phonenumbers.is_valid_number_for_region(number, region):
            return True
    return False


class EmailRecognizer(_IdentifierPatternRecognizer):
    """E-mail addresses. The domain is checked by shape, never against the public-suffix list."""

    ENTITY = "EMAIL_ADDRESS"
    NAME = "EMAIL"
    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern(
            "email",
            r"(?<![\w.+\-@])[\w!#$%&'*+/=?^`{|}~\-](?:[\w!#$%&'*+/=?^`{|}~.\-]{0,62}[\w!#$%&'*+/=?^`{|}~\-])?"
            r"@(?:\w(?:[\w\-]{0,61}\w)?\.)+[^\W\d_]{2,24}(?![\w\-@]|\.\w)",
            0.5,
        )
    ]
    CONTEXT: ClassVar[list[str]] = ["email", "e-mail"]
    REQUIRES = "@"
    FLAGS = _CASE_INSENSITIVE

    def validate_result(self, pattern_text: str) -> bool:
        local, _, domain = pattern_text.rpartition("@")
        return ".." not in local and ".." not in domain and len(pattern_text) <= 254


_FULL_MONTHS = frozenset(m.lower() for m in MONTHS)
_MONTH_RE = "|".join(m for m in MONTHS) + "|" + "|".join(m[:3] for m in MONTHS) + "|Sept"
_DATE_RE = (
    r"(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./\-]\d{1,2}[./\-](?:\d{4}|\d{2})"
    rf"|\d{{1,2}}\.?\s+(?:{_MONTH_RE})\.?\s+\d{{4}}|(?:{_MONTH_RE})\.?\s+\d{{1,2}},?\s+\d{{4}})"
)


class LabelledMrnRecognizer(_IdentifierPatternRecognizer):
    """A record number right after its label ("MRN: P230163", "Case no. 12-3456").

    Hospitals' record number schemes differ, so only the label makes a code
    recognizable; ``\\K`` keeps the label out of the span.
    """

    ENTITY = "MEDICAL_RECORD_NUMBER"
    NAME = "MRN_LABELLED"
    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern(
            "labelled record number",
            r"\b(?:MRN|Case\s+no\.?|Patient\s+no\.?|Hospital\s+ID|Medical\s+record\s+(?:number|no\.?)"
            r"|Record\s+no\.?)\s*[:#]?\s*\K[A-Z]{0,3}[\-/]?(?:\d{1,4}[\-/])?\d{4,12}" + _R,
            0.6,
        )
    ]
    FLAGS = _CASE_INSENSITIVE
    REQUIRES = r"\b(?:MRN|Case|Patient|Hospital|Medical|Record)"


class LabelledDateOfBirthRecognizer(_IdentifierPatternRecognizer):
    """A date right after a birth-date label ("DOB: 03.01.1994", "born 3 January 1994")."""

    ENTITY = "DATE_OF_BIRTH"
    NAME = "DOB_LABELLED"
    PATTERNS: ClassVar[list[Pattern]] = [
        Pattern(
            "labelled date of birth",
            r"\b(?:DOB|D\.O\.B\.?|Date\s+of\s+birth|Birth\s+date|Born(?:\s+on)?)\s*[:.]?\s*\K"
            + _DATE_RE
            + _R,
            0.6,
        )
    ]
    FLAGS = _CASE_INSENSITIVE
    REQUIRES = r"\b(?:DOB|D\.O\.B|Date|Birth|Born)"

    def validate_result(self, pattern_text: str) -> bool:
        return any(d <= date.today() for d, _ in parse_dates(pattern_text))


def build_recognizers(
    policy: IdentifierPolicy, *, phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS
) -> list[EntityRecognizer]:
    """The pattern recognizers for the identifier types and national-id schemes ``policy`` enables.

    There is no pattern for PERSON or ADDRESS: without an NLP model only the
    deny lists (``deny_list_recognizers``) find names and addresses.
    """
    types = set(policy.types)
    out: list[EntityRecognizer] = []
    if "NATIONAL_ID" in types:
        out += [_NATIONAL_ID_RECOGNIZERS[s]() for s in sorted(set(policy.national_id_schemes))]
    if "PHONE_NUMBER" in types:
        out.append(PhonePatternRecognizer(phone_regions))
    if "EMAIL_ADDRESS" in types:
        out.append(EmailRecognizer())
    if "MEDICAL_RECORD_NUMBER" in types:
        out.append(LabelledMrnRecognizer())
    if "DATE_OF_BIRTH" in types:
        out.append(LabelledDateOfBirthRecognizer())
    return out


# --------------------------------------------------------------------------- dates


def _valid_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


@dataclass(frozen=True)
class DateStyle:
    """How a date is written, so a replacement date can be written the same way."""

    order: str  # "ymd", "dmy" or "mdy"
    sep: str = "."  # between numeric fields
    pad_day: bool = True
    pad_month: bool = True
    year_digits: int = 4
    month_name: str = ""  # "", "full" or "abbr"
    month_case: str = "title"  # "title", "upper" or "lower"
    comma: bool = False  # "January 3, 1994"


# The forms the deny list knows a date of birth in (the brief's list, plus
# the US month-first and a few month-name forms).
_DOB_STYLES = (
    DateStyle("ymd", "-"),
    DateStyle("dmy", "."),
    DateStyle("dmy", ".", pad_day=False, pad_month=False),
    DateStyle("dmy", "/"),
    DateStyle("dmy", "/", pad_day=False, pad_month=False),
    DateStyle("dmy", "-"),
    DateStyle("mdy", "/"),
    DateStyle("dmy", ".", year_digits=2),
    DateStyle("dmy", " ", pad_day=False, month_name="full"),
    DateStyle("dmy", " ", month_name="full"),
    DateStyle("dmy", " ", pad_day=False, month_name="abbr"),
    DateStyle("mdy", " ", pad_day=False, month_name="full", comma=True),
    DateStyle("mdy", " ", pad_day=False, month_name="full"),
    DateStyle("mdy", " ", pad_day=False, month_name="abbr", comma=True),
)


def format_date(d: date, style: DateStyle) -> str:
    """``d`` written in ``style``."""
    day = f"{d.day:02d}" if style.pad_day else str(d.day)
    year = f"{d.year % 100:02d}" if style.year_digits == 2 else f"{d.year:04d}"
    if style.month_name:
        name = MONTHS[d.month - 1]
        name = name[:3] if style.month_name == "abbr" else name
        name = name.upper() if style.month_case == "upper" else name
        name = name.lower() if style.month_case == "lower" else name
        if style.order == "mdy":
            return f"{name} {day}{',' if style.comma else ''} {year}"
        return f"{day} {name} {year}"
    month = f"{d.month:02d}" if style.pad_month else str(d.month)
    fields = {"ymd": (year, month, day), "dmy": (day, month, year), "mdy": (month, day, year)}
    return style.sep.join(fields[style.order])


def date_variants(d: date) -> list[str]:
    """The ways a note may write the date ``d`` (deduplicated, in a fixed order)."""
    return list(dict.fromkeys(format_date(d, s) for s in _DOB_STYLES))


_NUMERIC_YMD = re.compile(r"(\d{4})([-./])(\d{1,2})\2(\d{1,2})")
_NUMERIC_DMY = re.compile(r"(\d{1,2})([-./])(\d{1,2})\2(\d{4}|\d{2})")
_NAMED_DMY = re.compile(r"(\d{1,2})\.?\s+([^\W\d_]+)\.?,?\s+(\d{4})")
_NAMED_MDY = re.compile(r"([^\W\d_]+)\.?\s+(\d{1,2})(,?)\s+(\d{4})")


def _month_number(name: str) -> int | None:
    low = name.lower()
    for i, full in enumerate(MONTHS, 1):
        if low == full.lower() or (len(low) >= 3 and full.lower().startswith(low)):
            return i
    return None


def _case_of(word: str) -> str:
    return "upper" if word.isupper() and len(word) > 1 else "lower" if word.islower() else "title"


def _full_year(yy: int) -> int:
    # A two-digit year is the latest century that does not put it in the future.
    year = 2000 + yy
    return year if year <= date.today().year else year - 100


def parse_dates(text: str) -> list[tuple[date, DateStyle]]:
    """Every reading of ``text`` as one date, with the style it is written in.

    "03/01/1994" has two readings (day-first and month-first); an invalid
    date has none. Accepts the forms ``date_variants`` writes.
    """
    text = text.strip()
    out: list[tuple[date, DateStyle]] = []
    if m := _NUMERIC_YMD.fullmatch(text):
        d = _valid_date(int(m[1]), int(m[3]), int(m[4]))
        if d:
            out.append((d, DateStyle("ymd", m[2], len(m[4]) == 2, len(m[3]) == 2)))
    elif m := _NUMERIC_DMY.fullmatch(text):
        a, sep, b, y = m[1], m[2], m[3], m[4]
        year = _full_year(int(y)) if len(y) == 2 else int(y)
        d = _valid_date(year, int(b), int(a))
        if d:
            out.append((d, DateStyle("dmy", sep, len(a) == 2, len(b) == 2, len(y))))
        if sep == "/" and (d2 := _valid_date(year, int(a), int(b))) and d2 != d:
            out.append((d2, DateStyle("mdy", sep, len(b) == 2, len(a) == 2, len(y))))
    elif (m := _NAMED_DMY.fullmatch(text)) and (month := _month_number(m[2])):
        d = _valid_date(int(m[3]), month, int(m[1]))
        if d:
            kind = "full" if m[2].lower() in _FULL_MONTHS else "abbr"
            out.append((d, DateStyle("dmy", " ", len(m[1]) == 2, True, 4, kind, _case_of(m[2]))))
    elif (m := _NAMED_MDY.fullmatch(text)) and (month := _month_number(m[1])):
        d = _valid_date(int(m[4]), month, int(m[2]))
        if d:
            kind = "full" if m[1].lower() in _FULL_MONTHS else "abbr"
            style = DateStyle(
                "mdy", " ", len(m[2]) == 2, True, 4, kind, _case_of(m[1]), m[3] == ","
            )
            out.append((d, style))
    return out


# --------------------------------------------------------------------------- names


def split_person_name(value: str, field: str = "") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(given names, family names) of a PERSON identifier value.

    The field decides when it says ("family_name", "given_name", ...);
    otherwise "Family, Given", "FAMILY Given" (leading capitals) or
    "Given ... Family" (the last word is the family name).
    """
    leaf = field.rsplit(".", 1)[-1].lower()
    words = tuple(value.replace(",", " , ").split())
    plain = tuple(w for w in words if w != ",")
    if leaf in ("family_name", "last_name", "surname"):
        return (), plain
    if leaf in ("given_name", "first_name"):
        return plain, ()
    if "," in words:
        i = words.index(",")
        return tuple(w for w in words[i + 1 :] if w != ","), words[:i]
    if len(plain) == 1:
        return (), plain
    upper = [w.isupper() and sum(c.isalpha() for c in w) > 1 for w in plain]
    if upper[0] and not all(upper):
        k = upper.index(False)
        return plain[k:], plain[:k]
    return plain[:-1], plain[-1:]


def _name_variants(value: str, field: str, parts: bool) -> list[str]:
    given, family = split_person_name(value, field)
    out = [value]
    g, f = " ".join(given), " ".join(family)
    if g and f:
        out += [f"{g} {f}", f"{f} {g}", f"{f}, {g}"]
        if len(given) > 1:
            out += [f"{given[0]} {f}", f"{f} {given[0]}", f"{f}, {given[0]}"]
    if parts:
        for word in (*given, *family):
            # "Ingrid-Ene" alone, and "Ingrid" and "Ene"; two letters match too much.
            for part in (word, *word.split("-")):
                if sum(c.isalpha() for c in part) >= 3:
                    out.append(part)
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- deny lists

_TOKEN = re.compile(r"\w+|[^\w\s]")
_END = ""  # the trie key marking a complete value: no token is empty


def _tokens(text: str) -> list[str]:
    return [t.casefold() for t in _TOKEN.findall(text)]


@functools.lru_cache(maxsize=4)
def _token_spans(text: str) -> tuple[tuple[str, int, int], ...]:
    """(casefolded token, start, end) of each token; cached, as several tries scan one note."""
    low = text.casefold()
    if len(low) == len(text):  # the usual case: casefold the text once, offsets still hold
        return tuple((m.group(), m.start(), m.end()) for m in _TOKEN.finditer(low))
    return tuple((m.group().casefold(), m.start(), m.end()) for m in _TOKEN.finditer(text))


class _TokenTrie:
    """Known values as token sequences, matched in one left-to-right pass over a text."""

    def __init__(self) -> None:
        self.root: dict[str, Any] = {}
        self.size = 0

    def add(self, value: str, entity: str) -> None:
        tokens = _tokens(value)
        if not tokens:
            return
        node = self.root
        for token in tokens:
            node = node.setdefault(token, {})
        if _END not in node:  # the first type given for a value wins
            node[_END] = entity
            self.size += 1

    def find(self, text: str) -> Iterator[tuple[int, int, str]]:
        """(start, end, entity) of the longest known value starting at each token."""
        spans = _token_spans(text)
        root = self.root
        for i, (token, start, _) in enumerate(spans):
            node = root.get(token)
            if node is None:
                continue
            best: tuple[int, str] | None = None
            j = i
            while True:
                if _END in node:
                    best = (spans[j][2], node[_END])
                j += 1
                if j == len(spans):
                    break
                node = node.get(spans[j][0])
                if node is None:
                    break
            if best is not None:
                yield start, best[0], best[1]


def _name_of(recognizer: EntityRecognizer) -> str:
    # presidio assigns ``name`` in __init__ without an annotation.
    return str(getattr(recognizer, "name", type(recognizer).__name__))


class _DenyListBase(LocalRecognizer):
    """Shared by the deny-list recognizers: nothing to load, results scored 1.0 (known values)."""

    def load(self) -> None:
        pass

    def _result(self, entity: str, start: int, end: int) -> RecognizerResult:
        return RecognizerResult(
            entity_type=entity,
            start=start,
            end=end,
            score=1.0,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: _name_of(self),
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


class DenyListRecognizer(_DenyListBase):
    """Known real values of any type but phones, found case-insensitively as whole tokens.

    The deny-list recognizer of presidio, indexed: one token trie holds every
    value of every type, so the cost per note does not grow with the list.
    """

    def __init__(self, trie: _TokenTrie, entities: Sequence[str], name: str = "deny-list") -> None:
        self._trie = trie
        super().__init__(supported_entities=list(entities), name=name)

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        wanted = set(entities or self.supported_entities)
        return [
            self._result(entity, start, end)
            for start, end, entity in self._trie.find(text)
            if entity in wanted
        ]


class DenyListPhoneRecognizer(_DenyListBase):
    """Known real phone numbers, compared on digits: any spacing or dashes, with or without the code."""

    def __init__(self, numbers: Collection[str], name: str = "deny-list-phone") -> None:
        # Digit strings a known number may be written as: national, with the
        # trunk 0, with the country code (and "(0)"); "00" is handled in analyze.
        self._numbers = frozenset(numbers)
        super().__init__(supported_entities=["PHONE_NUMBER"], name=name)

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if entities and "PHONE_NUMBER" not in entities:
            return []
        # The longest known number starting at each digit group (runs come shortest first).
        best: dict[int, int] = {}
        for start, end, acc in digit_runs(text):
            if acc in self._numbers or (acc.startswith("00") and acc[2:] in self._numbers):
                best[start] = end
        return [self._result("PHONE_NUMBER", start, end) for start, end in best.items()]


def deny_list_recognizers(
    identifiers: Iterable[Identifier],
    *,
    name_parts: bool = True,
    phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
) -> list[EntityRecognizer]:
    """Recognizers for these known real identifiers and the variants notes write them in.

    PERSON: as given, "Given Family", "Family Given", "Family, Given" (also
    with the first given name only) and, if ``name_parts``, each name of 3+
    letters alone ("Mrs Tamm"); all case-insensitive, whole words. Leave
    ``name_parts`` off for other patients' names: "Will" or "Hunt" alone would
    match ordinary words everywhere. DATE_OF_BIRTH: ``date_variants``.
    PHONE_NUMBER: by digits, with +CC / 00CC / nothing. ADDRESS: as given and
    the street part (before the first comma). Other types: as given.
    Returns at most two recognizers (values, phones) however many identifiers.
    """
    trie = _TokenTrie()
    phones: set[str] = set()
    entities: set[str] = set()
    for ident in identifiers:
        value = ident.value.strip()
        if not value:
            continue
        if ident.type == "PHONE_NUMBER":
            phones |= number_forms(value, phone_regions)
            continue
        if ident.type == "PERSON":
            variants = _name_variants(value, ident.field, name_parts)
        elif ident.type == "DATE_OF_BIRTH":
            readings = parse_dates(value)
            variants = [value, *date_variants(readings[0][0])] if readings else [value]
        elif ident.type == "ADDRESS":
            variants = [value, value.split(",")[0].strip()]
        else:
            variants = [value]
        for variant in variants:
            trie.add(variant, ident.type)
        entities.add(ident.type)
    out: list[EntityRecognizer] = []
    if trie.size:
        out.append(DenyListRecognizer(trie, sorted(entities)))
    if phones:
        out.append(DenyListPhoneRecognizer(phones))
    return out


# --------------------------------------------------------------------------- running them


def find_identifiers(
    text: str,
    recognizers: Sequence[EntityRecognizer],
    types: Collection[str] | None = None,
) -> list[Finding]:
    """Identifier spans in ``text``, non-overlapping, sorted by start.

    Each recognizer runs with ``nlp_artifacts=None`` (no NLP engine). presidio
    entity names are mapped with ``PRESIDIO_ENTITY_TYPES``; only ``types``
    are kept when given. Overlaps: the longest span wins, then the higher
    score, then the recognizer listed first.
    """
    wanted = None if types is None else set(types)
    candidates: list[tuple[int, float, int, Finding]] = []
    for order, recognizer in enumerate(recognizers):
        entities = [
            e
            for e in recognizer.supported_entities
            if wanted is None or PRESIDIO_ENTITY_TYPES.get(e, e) in wanted
        ]
        if not entities:
            continue
        requires = getattr(recognizer, "requires", None)
        if requires is not None and not requires.search(text):
            continue
        # presidio annotates nlp_artifacts as required; None is what "no NLP engine" means.
        for r in recognizer.analyze(text, entities, cast("NlpArtifacts", None)):
            kind = PRESIDIO_ENTITY_TYPES.get(r.entity_type, r.entity_type)
            if (wanted is not None and kind not in wanted) or r.score <= 0 or r.end <= r.start:
                continue
            finding = Finding(kind, r.start, r.end, float(r.score), _name_of(recognizer))
            candidates.append((r.end - r.start, finding.score, order, finding))
    candidates.sort(key=lambda c: (-c[0], -c[1], c[2], c[3].start))
    taken: list[tuple[int, int]] = []  # accepted spans, sorted and disjoint
    kept: list[Finding] = []
    for _, _, _, f in candidates:
        i = bisect.bisect_left(taken, (f.start, f.end))
        if (i > 0 and taken[i - 1][1] > f.start) or (i < len(taken) and taken[i][0] < f.end):
            continue
        taken.insert(i, (f.start, f.end))
        kept.append(f)
    kept.sort(key=lambda f: (f.start, f.end))
    return kept
