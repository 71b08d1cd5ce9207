"""Checksum-valid national identity numbers: make them and check them.

The demo generator needs fake patients whose ID numbers look real, and the
leakage screen needs to tell an ID number from any other run of digits (a
phone number, a lab value): a checksum that holds is strong evidence.

    Estonian isikukood   GYYMMDDSSSC    G = century and sex, mod-11 two-stage check digit
    Swedish personnummer YYMMDD-NNNC    Luhn check digit; '+' instead of '-' from age 100
    Finnish HETU         DDMMYYCNNNQ    C = century sign, Q = mod-31 check character
    US SSN               AAA-GG-SSSS    no checksum; only the area/group/serial rules

Validators take a string and return a bool, never raise. ``make_*`` raise
``ValueError`` for arguments that cannot form a valid number.
"""

from __future__ import annotations

import re
from datetime import date
from typing import NamedTuple

__all__ = [
    "HETU_RE",
    "ISIKUKOOD_RE",
    "PERSONNUMMER_RE",
    "SSN_RE",
    "BirthInfo",
    "hetu_birth_info",
    "hetu_is_valid",
    "isikukood_birth_info",
    "isikukood_is_valid",
    "make_hetu",
    "make_isikukood",
    "make_personnummer",
    "make_ssn",
    "personnummer_is_valid",
    "ssn_is_valid",
]


class BirthInfo(NamedTuple):
    """What an ID number says about its holder."""

    birth: date
    female: bool


def _valid_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


# --- Estonian isikukood ------------------------------------------------------

ISIKUKOOD_RE = re.compile(r"^[1-6]\d{10}$")

# First digit: (century, female). 1/2 = 1800s, 3/4 = 1900s, 5/6 = 2000s; odd is male.
_EE_CENTURY = {1: 1800, 2: 1800, 3: 1900, 4: 1900, 5: 2000, 6: 2000}
_EE_WEIGHTS_1 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 1)
_EE_WEIGHTS_2 = (3, 4, 5, 6, 7, 8, 9, 1, 2, 3)


def _isikukood_check_digit(first10: str) -> int:
    digits = [int(c) for c in first10]
    rest = sum(d * w for d, w in zip(digits, _EE_WEIGHTS_1, strict=True)) % 11
    if rest < 10:
        return rest
    # A remainder of 10 cannot be a digit: the standard retries with shifted weights,
    # and only if that also gives 10 does the check digit become 0.
    rest = sum(d * w for d, w in zip(digits, _EE_WEIGHTS_2, strict=True)) % 11
    return rest if rest < 10 else 0


def isikukood_birth_info(code: str) -> BirthInfo | None:
    """Birth date and sex of a valid isikukood, or None if it is not valid."""
    if not ISIKUKOOD_RE.match(code):
        return None
    if _isikukood_check_digit(code[:10]) != int(code[10]):
        return None
    first = int(code[0])
    birth = _valid_date(_EE_CENTURY[first] + int(code[1:3]), int(code[3:5]), int(code[5:7]))
    if birth is None:
        return None
    return BirthInfo(birth, female=first % 2 == 0)


def isikukood_is_valid(code: str) -> bool:
    """True if ``code`` is an 11-digit Estonian personal code with a real date and a good check digit."""
    return isikukood_birth_info(code) is not None


def make_isikukood(birth: date, female: bool, serial: int) -> str:
    """The isikukood for a person born on ``birth``; ``serial`` (0-999) tells apart same-day births."""
    if not 1800 <= birth.year <= 2099:
        raise ValueError(f"isikukood covers birth years 1800-2099, not {birth.year}")
    if not 0 <= serial <= 999:
        raise ValueError(f"isikukood serial must be 0-999, not {serial}")
    first = 1 + 2 * ((birth.year - 1800) // 100) + (1 if female else 0)
    first10 = f"{first}{birth:%y%m%d}{serial:03d}"
    return first10 + str(_isikukood_check_digit(first10))


# --- Swedish personnummer ----------------------------------------------------

# 10 digits with an optional '-' or '+' (the short form), or 12 digits with the century.
PERSONNUMMER_RE = re.compile(r"^(\d{2})?(\d{2})(\d{2})(\d{2})([-+]?)(\d{3})(\d)$")


def _luhn_check_digit(digits: str) -> int:
    total = 0
    for i, c in enumerate(digits):
        d = int(c) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10


def personnummer_is_valid(pnr: str) -> bool:
    """True for a Swedish personnummer (or samordningsnummer) with a real date and a good Luhn digit.

    Accepts ``YYMMDD-NNNC``, ``YYMMDD+NNNC``, ``YYMMDDNNNC`` and ``YYYYMMDD[-]NNNC``.
    The short form does not say the century, so its date only has to exist in one.
    """
    m = PERSONNUMMER_RE.match(pnr)
    if not m:
        return False
    century, yy, mm, dd, sep, serial, check = m.groups()
    if century is not None and sep == "+":
        return False  # '+' only makes sense when the century is left out
    if _luhn_check_digit(yy + mm + dd + serial) != int(check):
        return False
    day = int(dd)
    if day > 60:
        day -= 60  # samordningsnummer (coordination number): day + 60
    centuries = [int(century) * 100] if century is not None else [1800, 1900, 2000]
    return any(_valid_date(c + int(yy), int(mm), day) is not None for c in centuries)


def make_personnummer(birth: date, female: bool, serial: int, *, on: date | None = None) -> str:
    """The short-form personnummer ``YYMMDD-NNNC`` for a person born on ``birth``.

    ``serial`` is the three-digit birth number; its last digit is odd for men
    and even for women, so it must match ``female``. When ``on`` is given and
    the person is 100 or older on that date, the separator is ``+``.
    """
    if not 0 <= serial <= 999:
        raise ValueError(f"personnummer serial must be 0-999, not {serial}")
    if (serial % 2 == 0) != female:
        raise ValueError("personnummer serial must be even for women and odd for men")
    sep = "-"
    if (
        on is not None
        and (on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))) >= 100
    ):
        sep = "+"
    body = f"{birth:%y%m%d}{serial:03d}"
    return f"{body[:6]}{sep}{body[6:]}{_luhn_check_digit(body)}"


