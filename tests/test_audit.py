"""The audit log: appends chain; any edited, deleted or reordered line is named."""

from __future__ import annotations

import json

import pytest

from appliance.errors import AuditError
from appliance.security.audit import AuditLog
from appliance.security.keys import DataKey


@pytest.fixture
def log(tmp_path):
    log = AuditLog(tmp_path / "audit.log", DataKey(b"k" * 32))
    for i in range(5):
        log.append(f"cmd{i}", args={"i": i}, inputs=[{"path": "x", "sha256": "00" * 32}])
    return log


def _lines(log):
    return log.path.read_text().splitlines(keepends=True)


def test_intact_log_verifies(log):
    result = log.verify()
    assert result.entries == 5
    entries = [e for _, e in log.entries()]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[2]["prev"] == entries[1]["hash"]
    assert {"time", "user", "command", "inputs", "outputs", "policy_sha256", "result"} <= entries[
        0
    ].keys()


def _edit_field(lines):
    entry = json.loads(lines[2])
    entry["result"] = "error: nothing happened"
    lines[2] = json.dumps(entry) + "\n"
    return lines


def _edit_and_rehash(lines):
    # An attacker recomputes the edited line's own hash: the next line's link breaks.
    from appliance.security.audit import entry_hash

    entry = json.loads(lines[2])
    entry["user"] = "someone-else"
    entry["hash"] = entry_hash(entry)
    lines[2] = json.dumps(entry) + "\n"
    return lines


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_edit_field, "line 3 .* was modified"),
        (_edit_and_rehash, "line 4 .* does not follow line 3"),
        (lambda ls: ls[:2] + ls[3:], "line 3 .* does not follow line 2"),
        (lambda ls: [ls[1], ls[0], *ls[2:]], "line 1 .* does not follow"),
        (lambda ls: ls[:4], "line 5 onwards deleted"),
        (lambda ls: ls[:3] + ["{not json\n"] + ls[4:], "line 4 is not valid JSON"),
        (lambda ls: ls[:2] + ["\n"] + ls[2:], "line 3 is blank"),
    ],
    ids=[
        "edited",
        "edited-rehashed",
        "deleted-middle",
        "reordered",
        "deleted-last",
        "garbled",
        "blank",
    ],
)
def test_tampering_is_detected_and_named(log, tamper, message):
    log.path.write_text("".join(tamper(_lines(log))))
    with pytest.raises(AuditError, match=message):
        log.verify()


def test_rewritten_chain_without_key_is_detected(log, tmp_path):
    # Rebuild a complete, self-consistent chain with a different key: the head's MAC exposes it.
    forged = AuditLog(tmp_path / "forged.log", DataKey(b"x" * 32))
    for i in range(5):
        forged.append(f"cmd{i}")
    log.path.write_bytes(forged.path.read_bytes())
    with pytest.raises(
        AuditError, match="does not match the authenticated head|authentication failed"
    ):
        log.verify()


def test_head_file_edit_is_detected(log):
    head = json.loads(log.head_path.read_text())
    head["seq"] = 3
    log.head_path.write_text(json.dumps(head))
    with pytest.raises(AuditError, match="authentication failed"):
        log.verify()


def test_chain_checks_without_key(log):
    reader = AuditLog(log.path, None)
    assert reader.verify().entries == 5


def test_appends_continue_chain_across_instances(log):
    again = AuditLog(log.path, DataKey(b"k" * 32))
    entry = again.append("later")
    assert entry["seq"] == 6
    assert again.verify().entries == 6
