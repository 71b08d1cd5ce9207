"""Phone numbers by their digits: the one scan the leakage index, the screen and the deny lists share.

A known phone number is compared on digits, however a note spaces it:
"+372 5141 3739", "5141-3739" and "00372 51413739" are the same number.
:func:`number_forms` gives the digit strings a known number may be written
as; :func:`digit_runs` finds every run of digit groups in a text that could
be one. The leakage index hashes the forms of every real number, and the
screen looks up the runs of every synthetic note
(:func:`phone_candidates`); the pseudonymizer's deny list compares the runs
with the forms of one patient's numbers. One scan, so what the index holds
and what the screen and the deny list look for cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import phonenumbers
from phonenumbers import NumberParseException

# Regions whose numbering plans decide whether a number without a country
# code is a phone number. A number with "+" or "00" is checked on its own.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("EE", "FI", "SE", "US", "GB", "DE")

# A phone number's digit groups: "+372", "5141", "3739"; between groups at most
# three of space, dash, dot, slash or parentheses ("+44 (0)20 7946 0018").
_DIGIT_GROUP = re.compile(r"\+?\d+")
_PHONE_GAP = re.compile(r"[ \t\-./()]{1,3}")
_MAX_PHONE_GROUPS = 8


def digit_runs(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, digits) of every run of up to 8 digit groups, by start, then shortest first.

    A run starts at a digit group and takes the following groups while the
    gap before each is a phone separator and the group has no "+" of its
    own; ``digits`` are the run's digits (a leading "+" dropped, "00" kept).
    """
    groups = [(m.start(), m.end(), m.group().lstrip("+")) for m in _DIGIT_GROUP.finditer(text)]
    for i, (start, _, digits) in enumerate(groups):
        acc = digits
        for j in range(i, min(i + _MAX_PHONE_GROUPS, len(groups))):
            if j > i:
                gap = text[groups[j - 1][1] : groups[j][0]]
                if not _PHONE_GAP.fullmatch(gap) or text[groups[j][0]] == "+":
                    break
                acc += groups[j][2]
            yield start, groups[j][1], acc


def phone_candidates(text: str) -> list[tuple[int, int, str]]:
    """(start, end, digits) of every run of digit groups that could be a phone number.

    Runs of at least 6 digits; an international "00" prefix is dropped from
    ``digits`` (the forms of :func:`number_forms` have none).
    """
    return [
        (start, end, acc[2:] if acc.startswith("00") else acc)
        for start, end, acc in digit_runs(text)
        if len(acc) >= 6
    ]


def phone_parts(text: str, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> tuple[str, str]:
    """(country code, national number) of a phone number; the code is "" when unknown.

    The national number has no trunk prefix ("020 7946 0018" -> "2079460018").
    A number without "+"/"00" gets the code of the first region it is valid in.
    """
    digits = re.sub(r"\D", "", text)
    international = text.lstrip().startswith("+") or digits.startswith("00")
    body = digits[2:] if digits.startswith("00") else digits
    try:
        if international:
            number = phonenumbers.parse("+" + body, None)
            cc = str(number.country_code)
            return cc, body[len(cc) :].lstrip("0")
        for region in regions:
            number = phonenumbers.parse(body, region)
            if phonenumbers.is_valid_number_for_region(number, region):
                return str(number.country_code), body.lstrip("0")
    except NumberParseException:
        pass
    return "", body.lstrip("0")


def number_forms(value: str, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> set[str]:
    """The digit strings a known number may be written as: national, with the trunk 0, with the code.

    Empty for a number too short to tell from any other number.
    """
    cc, national = phone_parts(value, regions)
    if len(national) < 6:  # too short to tell from any other number
        return set()
    out = {national, "0" + national}
    if cc:
        out |= {cc + national, cc + "0" + national}
    return out
