"""SIGTERM handled like Ctrl-C, and the short sections it may not cut in two.

A service manager stops a stage with SIGTERM. :func:`handle_sigterm` turns it
into :class:`~appliance.errors.Terminated` (a ``KeyboardInterrupt``) in the
main thread, so the running stage writes its "interrupted" audit line and
keeps its committed work, exactly as after Ctrl-C.

Inside :func:`shielded` (an audit line and its head being written, say) the
signal is held back and raised as soon as the section ends: the section is
done whole or, after a SIGKILL, left in a state the next run repairs, never
cut at a point where only a crash could leave it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from appliance.errors import Terminated

_depth = 0
_pending = False


def _on_term(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _depth:
        _pending = True
        return
    # A second SIGTERM during the clean-up that follows kills the process as usual.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


def handle_sigterm() -> None:
    """Install the SIGTERM handler (main thread only)."""
    signal.signal(signal.SIGTERM, _on_term)


@contextmanager
def shielded() -> Iterator[None]:
    """Hold SIGTERM back while the body runs; raise it when the body is done."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if not _depth and _pending:
        _pending = False
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()
