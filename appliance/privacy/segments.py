"""Encrypted segment files: many separately sealed parts in one file, each read on its own.

The leakage index of a large record set is gigabytes of sorted arrays; the
screen needs, per round of synthetic notes, only the parts its notes touch,
and the build must never hold all of it at once. A segment file keeps each
part (a bucket of a sorted table, a block of rows) sealed on its own with
AES-256-GCM, so a reader decrypts one part at a time, in any order:

    magic (8) · key id (8) · segment · segment · … · directory · trailer (24)

Each segment is ``nonce || ciphertext || tag``; its associated data binds
the file header, a label (the index's fingerprint), the file name and the
segment name, so a segment moved to another place, file or index does not
decrypt. The directory (segment name → offset, length, and a random id of this
file) is sealed the same way; the trailer gives its offset and length, then
the magic again, so a truncated file is recognised. A segment may be copied
as it is into a later file of the same name and label; the file id tells
the two files apart, so a reader that expects one file (``expect``) refuses
an older one put back in its place.

Segment payloads are numpy arrays (:func:`pack` / :func:`unpack`, no pickle).
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.errors import IntegrityError
from appliance.security.crypto import NONCE_BYTES, unseal
from appliance.security.keys import PURPOSE_ARTIFACT_AEAD, DataKey

MAGIC = b"APLSEG01"
_TRAILER = struct.Struct(">QQ8s")
_DIRECTORY = "\0directory"


def pack(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **dict(arrays))  # type: ignore[arg-type]
    return buf.getvalue()


def unpack(payload: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


class SegmentWriter:
    """Appends sealed segments to a new file; :meth:`close` writes the directory."""

    def __init__(self, path: Path, key: DataKey, label: str) -> None:
        self.path = path
        self.header = MAGIC + bytes.fromhex(key.key_id)
        self._prefix = self.header + label.encode() + b"\0" + path.name.encode() + b"\0"
        self._aead = AESGCM(key.derive(PURPOSE_ARTIFACT_AEAD))
        self._fh: BinaryIO = open(path, "xb")  # noqa: SIM115 (closed in close())
        os.fchmod(self._fh.fileno(), 0o600)
        self._fh.write(self.header)
        self._offset = len(self.header)
        self.directory: dict[str, tuple[int, int]] = {}
        self.file_id = os.urandom(16).hex()

    def _seal(self, name: str, payload: bytes) -> tuple[int, int]:
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, payload, self._prefix + name.encode())
        self._fh.write(sealed)
        where = (self._offset, len(sealed))
        self._offset += len(sealed)
        return where

    def add(self, name: str, payload: bytes) -> None:
        if name in self.directory or name == _DIRECTORY:
            raise ValueError(f"segment {name!r} written twice")
        self.directory[name] = self._seal(name, payload)

    def copy(self, reader: SegmentReader, name: str) -> None:
        """A segment of another file of the same name and label, as it is (no re-encryption)."""
        if reader._prefix != self._prefix:
            raise ValueError(f"{reader.path}: another file, label or key; segments do not move")
        if name in self.directory:
            raise ValueError(f"segment {name!r} written twice")
        sealed = reader.sealed(name)
        self._fh.write(sealed)
        self.directory[name] = (self._offset, len(sealed))
        self._offset += len(sealed)

    def add_arrays(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        self.add(name, pack(arrays))

    def close(self) -> None:
        directory = {"file_id": self.file_id, "segments": self.directory}
        offset, length = self._seal(_DIRECTORY, json.dumps(directory).encode())
        self._fh.write(_TRAILER.pack(offset, length, MAGIC))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def abort(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class SegmentReader:
    """Reads single segments of a segment file; only the directory is read on opening."""

    def __init__(self, path: Path, key: DataKey, label: str, expect: str | None = None) -> None:
        self.path = path
        try:
            self._fh: BinaryIO = open(path, "rb")  # noqa: SIM115 (closed in close())
        except FileNotFoundError:
            raise IntegrityError(f"{path}: index file is missing") from None
        try:
            self._open(key, label, expect)
        except BaseException:
            self._fh.close()
            raise

    def _open(self, key: DataKey, label: str, expect: str | None) -> None:
        path = self.path
        header = self._fh.read(len(MAGIC) + 8)
        if not header.startswith(MAGIC):
            raise IntegrityError(f"{path}: not an appliance segment file")
        if header[len(MAGIC) :].hex() != key.key_id:
            raise IntegrityError(
                f"{path}: encrypted with key {header[len(MAGIC) :].hex()}, "
                f"not this workspace's key {key.key_id}"
            )
        self._prefix = header + label.encode() + b"\0" + path.name.encode() + b"\0"
        self._key = key.derive(PURPOSE_ARTIFACT_AEAD)
        size = self._fh.seek(0, os.SEEK_END)
        if size < len(header) + _TRAILER.size:
            raise IntegrityError(f"{path}: truncated")
        self._fh.seek(size - _TRAILER.size)
        offset, length, magic = _TRAILER.unpack(self._fh.read(_TRAILER.size))
        if magic != MAGIC or offset + length > size - _TRAILER.size:
            raise IntegrityError(f"{path}: truncated or damaged (no directory)")
        directory = json.loads(self._read(_DIRECTORY, offset, length))
        self.file_id = str(directory["file_id"])
        self.directory = {k: (int(v[0]), int(v[1])) for k, v in directory["segments"].items()}
        if expect is not None and self.file_id != expect:
            raise IntegrityError(
                f"{path}: not the file this index was saved with (another build's, put back "
                "or mixed in); delete the folder to rebuild it"
            )

    def _raw(self, offset: int, length: int) -> bytes:
        self._fh.seek(offset)
        blob = self._fh.read(length)
        if len(blob) != length:
            raise IntegrityError(f"{self.path}: truncated")
        return blob

    def sealed(self, name: str) -> bytes:
        """A segment as stored (authenticated first, so a damaged one is not copied on)."""
        where = self.directory.get(name)
        if where is None:
            raise IntegrityError(f"{self.path}: no segment {name!r}")
        self._read(name, *where)
        return self._raw(*where)

    def _read(self, name: str, offset: int, length: int) -> bytes:
        blob = self._raw(offset, length)
        shown = "directory" if name == _DIRECTORY else name
        return unseal(self._key, blob, self._prefix + name.encode(), f"{self.path} [{shown}]")

    def __contains__(self, name: str) -> bool:
        return name in self.directory

    def get(self, name: str) -> bytes:
        where = self.directory.get(name)
        if where is None:
            raise IntegrityError(f"{self.path}: no segment {name!r}")
        return self._read(name, *where)

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        return unpack(self.get(name))

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
