"""Named commit points, which the fault-injection tests turn into crashes.

Code that makes something durable (a file renamed into place, an audit line
synced, a shard committed, a frame appended to an output) calls
:func:`reached` with the point's name right after the write. In normal use
this does nothing but compare an environment variable that is unset.

Two test-only environment variables drive it:

``APPLIANCE_CRASH_AT``
    ``NAME`` or ``NAME:N``: when the process reaches commit point ``NAME``
    for the ``N``-th time (default 1), it kills itself with ``SIGKILL``,
    as the out-of-memory killer or a power cut would: no ``finally``
    block, no buffered write and no audit line survives. ``NAME`` may be
    ``*`` to count every point (``*:7`` = the seventh durable write of any
    kind). ``APPLIANCE_CRASH_SIGNAL=TERM`` sends ``SIGTERM`` instead, as a
    service manager's stop or timeout would.
``APPLIANCE_CRASH_TRACE``
    A file to which every point reached is appended as one line (its
    name), so a test can first list the points of an uninterrupted run and
    then crash at each of them.

Point names are dotted, stage first: ``atomic_write``, ``audit.line``,
``audit.head``, ``store.shard``, ``store.manifest``, ``corpus.part``,
``infer.frame``, ... (see the README's section on recovery).
"""

from __future__ import annotations

import os
import signal

_ENV_AT = "APPLIANCE_CRASH_AT"
_ENV_SIGNAL = "APPLIANCE_CRASH_SIGNAL"
_ENV_TRACE = "APPLIANCE_CRASH_TRACE"

_counts: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get(_ENV_AT)
    if not spec:
        return None
    name, _, nth = spec.partition(":")
    try:
        return name, max(1, int(nth)) if nth else 1
    except ValueError:
        return name, 1


def reached(name: str) -> None:
    """Mark commit point ``name`` as reached (see the module docstring)."""
    trace = os.environ.get(_ENV_TRACE)
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(name + "\n")
    target = _target()
    if target is None:
        return
    want, nth = target
    if want not in (name, "*"):
        return
    _counts[want] = _counts.get(want, 0) + 1
    if _counts[want] != nth:
        return
    sig = signal.SIGTERM if os.environ.get(_ENV_SIGNAL, "").upper() == "TERM" else signal.SIGKILL
    if sig == signal.SIGTERM:
        # Once is enough: the handler turns it into an interruption, and the
        # clean-up that follows must not be interrupted again.
        os.environ.pop(_ENV_AT, None)
    os.kill(os.getpid(), sig)


def reset() -> None:
    """Forget the counts (for tests that reach points in one process repeatedly)."""
    _counts.clear()
