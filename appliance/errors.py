"""Errors the appliance raises, each with a message a user can act on.

Every error the appliance raises on purpose derives from ``ApplianceError``.
The CLI catches it, prints ``error: <message>`` on one line and exits with
the class's ``exit_code``; anything else is a bug and keeps its traceback.

    ApplianceError                 base; exit code 1
    ├── UsageError                 bad option combination or argument (exit 2)
    ├── ConfigError                appliance.toml / policy / entity schema invalid (exit 3)
    ├── WorkspaceError             no workspace, or one that would be overwritten (exit 4)
    ├── WorkspaceBusy              another command holds the workspace lock; names it (exit 8)
    ├── NothingProduced            a stage ran but produced none of what was asked (exit 9)
    ├── InputError                 an export cannot be read at all (exit 5)
    ├── SecurityError              integrity / confidentiality failures (exit 6)
    │   ├── KeyFileError           key file missing, malformed or too permissive
    │   ├── IntegrityError         a shard, manifest or signature does not verify
    │   ├── AuditError             the audit log chain is broken
    │   ├── EgressDenied           an endpoint the policy does not allow
    │   └── KeyRequired            a real-zone model used without its workspace key
    ├── DependencyError            an optional package is missing (exit 7); says which extra to install
    └── ClusterError               a Ray cluster unreachable, or its workers lost past their retries (exit 10)

    Terminated (a KeyboardInterrupt) SIGTERM, handled like Ctrl-C (exit 143; Ctrl-C exits 130)

Lower-level exceptions (OSError, cryptography's InvalidTag, json errors...)
are translated where they enter, with ``raise ... from exc``.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base class: ``message`` is shown to the user as one line."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ApplianceError):
    """Raised when options or arguments are inconsistent."""

    exit_code = 2


class ConfigError(ApplianceError):
    """Raised when a config, policy or schema file is missing or invalid.

    The message names the file, the key and what was expected.
    """

    exit_code = 3


class WorkspaceError(ApplianceError):
    """Raised when the workspace is missing, incomplete or would be overwritten."""

    exit_code = 4


class WorkspaceBusy(ApplianceError):
    """Raised when another appliance command holds the workspace lock.

    The message names the holder (its command, process id and start time), as
    the lock file records them. Exit code 8: retry when the holder ends.
    """

    exit_code = 8


class NothingProduced(ApplianceError):
    """Raised when a stage ran to its end but produced none of what was asked
    (every note rejected, every candidate withheld): its reasons summarized in
    one line. What it did record (rejects, the audit line) is kept. Exit code 9.
    ``result`` is the stage's result object, for callers that want the counts.
    """

    exit_code = 9

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class InputError(ApplianceError):
    """Raised when an export cannot be read at all (single bad rows are rejects, not errors)."""

    exit_code = 5


class SecurityError(ApplianceError):
    """Base for integrity and confidentiality failures."""

    exit_code = 6


class KeyFileError(SecurityError):
    """Raised when a key file is missing, malformed or readable by others."""


class IntegrityError(SecurityError):
    """Raised when encrypted data, a manifest or a signature fails verification."""


class AuditError(SecurityError):
    """Raised when the audit log's hash chain is broken; names the first bad line."""


class EgressDenied(SecurityError):
    """Raised before connecting to an endpoint the policy does not allow."""


class DependencyError(ApplianceError):
    """Raised when an optional dependency is missing; the message says how to install it."""

    exit_code = 7


class ClusterError(ApplianceError):
    """Raised when the Ray cluster cannot be reached or keeps losing the workers of a run.

    Output committed before the error stays; the same command resumes.
    """

    exit_code = 10


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (a service
    manager's stop or timeout): handled exactly like Ctrl-C, so the stage
    records the interruption and the next run resumes. Exit code 143."""


def missing_dependency(package: str, extra: str, purpose: str) -> DependencyError:
    """A DependencyError with an install hint, e.g. for vllm in the ``gpu`` extra."""
    return DependencyError(
        f"{purpose} needs the '{package}' package, which is not installed; "
        f"install it with: pip install 'appliance[{extra}]' (or bash install.sh --{extra})"
    )


class KeyRequired(SecurityError):
    """Raised when a real-zone model or package is used without the workspace key that encrypts it.

    The message names the key id and how to supply it (``-w WORKSPACE`` or
    ``--data-key FILE``). Exit code 6, like the other security errors.
    """
