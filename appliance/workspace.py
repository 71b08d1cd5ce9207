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
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from appliance import __version__, crashpoints, interrupts
from appliance.config import (
    Config,
    Policy,
    default_policy_path,
    file_sha256,
    load_config,
    load_policy,
    render_config,
)
from appliance.errors import (
    ApplianceError,
    InputError,
    Terminated,
    UsageError,
    WorkspaceBusy,
    WorkspaceError,
)
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

    # -- artifacts: every stage finds what an earlier one wrote here ------------
    #
    # zone "real": may hold real text or what was trained on it (encrypted at
    # rest); zone "screened": only what the leakage screen released, and what
    # was made from it.

    @property
    def store_manifest(self) -> Path:
        """The record store's authenticated manifest (real zone)."""
        return self.records_dir / "store.json"

    @property
    def leakage_index_dir(self) -> Path:
        """The screen's keyed-hash index of the real notes (real zone)."""
        return self.records_dir / "leakage-index"

    @property
    def generator_dir(self) -> Path:
        """The trained generator, encrypted (real zone: it may have memorized notes)."""
        return self.models_dir / "generator"

    def corpus_dir(self, name: str) -> Path:
        """Synthetic corpus ``name``: real zone until its release, whose notes are screened."""
        return self.synthetic_dir / _plain_name(name, f"--corpus '{name}': use a plain folder name")

    def annotation_dir(self, name: str = "default") -> Path:
        """Annotation run ``name`` of a released corpus (screened zone)."""
        return self.annotations_dir / _plain_name(
            name, f"--name {name!r}: use a plain folder name such as 'default'"
        )

    def ner_model_dir(self, name: str = "default") -> Path:
        """NER model ``name``: its checkpoint, settings and exported package.

        Screened, or real zone when any training input was real (gold notes,
        records, a real-zone base; see :mod:`appliance.ner.zones`): then its
        weights, tokenizer, dev split and package are encrypted.
        """
        return (
            self.models_dir
            / "ner"
            / _plain_name(name, f"--name {name!r}: expected a plain folder name such as 'default'")
        )

    def report_dir(self, stage: str) -> Path:
        """Reports of ``stage`` (``screen``, ``ingest``, ...)."""
        return self.reports_dir / stage

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

    _run: StageRun | None = None
    _holds_lock: bool = False

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
        """Exclusive lock so two writers (say, two ingests) never interleave.

        The holder writes its command, process id and start time into the lock
        file (0600), so a command that finds the lock taken can name it. The
        lock itself is the kernel's (flock): it ends with its process, kill -9
        included, and a stale holder line is simply overwritten.
        """
        path = self.root / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkspaceBusy(
                    f"{self.root}: {_lock_holder(fh)} is writing to this workspace; "
                    f"run `{what}` when it has finished"
                ) from None
            os.fchmod(fh.fileno(), 0o600)
            fh.seek(0)
            fh.truncate()
            holder = {"command": what, "pid": os.getpid(), "since": utc_now()}
            fh.write(json.dumps(holder) + "\n")
            fh.flush()
            self._holds_lock = True
            try:
                yield
            finally:
                self._holds_lock = False
                fh.seek(0)
                fh.truncate()
                fh.flush()
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def stage(
        self,
        command: str,
        args: dict[str, Any],
        *,
        interrupted: str = "interrupted",
        lock: bool = True,
    ) -> Iterator[StageRun]:
        """Run one stage: hold the workspace lock, then write its audit line.

        The body fills the yielded :class:`StageRun` (inputs, outputs,
        details). On success they are logged as the stage's result; on a
        failure or an interruption the line says what stopped it, with the
        inputs and outputs recorded so far (a stage that committed part of its
        work, such as an interrupted ingest, says what it left). Input-error
        text is never logged: it may quote an export. ``lock=False`` for a
        stage that only reads the workspace (``infer`` writes outside it).
        """
        run = StageRun(command, args)
        crashpoints.entering(command)
        # Whatever a stage creates (folders, files, caches of libraries) is the owner's alone.
        umask = os.umask(0o077)
        try:
            yield from self._run_stage(run, interrupted, lock)
        finally:
            os.umask(umask)
            crashpoints.leaving()

    def _run_stage(self, run: StageRun, interrupted: str, lock: bool) -> Iterator[StageRun]:
        command, args = run.command, run.args
        try:
            with self.lock(command) if lock else nullcontext():
                self._start(run, locked=lock)
                yield run
        except BaseException as exc:
            result = (
                _by_sigterm(interrupted)
                if isinstance(exc, Terminated)
                else interrupted
                if isinstance(exc, KeyboardInterrupt)
                else audit_message(exc)
            )
            outputs = run.outputs_on_error() if run.outputs_on_error else run.outputs
            if run.started is not None:
                self.log(
                    command,
                    args=args,
                    inputs=run.inputs,
                    outputs=outputs,
                    result=result,
                    started=run.started,
                )
            raise
        finally:
            self._run = None
        self.log(
            command,
            args=args,
            inputs=run.inputs,
            outputs=run.outputs,
            details=run.details,
            started=run.started,
        )

    # -- the commit protocol -------------------------------------------------
    #
    # A stage's work is bracketed by two authenticated audit lines: ``started``
    # when it begins and its closing line (ok, error, interrupted) when it
    # ends, linked by ``started``. A file whose state the audit log vouches
    # for (the store manifest, a corpus release) is changed only after an
    # ``intent`` line naming its current and its next SHA-256. Whatever stops
    # the process, the file is then in one of exactly the two states the log
    # names; anything else is tampering. See SECURITY.md, "Crash safety".

    def _start(self, run: StageRun, *, locked: bool) -> None:
        """Write the stage's ``started`` line; acknowledge earlier interrupted runs of it."""
        resumes = [r.seq for r in self.interrupted_runs() if r.command == run.command]
        details: dict[str, Any] = {"lock": locked}
        if resumes:
            details["resumes"] = resumes
        # Held back until ``run.started`` is set, a SIGTERM is closed by an "interrupted" line.
        with interrupts.shielded():
            entry = self.log(run.command, args=run.args, result=STARTED, details=details)
            run.started = entry["seq"]
            self._run = run

    def interrupted_runs(self) -> list[InterruptedRun]:
        """Stages that started and never wrote a closing line, and are not running now.

        A run is settled once the same command starts again (it resumes the
        work, and says so in its ``started`` line).
        """
        open_runs: dict[int, dict[str, Any]] = {}
        for _, entry in self.audit.entries():
            if entry.get("result") == STARTED:
                open_runs[entry["seq"]] = entry
                for seq in (entry.get("details") or {}).get("resumes", ()):
                    open_runs.pop(seq, None)
            elif isinstance(entry.get("started"), int) and entry.get("result") != INTENT:
                open_runs.pop(entry["started"], None)
        runs = []
        for seq, entry in open_runs.items():
            if self._run is not None and self._run.started == seq:
                continue
            locked = bool((entry.get("details") or {}).get("lock", True))
            if not (locked and self._holds_lock) and _may_be_running(entry):
                continue
            runs.append(InterruptedRun.from_entry(entry))
        return runs

    def intend(self, rel_path: str, new_sha256: str, old_sha256: str | None) -> None:
        """Log that the running stage is about to change ``rel_path`` from one state to another.

        Called right before the atomic write that makes the change; outside a
        stage (library use without :meth:`stage`) nothing vouches for the
        file's state, and nothing is logged.
        """
        run = self._run
        if run is None:
            return
        self.log(
            run.command,
            args=run.args,
            outputs=[{"path": rel_path, "sha256": new_sha256, "from": old_sha256}],
            result=INTENT,
            started=run.started,
        )

    def recorded_state(self, rel_path: str, *, commands: tuple[str, ...] = ()) -> RecordedState:
        """What the audit log says ``rel_path`` should be (only ``commands``' lines, if given).

        Lines of a run that failed count only if they record the file (a
        failed ingest records the store state it left).
        """
        sha256: str | None = None
        intent: dict[str, Any] | None = None
        for _, entry in self.audit.entries():
            if commands and entry.get("command") not in commands:
                continue
            for out in entry.get("outputs") or ():
                if isinstance(out, dict) and out.get("path") == rel_path:
                    if entry.get("result") == INTENT:
                        intent = entry
                    else:
                        sha256, intent = out.get("sha256"), None
        return RecordedState(rel_path, sha256, intent)

    def settle(self, state: RecordedState, current: str | None) -> None:
        """Record which of an interrupted change's two states was found, under the lock.

        Without the lock another command may be between its intent and its
        write, so nothing is settled; the state is accepted as it is.
        """
        if state.intent is None or not self._holds_lock:
            return
        out = state.intent_output
        self.log(
            str(state.intent.get("command")),
            outputs=[{"path": state.path, "sha256": current}],
            result=RECOVERED,
            details={
                "intent": state.intent["seq"],
                "found": "after" if current == out.get("sha256") else "before",
            },
        )

    # -- manifests ---------------------------------------------------------

    def rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return str(path)


