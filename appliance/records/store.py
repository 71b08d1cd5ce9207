"""The encrypted record store (real zone).

Records live in immutable *shards* under ``records/shards/``; a shard is
written once, atomically, and never modified. Layout of a shard file::

    header   MAGIC "APLSHRD1" | key id (8 bytes)
    entries  id_mac (32) | text_mac (32) | length (4, big-endian) | nonce || AES-256-GCM ciphertext || tag
    trailer  "END!" | entry count (4) | shard MAC (32)

* Each record (id, text, metadata, identifiers, source) is JSON encrypted
  with AES-256-GCM under the store key; the associated data binds it to its
  record id (``id_mac``, a keyed hash of the id), and after decryption the id
  inside must hash to the same value, so a ciphertext cannot be passed off as
  another record.
* ``id_mac`` and ``text_mac`` are HMAC-SHA256 under a separate key: the store
  can tell "already stored" from "same id, different text" without
  decrypting anything, and a reader without the key learns nothing from them.
* The shard MAC covers the shard's name, header and every entry byte: a
  flipped bit, a truncated file, reordered, removed or added entries, or a
  shard renamed to another's place are all detected, and reported by name.
* ``store.json`` lists the committed shards (name, count, size, SHA-256) and
  is itself authenticated, so a deleted or replaced shard is detected too.

No plaintext note text is ever written: records are encrypted in memory
before the shard file is created.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.documents import Record
from appliance.errors import IntegrityError
from appliance.security.crypto import atomic_write, mac, seal, unseal
from appliance.security.keys import PURPOSE_STORE_AEAD, PURPOSE_STORE_MAC, DataKey

MAGIC = b"APLSHRD1"
TRAILER_MAGIC = b"END!"
HEADER_LEN = len(MAGIC) + 8
ENTRY_HEAD = struct.Struct(">32s32sI")
TRAILER = struct.Struct(">4sI32s")
STORE_FORMAT = 1
RECORD_AAD = b"appliance/record/v1\0"
# Authenticated shards kept between lookups (as ciphertext), so repeated
# ``get_many`` calls do not re-read and re-authenticate every shard.
SHARD_CACHE_BYTES = 512 << 20


@dataclass(frozen=True)
class ShardInfo:
    name: str
    records: int
    bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "records": self.records,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class IndexEntry:
    text_mac: bytes
    shard: str


@dataclass
class _Pending:
    entries: list[bytes] = field(default_factory=list)
    size: int = 0


class RecordStore:
    """Open with ``RecordStore(folder, key)``; ``writer()`` adds, iteration reads."""

    def __init__(
        self,
        folder: Path,
        key: DataKey,
        *,
        shard_max_records: int = 2000,
        shard_max_bytes: int = 8 << 20,
    ) -> None:
        self.folder = folder
        self.shard_dir = folder / "shards"
        self.manifest_path = folder / "store.json"
        self.key_id = key.key_id
        self._aead_key = key.derive(PURPOSE_STORE_AEAD)
        self._mac_key = key.derive(PURPOSE_STORE_MAC)
        self.shard_max_records = shard_max_records
        self.shard_max_bytes = shard_max_bytes
        # Called with (current SHA-256 or None, next SHA-256) right before
        # store.json is replaced, so the workspace can log its intent first.
        self.before_manifest: Callable[[str | None, str], None] | None = None
        self._manifest_sha256: str | None = None
        self.shards: list[ShardInfo] = self._load_manifest()
        self.cache_bytes = SHARD_CACHE_BYTES
        self._cache: OrderedDict[tuple[str, str], tuple[int, dict[bytes, bytes]]] = OrderedDict()
        self._cached_bytes = 0

    # -- keyed hashes ------------------------------------------------------

    def id_mac(self, record_id: str) -> bytes:
        return mac(self._mac_key, b"id", record_id.encode("utf-8"))

    def text_mac(self, text: str) -> bytes:
        return mac(self._mac_key, b"text", text.encode("utf-8", "surrogatepass"))

    # -- manifest ----------------------------------------------------------

    def _manifest_mac(self, body: dict[str, Any]) -> str:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return mac(self._mac_key, b"store.json", canonical).hex()

    def _load_manifest(self) -> list[ShardInfo]:
        if not self.manifest_path.exists():
            if self.shard_dir.exists() and any(
                not self._pending_marker(name).exists() for name in self._committed_names_on_disk()
            ):
                # (A first shard with its marker is an interrupted first commit.)
                raise IntegrityError(
                    f"{self.manifest_path}: missing while shards exist; the store's manifest was deleted"
                )
            return []
        try:
            raw = self.manifest_path.read_bytes()
            doc = json.loads(raw.decode("utf-8"))
            tag = doc.pop("mac")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError(f"{self.manifest_path}: unreadable store manifest") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("shards"), list):
            raise IntegrityError(f"{self.manifest_path}: unreadable store manifest")
        if doc.get("key_id") != self.key_id:
            raise IntegrityError(
                f"{self.manifest_path}: the store was encrypted with key {doc.get('key_id')}, "
                f"but this workspace's data key is {self.key_id}"
            )
        if not isinstance(tag, str) or not hmac.compare_digest(tag, self._manifest_mac(doc)):
            raise IntegrityError(
                f"{self.manifest_path}: authentication failed (the store manifest was edited)"
            )
        shards = [ShardInfo(**s) for s in doc["shards"]]
        self._manifest_sha256 = hashlib.sha256(raw).hexdigest()
        listed = {info.name for info in shards}
        for name in self._committed_names_on_disk() if self.shard_dir.exists() else ():
            if name not in listed and not self._pending_marker(name).exists():
                # Not an interrupted commit (that leaves its marker): the manifest
                # no longer lists a shard it once did.
                raise IntegrityError(
                    f"record shard {name} is not listed in {self.manifest_path.name} and was not left by an "
                    "interrupted ingest: the store manifest was rolled back or replaced"
                )
        return shards

    def _write_manifest(self) -> None:
        body: dict[str, Any] = {
            "format": STORE_FORMAT,
            "key_id": self.key_id,
            "records": len(self),
            "shards": [s.as_dict() for s in self.shards],
        }
        body["mac"] = self._manifest_mac(body)
        data = (json.dumps(body, indent=1) + "\n").encode()
        new_sha256 = hashlib.sha256(data).hexdigest()
        if self.before_manifest is not None:
            self.before_manifest(self._manifest_sha256, new_sha256)
        atomic_write(self.manifest_path, data, 0o600)
        self._manifest_sha256 = new_sha256

    def _committed_names_on_disk(self) -> Iterator[str]:
        return (p.name for p in sorted(self.shard_dir.glob("shard-*.bin")))

    def __len__(self) -> int:
        return sum(s.records for s in self.shards)

    def _pending_marker(self, name: str) -> Path:
        return self.shard_dir / f".pending-{name}"

    def uncommitted_shards(self) -> list[str]:
        """Shard files not in the manifest: left by an ingest interrupted between write and commit."""
        if not self.shard_dir.exists():
            return []
        listed = {s.name for s in self.shards}
        return [n for n in self._committed_names_on_disk() if n not in listed]

    # -- reading -----------------------------------------------------------

    def _read_shard(self, info: ShardInfo) -> list[tuple[bytes, bytes, bytes]]:
        """Read and authenticate one shard; return its (id_mac, text_mac, blob) entries."""
        path = self.shard_dir / info.name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(
                f"record shard {info.name} is missing from {self.shard_dir}"
            ) from None
        if hashlib.sha256(data).hexdigest() != info.sha256 or len(data) != info.bytes:
            raise IntegrityError(
                f"record shard {info.name} is corrupted or was modified (its hash no longer matches the store manifest)"
            )
        if len(data) < HEADER_LEN + TRAILER.size or not data.startswith(MAGIC):
            raise IntegrityError(f"record shard {info.name} is not a record shard")
        body, trailer = data[: -TRAILER.size], data[-TRAILER.size :]
        tmagic, count, tag = TRAILER.unpack(trailer)
        expected = mac(self._mac_key, b"shard", info.name.encode(), body, struct.pack(">I", count))
        if tmagic != TRAILER_MAGIC or not hmac.compare_digest(tag, expected):
            raise IntegrityError(
                f"record shard {info.name} failed authentication (modified or truncated)"
            )
        if body[len(MAGIC) : HEADER_LEN].hex() != self.key_id:
            raise IntegrityError(f"record shard {info.name} was written with another key")
        entries = []
        pos = HEADER_LEN
        while pos < len(body):
            id_mac, text_mac, length = ENTRY_HEAD.unpack_from(body, pos)
            pos += ENTRY_HEAD.size
            entries.append((id_mac, text_mac, body[pos : pos + length]))
            pos += length
        if len(entries) != count or count != info.records:
            raise IntegrityError(f"record shard {info.name}: entry count does not match")
        return entries

    def index(self) -> dict[bytes, IndexEntry]:
        """id_mac -> (text_mac, shard) for every stored record, without decrypting any."""
        out: dict[bytes, IndexEntry] = {}
        for info in self.shards:
            for id_mac, text_mac, _ in self._read_shard(info):
                out[id_mac] = IndexEntry(text_mac, info.name)
        return out

    def _decrypt(self, shard: str, id_mac: bytes, blob: bytes) -> Record:
        plain = unseal(self._aead_key, blob, RECORD_AAD + id_mac, f"record shard {shard}")
        record = Record.from_dict(json.loads(plain))
        if not hmac.compare_digest(self.id_mac(record.id), id_mac):
            raise IntegrityError(f"record shard {shard}: a record does not match its id")
        return record

    def __iter__(self) -> Iterator[Record]:
        return self.records_in(self.shards)

    def records_in(self, shards: Iterable[ShardInfo]) -> Iterator[Record]:
        """The records of some of the store's shards, in store order (e.g. those added since)."""
        for info in shards:
            for id_mac, _, blob in self._read_shard(info):
                yield self._decrypt(info.name, id_mac, blob)

    def _entries(self, info: ShardInfo) -> dict[bytes, bytes]:
        """id_mac -> sealed record of one authenticated shard, from the cache when there.

        A shard is authenticated when read from disk; what the cache keeps is
        that authenticated ciphertext, keyed by name and hash, so a shard
        rewritten on disk is never served from it. Each record is still
        decrypted (and so authenticated against its id) on every lookup.
        """
        key = (info.name, info.sha256)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[1]
        entries = {id_mac: blob for id_mac, _, blob in self._read_shard(info)}
        if info.bytes <= self.cache_bytes:
            self._cache[key] = (info.bytes, entries)
            self._cached_bytes += info.bytes
            while self._cached_bytes > self.cache_bytes:
                _, (size, _) = self._cache.popitem(last=False)
                self._cached_bytes -= size
        return entries

    def get(self, record_id: str) -> Record | None:
        return self.get_many([record_id]).get(record_id)

    def get_many(self, record_ids: Iterable[str]) -> dict[str, Record]:
        """Several records in one pass over the shards, decrypting only those asked for."""
        targets = {self.id_mac(i): i for i in record_ids}
        out: dict[str, Record] = {}
        for info in self.shards:
            if len(out) == len(targets):
                break
            entries = self._entries(info)
            for id_mac, rid in targets.items():
                blob = entries.get(id_mac)
                if blob is not None:
                    out[rid] = self._decrypt(info.name, id_mac, blob)
        return out

    def verify(self) -> int:
        """Authenticate every shard and decrypt every record; returns the record count."""
        return sum(1 for _ in self)

    # -- writing -----------------------------------------------------------

    def writer(self) -> StoreWriter:
        return StoreWriter(self)

    def _commit_shard(self, pending: _Pending) -> ShardInfo:
        self.shard_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        taken = {s.name for s in self.shards} | set(self._committed_names_on_disk())
        number = len(taken) + 1
        while f"shard-{number:06d}.bin" in taken:
            number += 1
        name = f"shard-{number:06d}.bin"
        body = MAGIC + bytes.fromhex(self.key_id) + b"".join(pending.entries)
        count = len(pending.entries)
        tag = mac(self._mac_key, b"shard", name.encode(), body, struct.pack(">I", count))
        data = body + TRAILER.pack(TRAILER_MAGIC, count, tag)
        # Marker, shard, then the manifest that makes it part of the store: a
        # crash in between leaves a marked, uncommitted shard (removed by the
        # next ingest), never a listed-but-absent one; an unmarked unlisted
        # shard therefore means the manifest was rolled back.
        marker = self._pending_marker(name)
        atomic_write(marker, b"", 0o600)
        atomic_write(self.shard_dir / name, data, 0o600)
        info = ShardInfo(name, count, len(data), hashlib.sha256(data).hexdigest())
        self.shards.append(info)
        try:
            self._write_manifest()
        except BaseException:
            # Not committed (say, interrupted before the manifest): the marked
            # shard is removed by the next ingest, which stores its rows again.
            self.shards.remove(info)
            raise
        marker.unlink()
        return info

    def remove_uncommitted(self) -> list[str]:
        names = self.uncommitted_shards()
        for name in names:
            (self.shard_dir / name).unlink()
            self._pending_marker(name).unlink(missing_ok=True)
        for marker in self.shard_dir.glob(".pending-*") if self.shard_dir.exists() else ():
            marker.unlink()  # a marker whose shard was never written
        for partial in self.shard_dir.glob(".*.tmp") if self.shard_dir.exists() else ():
            partial.unlink()  # half-written temporary files (ciphertext only) from a crash
        return names


