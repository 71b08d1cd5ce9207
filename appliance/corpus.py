"""The synthetic corpus: its encrypted parts, its signed release, and its annotations.

Shared by every stage that writes or reads synthetic notes (``generate``,
``screen --import-as``, ``screen``, ``annotate``, ``ner train``, the pipeline),
so none of them reaches into another's internals. Where each lives is the
workspace's business (:meth:`Workspace.corpus_dir`,
:meth:`Workspace.annotation_dir`); what is in it is this module's::

    synthetic/NAME/
      manifest.json            generator hash, sampling settings, seed, count, parts with hashes
      part-000001.jsonl.enc    one batch of notes (encrypted JSON lines)
      release.json             written by the screen: corpus manifest hash, report hash,
                               policy hash, and the id + SHA-256 of every released note
                               (quarantined ids too)
      release.sig              Ed25519 signature of release.json's exact bytes

Until the leakage screen releases them, synthetic notes may contain
memorized real text: they are stored encrypted like real records, marked
``unscreened``, and nothing downstream reads them. The screen records the
hash of ``release.json`` in the audit log. Everything after the screen
reads notes only through :func:`released_notes`, which checks, before
yielding any text:

1. the signature, against the workspace's public signing key;
2. that the release was made for the corpus as it is now (its manifest hash);
3. that it is the release the audit log last recorded for this corpus (an
   older, authentic release put back would otherwise pass);
4. each released note's text against its hash.

Unscreened and quarantined notes are never yielded. Annotations of a
release (``annotations/NAME/annotations.jsonl``) are read back with
:func:`read_annotations`, which refuses them once the corpus was screened
again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from appliance import __version__
from appliance.documents import Document, document_from_json
from appliance.errors import IntegrityError, UsageError, WorkspaceError
from appliance.security.audit import utc_now
from appliance.security.crypto import atomic_write, read_encrypted, write_encrypted
from appliance.security.keys import load_public_key, load_signing_key
from appliance.workspace import Workspace, hashed, read_manifest, write_manifest

STATUS_UNSCREENED = "unscreened"
UNSCREENED_ZONE = "real until screened (notes encrypted at rest)"
PART_LABEL = "synthetic/part"


@dataclass(frozen=True)
class SyntheticNote:
    id: str
    text: str
    prefix: str
    metadata: dict[str, str]
    status: str = STATUS_UNSCREENED

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def part_name(index: int) -> str:
    """The file name of the corpus's ``index``-th part (1-based)."""
    return f"part-{index:06d}.jsonl.enc"


def write_part(
    ws: Workspace, folder: Path, index: int, notes: Sequence[SyntheticNote]
) -> dict[str, Any]:
    """Encrypt one batch of notes as part ``index``; returns its manifest entry."""
    path = folder / part_name(index)
    payload = "\n".join(json.dumps(n.as_dict(), ensure_ascii=False) for n in notes)
    write_encrypted(path, ws.data_key, payload.encode(), label=PART_LABEL)
    return {"name": path.name, "notes": len(notes), "sha256": hashed(path)["sha256"]}


def read_corpus(ws: Workspace, name: str = "default") -> Iterator[SyntheticNote]:
    """Every note of a synthetic corpus, verifying each part against the manifest."""
    folder = ws.corpus_dir(name)
    manifest = read_manifest(folder)
    if manifest is None:
        raise WorkspaceError(f"{folder}: no synthetic corpus; run `appliance generate` first")
    for part in manifest["parts"]:
        path = folder / part["name"]
        if not path.exists() or hashed(path)["sha256"] != part["sha256"]:
            raise IntegrityError(f"{path}: synthetic part missing or changed since it was written")
        for line in read_encrypted(path, ws.data_key, label=PART_LABEL).decode().splitlines():
            yield SyntheticNote(**json.loads(line))