@dataclass
class StageRun:
    """What a stage records in its audit line (see :meth:`Workspace.stage`)."""

    command: str
    args: dict[str, Any]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    # Outputs to record when the stage fails part-way (default: ``outputs``).
    outputs_on_error: Callable[[], list[dict[str, Any]]] | None = None
    # The seq of its ``started`` line in the audit log.
    started: int | None = None


STARTED = "started"
INTENT = "intent"
RECOVERED = "recovered"


@dataclass(frozen=True)
class RecordedState:
    """What the audit log vouches for about one file (see :meth:`Workspace.recorded_state`)."""

    path: str
    sha256: str | None  # the last state a command recorded (None: never recorded)
    intent: dict[str, Any] | None  # an intent line not followed by the state it announced

    @property
    def intent_output(self) -> dict[str, Any]:
        assert self.intent is not None
        return next(o for o in self.intent["outputs"] if o.get("path") == self.path)

    def accepts(self, current: str | None) -> bool:
        """True for the recorded state, or, after an interrupted change, either of its two states."""
        if self.intent is None:
            return current == self.sha256
        out = self.intent_output
        return current in (out.get("from"), out.get("sha256"))


@dataclass(frozen=True)
class InterruptedRun:
    """A stage that started and never finished: killed, or the machine stopped."""

    seq: int
    command: str
    time: str
    pid: int | None
    args: dict[str, Any]

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> InterruptedRun:
        return cls(
            seq=int(entry["seq"]),
            command=str(entry.get("command")),
            time=str(entry.get("time", "")),
            pid=entry.get("pid") if isinstance(entry.get("pid"), int) else None,
            args=dict(entry.get("args") or {}),
        )

    def describe(self) -> str:
        when = self.time.replace("T", " ")[:19]
        return (
            f"`{self.command}` (pid {self.pid}, started {when} UTC, audit line {self.seq}) "
            f"stopped without finishing; {RESUME_HINTS.get(self.command, RESUME_DEFAULT)}"
        )


