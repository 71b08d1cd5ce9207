"""The planted-leak benchmark in small: every leak kind against a real workspace, and clean notes.

Uses the benchmark's own planting and scoring (``benchmarks/screen_planted.py``)
on tiny synthetic notes (random pseudo-words, so clean notes share nothing
with the real ones by chance) with fake patients from the demo generator:
ingest, plant, screen through ``appliance.privacy.screen.run``, score from
the JSON report.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from benchmarks.screen_planted import (
    IDENT_KINDS,
    KINDS,
    SPAN_KINDS,
    Note,
    make_plants,
    run_planted,
    split,
    synthetic_notes,
)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    notes = synthetic_notes(240, seed=5)
    return run_planted(
        tmp_path_factory.mktemp("planted"),
        notes,
        holdout=70,
        clean=50,
        per_kind=12,
        seed=5,
        variants=["verbatim_calibrate=true", "boilerplate_patients=2"],
    )


def test_every_planted_leak_is_quarantined(planted: dict[str, Any]) -> None:
    run = planted["runs"]["default"]
    assert run["verbatim_threshold"]["tokens"] == 12  # nothing to calibrate on in random text
    for kind in ("whole", *SPAN_KINDS, *IDENT_KINDS):
        row = run["kinds"][kind]
        assert row["planted"] == 12, kind
        assert row["rate"] == 1.0, (kind, row)
    assert run["kinds"]["edit10"]["rate"] >= 0.9
    for kind in SPAN_KINDS:
        assert "verbatim" in run["kinds"][kind]["detectors"]
        assert run["kinds"][kind]["boilerplate_only"] == 0
    for kind in IDENT_KINDS:
        assert run["kinds"][kind]["detectors"].get("identifiers") == 12


def test_clean_held_out_notes_pass(planted: dict[str, Any]) -> None:
    clean = planted["runs"]["default"]["kinds"]["clean"]
    assert clean["planted"] == 50
    assert clean["rate"] <= 0.02, clean
    assert planted["held_out_notes"] >= 70
    assert planted["index_records"] == planted["real_notes"] == planted["real_stored"]


def test_policy_variants_give_the_same_decisions_here(planted: dict[str, Any]) -> None:
    """Random pseudo-words share nothing by chance: calibration and boilerplate change nothing."""
    default = planted["runs"]["default"]["kinds"]
    for name in ("verbatim_calibrate=true", "boilerplate_patients=2"):
        run = planted["runs"][name]
        assert run["verbatim_threshold"]["tokens"] == 12, name
        assert {k: r["quarantined"] for k, r in run["kinds"].items()} == {
            k: r["quarantined"] for k, r in default.items()
        }, name


def test_plants_are_what_they_claim(tmp_path: Path) -> None:
    """Spans are verbatim and of the stated length, fillers and clean notes are held out."""
    from appliance.privacy.ngram_index import tokenize

    notes = synthetic_notes(200, seed=9)
    real, held = split(notes, 60, seed=9)
    assert not {n.id for n in real} & {n.id for n in held} and len(held) >= 60
    plants = make_plants(real, held, clean=20, per_kind=5, seed=9)
    by_id = {n.id: n for n in real}
    held_texts = {n.text for n in held}
    assert {p.kind for p in plants} == {"clean", *KINDS}
    for p in plants:
        if p.kind == "clean":
            assert p.text in held_texts
        elif p.kind in SPAN_KINDS:
            assert p.leaked is not None and p.record is not None
            assert len(tokenize(p.leaked)[0]) == SPAN_KINDS[p.kind]
            assert p.leaked in by_id[p.record].text and p.leaked in p.text
        elif p.kind == "whole":
            assert p.record is not None and p.text == by_id[p.record].text
        elif p.kind == "edit10":
            assert p.record is not None
            src = by_id[p.record].text.split()
            changed = sum(a != b for a, b in zip(src, p.text.split(), strict=True))
            assert changed == max(1, round(len(src) * 0.1))
        else:
            assert p.leaked is not None and p.leaked in p.text
    rows = [json.dumps({"id": p.id, "text": p.text}) for p in plants]
    assert len(set(rows)) == len(rows)


def test_a_short_span_is_below_the_threshold(tmp_path: Path) -> None:
    """The benchmark can fail: an 11-token span is not a leak by the policy, so it is released."""
    from appliance.privacy import screen
    from appliance.privacy.ngram_index import tokenize
    from benchmarks.screen_planted import write_export

    notes = synthetic_notes(60, seed=3)
    real, held = split(notes, 10, seed=3)
    from appliance.records import ingest
    from appliance.workspace import init

    ws = init(tmp_path / "ws")
    write_export(real, tmp_path / "real.jsonl")
    ingest.run(ws, tmp_path / "real.jsonl")
    spans = tokenize(real[0].text)[1]
    short = real[0].text[spans[3][0] : spans[13][1]]  # 11 tokens
    rows = [
        {"id": "short", "text": f"{held[0].text} {short} {held[1].text}"},
        {"id": "mari", "text": f"{held[2].text} {_other_name(real)} was seen."},
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = screen.run(ws, corpus=None, input_path=tmp_path / "c.jsonl")
    assert (result.screened, result.released) == (2, 2)


def _other_name(real: list[Note]) -> str:
    """A full name that belongs to none of the ingested records."""
    taken = {n.ident["patient_name"] for n in real}
    rng = random.Random(0)
    while True:
        name = (
            f"{rng.choice(['Ulvi', 'Toivo', 'Helgi'])} {rng.choice(['Kuusk', 'Lepik', 'Rebane'])}"
        )
        if name not in taken:
            return name
