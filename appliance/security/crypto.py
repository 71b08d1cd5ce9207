"""Authenticated encryption for real-zone data at rest (AES-256-GCM).

``seal``/``unseal`` encrypt one blob with a fresh 96-bit random nonce; the
associated data binds the ciphertext to where it belongs (a record id, a file
name), so a ciphertext moved elsewhere fails to decrypt. ``write_encrypted``
and ``read_encrypted`` wrap a whole file with a small header naming the key
that made it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance import crashpoints
from appliance.errors import IntegrityError
from appliance.security.keys import PURPOSE_ARTIFACT_AEAD, DataKey

NONCE_BYTES = 12
FILE_MAGIC = b"APLENC01"


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt and authenticate: returns nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes | memoryview, aad: bytes, what: str) -> bytes:
    """Decrypt a ``seal`` blob; raises IntegrityError naming ``what`` on any tampering."""
    if len(blob) < NONCE_BYTES + 16:
        raise IntegrityError(f"{what}: ciphertext truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise IntegrityError(
            f"{what}: authentication failed (the data was modified, or was encrypted with another key)"
        ) from None


def mac(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 over length-prefixed parts (so part boundaries cannot shift)."""
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        h.update(struct.pack(">Q", len(part)))
        h.update(part)
    return h.digest()


def atomic_write(path: Path, data: bytes | tuple[bytes, ...], mode: int = 0o600) -> None:
    """Write a file so readers see the old or the new content, never half of it.

    ``data`` may come in parts (written one after the other), so a large file
    need not be joined into one more copy in memory first.

    The temporary file is created exclusively with an unpredictable name (no
    symlink planted in advance can redirect the write), and the folder is
    synced after the rename so the new name survives a power cut.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            for part in (data,) if isinstance(data, bytes) else data:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    crashpoints.reached("atomic_write")


def write_encrypted(path: Path, key: DataKey, plaintext: bytes | memoryview, *, label: str) -> None:
    """Encrypt a whole file (e.g. generator weights) under the workspace key.

    ``label`` is bound as associated data together with the file name, so a
    file renamed or swapped for another one does not decrypt. The layout is
    ``seal``'s behind a header; header, nonce and ciphertext are written in
    turn rather than joined (a leakage index is hundreds of megabytes).
    """
    header = FILE_MAGIC + bytes.fromhex(key.key_id)
    aad = header + label.encode() + b"\0" + path.name.encode()
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key.derive(PURPOSE_ARTIFACT_AEAD)).encrypt(nonce, plaintext, aad)
    atomic_write(path, (header, nonce, sealed))


def read_encrypted(path: Path, key: DataKey, *, label: str) -> bytes:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"{path}: encrypted file is missing") from None
    view = memoryview(blob)  # slices without copying a large file
    header = bytes(view[: len(FILE_MAGIC) + 8])
    if not header.startswith(FILE_MAGIC):
        raise IntegrityError(f"{path}: not an appliance encrypted file")
    if header[len(FILE_MAGIC) :].hex() != key.key_id:
        raise IntegrityError(
            f"{path}: encrypted with key {header[len(FILE_MAGIC) :].hex()}, not this workspace's key {key.key_id}"
        )
    aad = header + label.encode() + b"\0" + path.name.encode()
    return unseal(key.derive(PURPOSE_ARTIFACT_AEAD), view[len(header) :], aad, str(path))
