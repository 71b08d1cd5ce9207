"""The workspace: one folder holding a hospital's appliance state.

    WORKSPACE/
      appliance.toml       config (validated on every command)
      policy.toml          the privacy policy every stage follows
      entities/            the entity schema(s) the policy names
      keys/                data.key (0600) and signing.key (0600), signing.pub
      records/             the encrypted record store (real zone)
      synthetic/           generated notes, unscreened then released
      annotations/         annotations of released notes
      models/              generator (encrypted) and NER models
      reports/             privacy reports, ingest rejects
      audit.log            the hash-chained audit log (+ audit.log.head)

Each stage writes its artifact folder with a ``manifest.json`` (inputs and
their hashes, parameters, version, times, counts) so a later stage can refuse
stale or unscreened input.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.config import (
    Config,
    Policy,
    default_policy_path,
    file_sha256,
    load_config,
    load_policy,
    render_config,
)
from appliance.errors import UsageError, WorkspaceError
from appliance.security.audit import AuditLog, utc_now
from appliance.security.crypto import atomic_write
from appliance.security.keys import (
    DataKey,
    generate_data_key,
    generate_signing_key,
    load_data_key,
)

CONFIG_NAME = "appliance.toml"
SUBDIRS = ("keys", "records", "synthetic", "annotations", "models", "reports", "entities")
ENV_VAR = "APPLIANCE_WORKSPACE"


def resolve_path(path: str | Path | None) -> Path:
    """The workspace path: the option, else $APPLIANCE_WORKSPACE, else the current folder."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.cwd()


