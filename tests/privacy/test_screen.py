"""The leakage screen: each detector on planted leaks (table-driven), the release gate, the report."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.errors import InputError, IntegrityError, UsageError, WorkspaceError
from appliance.identifiers.national_ids import isikukood_is_valid, make_isikukood
from appliance.privacy.detectors import lcs_length

SYLLABLES = [
    "ka",
    "ri",
    "lu",
    "ve",
    "ta",
    "mo",
    "sa",
    "ne",
    "ko",
    "pi",
    "ro",
    "la",
    "mi",
    "tu",
    "se",
    "va",
    "no",
    "re",
    "ki",
    "du",
    "bo",
    "ge",
    "fa",
    "hu",
]


def _words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(n)]


def _note(rng: random.Random, n: int) -> str:
    words = _words(rng, n)
    out = []
    for i in range(0, n, 9):
        out.append(" ".join(words[i : i + 9]).capitalize() + ".")
    return " ".join(out)


REAL_NAMES = [("Mari", "Tamm"), ("Jaan", "Kask"), ("Liis", "Saar"), ("Peeter", "Mets")]


def _real_records(n: int = 60) -> list[dict[str, Any]]:
    rng = random.Random(7)
    out = []
    from datetime import date

    for i in range(n):
        given, family = REAL_NAMES[i % len(REAL_NAMES)]
        family = f"{family}{'e' * (i // len(REAL_NAMES))}"
        code = make_isikukood(date(1950 + i % 40, 1 + i % 12, 1 + i % 27), i % 2 == 0, 100 + i)
        out.append(
            {
                "id": f"R{i:03d}",
                "text": _note(rng, rng.randint(60, 110)),
                "patient_name": f"{given} {family}",
                "national_id": code,
                "phone": f"+372 5{i:03d} {1000 + i}",
            }
        )
    return out


@pytest.fixture(scope="module")
def screened_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[dict[str, Any]]]:
    from appliance.records import ingest
    from appliance.workspace import init

    root = tmp_path_factory.mktemp("screen")
    ws = init(root / "ws")
    records = _real_records()
    export = root / "export.jsonl"
    export.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    ingest.run(ws, export)
    return ws, records


def _edit(text: str, fraction: float, seed: int) -> str:
    rng = random.Random(seed)
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, int(len(words) * fraction))):
        words[i] = _words(rng, 1)[0] + "x"
    return " ".join(words)


def _span(text: str, n: int, start: int = 5) -> str:
    return " ".join(re.findall(r"\w+", text)[start : start + n])


def _clean(seed: int, n: int = 80) -> str:
    return _note(random.Random(1000 + seed), n)


CASES: list[tuple[str, Any, set[str]]] = [
    ("clean new text", lambda R: _clean(1), set()),
    ("short clean text", lambda R: "Kalu veta mosa.", set()),
    ("verbatim 12 tokens inside new text", lambda R: f"{_clean(2, 30)} {_span(R[3]['text'], 12)} {_clean(3, 30)}", {"verbatim"}),
    ("verbatim 11 tokens stays below the limit", lambda R: f"{_clean(4, 30)} {_span(R[3]['text'], 11)} {_clean(5, 30)}", set()),
    ("verbatim 50 tokens", lambda R: f"{_clean(6, 20)} {_span(R[4]['text'], 50)} {_clean(7, 20)}", {"verbatim"}),
    ("whole note copied", lambda R: R[5]["text"], {"verbatim", "lcs_ratio", "near_duplicate"}),
    ("copy with 10% of words edited (and an unedited run of 24)", lambda R: _edit(R[6]["text"], 0.10, 1), {"lcs_ratio", "verbatim"}),
    ("real isikukood replayed", lambda R: f"{_clean(8, 30)} Isikukood {R[7]['national_id']}. {_clean(9, 10)}", {"identifiers"}),
    ("real phone replayed in national format", lambda R: f"{_clean(10, 30)} Call 5{7:03d}{1000 + 7}. {_clean(11, 10)}", {"identifiers"}),
    ("real full name replayed", lambda R: f"{_clean(12, 30)} Patient {R[9]['patient_name']} seen. {_clean(13, 10)}", {"identifiers"}),
    ("family name, comma, given name", lambda R: f"{_clean(14, 30)} {R[9]['patient_name'].split()[1]}, {R[9]['patient_name'].split()[0]} seen.", {"identifiers"}),
    ("one common given name alone is not enough", lambda R: f"{_clean(15, 30)} Mari was seen.", set()),
    ("a valid isikukood of nobody is reported, not quarantined", lambda R: f"{_clean(16, 30)} Isikukood 38001085718.", set()),
]  # fmt: skip


@pytest.mark.parametrize(("what", "make", "expected"), CASES, ids=[c[0] for c in CASES])
def test_detector_cases(screened_ws: Any, what: str, make: Any, expected: set[str]) -> None:
    from appliance.privacy.reference import load_or_build
    from appliance.privacy.screen import Screener

    ws, records = screened_ws
    index, _ = load_or_build(ws)
    text = make(records)
    (decision,) = Screener(ws, index).screen([("C1", text)])
    fired = {f.detector for f in decision.findings if f.quarantine}
    assert fired == expected, [f.reason for f in decision.findings]
    assert decision.released == (not expected)
    for f in decision.findings:
        assert 0 <= f.start <= f.end <= len(text)


def test_a_batch_decides_as_its_notes_one_by_one(screened_ws: Any) -> None:
    """Detectors work on whole batches; nothing may join across two notes of one batch."""
    from appliance.privacy.reference import load_or_build
    from appliance.privacy.screen import Screener

    ws, records = screened_ws
    index, _ = load_or_build(ws)
    notes = [(f"C{i}", make(records)) for i, (_, make, _) in enumerate(CASES)]
    given, family = records[9]["patient_name"].split()
    # A real full name split over the end of one note and the start of the next.
    notes += [
        ("ends", f"{_clean(20, 30)} Seen by {given}"),
        ("starts", f"{family} seen. {_clean(21)}"),
    ]
    alone = [Screener(ws, index).screen([note])[0] for note in notes]
    together = Screener(ws, index).screen(notes)
    assert together == alone
    assert [d.released for d in alone[-2:]] == [True, True]
    assert [not d.released for d in alone[: len(CASES)]] == [bool(c[2]) for c in CASES]


def test_generic_identifier_is_reported_with_its_span(screened_ws: Any) -> None:
    from appliance.privacy.reference import load_or_build
    from appliance.privacy.screen import Screener

    ws, _ = screened_ws
    assert isikukood_is_valid("38001085718")
    text = "Kalu veta mosa. Isikukood 38001085718."
    (d,) = Screener(ws, load_or_build(ws)[0]).screen([("C", text)])
    (f,) = [f for f in d.findings if f.kind == "NATIONAL_ID"]
    assert text[f.start : f.end] == "38001085718" and not f.quarantine


def test_verbatim_reports_the_exact_longest_span(screened_ws: Any) -> None:
    from appliance.privacy.reference import load_or_build
    from appliance.privacy.screen import Screener

    ws, records = screened_ws
    leak = _span(records[20]["text"], 23, start=2)
    text = f"{_clean(30, 25)} {leak} {_clean(31, 25)}"
    (d,) = Screener(ws, load_or_build(ws)[0]).screen([("C", text)])
    (f,) = [f for f in d.findings if f.detector == "verbatim"]
    assert f.score == 23 and d.scores["verbatim"] == 23
    assert text[f.start : f.end] == leak


def test_canary_in_a_note_is_a_replayed_identifier(screened_ws: Any, tmp_path: Path) -> None:
    from appliance.privacy.reference import ReferenceIndex
    from appliance.privacy.screen import Screener
    from appliance.records.ingest import open_store
    from appliance.security.keys import PURPOSE_HOLDOUT

    ws, _ = screened_ws
    index = ReferenceIndex(ws.data_key, ws.policy)
    index.build(
        open_store(ws),
        folder=tmp_path,
        label="leakage-index test",
        holdout_key=ws.data_key.derive(PURPOSE_HOLDOUT),
        holdout_fraction=0.1,
        identifier_policy=ws.policy.identifiers,
        canaries=["4 8 1 5 1 6 2 3 4"],
    )
    (d,) = Screener(ws, index).screen(
        [("C", "Kalu veta. The reference code is 4 8 1 5 1 6 2 3 4.")]
    )
    assert [f.kind for f in d.findings if f.quarantine] == ["CANARY"]


@pytest.mark.parametrize("seed", range(20))
def test_lcs_length_matches_dynamic_programming(seed: int) -> None:
    rng = random.Random(seed)
    a = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
    b = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            table[i + 1][j + 1] = (
                table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
            )
    assert lcs_length(a, b) == table[-1][-1]


# --------------------------------------------------------------------------- runs, report, gate


def _write_candidates(path: Path, records: list[dict[str, Any]]) -> list[str]:
    """Clean notes and planted leaks; returns the leaked real strings the report must not show."""
    leaks = [
        records[30]["text"],
        f"{_clean(40, 20)} {_span(records[31]['text'], 20)} {_clean(41, 20)}",
        f"{_clean(42, 20)} Isikukood {records[32]['national_id']}.",
        f"{_clean(43, 20)} Patient {records[33]['patient_name']} seen.",
    ]
    rows = [{"id": f"clean{i}", "text": _clean(50 + i)} for i in range(12)]
    rows += [{"id": f"leak{i}", "text": t} for i, t in enumerate(leaks)]
    rows += [{"id": "clean0", "text": "a duplicate id"}, {"id": "empty", "text": "   "}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return [
        records[30]["text"],
        _span(records[31]["text"], 20),
        records[32]["national_id"],
        records[33]["patient_name"],
    ]


def test_screen_input_file_report_and_no_real_text(screened_ws: Any, tmp_path: Path) -> None:
    from appliance.privacy import screen

    ws, records = screened_ws
    path = tmp_path / "cands.jsonl"
    secrets = _write_candidates(path, records)
    result = screen.run(ws, corpus=None, input_path=path)
    assert (result.screened, result.released, result.quarantined) == (16, 12, 4)
    assert sorted(r for _, r in result.rejected) == [
        "duplicate note id (the first one was screened)",
        "empty text",
    ]
    assert result.release is None  # an external file is only reported on
    report = json.loads(result.report_json.read_text())
    assert {q["id"] for q in report["quarantined"]} == {"leak0", "leak1", "leak2", "leak3"}
    page = result.report_html.read_bytes()
    assert b"<script" not in page and b"http://" not in page.replace(b"http://www.w3.org", b"")
    for blob in (page, result.report_json.read_bytes()):
        text = blob.decode()
        for secret in secrets:
            assert secret not in text
        for rec in records:  # no real sentence, identifier or name
            for sentence in re.split(r"(?<=\.)\s+", rec["text"]):
                assert sentence not in text
            assert rec["national_id"] not in text and rec["patient_name"] not in text
            assert rec["phone"] not in text
    assert (
        ws.audit.last_entry()["outputs"][0]["sha256"]
        == __import__("hashlib").sha256(result.report_json.read_bytes()).hexdigest()
    )


def test_index_is_reused_and_rebuilt_when_records_change(tmp_path: Path) -> None:
    from appliance.privacy import screen
    from appliance.records import ingest
    from appliance.workspace import init

    ws = init(tmp_path / "ws")
    recs = _real_records(20)
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in recs[:10]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in recs[10:]) + "\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"id": "c", "text": recs[15]["text"]}) + "\n")
    ingest.run(ws, tmp_path / "a.jsonl")
    first = screen.run(ws, corpus=None, input_path=tmp_path / "c.jsonl")
    second = screen.run(ws, corpus=None, input_path=tmp_path / "c.jsonl")
    assert first.index_built and not second.index_built
    assert first.released == 1  # record 15 is not ingested yet
    ingest.run(ws, tmp_path / "b.jsonl")
    third = screen.run(ws, corpus=None, input_path=tmp_path / "c.jsonl")
    assert third.index_built and third.quarantined == 1


def test_screen_refuses_bad_input(screened_ws: Any, tmp_path: Path) -> None:
    from appliance.privacy import screen

    ws, _ = screened_ws
    with pytest.raises(InputError, match="no such file"):
        screen.run(ws, corpus=None, input_path=tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("id,text\n1,a\n")
    with pytest.raises(InputError, match="JSONL"):
        screen.run(ws, corpus=None, input_path=tmp_path / "x.csv")
    with pytest.raises(WorkspaceError, match="no synthetic corpus"):
        screen.run(ws, corpus="nothing-here")
    with pytest.raises(UsageError):
        screen.run(ws, corpus="x", batch_size=0)


def test_screen_without_records_says_ingest_first(workspace: Any, tmp_path: Path) -> None:
    from appliance.privacy import screen

    (tmp_path / "c.jsonl").write_text(json.dumps({"id": "c", "text": "x y z"}) + "\n")
    with pytest.raises(WorkspaceError, match="ingest"):
        screen.run(workspace, corpus=None, input_path=tmp_path / "c.jsonl")


def test_gate_releases_only_passing_notes_and_refuses_tampering(
    screened_ws: Any, tmp_path: Path
) -> None:
    import shutil

    from appliance.corpus import RELEASE_FILE, SIGNATURE_FILE, import_corpus, released_notes
    from appliance.privacy import screen
    from appliance.workspace import Workspace

    base, records = screened_ws
    root = tmp_path / "ws"
    shutil.copytree(base.root, root)
    ws = Workspace.open(root)
    path = tmp_path / "cands.jsonl"
    _write_candidates(path, records)

    import_corpus(ws, "unscreened", [("u1", "text", {})], source="test")
    with pytest.raises(WorkspaceError, match="has not been screened"):
        list(released_notes(ws, "unscreened"))

    screen.run(ws, input_path=path, import_as="cand")
    released = {n.id for n in released_notes(ws, "cand")}
    assert released == {f"clean{i}" for i in range(12)}

    folder = ws.corpus_dir("cand")
    good = (folder / RELEASE_FILE).read_bytes()
    body = json.loads(good)
    body["released"].append({"id": "leak0", "sha256": "0" * 64})
    (folder / RELEASE_FILE).write_text(json.dumps(body))
    with pytest.raises(IntegrityError, match="signature"):
        list(released_notes(ws, "cand"))
    (folder / RELEASE_FILE).write_bytes(good)

    sig = (folder / SIGNATURE_FILE).read_bytes()
    (folder / SIGNATURE_FILE).unlink()
    with pytest.raises(IntegrityError, match="not signed"):
        list(released_notes(ws, "cand"))
    (folder / SIGNATURE_FILE).write_bytes(sig)

    # An authentic but older release put back after a newer screen is refused.
    old_release, old_sig = good, sig
    screen.run(ws, corpus="cand")
    (folder / RELEASE_FILE).write_bytes(old_release)
    (folder / SIGNATURE_FILE).write_bytes(old_sig)
    with pytest.raises(IntegrityError, match="audit log"):
        list(released_notes(ws, "cand"))


def test_cli_screen_and_one_line_errors(screened_ws: Any, tmp_path: Path) -> None:
    import shutil

    base, records = screened_ws
    root = tmp_path / "ws"
    shutil.copytree(base.root, root)
    path = tmp_path / "cands.jsonl"
    _write_candidates(path, records)
    run = [sys.executable, "-m", "appliance", "screen", "-w", str(root)]
    ok = subprocess.run([*run, "--input", str(path), "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert (out["released"], out["quarantined"], out["release"]) == (12, 4, None)
    bad = subprocess.run(
        [*run, "--input", str(tmp_path / "nope.jsonl")], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "no such file" in bad.stderr
    unscreened = subprocess.run([*run, "--corpus", "none"], capture_output=True, text=True)
    assert unscreened.returncode == 4 and "no synthetic corpus" in unscreened.stderr


def test_distance_to_closest_record_against_held_out_notes(tmp_path: Path) -> None:
    """With enough held-out notes the DCR threshold applies: a copy is closer than any of them."""
    from appliance.privacy import screen
    from appliance.records import ingest
    from appliance.workspace import init

    ws = init(tmp_path / "ws")
    rng = random.Random(3)
    records = [{"id": f"R{i}", "text": _note(rng, 40)} for i in range(1400)]
    # Short notes (under dcr_min_tokens = 12): neither screened by DCR nor part of its baseline.
    records += [{"id": f"S{i}", "text": _note(rng, 5)} for i in range(300)]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    ingest.run(ws, tmp_path / "r.jsonl")
    from appliance.records.holdout import is_holdout
    from appliance.security.keys import PURPOSE_HOLDOUT

    key = ws.data_key.derive(PURPOSE_HOLDOUT)
    train = next(r for r in records if not is_holdout(key, r["id"], 0.1))
    short = next(r for r in records if r["id"][0] == "S" and not is_holdout(key, r["id"], 0.1))
    long_held = sum(1 for r in records if r["id"][0] == "R" and is_holdout(key, r["id"], 0.1))
    near = " ".join(train["text"].split()[::-1])  # same words as a training note, no shared run
    rows = [{"id": f"clean{i}", "text": _note(random.Random(90 + i), 40)} for i in range(30)]
    rows.append({"id": "reordered", "text": near})
    rows.append({"id": "short-copy", "text": short["text"]})
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = screen.run(ws, corpus=None, input_path=tmp_path / "c.jsonl")
    report = json.loads(result.report_json.read_text())
    assert report["dcr"]["enabled"] and report["index"]["holdout_records"] >= 100
    quarantined = {
        q["id"]: {f["detector"] for f in q["findings"] if f["quarantine"]}
        for q in report["quarantined"]
    }
    assert quarantined.get("reordered") == {"dcr"}
    assert "short-copy" not in quarantined  # similarity 1.0, but 5 words hold no 12-token copy
    scores = {n["id"]: n["scores"] for n in report["notes"]}
    assert scores["short-copy"]["dcr"] > 0.999
    assert report["dcr"]["holdout_notes"] == long_held < report["index"]["holdout_records"]
    assert sum(1 for i in quarantined if i.startswith("clean")) <= 2
    share = report["dcr"]["share_closer_to_training_than_holdout"]
    assert 0.2 <= share <= 0.8


# --------------------------------------------------------------------------- boilerplate by patient

PHRASES = {name: _note(random.Random(500 + i), 20) for i, name in enumerate(
    ["copy_forward", "five_patients", "four_patients", "two_patients_six_notes", "national_id_only"]
)}  # fmt: skip


def _patient_records() -> list[dict[str, Any]]:
    """Notes of patients P0..P9 (and some without a patient id) sharing planted phrases.

    - ``copy_forward``: in 3 notes of patient P0 only;
    - ``five_patients``: in one note each of P1..P5 (boilerplate at 5 patients);
    - ``four_patients``: in one note each of P6..P9;
    - ``two_patients_six_notes``: in 3 notes each of P1 and P2 (6 notes, 2 patients);
    - ``national_id_only``: in 3 notes of one patient known only by its isikukood.
    """
    from datetime import date

    rng = random.Random(11)
    rows: list[dict[str, Any]] = []

    def add(text: str, **ids: str) -> None:
        rows.append({"id": f"N{len(rows):03d}", "text": text, **ids})

    def note_with(phrase: str) -> str:
        return f"{_note(rng, 30)} {phrase} {_note(rng, 30)}"

    for _ in range(3):
        add(note_with(PHRASES["copy_forward"]), patient_id="P0")
    for p in range(1, 6):
        add(note_with(PHRASES["five_patients"]), patient_id=f"P{p}")
    for p in range(6, 10):
        add(note_with(PHRASES["four_patients"]), patient_id=f"P{p}")
    for p in (1, 2):
        for _ in range(3):
            add(note_with(PHRASES["two_patients_six_notes"]), patient_id=f"P{p}")
    code = make_isikukood(date(1961, 3, 4), True, 321)
    for _ in range(3):
        add(note_with(PHRASES["national_id_only"]), national_id=code)
    add("Unremarkable.")
    for _ in range(20):
        add(_note(rng, 60))  # no patient id: each note its own patient
    return rows


@pytest.fixture(scope="module")
def patient_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[dict[str, Any]]]:
    from appliance.records import ingest
    from appliance.workspace import init

    root = tmp_path_factory.mktemp("patients")
    ws = init(root / "ws")
    rows = _patient_records()
    (root / "export.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ingest.run(ws, root / "export.jsonl")
    return ws, rows


def _after(rows: list[dict[str, Any]], phrase: str, n: int) -> str:
    """``phrase`` and the ``n`` words after it in the first note that has it."""
    text = next(r["text"] for r in rows if phrase in r["text"])
    rest = re.findall(r"\w+", text[text.index(phrase) + len(phrase) :])[:n]
    return f"{phrase} {' '.join(rest)}"


def test_index_counts_the_patients_of_every_k_gram(patient_ws: Any) -> None:
    """The on-disk k-gram table, read back through a view, against a count made directly."""
    from collections import defaultdict

    from appliance.privacy.detectors.base import Candidate
    from appliance.privacy.reference import gram_hashes, load_or_build, patient_key, word_tokens
    from appliance.records.ingest import open_store

    ws, _ = patient_ws
    load_or_build(ws)
    index, built = load_or_build(ws)
    assert not built  # opened from disk
    records = list(open_store(ws))
    expected: dict[int, set[str]] = defaultdict(set)
    postings: dict[int, int] = defaultdict(int)
    for r in records:
        for g in gram_hashes(index.hasher.many(word_tokens(r.text)), index.k).tolist():
            expected[g].add(patient_key(r))
            postings[g] += 1
    view = index.view([Candidate.of(r.id, r.text, index) for r in records], dcr=False)
    assert sorted(expected) == view.ukeys.tolist()
    assert [len(expected[g]) for g in view.ukeys.tolist()] == view.udf.tolist()
    assert int(view.udf.max()) >= 5  # the phrase in five patients' notes
    # postings kept for the rare k-grams only, every one of them (up to the cap)
    rare = view.udf < ws.policy.leakage.boilerplate_patients
    assert (view.ucount[~rare] == 0).all()
    assert view.ucount[rare].tolist() == [min(postings[g], 64) for g in view.ukeys[rare].tolist()]


PATIENT_CASES: list[tuple[str, Any, set[str]]] = [
    ("a patient's copy-forward paragraph in 3 of their notes is caught", lambda R: PHRASES["copy_forward"], {"verbatim"}),
    ("a phrase in 5 patients' notes is boilerplate", lambda R: PHRASES["five_patients"], set()),
    ("a phrase in 4 patients' notes is caught", lambda R: PHRASES["four_patients"], {"verbatim"}),
    ("6 notes of 2 patients are 2 patients, not boilerplate", lambda R: PHRASES["two_patients_six_notes"], {"verbatim"}),
    ("a patient known only by national ID is one patient", lambda R: PHRASES["national_id_only"], {"verbatim"}),
    ("boilerplate and 6 of a note's own words: 6 tokens count", lambda R: _after(R, PHRASES["five_patients"], 6), set()),
    ("boilerplate and 14 of a note's own words: 14 tokens count", lambda R: _after(R, PHRASES["five_patients"], 14), {"verbatim"}),
    ("a one-word note is no near-duplicate", lambda R: "Unremarkable.", set()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "make", "expected"), PATIENT_CASES, ids=[c[0] for c in PATIENT_CASES]
)
def test_boilerplate_counts_patients(
    patient_ws: Any, what: str, make: Any, expected: set[str]
) -> None:
    from appliance.privacy.reference import load_or_build
    from appliance.privacy.screen import Screener

    ws, rows = patient_ws
    assert ws.policy.leakage.boilerplate_patients == 5
    leak = make(rows)
    text = f"{_clean(60, 25)} {leak} {_clean(61, 25)}" if len(leak.split()) > 5 else leak
    (decision,) = Screener(ws, load_or_build(ws)[0]).screen([("C1", text)])
    fired = {f.detector for f in decision.findings if f.quarantine}
    assert fired == expected, [f.reason for f in decision.findings]
    words = len(re.findall(r"\w+", leak))
    if what.startswith("boilerplate and"):
        assert decision.scores["verbatim"] == words - 20  # the phrase's 20 tokens do not count
    elif leak in PHRASES.values():
        assert decision.scores["verbatim"] == (0 if not expected else words)


@pytest.mark.parametrize(
    ("common", "start", "length", "expected"),
    [
        ([0, 0, 0, 0, 0], 0, 12, 12),  # 12 tokens, 5 rare 8-grams
        ([1, 0, 0, 0, 0], 0, 12, 4),  # the first 8-gram is boilerplate
        ([0, 0, 1, 0, 0], 0, 12, 4),  # a boilerplate 8-gram in the middle
        ([1, 1, 1, 1, 1], 0, 12, 0),
        ([1, 0, 0, 0, 0, 0], 1, 12, 12),  # the boilerplate 8-gram starts before the run
        ([0, 0, 0], 0, 7, 7),  # shorter than a k-gram
    ],
)
def test_rare_tokens(common: list[int], start: int, length: int, expected: int) -> None:
    import numpy as np

    from appliance.privacy.detectors import _rare_tokens

    assert _rare_tokens(np.array(common, dtype=bool), start, length, 8) == expected


def test_boilerplate_count_is_screen_policy_not_index(patient_ws: Any, tmp_path: Path) -> None:
    """Changing boilerplate_patients takes effect without rebuilding the index."""
    import shutil

    from appliance.privacy import screen
    from appliance.workspace import Workspace

    base, _ = patient_ws
    root = tmp_path / "ws"
    shutil.copytree(base.root, root)
    path = tmp_path / "c.jsonl"
    text = f"{_clean(62, 25)} {PHRASES['five_patients']} {_clean(63, 25)}"
    path.write_text(json.dumps({"id": "c", "text": text}) + "\n")
    ws = Workspace.open(root)
    first = screen.run(ws, corpus=None, input_path=path)
    policy = root / "policy.toml"
    policy.write_text(
        re.sub(r"(?m)^boilerplate_patients = 5$", "boilerplate_patients = 6", policy.read_text())
    )
    second = screen.run(Workspace.open(root), corpus=None, input_path=path)
    assert (first.released, second.quarantined) == (1, 1)
    assert not second.index_built


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"identifiers": [("MEDICAL_RECORD_NUMBER", "P7"), ("NATIONAL_ID", "X")]}, "MEDICAL_RECORD_NUMBER\0P7"),
        ({"identifiers": [("NATIONAL_ID", "38001085718"), ("PERSON", "Mari Tamm")]}, "NATIONAL_ID\x0038001085718"),
        ({"metadata": {"subject.patient_id": "42"}}, "meta\x0042"),
        ({"identifiers": [("PERSON", "Mari Tamm")]}, "record\x00N1"),
        ({}, "record\x00N1"),
    ],
)  # fmt: skip
def test_patient_key(record: dict[str, Any], expected: str) -> None:
    from appliance.documents import Identifier, Record
    from appliance.privacy.reference import patient_key

    rec = Record(
        "N1",
        "text",
        record.get("metadata", {}),
        tuple(Identifier(t, v, "f") for t, v in record.get("identifiers", [])),
    )
    assert patient_key(rec) == expected


@pytest.mark.parametrize(
    ("n", "q", "rank"),
    [(98, 0.01, None), (99, 0.01, 99), (111, 0.01, 111), (199, 0.01, 198), (19, 0.05, 19), (0, 0.01, None), (50, 0.0, None)],
)  # fmt: skip
def test_dcr_threshold_rank(n: int, q: float, rank: int | None) -> None:
    import math

    import numpy as np

    from appliance.privacy.detectors import dcr_threshold

    baseline = np.arange(n, dtype=np.float64)[::-1] / max(n, 1)
    r, threshold = dcr_threshold(baseline, q)
    if rank is None:
        assert math.isinf(threshold)
    else:
        assert r == rank and threshold == sorted(baseline)[rank - 1]


def test_dcr_threshold_false_rate_is_at_most_q() -> None:
    """A new note exchangeable with 111 held-out ones exceeds the threshold at most 1 % of the time.

    (The plain 99 % quantile of 111 values is exceeded about 1.7 % of the time.)
    """
    import numpy as np

    from appliance.privacy.detectors import dcr_threshold

    rng = np.random.default_rng(0)
    trials = 20000
    base = rng.random((trials, 111))
    new = rng.random(trials)
    ours = np.array([dcr_threshold(b, 0.01)[1] for b in base])
    plain = np.quantile(base, 0.99, axis=1)
    assert (new > ours).mean() <= 0.0105
    assert (new > plain).mean() > 0.014


@pytest.mark.parametrize(
    ("leakage", "error"),
    [
        ("boilerplate_records = 10", "boilerplate_records was replaced by boilerplate_patients"),
        ("boilerplate_patients = 1", r"boilerplate_patients: expected an integer ≥ 2"),
        ("verbatim_calibrate = 1", r"verbatim_calibrate: expected true or false"),
    ],
)
def test_leakage_policy_validation(tmp_path: Path, leakage: str, error: str) -> None:
    from appliance.config import load_policy
    from appliance.errors import ConfigError

    path = tmp_path / "p.toml"
    path.write_text(f'[policy]\nname = "x"\n[leakage]\n{leakage}\n')
    with pytest.raises(ConfigError, match=error):
        load_policy(path)


def test_default_leakage_policy() -> None:
    from appliance.config import load_policy

    lk = load_policy().leakage
    assert (lk.boilerplate_patients, lk.verbatim_calibrate) == (5, False)


# -- the index on disk --------------------------------------------------------------


def _build(ws: Any, folder: Path, chunk_rows: int, expected: int | None = None) -> Any:
    from appliance.privacy.reference import ReferenceIndex, _label
    from appliance.records.ingest import open_store
    from appliance.security.keys import PURPOSE_HOLDOUT

    folder.mkdir()
    index = ReferenceIndex(ws.data_key, ws.policy)
    index.chunk_rows = chunk_rows
    index.index_id = "test"
    index.build(
        open_store(ws),
        folder=folder,
        label=_label("test"),
        holdout_key=ws.data_key.derive(PURPOSE_HOLDOUT),
        holdout_fraction=0.3,
        identifier_policy=ws.policy.identifiers,
        expected=expected,
    )
    index.save_header()
    return index


def test_a_build_in_many_small_chunks_gives_the_same_index_and_decisions(
    screened_ws: Any, tmp_path: Path
) -> None:
    """Spilled by chunk and merged by bucket: the same tables as one chunk, the same decisions."""
    import numpy as np

    from appliance.privacy.detectors.base import Candidate
    from appliance.privacy.screen import Screener
    from appliance.records.ingest import open_store

    ws, records = screened_ws
    one = _build(ws, tmp_path / "one", chunk_rows=10_000)
    many = _build(ws, tmp_path / "many", chunk_rows=7, expected=10**6)  # 7 notes a chunk
    assert (one.chunks, many.chunks) == (1, -(-len(records) // 7))
    assert many.bits > one.bits  # more, smaller buckets too
    # (similarities: float32 products over other block shapes differ in the 7th digit)
    assert np.allclose(one.baseline, many.baseline, atol=1e-6) and len(one.baseline) > 0
    for name in ("holdout", "record_patients", "record_tokens", "id_first", "idf_keys", "idf"):
        assert np.array_equal(getattr(one, name), getattr(many, name)), name
    notes = [(f"C{i}", make(records)) for i, (_, make, _) in enumerate(CASES)]
    real = [Candidate.of(r.id, r.text, one) for r in open_store(ws)]
    probe = real + [Candidate.of(i, t, one) for i, t in notes]
    a, b = one.view(probe), many.view(probe)
    for name in ("ukeys", "udf", "ucount", "gram_records", "gram_positions", "id_keys",
                 "id_types", "id_records", "id_strength"):  # fmt: skip
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert len(a.ukeys) and len(a.id_keys)
    for band in range(one.bands):
        assert np.array_equal(a.band_keys[band], b.band_keys[band])
        assert np.array_equal(a.band_records[band], b.band_records[band])
    assert np.array_equal(a.signatures.rows, b.signatures.rows)
    assert a.nearest_by_group.keys() == b.nearest_by_group.keys()
    for note, near in a.nearest_by_group.items():
        assert near == pytest.approx(b.nearest_by_group[note], abs=1e-6)
    x, y = Screener(ws, one).screen(notes), Screener(ws, many).screen(notes)
    assert [(d.released, d.findings) for d in x] == [(d.released, d.findings) for d in y]
    for d, e in zip(x, y, strict=True):
        assert d.scores == pytest.approx(e.scores, abs=1e-6)
    assert sum(not d.released for d in x) >= 5


def test_index_files_hold_no_readable_text_and_detect_tampering(
    screened_ws: Any, tmp_path: Path
) -> None:
    from appliance.privacy.detectors.base import Candidate
    from appliance.privacy.reference import GRAMS_FILE

    ws, records = screened_ws
    index = _build(ws, tmp_path / "ix", chunk_rows=10)
    blob = b"".join(p.read_bytes() for p in (tmp_path / "ix").iterdir())
    for r in records[:10]:
        assert r["id"].encode() not in blob
        for word in re.findall(r"\w{6,}", r["text"])[:5]:
            assert word.encode() not in blob
    path = tmp_path / "ix" / GRAMS_FILE
    data = bytearray(path.read_bytes())
    data[40] ^= 1  # inside the first bucket
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="authentication failed"):
        index.view([Candidate.of("C", records[0]["text"], index)])


def test_an_interrupted_rebuild_leaves_the_previous_index(screened_ws: Any) -> None:
    from appliance.privacy.reference import load_or_build

    ws, _ = screened_ws
    load_or_build(ws)

    def stop(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # another holdout: a rebuild, stopped at once
        load_or_build(ws, holdout_fraction=0.5, progress=stop)
    assert not ws.leakage_index_dir.with_name("leakage-index.building").exists()
    _, built = load_or_build(ws)
    assert not built  # the previous index, whole


def test_records_added_later_extend_the_index_as_a_new_build_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the new records are read; the extended index decides as one built from scratch.

    The record set outgrows the base index's buckets on the way (16 → 64):
    the extension cuts the base's buckets to the new ones.
    """
    import shutil

    import numpy as np

    from appliance.privacy import reference

    bits = {"now": 4}
    monkeypatch.setattr(reference, "_bucket_bits", lambda expected: bits["now"])

    from appliance.privacy.detectors.base import Candidate
    from appliance.privacy.reference import load_or_build
    from appliance.privacy.screen import Screener
    from appliance.records import ingest
    from appliance.records.ingest import open_store
    from appliance.workspace import init

    ws = init(tmp_path / "ws")
    records = _real_records()
    half = len(records) // 2
    for name, rows in (("a", records[:half]), ("b", records[half:])):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ingest.run(ws, tmp_path / "a.jsonl")
    first, _ = load_or_build(ws)
    ingest.run(ws, tmp_path / "b.jsonl")
    bits["now"] = 6
    read: list[int] = []
    extended, built = load_or_build(ws, progress=read.append)
    assert built and len(read) == len(records) - half  # the new records only
    assert extended.meta["extended"] == {"from": half, "added": len(records) - half}
    assert extended.index_id == first.index_id and extended.chunks == 2
    assert (first.bits, extended.bits) == (4, 6)
    assert len(extended.record_ids) == len(records)
    notes = [(f"C{i}", make(records)) for i, (_, make, _) in enumerate(CASES)]
    probe = [Candidate.of(r.id, r.text, extended) for r in open_store(ws)]
    probe += [Candidate.of(i, t, extended) for i, t in notes]
    a = extended.view(probe)
    decided = Screener(ws, extended).screen(notes)
    shutil.rmtree(ws.leakage_index_dir)
    fresh, built = load_or_build(ws)  # the same records, built from scratch
    assert built and fresh.meta["extended"] is None and fresh.index_id != extended.index_id
    b = fresh.view(probe)
    for name in ("ukeys", "udf", "ucount", "gram_records", "gram_positions", "id_keys",
                 "id_types", "id_records", "id_strength"):  # fmt: skip
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for band in range(fresh.bands):
        assert np.array_equal(a.band_records[band], b.band_records[band])
    assert np.array_equal(a.signatures.rows, b.signatures.rows)
    for name in ("holdout", "record_patients", "record_tokens", "id_first", "idf", "df"):
        assert np.array_equal(getattr(extended, name), getattr(fresh, name)), name
    assert np.allclose(extended.baseline, fresh.baseline, atol=1e-6)
    again = Screener(ws, fresh).screen(notes)
    assert [(d.released, d.findings) for d in decided] == [(d.released, d.findings) for d in again]
    assert sum(not d.released for d in again) >= 5


