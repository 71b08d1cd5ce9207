"""Property: whatever rows an export holds, ingest accounts for every one (stored, already stored or rejected)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.errors import NothingProduced
from appliance.records import ingest
from appliance.records.ingest import open_store
from appliance.workspace import init

ids = st.one_of(st.text(min_size=0, max_size=6), st.integers(0, 20).map(str))
texts = st.one_of(
    st.text(max_size=40), st.just(""), st.just("   "), st.sampled_from(["same text", "other text"])
)
rows = st.lists(st.tuples(ids, texts), min_size=1, max_size=25)


def _fresh_workspace(tmp: Path):
    return init(tmp / "ws")


def _ingest(ws, path):
    """The result of an ingest, also of one that stored nothing (which exits 9)."""
    try:
        return ingest.run(ws, path)
    except NothingProduced as exc:
        assert exc.result.stored == exc.result.unchanged == 0
        return exc.result


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows,
    fmt=st.sampled_from(["csv", "jsonl"]),
    garbage=st.lists(st.binary(max_size=30), max_size=4),
)
def test_every_row_is_stored_or_reported(rows, fmt, garbage):
    tmp = Path(tempfile.mkdtemp())
    try:
        ws = _fresh_workspace(tmp)
        path = tmp / f"export.{fmt}"
        if fmt == "csv":
            buf = io.StringIO()
            # The default \r\n terminator makes the writer quote any field holding \r or \n.
            writer = csv.writer(buf)
            writer.writerow(["note_id", "text"])
            writer.writerows(rows)
            data = buf.getvalue().encode("utf-8", "surrogatepass")
            # A row with nothing at all in it (",") is a blank line, not a record.
            expected_rows = sum(1 for i, t in rows if i or t)
        else:
            lines = [json.dumps({"note_id": i, "text": t}).encode() for i, t in rows]
            # Garbage lines without newlines inside are one (rejected) line each.
            extra = [g.replace(b"\n", b" ").replace(b"\r", b" ") for g in garbage]
            extra = [g for g in extra if g.strip()]
            lines += extra
            data = b"\n".join(lines) + b"\n"
            expected_rows = len(lines)
        path.write_bytes(data)
        first = _ingest(ws, path)
        assert first.stored + first.unchanged + first.rejected == expected_rows
        assert len(open_store(ws)) == first.stored
        second = _ingest(ws, path)
        assert second.stored == 0
        assert second.unchanged == first.stored
        assert second.rows == expected_rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