def import_corpus(
    ws: Workspace,
    name: str,
    notes: Iterable[tuple[str, str, dict[str, str]]],
    *,
    source: str,
    batch: int = 1000,
) -> Path:
    """Store notes made elsewhere as an unscreened synthetic corpus (id, text, metadata each).

    They are treated exactly like generated notes: encrypted, ``unscreened``,
    and released only by ``appliance screen``. Refuses an existing corpus.
    """
    folder = ws.corpus_dir(name)
    if read_manifest(folder) is not None:
        raise UsageError(f"synthetic corpus '{name}' already exists; choose another name")
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[dict[str, Any]] = []
    pending: list[SyntheticNote] = []
    seen: set[str] = set()

    def flush() -> None:
        parts.append(write_part(ws, folder, len(parts) + 1, pending))
        pending.clear()

    for note_id, text, metadata in notes:
        if note_id in seen:
            raise UsageError(f"duplicate note id {note_id!r} in {source}")
        seen.add(note_id)
        pending.append(SyntheticNote(id=note_id, text=text, prefix="", metadata=metadata))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    write_manifest(
        folder,
        {
            "stage": "import",
            "status": STATUS_UNSCREENED,
            "zone": UNSCREENED_ZONE,
            "corpus": name,
            "source": source,
            "generator_sha256": None,
            "count": len(seen),
            "written": len(seen),
            "parts": parts,
            "updated": utc_now(),
        },
    )
    return folder


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

    return ws.corpus_dir(corpus)


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
    folder = ws.corpus_dir(corpus)
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
    path = folder / RELEASE_FILE
    # The audit log names the release before and after (see load_release).
    ws.intend(
        ws.rel(path),
        hashlib.sha256(data).hexdigest(),
        hashed(path)["sha256"] if path.exists() else None,
    )
    # Signature first: a crash between the two writes leaves an old signature
    # over new bytes, which fails verification rather than passing.
    atomic_write(folder / SIGNATURE_FILE, key.sign(data), 0o600)
    atomic_write(folder / RELEASE_FILE, data, 0o600)
    return folder / RELEASE_FILE


def load_release(ws: Workspace, corpus: str = "default") -> dict[str, Any]:
    """The verified release manifest of ``corpus`` (see the module docstring for the checks)."""
    folder = ws.corpus_dir(corpus)
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
    # The release must be the one the audit log last recorded for the corpus
    # (no rollback to an older, authentic one), or, if a screen was stopped
    # while writing it, one of the two its intent line names.
    state = ws.recorded_state(ws.rel(path), commands=("screen",))
    current_sha256 = hashlib.sha256(data).hexdigest()
    interrupted = WorkspaceError(
        f"the screen of synthetic corpus '{corpus}' was stopped while writing its release; "
        f"run `appliance screen --corpus {corpus}` again (annotation waits for a complete release)"
    )
    try:
        signature = sig_path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"{sig_path}: release is not signed") from None
    try:
        load_public_key(public_key_path(ws)).verify(signature, data)
    except InvalidSignature:
        if state.intent is not None:
            raise interrupted from None
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
    if not state.accepts(current_sha256):
        if state.intent is not None:
            raise interrupted
        raise IntegrityError(
            f"{path}: not the release the audit log last recorded for this corpus "
            "(an older release was put back); rerun `appliance screen`"
        )
    ws.settle(state, current_sha256)
    return dict(body)


def release_manifest(ws: Workspace, corpus: str = "default") -> Path:
    """Path of the verified ``release.json`` of ``corpus`` (for audit inputs and manifests)."""
    load_release(ws, corpus)
    return ws.corpus_dir(corpus) / RELEASE_FILE


def released_notes(ws: Workspace, corpus: str = "default") -> Iterator[ReleasedNote]:
    """The released notes of ``corpus``, verified; quarantined and unscreened notes never appear."""

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


def read_annotations(ws: Workspace, name: str = "default") -> list[Document]:
    """The annotated notes of run ``name``, checked against its manifest and the current release."""

    folder = ws.annotation_dir(name)
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("stage") != "annotate":
        raise WorkspaceError(
            f"no annotations '{name}' in {ws.annotations_dir}; run `appliance annotate` first"
        )
    path = folder / "annotations.jsonl"
    expected = manifest.get("outputs", {}).get("annotations", {}).get("sha256")
    if not path.exists() or hashed(path)["sha256"] != expected:
        raise IntegrityError(
            f"{path}: does not match its manifest (changed or replaced after `appliance annotate` wrote it)"
        )
    corpus = manifest.get("corpus", "default")
    try:
        current = hashed(release_manifest(ws, corpus), ws.root)["sha256"]
    except WorkspaceError as exc:
        raise WorkspaceError(
            f"annotations are stale; rerun appliance annotate ({exc.message})"
        ) from None
    if current != manifest.get("release", {}).get("sha256"):
        raise WorkspaceError(
            f"annotations are stale; rerun appliance annotate (corpus '{corpus}' was screened again "
            "after these annotations were made)"
        )
    docs = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                docs.append(document_from_json(json.loads(line), f"{path} line {lineno}"))
    return docs
