"""Named commit points, which the fault-injection tests turn into crashes.

Code that makes something durable (a file renamed into place, an audit line
synced, a cache answer appended, an output frame appended) calls
:func:`reached` with the point's name right after the write. In normal use
this does nothing but compare an environment variable that is unset.

A point is counted within the stage that reaches it: :class:`Workspace.stage`
names the running stage (``ingest``, ``generator train``, ``generate``,
``screen``, ``annotate``, ``ner train``, ``export``, ``infer``) with
:func:`entering`, so a test can stop one stage of a whole pipeline run.

Two test-only environment variables drive it:

``APPLIANCE_CRASH_AT``
    ``[STAGE/]NAME[:N]``: when the process reaches commit point ``NAME``
    for the ``N``-th time (default 1), within stage ``STAGE`` if one is
    given, it kills itself with ``SIGKILL``, as the out-of-memory killer or
    a power cut would: no ``finally`` block, no buffered write and no audit
    line survives. ``NAME`` may be ``*`` to count every point
    (``generate/*:7`` = the seventh durable write of the generate stage).
    ``APPLIANCE_CRASH_SIGNAL=TERM`` sends ``SIGTERM`` instead, as a
    service manager's stop or timeout would.
``APPLIANCE_CRASH_TRACE``
    A file to which every point reached is appended as one line
    (``STAGE/NAME``, or ``NAME`` outside a stage), so a test can first list
    the points of an uninterrupted run and then crash at each of them.

The points: ``atomic_write`` (a file renamed into place and its folder
synced), ``audit.line`` (an audit line synced, the head file not yet
updated), ``annotate.cache`` (an LLM answer appended to the cache),
``annotate.output`` (annotations renamed into place), ``ner.model`` (a
trained model folder renamed into place), ``export.swap`` (between moving
the old package aside and renaming the new one into place),
``infer.frame`` and ``infer.journal`` (an output frame and its journal
entry).
"""

from __future__ import annotations

import os
import signal

_ENV_AT = "APPLIANCE_CRASH_AT"
_ENV_SIGNAL = "APPLIANCE_CRASH_SIGNAL"
_ENV_TRACE = "APPLIANCE_CRASH_TRACE"

_counts: dict[str, int] = {}
_stage: list[str] = []


def entering(stage: str) -> None:
    """Count the points reached from now on as ``stage``'s (until :func:`leaving`)."""
    _stage.append(stage)


def leaving() -> None:
    if _stage:
        _stage.pop()


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
    scoped = f"{_stage[-1]}/{name}" if _stage else name
    trace = os.environ.get(_ENV_TRACE)
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(scoped + "\n")
    target = _target()
    if target is None:
        return
    want, nth = target
    stage, _, point = want.rpartition("/")
    if stage and (not _stage or _stage[-1] != stage):
        return
    if point not in (name, "*"):
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
    _stage.clear()
