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
        (_edit_and_rehash, "line 3 .* MAC does not verify"),
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
    # Rebuild a complete, self-consistent chain with a different key: the first line's MAC exposes it.
    forged = AuditLog(tmp_path / "forged.log", DataKey(b"x" * 32))
    for i in range(5):
        forged.append(f"cmd{i}")
    log.path.write_bytes(forged.path.read_bytes())
    with pytest.raises(AuditError, match="line 1 .* MAC does not verify"):
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


def _rechain(lines, from_index):
    """What someone without the key can do: fix up every hash and link after an edit."""
    from appliance.security.audit import entry_hash

    prev = json.loads(lines[from_index - 1])["hash"] if from_index else "0" * 64
    out = list(lines[:from_index])
    for i, raw in enumerate(lines[from_index:], from_index + 1):
        entry = json.loads(raw)
        entry["seq"], entry["prev"] = i, prev
        entry["hash"] = entry_hash(entry)
        prev = entry["hash"]
        out.append(json.dumps(entry) + "\n")
    return out


@pytest.mark.parametrize(
    "tamper",
    [
        lambda ls: ls[:3],  # truncated
        lambda ls: _rechain(ls[:2] + ls[3:], 2),  # middle line deleted, chain repaired
        lambda ls: ls[:-1] + [ls[-1][:-20]],  # torn last line
    ],
    ids=["truncated", "deleted-rechained", "torn"],
)
def test_append_refuses_to_paper_over_tampering(log, tamper):
    log.path.write_text("".join(tamper(_lines(log))))
    with pytest.raises(AuditError):
        log.append("next command")
    with pytest.raises(AuditError):
        log.verify()


def test_deleted_log_with_head_is_detected(log):
    log.path.unlink()
    with pytest.raises(AuditError, match="missing"):
        log.append("x")
    with pytest.raises(AuditError, match="deleted"):
        log.verify()


def test_append_needs_the_key(log):
    with pytest.raises(AuditError, match="without the workspace data key"):
        AuditLog(log.path, None).append("x")


def _append_many(path, key_bytes, n):
    log = AuditLog(path, DataKey(key_bytes))
    for i in range(n):
        log.append("concurrent", args={"i": i})


def test_concurrent_appends_and_verifies_never_false_alarm(tmp_path):
    import multiprocessing

    path = tmp_path / "audit.log"
    AuditLog(path, DataKey(b"k" * 32)).append("init")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, b"k" * 32, 15)) for _ in range(4)]
    for p in procs:
        p.start()
    checker = AuditLog(path, DataKey(b"k" * 32))
    while any(p.is_alive() for p in procs):
        checker.verify()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert checker.verify().entries == 61


# -- an append killed part-way (kill -9, power cut) ---------------------------


def test_head_one_line_behind_is_an_interrupted_append_and_is_repaired(log):
    # The line was synced, then the process died before writing the head.
    old_head = log.head_path.read_bytes()
    log.append("cmd5")
    log.head_path.write_bytes(old_head)

    result = log.verify()
    assert result.entries == 6
    assert len(result.interrupted) == 1 and "head not yet updated" in result.interrupted[0]

    entry = log.append("next")
    entries = [e for _, e in log.entries()]
    assert [e["command"] for e in entries[-2:]] == ["audit recover", "next"]
    assert "head advanced to line 6" in entries[-2]["details"]["interrupted_write"][0]
    assert entry["seq"] == 8
    assert log.verify().interrupted == ()


def test_incomplete_final_line_is_an_interrupted_append_and_is_removed(log):
    intact = log.path.read_bytes()
    with open(log.path, "ab") as fh:
        fh.write(b'{"seq": 6, "time": "2026-')  # the write was cut off; no head for it

    result = log.verify()
    assert result.entries == 5
    assert "line 6 is incomplete" in result.interrupted[0]
    assert log.last_entry()["seq"] == 5

    log.append("next")
    assert log.path.read_bytes().startswith(intact)
    entries = [e for _, e in log.entries()]
    assert [e["command"] for e in entries[5:]] == ["audit recover", "next"]
    assert log.verify() == log.verify() and log.verify().interrupted == ()


def test_incomplete_first_line_is_removed(tmp_path):
    log = AuditLog(tmp_path / "audit.log", DataKey(b"k" * 32))
    log.path.write_bytes(b'{"seq": 1, "ti')
    assert log.verify().entries == 0
    log.append("init")
    assert [e["command"] for _, e in log.entries()] == ["audit recover", "init"]


def test_a_line_without_a_valid_mac_is_not_taken_for_an_interrupted_append(log, tmp_path):
    # Someone appends a well-chained line (no key needed for the chain) and rolls
    # the head back: the line's MAC gives it away.
    from appliance.security.audit import entry_hash

    lines = _lines(log)
    old_head = log.head_path.read_bytes()
    forged = json.loads(lines[-1])
    forged.update(seq=6, prev=forged["hash"], command="forged")
    forged["hash"] = entry_hash(forged)
    log.path.write_text("".join(lines) + json.dumps(forged) + "\n")
    log.head_path.write_bytes(old_head)
    with pytest.raises(AuditError, match="MAC does not verify"):
        log.verify()
    with pytest.raises(AuditError, match="does not end where its authenticated head says"):
        log.append("next")


def test_head_two_lines_behind_is_tampering(log):
    old_head = log.head_path.read_bytes()
    log.append("a")
    log.append("b")
    log.head_path.write_bytes(old_head)
    with pytest.raises(AuditError, match="does not match the authenticated head"):
        log.verify()
    with pytest.raises(AuditError, match="does not end where its authenticated head says"):
        log.append("next")


def test_fragment_in_the_middle_is_tampering(log):
    lines = _lines(log)
    log.path.write_text("".join(lines[:2]) + lines[2][:-30] + "".join(lines[3:]))
    with pytest.raises(AuditError):
        log.verify()
