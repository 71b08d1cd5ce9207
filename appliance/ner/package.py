"""The signed model package and its verification.

    package/
      model.onnx        the network (dynamic batch and sequence axes)
      tokenizer.json    the fast tokenizer
      labels.json       the BIO labels in output order
      ner.json          window settings, special tokens, precision, zone
      MODEL_CARD.md     what it was trained on, metrics, intended use
      manifest.json     SHA-256 of every file above, export details, zone and its reasons
      manifest.sig      Ed25519 signature of manifest.json's exact bytes

A real-zone package has ``model.onnx.enc`` and ``tokenizer.json.enc``
instead (AES-256-GCM under the workspace data key; ``ner.json`` and the
manifest say ``"encrypted": {"key_id": ...}``): it runs only where that key
is, decrypted in memory. The signature covers the encrypted files as they are.

Verification needs a public key from outside the package (the workspace's
``keys/signing.pub`` or one handed over with it): a key shipped inside the
package would prove nothing. It checks the signature, then every listed
file's hash, and refuses files the manifest does not list.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.config import file_sha256
from appliance.errors import InputError, IntegrityError
from appliance.security.crypto import atomic_write

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PACKAGE_FORMAT = "appliance-ner-package/1"
MODEL_FILE = "model.onnx"


def is_package(path: Path) -> bool:
    return (path / MANIFEST).is_file() and (
        (path / MODEL_FILE).is_file() or (path / (MODEL_FILE + ".enc")).is_file()
    )


def key_fingerprint(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_package(folder: Path, key: Ed25519PrivateKey, details: dict[str, Any]) -> dict[str, Any]:
    """Write manifest.json (hash of every other file) and its signature."""
    files = {
        p.name: file_sha256(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in (MANIFEST, SIGNATURE)
    }
    manifest = {
        "format": PACKAGE_FORMAT,
        "files": files,
        "signer": key_fingerprint(key.public_key()),
        **details,
    }
    body = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    atomic_write(folder / MANIFEST, body, 0o600)
    atomic_write(folder / SIGNATURE, key.sign(body), 0o600)
    return manifest


def verify_package(folder: Path, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Check the signature and every file; returns the manifest. Raises IntegrityError."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a model package folder")
    try:
        body = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"{folder}: not a signed model package (no {MANIFEST})") from None
    try:
        signature = (folder / SIGNATURE).read_bytes()
    except FileNotFoundError:
        raise IntegrityError(
            f"{folder}: the package is unsigned (no {SIGNATURE}); refusing it"
        ) from None
    try:
        public_key.verify(signature, body)
    except InvalidSignature:
        raise IntegrityError(
            f"{folder}: the package signature does not verify with the trusted key "
            f"{key_fingerprint(public_key)} (tampered, or signed by another workspace)"
        ) from None
    manifest: dict[str, Any] = json.loads(body)
    if manifest.get("format") != PACKAGE_FORMAT or not isinstance(manifest.get("files"), dict):
        raise IntegrityError(f"{folder}: not a package manifest of format {PACKAGE_FORMAT}")
    for name, digest in manifest["files"].items():
        path = folder / name
        if "/" in name or not path.is_file():
            raise IntegrityError(f"{folder}: file {name} listed in the manifest is missing")
        if file_sha256(path) != digest:
            raise IntegrityError(
                f"{path}: does not match the signed manifest (modified after export)"
            )
    extra = sorted(
        p.name
        for p in folder.iterdir()
        if p.name not in manifest["files"] and p.name not in (MANIFEST, SIGNATURE)
    )
    if extra:
        raise IntegrityError(f"{folder}: {extra[0]} is not part of the signed package; refusing it")
    return manifest
