"""Pseudonymization before generator training, checked against the demo export's gold sidecar."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from appliance import demo
from appliance.config import Policy, load_policy
from appliance.documents import Identifier, Record

# The private pools: tests check surrogates against them.
from appliance.generator.pseudonymize import _FAMILY, _FEMALE, Pseudonymizer
from appliance.identifiers.national_ids import (
    hetu_is_valid,
    isikukood_birth_info,
    isikukood_is_valid,
    personnummer_is_valid,
    ssn_is_valid,
)
from appliance.identifiers.recognizers import format_date, parse_dates
from appliance.records.readers import read_export

KEY = hashlib.sha256(b"test pseudonym key").digest()


@dataclass
class Demo:
    records: list[Record]
    gold: dict[str, dict[str, Any]]
    out: dict[str, Any]  # record id -> PseudonymizedText


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    folder = tmp_path_factory.mktemp("demo")
    demo.run(folder, notes=150, fmt="jsonl", seed=5)
    records = [r for r in read_export(folder / "notes.jsonl") if isinstance(r, Record)]
    gold = {}
    with open(folder / "gold.jsonl", encoding="utf-8") as fh:
        for line in fh:
            g = json.loads(line)
            gold[g["id"]] = g
    p = Pseudonymizer(load_policy(), KEY, identifiers=[i for r in records for i in r.identifiers])
    return Demo(records, gold, {r.id: p.pseudonymize(r) for r in records})


def _in_text(g: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((i for i in g["identifiers"] if i["start"] is not None), key=lambda i: i["start"])


def _replacements(original: str, idents: list[dict[str, Any]], new: str) -> list[str] | None:
    """What each gold span became, if nothing outside the spans changed (else None)."""
    pieces, pos = [], 0
    for i in idents:
        pieces.append(re.escape(original[pos : i["start"]]))
        pos = i["end"]
    pieces.append(re.escape(original[pos:]))
    m = re.fullmatch("(?s)" + "(.+?)".join(pieces), new)
    return None if m is None else list(m.groups())


def _policy(tmp_path: Path, body: str) -> Policy:
    path = tmp_path / "policy.toml"
    path.write_text('[policy]\nname = "test"\n' + body, encoding="utf-8")
    return load_policy(path)


# --------------------------------------------------------------------------- demo data


def test_demo_has_identifiers_in_text(demo_run: Demo) -> None:
    kinds = Counter(i["type"] for g in demo_run.gold.values() for i in _in_text(g))
    assert set(kinds) == {
        "PERSON",
        "NATIONAL_ID",
        "DATE_OF_BIRTH",
        "PHONE_NUMBER",
        "ADDRESS",
        "MEDICAL_RECORD_NUMBER",
    }


def test_no_real_identifier_survives(demo_run: Demo) -> None:
    texts = "\n".join(o.text for o in demo_run.out.values())
    values = set()
    for g in demo_run.gold.values():
        for i in g["identifiers"]:
            values.add((i["type"], i["value"]))
            if i["start"] is not None:
                values.add((i["type"], g["text"][i["start"] : i["end"]]))
    leaked = []
    for kind, value in values:
        if kind == "PERSON":
            if re.search(rf"(?<!\w){re.escape(value)}(?!\w)", texts, re.IGNORECASE):
                leaked.append(value)
        elif value in texts:
            leaked.append(value)
    assert len(values) > 300
    assert leaked == []


def test_nothing_else_changes(demo_run: Demo) -> None:
    for r in demo_run.records:
        new = demo_run.out[r.id].text
        assert _replacements(r.text, _in_text(demo_run.gold[r.id]), new) is not None, r.id
        for e in demo_run.gold[r.id]["entities"]:
            if e["label"] == "DRUG":
                assert new.count(e["text"]) >= r.text.count(e["text"])


def test_counts_match_gold(demo_run: Demo) -> None:
    total: Counter[str] = Counter()
    for r in demo_run.records:
        expected = Counter(i["type"] for i in _in_text(demo_run.gold[r.id]))
        assert demo_run.out[r.id].counts == expected, r.id
        total += demo_run.out[r.id].counts
    assert total["PERSON"] > 10 and total["NATIONAL_ID"] > 5


def test_consistent_per_patient(demo_run: Demo) -> None:
    seen: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for r in demo_run.records:
        patient = next(i.value for i in r.identifiers if i.type == "MEDICAL_RECORD_NUMBER")
        idents = _in_text(demo_run.gold[r.id])
        new = _replacements(r.text, idents, demo_run.out[r.id].text)
        assert new is not None
        for ident, surrogate in zip(idents, new, strict=True):
            real = r.text[ident["start"] : ident["end"]]
            seen[(patient, ident["type"], real.casefold())].add(surrogate.casefold())
    assert any(kind == "PERSON" for _, kind, _ in seen)
    assert {k: v for k, v in seen.items() if len(v) != 1} == {}


def test_surrogate_ids_are_valid_and_keep_sex_and_birth(demo_run: Demo) -> None:
    checked = 0
    for r in demo_run.records:
        idents = _in_text(demo_run.gold[r.id])
        new = _replacements(r.text, idents, demo_run.out[r.id].text)
        assert new is not None
        births = {}
        for ident, surrogate in zip(idents, new, strict=True):
            real = r.text[ident["start"] : ident["end"]]
            if ident["type"] == "NATIONAL_ID":
                assert isikukood_is_valid(surrogate) and surrogate != real
                old, moved = isikukood_birth_info(real), isikukood_birth_info(surrogate)
                assert old and moved and old.female == moved.female
                assert 15 <= abs((moved.birth - old.birth).days) <= 365
                births["id"] = moved.birth
                checked += 1
            elif ident["type"] == "DATE_OF_BIRTH":
                (_, style), *_ = parse_dates(real)
                moved_dob = next(d for d, _ in parse_dates(surrogate))
                assert format_date(moved_dob, style) == surrogate  # written the same way
                births["dob"] = moved_dob
            elif ident["type"] == "PHONE_NUMBER":
                # Same layout: separators, length, country code and first digit.
                assert re.sub(r"\d", "9", surrogate) == re.sub(r"\d", "9", real)
                assert surrogate != real
                assert surrogate.startswith("+372 5" if real.startswith("+") else real[0])
            elif ident["type"] == "MEDICAL_RECORD_NUMBER":
                assert re.fullmatch(r"P\d{6}", surrogate) and surrogate != real
        if len(births) == 2:  # the surrogate code carries the surrogate birth date
            assert births["id"] == births["dob"]
    assert checked > 5


def test_names_keep_their_shape() -> None:
    policy = load_policy()
    p = Pseudonymizer(policy, KEY, [Identifier("PERSON", "Mari Tamm", "patient.name")])
    ids = (Identifier("PERSON", "Mari Tamm", "patient.name"),)
    text = "TAMM, Mari. Mrs Tamm said Mari Tamm; mari tamm."
    out = p.pseudonymize(Record("n1", text, identifiers=ids)).text
    m = re.fullmatch(r"(\w+), (\w+)\. Mrs (\w+) said (\w+) (\w+); (\w+) (\w+)\.", out)
    assert m, out
    fam_up, given, fam, given2, fam2, given_low, fam_low = m.groups()
    assert fam_up == fam.upper() and fam == fam2 and fam_low == fam.lower()
    assert given == given2 and given_low == given.lower()
    assert fam != "Tamm" and given != "Mari"
    assert given in _FEMALE  # Mari is a woman's name, so is her surrogate
    # Another note of the same patient, another instance with the same key: same surrogates.
    again = Pseudonymizer(policy, KEY, [Identifier("PERSON", "Mari Tamm", "patient.name")])
    assert again.pseudonymize(Record("n2", "Mari Tamm", identifiers=ids)).text == f"{given} {fam}"
    other = Pseudonymizer(policy, b"another key", [Identifier("PERSON", "Mari Tamm", "name")])
    assert other.pseudonymize(Record("n3", text, identifiers=ids)).text != out


def test_other_patients_full_names_are_replaced() -> None:
    a = Record("a", "note", identifiers=(Identifier("PERSON", "Ingrid Mets", "name"),))
    b_ids = (Identifier("PERSON", "Jaan Sepp", "name"),)
    b = Record("b", "Jaan Sepp met Ingrid Mets; Mets is a common word here.", identifiers=b_ids)
    p = Pseudonymizer(load_policy(), KEY, [*a.identifiers, *b.identifiers])
    out = p.pseudonymize(b)
    assert "Ingrid Mets" not in out.text and "Jaan Sepp" not in out.text
    assert out.text.endswith("; Mets is a common word here.")  # parts of others' names stay
    assert out.counts == Counter({"PERSON": 2})


def test_surrogates_never_equal_real_values() -> None:
    # Every family name in the pool is a real patient's: the surrogate must be made up.
    real = [Identifier("PERSON", f"Mari {family}", "name") for family in _FAMILY]
    real.append(Identifier("PERSON", "Mari Tamm", "name"))
    p = Pseudonymizer(load_policy(), KEY, real)
    rec = Record("n", "Mrs Tamm", identifiers=(real[-1],))
    new = p.pseudonymize(rec).text.removeprefix("Mrs ")
    assert new.casefold() not in {f.casefold() for f in (*_FAMILY, "Tamm")}
    assert new.isalpha() and new[0].isupper()


def test_pattern_found_identifiers_are_replaced() -> None:
    text = "Daughter: IK 37605030299, tel +372 5508 5160, mail liis@example.ee; MRN: X123456."
    out = Pseudonymizer(load_policy(), KEY).pseudonymize(Record("n", text))
    assert out.counts == Counter(
        {"NATIONAL_ID": 1, "PHONE_NUMBER": 1, "EMAIL_ADDRESS": 1, "MEDICAL_RECORD_NUMBER": 1}
    )
    for real in ("37605030299", "5508 5160", "liis@example.ee", "X123456"):
        assert real not in out.text
    code = re.search(r"IK (\d+)", out.text)
    assert code and isikukood_is_valid(code[1])
    assert isikukood_birth_info(code[1]).birth.year in (1975, 1976, 1977)  # type: ignore[union-attr]
    assert re.search(
        r"tel \+372 5\d{3} \d{4}, mail \w+\.\w+@example\.(org|com|net); MRN: X\d{6}\.", out.text
    )


def test_other_schemes_and_shapes() -> None:
    ids = (
        Identifier("NATIONAL_ID", "811228-9874", "pnr"),
        Identifier("NATIONAL_ID", "131052-308T", "hetu"),
        Identifier("NATIONAL_ID", "536-22-1234", "ssn"),
        Identifier("NATIONAL_ID", "AB-1234-C", "passport"),
        Identifier("ADDRESS", "Storgatan 12 B, 114 55 Stockholm", "address"),
        Identifier("DATE_OF_BIRTH", "1981-12-28", "dob"),
    )
    text = "811228-9874 / 131052-308T / 536-22-1234 / AB-1234-C / Storgatan 12 B, 114 55 Stockholm / 28 December 1981"
    out = (
        Pseudonymizer(load_policy(), KEY, ids).pseudonymize(Record("n", text, identifiers=ids)).text
    )
    pnr, hetu, ssn, other, address, dob = out.split(" / ")
    assert personnummer_is_valid(pnr) and re.fullmatch(r"\d{6}-\d{4}", pnr) and pnr != ids[0].value
    assert int(pnr[-2]) % 2 == 1  # a man stays a man
    assert hetu_is_valid(hetu) and hetu != ids[1].value and int(hetu[7:10]) % 2 == 0
    assert ssn_is_valid(ssn) and ssn != ids[2].value
    assert re.fullmatch(r"AB-\d{4}-C", other) and other != ids[3].value
    street, _, rest = address.partition(",")
    assert re.fullmatch(r"[^\W\d]+gatan [1-9]\d B", street), street
    assert "Stockholm" not in address and "Storgatan" not in address
    assert re.fullmatch(r" 1\d\d \d\d [^\W\d]+(-[^\W\d]+)?", rest)
    (d, _), *_ = parse_dates(dob)
    assert re.fullmatch(r"\d{1,2} [A-Z][a-z]+ \d{4}", dob)
    assert 15 <= abs((d - date(1981, 12, 28)).days) <= 365
    # The personnummer's birth date moved with the date of birth.
    assert pnr[:6] == d.strftime("%y%m%d")


def test_disabled_policy_leaves_text_alone(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "[pseudonymize]\nenabled = false\n")
    ids = (Identifier("PERSON", "Mari Tamm", "name"),)
    rec = Record("n", "Mari Tamm, IK 37605030299", identifiers=ids)
    out = Pseudonymizer(policy, KEY, ids).pseudonymize(rec)
    assert out.text == rec.text and out.counts == Counter()


def test_only_policy_types_are_replaced(tmp_path: Path) -> None:
    policy = _policy(tmp_path, '[identifiers]\ntypes = ["PHONE_NUMBER"]\n')
    ids = (Identifier("PERSON", "Mari Tamm", "name"),)
    rec = Record("n", "Mari Tamm, IK 37605030299, tel 5508 5160", identifiers=ids)
    out = Pseudonymizer(policy, KEY, ids).pseudonymize(rec)
    assert out.text.startswith("Mari Tamm, IK 37605030299, tel ") and "5508 5160" not in out.text
    assert out.counts == Counter({"PHONE_NUMBER": 1})


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        Pseudonymizer(load_policy(), b"")
