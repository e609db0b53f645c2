"""Waiting for an event, never for a fixed time: a test that sleeps a few milliseconds and then
asserts fails on a loaded machine (CI runs beside other jobs).  ``wait_for`` polls a condition
until it holds, with a generous deadline, and says what it waited for when it gives up."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

#: long enough for a machine running the suite beside two CPU-bound jobs (issue 18)
DEFAULT_TIMEOUT_S = 60.0


def wait_for(condition: Callable[[], T], what: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> T:
    """``condition()`` again and again (1 ms apart at first, then up to 100 ms) until it
    returns something true, which is returned; AssertionError naming ``what`` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    pause = 0.001
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
