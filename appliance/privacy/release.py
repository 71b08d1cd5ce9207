"""The release gate: which synthetic notes may leave the real zone.

``appliance screen`` ends by writing, beside the corpus it screened::

    synthetic/NAME/
      release.json    corpus manifest hash, report hash, policy hash, and the
                      id + SHA-256 of every released note (quarantined ids too)
      release.sig     Ed25519 signature of release.json's exact bytes

and records the hash of ``release.json`` in the audit log. Everything after
the screen (``annotate`` and the stages behind it) reads notes only through
:func:`released_notes`, which checks, before yielding any text:

1. the signature, against the workspace's public signing key;
2. that the release was made for the corpus as it is now (its manifest hash);
3. that it is the release the audit log last recorded for this corpus (an
   older, authentic release put back would otherwise pass);
4. each released note's text against its hash.

Unscreened and quarantined notes are never yielded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from appliance import __version__
from appliance.errors import IntegrityError, WorkspaceError
from appliance.security.audit import utc_now
from appliance.security.crypto import atomic_write
from appliance.security.keys import load_public_key, load_signing_key
from appliance.workspace import Workspace, hashed

RELEASE_FILE = "release.json"
SIGNATURE_FILE = "release.sig"
RELEASE_FORMAT = 1


@dataclass(frozen=True)
class ReleasedNote:
    id: str
    text: str
    metadata: dict[str, str]


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def public_key_path(ws: Workspace) -> Path:
    return ws.signing_key_path.with_suffix(".pub")


def public_key_fingerprint(ws: Workspace) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = load_public_key(public_key_path(ws)).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()


def _corpus_dir(ws: Workspace, corpus: str) -> Path:
    from appliance.generator.sample import corpus_dir

    return corpus_dir(ws, corpus)


def write_release(
    ws: Workspace,
    corpus: str,
    *,
    released: Sequence[tuple[str, str]],
    quarantined: Sequence[str],
    report: dict[str, Any],
    details: dict[str, Any] | None = None,
) -> Path:
    """Sign and write the release of ``corpus``: ``released`` is (id, SHA-256 of the text) per note.

    Returns the path of ``release.json``; the caller records its hash in the
    audit log (that entry is what makes this release the current one).
    """
    folder = _corpus_dir(ws, corpus)
    manifest = folder / "manifest.json"
    if not manifest.exists():
        raise WorkspaceError(f"{folder}: no synthetic corpus to release")
    body = {
        "format": RELEASE_FORMAT,
        "appliance_version": __version__,
        "corpus": corpus,
        "corpus_manifest": hashed(manifest, ws.root),
        "policy_sha256": ws.policy.sha256,
        "report": report,
        "signed_at": utc_now(),
        "signing_key_sha256": public_key_fingerprint(ws),
        "counts": {"released": len(released), "quarantined": len(quarantined)},
        **({"details": details} if details else {}),
        "released": [{"id": i, "sha256": digest} for i, digest in released],
        "quarantined": list(quarantined),
    }
    data = (json.dumps(body, indent=1, ensure_ascii=False) + "\n").encode()
    key = load_signing_key(ws.signing_key_path)
    # Signature first: a crash between the two writes leaves an old signature
    # over new bytes, which fails verification rather than passing.
    atomic_write(folder / SIGNATURE_FILE, key.sign(data), 0o644)
    atomic_write(folder / RELEASE_FILE, data, 0o644)
    return folder / RELEASE_FILE


def _last_logged_release(ws: Workspace, rel_path: str) -> str | None:
    last: str | None = None
    for _, entry in ws.audit.entries():
        if entry.get("command") != "screen" or entry.get("result", "ok") != "ok":
            continue
        for out in entry.get("outputs") or ():
            if isinstance(out, dict) and out.get("path") == rel_path:
                last = out.get("sha256")
    return last


def load_release(ws: Workspace, corpus: str = "default") -> dict[str, Any]:
    """The verified release manifest of ``corpus`` (see the module docstring for the checks)."""
    folder = _corpus_dir(ws, corpus)
    path = folder / RELEASE_FILE
    if not (folder / "manifest.json").exists():
        raise WorkspaceError(f"{folder}: no synthetic corpus '{corpus}'")
    if not path.exists():
        raise WorkspaceError(
            f"synthetic corpus '{corpus}' has not been screened: run `appliance screen "
            f"--corpus {corpus}` first (unscreened notes never leave the real zone)"
        )
    sig_path = folder / SIGNATURE_FILE
    data = path.read_bytes()
    try:
        signature = sig_path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"{sig_path}: release is not signed") from None
    try:
        load_public_key(public_key_path(ws)).verify(signature, data)
    except InvalidSignature:
        raise IntegrityError(
            f"{path}: release signature does not verify (the release manifest was changed "
            "after the screen signed it, or signed with another key); rerun `appliance screen`"
        ) from None
    body = json.loads(data)
    if body.get("format") != RELEASE_FORMAT:
        raise IntegrityError(f"{path}: unknown release format {body.get('format')!r}")
    current = hashed(folder / "manifest.json", ws.root)["sha256"]
    if body["corpus_manifest"]["sha256"] != current:
        raise WorkspaceError(
            f"synthetic corpus '{corpus}' changed after it was screened "
            f"(notes were added or replaced); run `appliance screen --corpus {corpus}` again"
        )
    logged = _last_logged_release(ws, ws.rel(path))
    if logged != hashed(path)["sha256"]:
        raise IntegrityError(
            f"{path}: not the release the audit log last recorded for this corpus "
            "(an older release was put back, or the screen was not completed); rerun `appliance screen`"
        )
    return dict(body)


def release_manifest(ws: Workspace, corpus: str = "default") -> Path:
    """Path of the verified ``release.json`` of ``corpus`` (for audit inputs and manifests)."""
    load_release(ws, corpus)
    return _corpus_dir(ws, corpus) / RELEASE_FILE


def released_notes(ws: Workspace, corpus: str = "default") -> Iterator[ReleasedNote]:
    """The released notes of ``corpus``, verified; quarantined and unscreened notes never appear."""
    from appliance.generator.sample import read_corpus

    body = load_release(ws, corpus)
    wanted = {r["id"]: r["sha256"] for r in body["released"]}
    seen: set[str] = set()
    for note in read_corpus(ws, corpus):
        digest = wanted.get(note.id)
        if digest is None:
            continue
        if text_sha256(note.text) != digest:
            raise IntegrityError(
                f"synthetic note {note.id} of corpus '{corpus}' differs from the text the screen released"
            )
        seen.add(note.id)
        yield ReleasedNote(note.id, note.text, dict(note.metadata))
    missing = len(wanted) - len(seen)
    if missing:
        raise IntegrityError(
            f"corpus '{corpus}': {missing} released notes are missing from the corpus files"
        )
