"""The hash-chained audit log.

Every command that reads or writes workspace data appends one JSON line::

    {"seq": 7, "time": "...", "user": "...", "host": "...", "command": "ingest",
     "args": {...}, "inputs": [{"path": ..., "sha256": ...}], "outputs": [...],
     "policy_sha256": "...", "result": "ok", "details": {...},
     "prev": "<hash of line 6>", "hash": "<sha256 of this line without hash/mac>",
     "mac": "<HMAC of hash under the audit key>"}

Three layers, each catching what the one before cannot:

* ``hash``/``prev`` chain the lines: an edited, inserted, deleted or
  reordered line breaks the chain, and anyone can check it without a key.
* ``mac`` authenticates each line under a key derived from the workspace data
  key: re-chaining the log after an edit (which needs no key) still fails at
  the first edited line.
* ``audit.log.head`` holds the count and last hash under the same key:
  deleting lines *at the end* leaves a valid shorter chain, and the head
  exposes it.

``append`` refuses to write when the log does not end where the head says,
so a command can never paper over tampering by writing a fresh head.

A process killed while appending (``kill -9``, a power cut) can leave two
states, and only these two are repaired, by the next append, which records
the repair in an ``audit recover`` line of its own:

* an incomplete final line (no newline): its head was never written, so the
  head still names the line before it. The fragment is removed. Nothing
  authenticated is lost: a line counts only once its head is written.
* a complete final line whose head was not yet written: the head is one line
  behind, and the line's MAC proves the appliance wrote it. The head is
  advanced.

Anything else (a fragment in the middle, a head ahead of the log or more than
one line behind, a line whose MAC fails) is tampering, and refused as before.
``verify`` reports a repairable state without failing, so ``audit verify``
and ``doctor`` tell an interrupted write from an edit.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import hmac
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from appliance import crashpoints, interrupts
from appliance.errors import AuditError
from appliance.security.crypto import atomic_write
from appliance.security.keys import PURPOSE_AUDIT, DataKey

GENESIS = "0" * 64
_REQUIRED = ("seq", "hash", "prev")


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k not in ("hash", "mac")}
    return hashlib.sha256(_canonical(body)).hexdigest()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class VerifyResult:
    entries: int
    head: str
    authenticated: bool  # False when checked without the key (chain only)
    # Left by an interrupted append, repaired by the next one (see the module docstring).
    interrupted: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Tail:
    """The end of the log: the last complete line, and a fragment after it."""

    last: dict[str, Any] | None
    fragment: int  # bytes after the last newline (an interrupted write)
    size: int


class AuditLog:
    """Append-only, hash-chained JSONL log with per-line MACs and an authenticated head.

    With ``key=None`` the log can only be read and its chain checked; appending
    needs the key, since an unauthenticated line would later read as tampering.
    """

    def __init__(self, path: Path, key: DataKey | None) -> None:
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        self.lock_path = path.with_name("." + path.name + ".lock")
        self._mac_key = key.derive(PURPOSE_AUDIT) if key is not None else None

    # -- keyed parts -------------------------------------------------------

    def _line_mac(self, digest: str) -> str:
        assert self._mac_key is not None
        return hmac.new(self._mac_key, b"line:" + digest.encode(), hashlib.sha256).hexdigest()

    def _head_mac(self, seq: int, last: str) -> str:
        assert self._mac_key is not None
        return hmac.new(self._mac_key, f"head:{seq}:{last}".encode(), hashlib.sha256).hexdigest()

    def _read_head(self) -> tuple[int, str] | None:
        if not self.head_path.exists():
            return None
        try:
            head = json.loads(self.head_path.read_text())
            seq, last, tag = int(head["seq"]), str(head["hash"]), str(head["mac"])
        except (OSError, ValueError, KeyError, TypeError):
            raise AuditError(f"{self.head_path}: unreadable") from None
        if not hmac.compare_digest(tag, self._head_mac(seq, last)):
            raise AuditError(
                f"{self.head_path}: authentication failed (edited, or from another key)"
            )
        return seq, last

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        # A separate lock file: the log itself may be replaced or absent.
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- writing -----------------------------------------------------------

    def _tail(self, fh: IO[bytes]) -> _Tail:
        """The last complete line, read backwards from the end, and any fragment after it."""
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return _Tail(None, 0, 0)
        block, pos = b"", size
        while True:
            cut = block.rfind(b"\n")
            if pos == 0 or (cut >= 0 and block.rfind(b"\n", 0, cut) >= 0):
                break  # the last complete line lies whole in the block
            step = min(1 << 16, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step) + block
        if cut < 0:
            return _Tail(None, len(block), size)
        raw = block[block.rfind(b"\n", 0, cut) + 1 : cut]
        fragment = len(block) - cut - 1
        try:
            entry = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AuditError(
                f"{self.path}: the last line is not valid JSON; run `appliance audit verify`"
            ) from None
        if (
            not isinstance(entry, dict)
            or not all(k in entry for k in _REQUIRED)
            or not isinstance(entry["seq"], int)
        ):
            raise AuditError(
                f"{self.path}: the last line is not an audit entry; run `appliance audit verify`"
            )
        return _Tail(entry, fragment, size)

    def _line_verifies(self, entry: dict[str, Any], prev: str) -> bool:
        return (
            self._mac_key is not None
            and entry.get("hash") == entry_hash(entry)
            and entry.get("prev") == prev
            and hmac.compare_digest(str(entry.get("mac", "")), self._line_mac(entry["hash"]))
        )

    def _repairs(self, tail: _Tail, head: tuple[int, str] | None) -> list[str]:
        """What an interrupted append left, as repairs to make; AuditError if it is not that.

        The only states accepted are those an append killed at any instant
        leaves (see the module docstring).
        """
        expected = head or (0, GENESIS)
        last = tail.last
        if last is None:
            if head is not None:
                raise AuditError(
                    f"{self.path}: empty or missing, but {head[0]} entries were written; refusing to append"
                )
            return [f"incomplete first line ({tail.fragment} bytes)"] if tail.fragment else []
        at = (last["seq"], last["hash"])
        repairs = []
        if at != expected:
            if last["seq"] == expected[0] + 1 and self._line_verifies(last, expected[1]):
                repairs.append(f"head advanced to line {last['seq']}")
            else:
                raise AuditError(
                    f"{self.path}: does not end where its authenticated head says (seq {expected[0]}); "
                    "refusing to append; run `appliance audit verify`"
                )
        if tail.fragment:
            repairs.insert(0, f"incomplete line after line {last['seq']} ({tail.fragment} bytes)")
        return repairs

    def append(
        self,
        command: str,
        *,
        args: dict[str, Any] | None = None,
        inputs: list[dict[str, Any]] | None = None,
        outputs: list[dict[str, Any]] | None = None,
        policy_sha256: str | None = None,
        result: str = "ok",
        details: dict[str, Any] | None = None,
        started: int | None = None,
    ) -> dict[str, Any]:
        """Append one entry under an exclusive lock; refuse if the log does not end at its head.

        ``started`` links a stage's closing line to its ``started`` line.
        What an interrupted append left is repaired first (module docstring).
        """
        if self._mac_key is None:
            raise AuditError(f"{self.path}: cannot append without the workspace data key")
        with self._locked(exclusive=True):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "r+b") as fh:
                tail = self._tail(fh)
                repairs = self._repairs(tail, self._read_head())
                last = tail.last
                if repairs:
                    # Repair first, then say so in a line of its own.
                    if tail.fragment:
                        fh.truncate(tail.size - tail.fragment)
                        fh.flush()
                        os.fsync(fh.fileno())
                    last = self._write(
                        fh,
                        last,
                        {
                            "command": "audit recover",
                            "result": "recovered",
                            "details": {"interrupted_write": repairs},
                        },
                    )
                entry = self._write(
                    fh,
                    last,
                    {
                        "command": command,
                        "args": args or {},
                        "inputs": inputs or [],
                        "outputs": outputs or [],
                        "policy_sha256": policy_sha256,
                        "result": result,
                        "details": details or {},
                        **({"started": started} if started is not None else {}),
                    },
                )
        return entry

    def _write(
        self, fh: IO[bytes], last: dict[str, Any] | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Write one line after ``last``, sync it, then the head."""
        entry: dict[str, Any] = {
            "seq": (last["seq"] + 1) if last else 1,
            "time": utc_now(),
            "user": _user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": fields.pop("command"),
            "args": {},
            "inputs": [],
            "outputs": [],
            "policy_sha256": None,
            "result": "ok",
            "details": {},
            **fields,
            "prev": last["hash"] if last else GENESIS,
        }
        entry["hash"] = entry_hash(entry)
        entry["mac"] = self._line_mac(entry["hash"])
        head_doc = {
            "seq": entry["seq"],
            "hash": entry["hash"],
            "mac": self._head_mac(entry["seq"], entry["hash"]),
        }
        # A SIGTERM waits for the line and its head: the caller gets the entry
        # (a stage its "started" seq), then the interruption.
        with interrupts.shielded():
            fh.write(_canonical(entry) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
            crashpoints.reached("audit.line")
            atomic_write(self.head_path, json.dumps(head_doc).encode() + b"\n")
        return entry

    # -- reading -----------------------------------------------------------

    def last_entry(self) -> dict[str, Any] | None:
        """The newest entry (read from the end of the file), or None for an empty log."""
        if not self.path.exists():
            return None
        with open(self.path, "rb") as fh:
            return self._tail(fh).last

    def entries(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (line number, entry); a line that is not an entry raises AuditError naming it.

        An incomplete final line (an interrupted append, repaired by the next
        one) is not an entry and is not yielded; ``verify`` reports it.
        """
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.endswith(b"\n"):
                    return
                if not raw.strip():
                    raise AuditError(
                        f"{self.path}: line {lineno} is blank (a line was removed or edited)"
                    )
                try:
                    entry = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise AuditError(
                        f"{self.path}: line {lineno} is not valid JSON (edited)"
                    ) from None
                if not isinstance(entry, dict) or not all(k in entry for k in _REQUIRED):
                    raise AuditError(f"{self.path}: line {lineno} is not an audit entry (edited)")
                yield lineno, entry

    def verify(self, *, expect_entries: bool = False) -> VerifyResult:
        """Check every hash, link and MAC, then the head; raise AuditError at the first break."""
        with self._locked(exclusive=False):
            return self._verify(expect_entries)

    def _verify(self, expect_entries: bool) -> VerifyResult:
        prev = GENESIS
        count = 0
        keyed = self._mac_key is not None
        interrupted: list[str] = []
        last_entry: dict[str, Any] | None = None
        for lineno, entry in self.entries():
            where = f"{self.path}: line {lineno} (seq {entry.get('seq')})"
            if entry.get("hash") != entry_hash(entry):
                raise AuditError(f"{where} was modified: its hash does not match its content")
            if keyed and not hmac.compare_digest(
                str(entry.get("mac", "")), self._line_mac(entry["hash"])
            ):
                raise AuditError(
                    f"{where} was modified or inserted: its MAC does not verify under the workspace key"
                )
            if entry.get("prev") != prev:
                raise AuditError(
                    f"{where} does not follow line {lineno - 1}: a line before it was deleted, inserted or reordered"
                )
            if entry.get("seq") != lineno:
                raise AuditError(f"{where}: expected seq {lineno}; lines were deleted or reordered")
            prev = entry["hash"]
            count = lineno
            last_entry = entry
        if self.path.exists():
            with open(self.path, "rb") as fh:
                fragment = self._tail(fh).fragment
            if fragment:
                interrupted.append(
                    f"line {count + 1} is incomplete ({fragment} bytes): an append was interrupted; "
                    "the next command removes it"
                )
        if keyed:
            head = self._read_head()
            behind = (
                last_entry is not None
                and (head[0] if head else 0) == count - 1
                and (head[1] if head else GENESIS) == last_entry["prev"]
            )
            if behind:
                # The last line verified above (hash, MAC, link); only its head
                # was not written yet.
                interrupted.append(
                    f"line {count} was written but the head not yet updated (an interrupted append); "
                    "the next command advances the head"
                )
                head = (count, prev)
            if head is None:
                if count or expect_entries:
                    raise AuditError(
                        f"{self.head_path}: missing; deleted final lines could not be detected"
                    )
            else:
                seq, last = head
                if seq > count:
                    raise AuditError(
                        f"{self.path}: line {count + 1} onwards deleted: the log ends at line {count}, "
                        f"but {seq} entries were written"
                    )
                if seq < count or last != prev:
                    raise AuditError(
                        f"{self.path}: line {min(seq + 1, count)} does not match the authenticated head: "
                        "lines were appended or replaced outside the appliance"
                    )
        if expect_entries and count == 0:
            raise AuditError(
                f"{self.path}: missing or empty, but this workspace was initialized with an audit log"
            )
        return VerifyResult(
            entries=count, head=prev, authenticated=keyed, interrupted=tuple(interrupted)
        )