class StoreWriter:
    """Buffers encrypted entries and commits a shard whenever one is full (and on close)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.pending = _Pending()
        self.committed: list[ShardInfo] = []

    def add(
        self, record: Record, id_mac: bytes | None = None, text_mac: bytes | None = None
    ) -> None:
        id_mac = id_mac or self.store.id_mac(record.id)
        text_mac = text_mac or self.store.text_mac(record.text)
        payload = json.dumps(record.as_dict(), ensure_ascii=False).encode("utf-8", "surrogatepass")
        blob = seal(self.store._aead_key, payload, RECORD_AAD + id_mac)
        entry = ENTRY_HEAD.pack(id_mac, text_mac, len(blob)) + blob
        if self.pending.entries and (
            len(self.pending.entries) >= self.store.shard_max_records
            or self.pending.size + len(entry) > self.store.shard_max_bytes
        ):
            self.flush()
        self.pending.entries.append(entry)
        self.pending.size += len(entry)

    def flush(self) -> None:
        if self.pending.entries:
            # Taken off first: a commit that fails part-way is never retried
            # with the same entries (which would store them twice).
            pending, self.pending = self.pending, _Pending()
            self.committed.append(self.store._commit_shard(pending))

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # On error, what was already committed stays (resumable); the partial
        # buffer is committed too, since every record in it is complete.
        self.flush()
