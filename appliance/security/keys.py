"""Key files and the keys derived from them.

One 256-bit *data key* per workspace (``keys/data.key``, mode 0600, or a file
supplied by the hospital's key service). Every purpose gets its own subkey
derived with HKDF-SHA256 and a purpose label, so the record store's AES key,
the leakage index's HMAC key and the audit key are independent: knowing one
reveals nothing about the others.

An Ed25519 *signing key* (``keys/signing.key``, PEM, 0600) signs release
manifests and model packages; its public half sits beside it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.errors import KeyFileError

KEY_BYTES = 32

# Purpose labels for derived keys. Changing one invalidates everything made
# with it, so they are versioned and never reused for something else.
PURPOSE_STORE_AEAD = "appliance/v1/record-store/aes-256-gcm"
PURPOSE_STORE_MAC = "appliance/v1/record-store/hmac"
PURPOSE_AUDIT = "appliance/v1/audit/hmac"
PURPOSE_LEAKAGE_INDEX = "appliance/v1/leakage-index/hmac"
PURPOSE_ARTIFACT_AEAD = "appliance/v1/artifact/aes-256-gcm"
PURPOSE_KEY_ID = "appliance/v1/key-id"
PURPOSE_HOLDOUT = "appliance/v1/generator/holdout"
PURPOSE_PSEUDONYMS = "appliance/v1/pseudonymize/hmac"


def _group_or_world_accessible(path: Path) -> bool:
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def parse_key_material(raw: bytes, source: str) -> bytes:
    """Accept a key as 64 hex digits, base64 of 32 bytes, or 32 raw bytes."""
    text = raw.strip()
    try:
        if len(text) == 2 * KEY_BYTES:
            return binascii.unhexlify(text)
        if len(text) == 44:
            decoded = base64.b64decode(text, validate=True)
            if len(decoded) == KEY_BYTES:
                return decoded
    except (binascii.Error, ValueError):
        pass
    if len(raw) == KEY_BYTES:
        return raw
    raise KeyFileError(
        f"{source}: not a 256-bit key (expected 64 hex digits, base64 of 32 bytes or 32 raw bytes)"
    )


@dataclass(frozen=True)
class DataKey:
    """The workspace data key and the subkeys derived from it."""

    material: bytes

    def derive(self, purpose: str, length: int = KEY_BYTES) -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()
        ).derive(self.material)

    @property
    def key_id(self) -> str:
        """A short public fingerprint: names the key in manifests without revealing it."""
        return hmac.new(self.material, PURPOSE_KEY_ID.encode(), hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:  # never print key material
        return f"DataKey(id={self.key_id})"


def generate_data_key(path: Path) -> DataKey:
    """Write a fresh random data key (base64) with mode 0600; refuses to overwrite."""
    material = os.urandom(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: a key file already exists; refusing to overwrite it") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(material) + b"\n")
    return DataKey(material)


def load_data_key(path: Path, *, check_mode: bool = True) -> DataKey:
    """Read the data key; refuse a file that group or others can access."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: data key file not found") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read data key: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(
            f"{path}: not a regular file; a key file holds 32 bytes, 64 hex digits or base64"
        )
    if info.st_size > 4096:
        raise KeyFileError(f"{path}: {info.st_size} bytes is far too large for a 256-bit key file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read data key: {exc.strerror}") from exc
    if check_mode and _group_or_world_accessible(path):
        mode = stat.S_IMODE(path.stat().st_mode)
        raise KeyFileError(
            f"{path}: key file has mode {mode:04o}; it must be readable by its owner only (chmod 600 {path})"
        )
    return DataKey(parse_key_material(raw, str(path)))


def key_file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def generate_signing_key(path: Path) -> Ed25519PrivateKey:
    """Write a fresh Ed25519 private key (PEM, 0600) and its public key beside it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path}: a signing key already exists; refusing to overwrite it"
        ) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.with_suffix(".pub").write_bytes(pub)
    return key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: signing key file not found") from None
    if _group_or_world_accessible(path):
        raise KeyFileError(
            f"{path}: signing key must be readable by its owner only (chmod 600 {path})"
        )
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise KeyFileError(f"{path}: public key file not found") from None
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return key
