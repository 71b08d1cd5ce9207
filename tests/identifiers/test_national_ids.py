"""Checksum-valid national ID numbers: known examples, round trips, rejections."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest

from appliance.identifiers.national_ids import (
    BirthInfo,
    hetu_birth_info,
    hetu_is_valid,
    isikukood_birth_info,
    isikukood_is_valid,
    make_hetu,
    make_isikukood,
    make_personnummer,
    make_ssn,
    personnummer_is_valid,
    ssn_is_valid,
)

# --- Estonian isikukood --------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("37605030299", True),  # the standard's own example
        ("37605030298", False),  # wrong check digit
        ("49403136526", True),
        ("38001080079", True),  # first stage gives 10, second stage gives 9
        ("38001080070", False),
        ("45001010430", True),  # both stages give 10: check digit 0
        ("45001010431", False),
        ("60001019906", True),  # born 1 January 2000
        ("60001019907", False),
        ("37613030299", False),  # month 13
        ("37602300293", False),  # 30 February
        ("77605030299", False),  # century digit 7 is not defined
        ("3760503029", False),  # 10 digits
        ("376050302990", False),  # 12 digits
        ("3760503029a", False),
        (" 37605030299", False),
        ("", False),
    ],
)
def test_isikukood_is_valid(code: str, valid: bool) -> None:
    assert isikukood_is_valid(code) is valid


@pytest.mark.parametrize(
    ("birth", "female", "serial", "expected"),
    [
        (date(1976, 5, 3), False, 29, "37605030299"),
        (date(1994, 3, 13), True, 652, "49403136526"),
        (date(1950, 1, 1), True, 43, "45001010430"),
        (date(1980, 1, 8), False, 7, "38001080079"),
    ],
)
def test_make_isikukood_known(birth: date, female: bool, serial: int, expected: str) -> None:
    code = make_isikukood(birth, female, serial)
    assert code == expected
    assert isikukood_is_valid(code)
    assert isikukood_birth_info(code) == BirthInfo(birth, female)


def test_isikukood_century_digit() -> None:
    assert make_isikukood(date(1899, 1, 1), False, 1)[0] == "1"
    assert make_isikukood(date(1899, 1, 1), True, 1)[0] == "2"
    assert make_isikukood(date(2004, 2, 29), False, 1)[0] == "5"
    assert make_isikukood(date(2004, 2, 29), True, 1)[0] == "6"


def test_isikukood_round_trip_many() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        birth = date(1800, 1, 1) + timedelta(days=rng.randrange(109_000))
        female = rng.random() < 0.5
        code = make_isikukood(birth, female, rng.randrange(1000))
        assert isikukood_birth_info(code) == BirthInfo(birth, female)
        wrong = code[:10] + str((int(code[10]) + rng.randint(1, 9)) % 10)
        assert not isikukood_is_valid(wrong)


@pytest.mark.parametrize(
    ("birth", "serial"), [(date(1799, 12, 31), 1), (date(2100, 1, 1), 1), (date(1990, 1, 1), 1000)]
)
def test_make_isikukood_rejects(birth: date, serial: int) -> None:
    with pytest.raises(ValueError):
        make_isikukood(birth, False, serial)


# --- Swedish personnummer ------------------------------------------------------


@pytest.mark.parametrize(
    ("pnr", "valid"),
    [
        ("811228-9874", True),
        ("8112289874", True),
        ("19811228-9874", True),
        ("198112289874", True),
        ("811228+9874", True),  # the same person past 100
        ("670919-9530", True),
        ("701063-2391", True),  # samordningsnummer: day 03 + 60
        ("811228-9873", False),  # wrong Luhn digit
        ("811328-9871", False),  # month 13
        ("19811228+9874", False),  # '+' only with the short form
        ("811228 9874", False),
        ("811228-987", False),
        ("", False),
    ],
)
def test_personnummer_is_valid(pnr: str, valid: bool) -> None:
    assert personnummer_is_valid(pnr) is valid


def test_make_personnummer() -> None:
    assert make_personnummer(date(1981, 12, 28), False, 987) == "811228-9874"
    assert make_personnummer(date(1967, 9, 19), False, 953) == "670919-9530"
    assert make_personnummer(date(1910, 1, 5), True, 124, on=date(2012, 3, 1)).startswith("100105+")
    assert make_personnummer(date(1910, 1, 5), True, 124, on=date(2009, 3, 1)).startswith("100105-")
    with pytest.raises(ValueError):
        make_personnummer(date(1981, 12, 28), True, 987)  # odd birth number is male
    with pytest.raises(ValueError):
        make_personnummer(date(1981, 12, 28), False, 1001)


def test_personnummer_round_trip_many() -> None:
    rng = random.Random(2)
    for _ in range(1000):
        birth = date(1920, 1, 1) + timedelta(days=rng.randrange(36_000))
        female = rng.random() < 0.5
        serial = rng.randrange(500) * 2 + (0 if female else 1)
        assert personnummer_is_valid(make_personnummer(birth, female, serial))


# --- Finnish HETU --------------------------------------------------------------


@pytest.mark.parametrize(
    ("hetu", "valid"),
    [
        ("131052-308T", True),  # the Population Register Centre's example
        ("131052A308T", True),  # same digits, 2000s: the century is not in the check
        ("010594Y9021", True),  # new 1900s century sign (2023)
        ("010594Y9032", True),
        ("131052-308U", False),
        ("131052-001T", False),  # individual numbers start at 002
        ("311152-308T", False),  # 31 November
        ("131052Z308T", False),  # unknown century sign
        ("131052-308", False),
        ("131052-308t", False),
    ],
)
def test_hetu_is_valid(hetu: str, valid: bool) -> None:
    assert hetu_is_valid(hetu) is valid


def test_make_hetu() -> None:
    assert make_hetu(date(1952, 10, 13), True, 308) == "131052-308T"
    assert hetu_birth_info("131052-308T") == BirthInfo(date(1952, 10, 13), True)
    assert make_hetu(date(2005, 1, 2), False, 123)[6] == "A"
    assert make_hetu(date(1880, 1, 2), False, 123)[6] == "+"
    with pytest.raises(ValueError):
        make_hetu(date(1952, 10, 13), False, 308)  # even number is female
    with pytest.raises(ValueError):
        make_hetu(date(1952, 10, 13), False, 901)  # temporary numbers are not made


def test_hetu_round_trip_many() -> None:
    rng = random.Random(3)
    for _ in range(1000):
        birth = date(1850, 1, 1) + timedelta(days=rng.randrange(80_000))
        female = rng.random() < 0.5
        serial = rng.randrange(1, 449) * 2 + (0 if female else 1)
        assert hetu_birth_info(make_hetu(birth, female, serial)) == BirthInfo(birth, female)


# --- US SSN --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ssn", "valid"),
    [
        ("536-90-4399", True),
        ("536904399", True),
        ("001-01-0001", True),
        ("899-99-9999", True),
        ("000-12-3456", False),  # area 000
        ("666-12-3456", False),  # area 666
        ("900-12-3456", False),  # areas 900-999
        ("123-00-4567", False),  # group 00
        ("123-45-0000", False),  # serial 0000
        ("078-05-1120", False),  # the voided "Woolworth" number
        ("123-456789", False),
        ("12-345-6789", False),
        ("123 45 6789", False),
    ],
)
def test_ssn_is_valid(ssn: str, valid: bool) -> None:
    assert ssn_is_valid(ssn) is valid


def test_make_ssn() -> None:
    assert make_ssn(536, 90, 4399) == "536-90-4399"
    with pytest.raises(ValueError):
        make_ssn(666, 1, 1)
    with pytest.raises(ValueError):
        make_ssn(1000, 1, 1)