def test_a_table_file_of_an_earlier_build_put_back_is_refused(tmp_path: Path) -> None:
    """An extension keeps the index's label; the header still names each table file it saved."""
    import shutil

    from appliance.privacy.reference import GRAMS_FILE, load_or_build
    from appliance.records import ingest
    from appliance.workspace import init

    ws = init(tmp_path / "ws")
    records = _real_records()
    for name, rows in (("a", records[:40]), ("b", records[40:])):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ingest.run(ws, tmp_path / "a.jsonl")
    load_or_build(ws)
    shutil.copy(ws.leakage_index_dir / GRAMS_FILE, tmp_path / "grams-before.seg")
    ingest.run(ws, tmp_path / "b.jsonl")
    _, built = load_or_build(ws)
    assert built
    shutil.copy(tmp_path / "grams-before.seg", ws.leakage_index_dir / GRAMS_FILE)
    with pytest.raises(IntegrityError, match="not the file this index was saved with"):
        load_or_build(ws)
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "screen", "--workspace", str(ws.root),
         "--input", str(tmp_path / "a.jsonl")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "not the file this index was saved with" in proc.stderr


def test_a_swap_of_index_folders_stopped_half_way_is_completed(screened_ws: Any) -> None:
    import shutil

    from appliance.privacy.reference import load_or_build

    ws, _ = screened_ws
    index, _ = load_or_build(ws)
    folder = ws.leakage_index_dir
    building = folder.with_name(folder.name + ".building")
    old = folder.with_name(folder.name + ".old")
    # stopped between the two renames: the new index complete beside, the old one moved aside
    shutil.copytree(folder, building)
    folder.rename(old)
    again, built = load_or_build(ws)
    assert not built and again.index_id == index.index_id
    assert folder.is_dir() and not building.exists() and not old.exists()