# --- Finnish henkilötunnus (HETU) --------------------------------------------

HETU_RE = re.compile(r"^(\d{2})(\d{2})(\d{2})([-+A-FU-Y])(\d{3})([0-9A-Y])$")

_HETU_CHECK_CHARS = "0123456789ABCDEFHJKLMNPRSTUVWXY"  # 31 characters: no G, I, O, Q, Z
# Since 2023 each century has several signs; '-' / 'A' remain the usual ones.
_HETU_CENTURY = {"+": 1800, **dict.fromkeys("-YXWVU", 1900), **dict.fromkeys("ABCDEF", 2000)}
_HETU_SIGN = {1800: "+", 1900: "-", 2000: "A"}


def _hetu_check_char(ddmmyy: str, individual: str) -> str:
    return _HETU_CHECK_CHARS[int(ddmmyy + individual) % 31]


def hetu_birth_info(hetu: str) -> BirthInfo | None:
    """Birth date and sex of a valid HETU, or None if it is not valid."""
    m = HETU_RE.match(hetu)
    if not m:
        return None
    dd, mm, yy, sign, individual, check = m.groups()
    # 002-899 are ordinary individual numbers, 900-999 temporary ones; 000 and 001 are never issued.
    if int(individual) < 2 or _hetu_check_char(dd + mm + yy, individual) != check:
        return None
    birth = _valid_date(_HETU_CENTURY[sign] + int(yy), int(mm), int(dd))
    if birth is None:
        return None
    return BirthInfo(birth, female=int(individual) % 2 == 0)


def hetu_is_valid(hetu: str) -> bool:
    """True if ``hetu`` is a Finnish personal identity code with a real date and a good check character."""
    return hetu_birth_info(hetu) is not None


def make_hetu(birth: date, female: bool, serial: int) -> str:
    """The HETU ``DDMMYYCNNNQ`` for a person born on ``birth``.

    ``serial`` is the individual number (2-899); it is odd for men and even
    for women, so it must match ``female``.
    """
    century = birth.year // 100 * 100
    if century not in _HETU_SIGN:
        raise ValueError(f"HETU covers birth years 1800-2099, not {birth.year}")
    if not 2 <= serial <= 899:
        raise ValueError(f"HETU individual number must be 2-899, not {serial}")
    if (serial % 2 == 0) != female:
        raise ValueError("HETU individual number must be even for women and odd for men")
    ddmmyy = f"{birth:%d%m%y}"
    individual = f"{serial:03d}"
    return f"{ddmmyy}{_HETU_SIGN[century]}{individual}{_hetu_check_char(ddmmyy, individual)}"


# --- US Social Security number -----------------------------------------------

SSN_RE = re.compile(r"^(\d{3})(-?)(\d{2})(-?)(\d{4})$")

# Numbers the SSA voided after they were printed in advertising and widely misused.
_SSN_VOID = frozenset({"078051120", "219099999"})


def ssn_is_valid(ssn: str) -> bool:
    """True if ``ssn`` follows the SSA's rules: ``AAA-GG-SSSS`` or 9 digits.

    The area may not be 000, 666 or 900-999, the group not 00, the serial
    not 0000. There is no checksum, so this only rules numbers out.
    """
    m = SSN_RE.match(ssn)
    if not m:
        return False
    area, dash1, group, dash2, serial = m.groups()
    if dash1 != dash2:
        return False  # "123-456789" is neither format
    a = int(area)
    if a == 0 or a == 666 or a >= 900 or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_VOID


def make_ssn(area: int, group: int, serial: int) -> str:
    """Format ``AAA-GG-SSSS``, raising ValueError if the parts break the SSA's rules."""
    ssn = f"{area:03d}-{group:02d}-{serial:04d}"
    if not (0 <= area <= 999 and 0 <= group <= 99 and 0 <= serial <= 9999) or not ssn_is_valid(ssn):
        raise ValueError(f"not a valid SSN: area {area}, group {group}, serial {serial}")
    return ssn
