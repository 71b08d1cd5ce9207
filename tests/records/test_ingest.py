"""Ingest end to end on the demo export: every format, no plaintext on disk, idempotent, every row accounted for."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from appliance import demo
from appliance.errors import IntegrityError
from appliance.records import ingest, stats
from appliance.records.ingest import open_store

FORMATS = ["csv", "jsonl", "txt", "fhir"]


def _export_path(result) -> Path:
    return result.export_path


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {fmt: demo.run(root / fmt, notes=40, fmt=fmt, seed=3) for fmt in FORMATS}


def _gold(result):
    return [json.loads(line) for line in result.gold_path.read_text(encoding="utf-8").splitlines()]


def _all_bytes(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.parametrize("fmt", FORMATS)
def test_ingest_each_format_stores_every_note(workspace, exports, fmt):
    result = ingest.run(workspace, exports[fmt].export_path)
    assert result.format == fmt
    assert (result.stored, result.unchanged, result.rejected) == (40, 0, 0)
    gold = {g["id"]: g for g in _gold(exports[fmt])}
    store = open_store(workspace)
    records = list(store)
    assert len(records) == 40
    for record in records:
        g = gold[record.id]
        assert record.text == g["text"]  # offsets in gold.jsonl refer to the stored text
        if fmt != "txt":  # a text folder carries no metadata
            values = {i.value for i in record.identifiers}
            person = next(i["value"] for i in g["identifiers"] if i["type"] == "PERSON")
            assert person in values
            assert record.metadata, "note type, dates etc. are kept as metadata"


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_note_text_or_identifier_in_any_workspace_file(workspace, exports, fmt):
    ingest.run(workspace, exports[fmt].export_path)
    stats.run(workspace)
    blob = _all_bytes(workspace.root)
    for g in _gold(exports[fmt]):
        text = g["text"]
        # 40-character windows along the whole note, and every identifier. (Entity
        # names alone are not secrets: the entity schema's examples hold some.)
        needles = {text[i : i + 40] for i in range(0, max(1, len(text) - 40), 29)}
        needles |= {i["value"] for i in g["identifiers"] if len(i["value"]) >= 6}
        for needle in needles:
            assert needle.encode("utf-8") not in blob, (
                f"plaintext found on disk: {needle[:20]!r}..."
            )


def test_reingest_adds_nothing(workspace, exports):
    first = ingest.run(workspace, exports["csv"].export_path)
    second = ingest.run(workspace, exports["csv"].export_path)
    assert first.stored == 40
    assert (second.stored, second.unchanged, second.rejected) == (0, 40, 0)
    assert len(open_store(workspace)) == 40
    # The same notes from another format carry the same ids and texts: also nothing new.
    third = ingest.run(workspace, exports["fhir"].export_path)
    assert (third.stored, third.unchanged) == (0, 40)


def test_duplicates_and_changed_records_are_rejected_with_reasons(workspace, tmp_path):
    export = tmp_path / "notes.csv"
    export.write_text(
        "note_id,text\n"
        "A,first note text\n"
        "B,second note\n"
        "A,first note text\n"
        "B,second note changed\n"
        ",no id here\n"
        "C,\n",
        encoding="utf-8",
    )
    result = ingest.run(workspace, export)
    assert (result.stored, result.unchanged, result.rejected) == (2, 0, 4)
    rejects = [json.loads(x) for x in result.rejects_path.read_text().splitlines()]
    reasons = {r["location"]: r["reason"] for r in rejects}
    assert "duplicate id (identical to" in reasons["row 4"]
    assert "duplicate id with different text" in reasons["row 5"]
    assert any("missing id" in r for r in reasons.values())
    assert any("empty text" in r for r in reasons.values())
    assert "first note text" not in result.rejects_path.read_text()

    changed = tmp_path / "changed.csv"
    changed.write_text("note_id,text\nA,first note text edited\nD,a new note\n", encoding="utf-8")
    again = ingest.run(workspace, changed)
    assert (again.stored, again.unchanged, again.rejected) == (1, 0, 1)
    assert "already stored with different text" in again.rejects_path.read_text()


def test_every_ingest_is_audited(workspace, exports):
    ingest.run(workspace, exports["jsonl"].export_path)
    entries = [e for _, e in workspace.audit.entries()]
    last = entries[-1]
    assert last["command"] == "ingest" and last["result"] == "ok"
    assert last["details"]["stored"] == 40
    assert last["inputs"][0]["sha256"]
    assert workspace.audit.verify().entries == len(entries)


def test_failed_ingest_is_audited_too(workspace, tmp_path):
    from appliance.errors import InputError

    with pytest.raises(InputError):
        ingest.run(workspace, tmp_path / "absent.csv")
    last = [e for _, e in workspace.audit.entries()][-1]
    assert last["command"] == "ingest" and last["result"].startswith("error:")


def test_tampered_shard_stops_ingest_and_stats_by_name(workspace, exports):
    ingest.run(workspace, exports["csv"].export_path)
    shard = next((workspace.records_dir / "shards").glob("shard-*.bin"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=shard.name):
        stats.run(workspace)
    with pytest.raises(IntegrityError, match=shard.name):
        ingest.run(workspace, exports["jsonl"].export_path)


def test_stats_reports_counts_without_text(workspace, exports):
    ingest.run(workspace, exports["csv"].export_path)
    s = stats.run(workspace)
    assert s.records == 40
    assert s.languages.get("en", 0) >= 35
    assert s.identifiers["PERSON"] == 40
    assert "note_type" in s.metadata_values
    assert "visit_date" not in s.metadata_values  # high cardinality: values withheld
    dumped = json.dumps(s.as_dict())
    for g in _gold(exports["csv"])[:5]:
        assert g["text"][:30] not in dumped


def test_workspace_files_are_private(workspace, exports):
    ingest.run(workspace, exports["csv"].export_path)
    for path in (workspace.records_dir / "shards").iterdir():
        assert os.stat(path).st_mode & 0o077 == 0
    assert os.stat(workspace.records_dir / "store.json").st_mode & 0o077 == 0


def test_an_export_with_every_row_rejected_exits_9_with_the_reasons(workspace, tmp_path):
    """Nothing stored is a failure (exit 9) that names why in one line; the rejects are kept."""
    from click.testing import CliRunner

    from appliance.cli import cli

    export = tmp_path / "notes.csv"
    export.write_text("note_id,text\n1,\n2,   \n,orphan text\n")
    result = CliRunner().invoke(cli, ["ingest", str(export), "-w", str(workspace.root)])
    assert result.exit_code == 9, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Traceback" not in result.output
    assert "nothing ingested, all 3 rows rejected (2 empty text, 1 missing id)" in line, line
    rejects = list((workspace.reports_dir / "ingest").glob("rejects-*.jsonl"))
    assert len(rejects) == 1 and len(rejects[0].read_text().splitlines()) == 3
    assert str(rejects[0]) in line
    last = [e for _, e in workspace.audit.entries()][-1]
    assert (
        last["command"] == "ingest"
        and last["result"].startswith("error: ")
        and "nothing ingested" in last["result"]
    )
    # Nothing was lost: the next export with good rows is ingested as usual.
    export.write_text("note_id,text\n1,Seen today.\n")
    assert (
        CliRunner().invoke(cli, ["ingest", str(export), "-w", str(workspace.root)]).exit_code == 0
    )