@dataclass
class Workspace:
    root: Path

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path | None = None) -> Workspace:
        """Open an existing workspace; the config and the policy are validated here."""
        root = resolve_path(path).resolve()
        if not (root / CONFIG_NAME).is_file():
            hint = "" if path else f" (pass -w/--workspace or set ${ENV_VAR})"
            raise WorkspaceError(
                f"{root} is not an appliance workspace: no {CONFIG_NAME}{hint}; create one with `appliance init DIR`"
            )
        ws = cls(root)
        ws.config  # noqa: B018 - validate now, not halfway through a stage
        ws.policy  # noqa: B018
        return ws

    @cached_property
    def config(self) -> Config:
        return load_config(self.root / CONFIG_NAME)

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self._resolve(self.config.policy.file))

    def _resolve(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else self.root / path

    # -- folders -----------------------------------------------------------

    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    @property
    def synthetic_dir(self) -> Path:
        return self.root / "synthetic"

    @property
    def annotations_dir(self) -> Path:
        return self.root / "annotations"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def data_key_path(self) -> Path:
        return self._resolve(self.config.keys.data_key)

    @property
    def signing_key_path(self) -> Path:
        return self._resolve(self.config.keys.signing_key)

    # -- keys and audit ----------------------------------------------------

    @cached_property
    def data_key(self) -> DataKey:
        return load_data_key(self.data_key_path)

    @cached_property
    def audit(self) -> AuditLog:
        # The key is required: without it lines cannot be authenticated, and a
        # check of the bare chain would call a re-chained log intact.
        return AuditLog(self.root / "audit.log", self.data_key)

    def verify_audit(self) -> Any:
        """Check the audit log; an initialized workspace must have one."""
        return self.audit.verify(expect_entries=True)

    def log(self, command: str, **kwargs: Any) -> dict[str, Any]:
        """Append an audit entry stamped with this workspace's policy hash.

        A policy edited since the previous entry is called out in the entry, so
        a changed egress list or threshold is visible in the log.
        """
        last = self.audit.last_entry()
        previous = last.get("policy_sha256") if last else None
        if previous and previous != self.policy.sha256:
            details = dict(kwargs.pop("details", None) or {})
            details["policy_changed_from"] = previous
            kwargs["details"] = details
        return self.audit.append(command, policy_sha256=self.policy.sha256, **kwargs)

    @contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """Exclusive lock so two writers (say, two ingests) never interleave."""
        path = self.root / ".lock"
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkspaceError(
                    f"{self.root}: another appliance command is writing to this workspace; wait for it to finish ({what})"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # -- manifests ---------------------------------------------------------

    def rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return str(path)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (version stamped); returns its path."""
    data = {"appliance_version": __version__, **manifest}
    path = folder / "manifest.json"
    atomic_write(
        path,
        (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(),
        0o644,
    )
    return path


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkspaceError(f"{path}: manifest is not valid JSON") from exc
    if not isinstance(data, dict):
        raise WorkspaceError(f"{path}: manifest is not a JSON object")
    return data


def hashed(path: Path, root: Path | None = None) -> dict[str, Any]:
    """An audit/manifest entry for a file: path and SHA-256 (folders: a hash of their files)."""
    import hashlib

    shown = str(path)
    if root is not None and path.resolve().is_relative_to(root):
        shown = str(path.resolve().relative_to(root))
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode() + b"\0" + bytes.fromhex(file_sha256(f)))
        return {"path": shown, "sha256": h.hexdigest(), "kind": "folder"}
    return {"path": shown, "sha256": file_sha256(path)}


# ---------------------------------------------------------------------------


def init(
    path: str | Path,
    *,
    language: str = "en",
    key_file: Path | None = None,
    policy_file: Path | None = None,
) -> Workspace:
    """Create a workspace: folders, config, policy copy, a fresh data key (or ``key_file``), a signing key.

    Refuses a folder that already has content, so an existing workspace and its
    keys are never overwritten.
    """
    root = Path(path).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise WorkspaceError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        what = "a workspace" if (root / CONFIG_NAME).exists() else "a non-empty folder"
        raise WorkspaceError(
            f"{root} is {what}; refusing to overwrite it (choose a new or empty folder)"
        )
    lang = language.strip().lower()
    if not (lang.isalpha() and 2 <= len(lang) <= 3):
        raise UsageError(
            f"--language: expected an ISO 639-1 code such as 'en', 'et' or 'sv', got {language!r}"
        )

    # Validate the policy (and its entity schema) before anything is created.
    source_policy = load_policy(policy_file) if policy_file else load_policy(default_policy_path())
    schema = source_policy.entity_schema()

    # Check a provided key before anything is written, so a bad key leaves no half workspace.
    if key_file is not None:
        key_path = key_file.expanduser().resolve()
        load_data_key(key_path)

    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    try:
        for sub in SUBDIRS:
            (root / sub).mkdir(mode=0o700)
        if key_file is None:
            generate_data_key(root / "keys" / "data.key")
            data_key_ref = "keys/data.key"
        else:
            data_key_ref = str(key_path)
        generate_signing_key(root / "keys" / "signing.key")
        # The schema is always copied into entities/, and the copied policy
        # points there: a policy naming "../x.toml" or an absolute path must
        # neither write outside the workspace nor depend on a file outside it.
        schema_rel = f"entities/{schema.path.name}"
        policy_text = source_policy.path.read_text(encoding="utf-8")
        if source_policy.annotation.entity_schema != schema_rel:
            policy_text, n = re.subn(
                r'(?m)^(\s*entity_schema\s*=\s*)(["\']).*?\2',
                lambda m: f'{m[1]}"{schema_rel}"',
                policy_text,
            )
            if n == 0:
                policy_text += f'\n[annotation]\nentity_schema = "{schema_rel}"\n'
        (root / "policy.toml").write_text(policy_text, encoding="utf-8")
        shutil.copyfile(schema.path, root / schema_rel)
        (root / CONFIG_NAME).write_text(
            render_config(
                language=lang, created=utc_now(), version=__version__, data_key=data_key_ref
            ),
            encoding="utf-8",
        )
    except BaseException:
        # Leave nothing half-made behind (the folder was empty or absent).
        shutil.rmtree(root, ignore_errors=True)
        raise
    ws = Workspace.open(root)
    ws.log(
        "init",
        args={"language": lang, "key_file": str(key_file) if key_file else None},
        outputs=[hashed(root / CONFIG_NAME, root), hashed(root / "policy.toml", root)],
        details={"data_key_id": ws.data_key.key_id},
    )
    return ws
