"""Test helpers for Lumin's tests and for users testing code observed by Lumin.

(The pytest plugin and fixtures of the pytest-kit issue will live here too.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> None:
    """Return once `predicate()` is true; fail saying `what` never happened after `timeout_s`.

    Tests wait on conditions, never on sleeps: this polls every 10 ms up to the deadline.
    """
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what or predicate}")
        pause.wait(0.01)
