"""The hash-chained audit log.

Every command that reads or writes workspace data appends one JSON line::

    {"seq": 7, "time": "...", "user": "...", "host": "...", "command": "ingest",
     "args": {...}, "inputs": [{"path": ..., "sha256": ...}], "outputs": [...],
     "policy_sha256": "...", "result": "ok", "details": {...},
     "prev": "<hash of line 6>", "hash": "<sha256 of this line without 'hash'>"}

Editing a line breaks its own hash; deleting or reordering lines breaks the
``prev`` link of the next one. Deleting lines *at the end* leaves a valid
shorter chain, so the head (count and last hash) is also kept in
``audit.head``, authenticated with an HMAC under a key derived from the data
key: truncating the log, or rewriting it and the head without the key, is
detected too.
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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from appliance.errors import AuditError
from appliance.security.crypto import atomic_write
from appliance.security.keys import PURPOSE_AUDIT, DataKey

GENESIS = "0" * 64


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
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


class AuditLog:
    """Append-only, hash-chained JSONL log with an authenticated head."""

    def __init__(self, path: Path, key: DataKey | None) -> None:
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        self._mac_key = key.derive(PURPOSE_AUDIT) if key is not None else None

    # -- writing -----------------------------------------------------------

    def _head_mac(self, seq: int, last: str) -> str:
        assert self._mac_key is not None
        return hmac.new(self._mac_key, f"{seq}:{last}".encode(), hashlib.sha256).hexdigest()

    def _last_line(self) -> dict[str, Any] | None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with open(self.path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            block = b""
            pos = size
            # Read backwards until a full last line is in hand.
            while pos > 0 and block.count(b"\n") < 2:
                step = min(8192, pos)
                pos -= step
                fh.seek(pos)
                block = fh.read(step) + block
        lines = [ln for ln in block.splitlines() if ln.strip()]
        try:
            entry = json.loads(lines[-1])
        except (json.JSONDecodeError, IndexError) as exc:
            raise AuditError(
                f"{self.path}: last line is not valid JSON; run `appliance audit verify`"
            ) from exc
        if not isinstance(entry, dict):
            raise AuditError(f"{self.path}: last line is not an audit entry")
        return entry

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
        """Append one entry under an exclusive lock and return it."""
        self.path.touch(mode=0o600, exist_ok=True)
        with open(self.path, "ab") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                last = self._last_line()
                entry: dict[str, Any] = {
                    "seq": (last["seq"] + 1) if last else 1,
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
                    "prev": last["hash"] if last else GENESIS,
                }
                entry["hash"] = entry_hash(entry)
                fh.write(_canonical(entry) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
                if self._mac_key is not None:
                    head = {"seq": entry["seq"], "hash": entry["hash"]}
                    head["mac"] = self._head_mac(entry["seq"], entry["hash"])
                    atomic_write(self.head_path, json.dumps(head).encode() + b"\n")
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return entry

    # -- reading -----------------------------------------------------------

    def entries(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (line number, entry); a line that is not JSON raises AuditError naming it."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
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
                if not isinstance(entry, dict):
                    raise AuditError(f"{self.path}: line {lineno} is not an audit entry (edited)")
                yield lineno, entry

    def verify(self) -> VerifyResult:
        """Check every hash and link, then the authenticated head; raise AuditError at the first break."""
        prev = GENESIS
        count = 0
        for lineno, entry in self.entries():
            if entry.get("hash") != entry_hash(entry):
                raise AuditError(
                    f"{self.path}: line {lineno} (seq {entry.get('seq')}) was modified: its hash does not match its content"
                )
            if entry.get("prev") != prev:
                raise AuditError(
                    f"{self.path}: line {lineno} (seq {entry.get('seq')}) does not follow line {lineno - 1}: "
                    "a line before it was deleted, inserted or reordered"
                )
            if entry.get("seq") != lineno:
                raise AuditError(
                    f"{self.path}: line {lineno} has seq {entry.get('seq')}, expected {lineno}: lines were deleted or reordered"
                )
            prev = entry["hash"]
            count = lineno
        if self._mac_key is not None:
            self._verify_head(count, prev)
        return VerifyResult(entries=count, head=prev)

    def _verify_head(self, count: int, last: str) -> None:
        if not self.head_path.exists():
            if count == 0:
                return
            raise AuditError(
                f"{self.head_path}: missing; the log cannot be checked for deleted final lines"
            )
        try:
            head = json.loads(self.head_path.read_text())
            seq, last_hash, tag = int(head["seq"]), str(head["hash"]), str(head["mac"])
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"{self.head_path}: unreadable") from None
        if not hmac.compare_digest(tag, self._head_mac(seq, last_hash)):
            raise AuditError(
                f"{self.head_path}: authentication failed (edited without the workspace key)"
            )
        if seq > count:
            raise AuditError(
                f"{self.path}: line {count + 1} onwards deleted: the log ends at line {count}, "
                f"but {seq} entries were written"
            )
        if seq < count or last_hash != last:
            raise AuditError(
                f"{self.path}: line {seq + 1 if seq < count else count} does not match the authenticated head: "
                "lines were appended or replaced outside the appliance"
            )
