"""SIGTERM becomes Terminated, except inside a shielded section, where it waits for the end."""

from __future__ import annotations

import os
import signal

import pytest

from appliance import interrupts
from appliance.errors import Terminated


@pytest.fixture
def handler():
    previous = signal.getsignal(signal.SIGTERM)
    interrupts.handle_sigterm()
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_raises_terminated(handler):
    with pytest.raises(Terminated):
        os.kill(os.getpid(), signal.SIGTERM)
    # Once raised, the default action is back: a second SIGTERM would end the process.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_waits_for_a_shielded_section(handler):
    done = []
    with pytest.raises(Terminated), interrupts.shielded():
        with interrupts.shielded():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("inner")
        done.append("outer")
    assert done == ["inner", "outer"]


def test_a_shielded_section_without_a_signal_raises_nothing(handler):
    with interrupts.shielded():
        pass
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