RESUME_DEFAULT = "run it again: it resumes from its last committed work"
RESUME_HINTS = {
    "ingest": "the records it committed are kept; ingest the same export again to add the rest",
    "generator train": "run it again: training resumes from its last checkpoint",
    "ner train": "run it again: training resumes from its last checkpoint",
    "generate": "run it again: it keeps the notes written and generates the rest",
    "screen": "run it again: annotation waits for a complete release",
    "annotate": "run it again: answers already cached are not asked again",
    "infer": "run it again with the same --out: it resumes after the last note written",
    "export": "run it again: the package is replaced only once complete",
}


def _lock_holder(fh: Any) -> str:
    """Who holds the lock, from what the holder wrote into the lock file."""
    try:
        fh.seek(0)
        holder = json.loads(fh.read() or "{}")
        return f"another appliance command (`{holder['command']}`, pid {holder['pid']}, since {holder['since']})"
    except (ValueError, KeyError, TypeError, OSError):
        return "another appliance command"


def _may_be_running(entry: dict[str, Any]) -> bool:
    """Whether the process that wrote ``entry`` may still be alive (same host, pid exists)."""
    import socket

    pid = entry.get("pid")
    if entry.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def audit_message(exc: BaseException) -> str:
    """How a failure is written to the audit log: never the text of an input error,
    which may quote the export (a headerless CSV's first row is patient data)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, InputError):
        return "error: InputError (export could not be read; details shown to the user, not logged)"
    if isinstance(exc, ApplianceError):
        return f"error: {exc.message}"
    return f"error: {type(exc).__name__}"


def _plain_name(name: str, message: str) -> str:
    """``name`` if it is one plain folder name (no path, not hidden), else a usage error."""
    if not name or "/" in name or name.startswith("."):
        raise UsageError(message)
    return name


def _by_sigterm(result: str) -> str:
    """``interrupted (SIGTERM)``; ``interrupted (checkpoint kept)`` → ``interrupted (SIGTERM; checkpoint kept)``."""
    head, sep, rest = result.partition(" (")
    return f"{head} (SIGTERM; {rest}" if sep else f"{result} (SIGTERM)"


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (version stamped); returns its path."""
    data = {"appliance_version": __version__, **manifest}
    path = folder / "manifest.json"
    atomic_write(
        path,
        (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(),
        0o600,
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
    umask = os.umask(0o077)  # config, policy, schema and public key too: one rule inside
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
    finally:
        os.umask(umask)
    ws = Workspace.open(root)
    ws.log(
        "init",
        args={"language": lang, "key_file": str(key_file) if key_file else None},
        outputs=[hashed(root / CONFIG_NAME, root), hashed(root / "policy.toml", root)],
        details={"data_key_id": ws.data_key.key_id},
    )
    return ws
