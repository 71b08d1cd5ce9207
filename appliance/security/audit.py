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

from appliance import crashpoints
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

    def _last_entry(self, fh: IO[bytes]) -> tuple[int, dict[str, Any]] | None:
        """The last line (number, entry), read backwards from the end."""
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return None
        block, pos = b"", size
        while pos > 0 and block.rstrip(b"\n").count(b"\n") < 1:
            step = min(1 << 16, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step) + block
        if not block.endswith(b"\n"):
            raise AuditError(
                f"{self.path}: the last line is incomplete (a write was cut off); run `appliance audit verify`"
            )
        raw = block.rstrip(b"\n").rsplit(b"\n", 1)[-1]
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
        return entry["seq"], entry

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
    ) -> dict[str, Any]:
        """Append one entry under an exclusive lock; refuse if the log does not end at its head."""
        if self._mac_key is None:
            raise AuditError(f"{self.path}: cannot append without the workspace data key")
        with self._locked(exclusive=True):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "r+b") as fh:
                last = self._last_entry(fh)
                head = self._read_head()
                if last is None and head is not None:
                    raise AuditError(
                        f"{self.path}: empty or missing, but {head[0]} entries were written; refusing to append"
                    )
                if last is not None:
                    expected = head or (0, GENESIS)
                    if (last[1]["seq"], last[1]["hash"]) != expected:
                        raise AuditError(
                            f"{self.path}: does not end where its authenticated head says (seq {expected[0]}); "
                            "refusing to append; run `appliance audit verify`"
                        )
                entry: dict[str, Any] = {
                    "seq": (last[1]["seq"] + 1) if last else 1,
                    "time": utc_now(),
                    "user": _user(),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "command": command,
                    "args": args or {},
                    "inputs": inputs or [],
                    "outputs": outputs or [],
                    "policy_sha256": policy_sha256,
                    "result": result,
                    "details": details or {},
                    "prev": last[1]["hash"] if last else GENESIS,
                }
                entry["hash"] = entry_hash(entry)
                entry["mac"] = self._line_mac(entry["hash"])
                fh.write(_canonical(entry) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
                crashpoints.reached("audit.line")
                head_doc = {
                    "seq": entry["seq"],
                    "hash": entry["hash"],
                    "mac": self._head_mac(entry["seq"], entry["hash"]),
                }
                atomic_write(self.head_path, json.dumps(head_doc).encode() + b"\n")
        return entry

    # -- reading -----------------------------------------------------------

    def last_entry(self) -> dict[str, Any] | None:
        """The newest entry (read from the end of the file), or None for an empty log."""
        if not self.path.exists():
            return None
        with open(self.path, "rb") as fh:
            last = self._last_entry(fh)
        return last[1] if last else None

    def entries(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (line number, entry); a line that is not an entry raises AuditError naming it."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.endswith(b"\n"):
                    raise AuditError(
                        f"{self.path}: line {lineno} is incomplete (a write was cut off or the file truncated)"
                    )
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
        if keyed:
            head = self._read_head()
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
        return VerifyResult(entries=count, head=prev, authenticated=keyed)
