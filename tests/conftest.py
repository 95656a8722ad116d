"""Shared fixtures: hypothesis budgets and the guard that fails tests leaking global state."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from lumin_nb.testing import wait_until as wait_until  # `from conftest import wait_until`

settings.register_profile("default", deadline=None, max_examples=60)
settings.register_profile(
    "ci", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", deadline=None, max_examples=2000)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default")
)


def _lumin_state() -> dict[str, object]:
    import lumin_nb

    tools = {i: sys.monitoring.get_tool(i) for i in range(6)}
    return {
        "tool ids held by lumin": sorted(i for i, name in tools.items() if name == "lumin"),
        "lumin threads alive": sorted(
            t.name for t in threading.enumerate() if t.name.startswith("lumin-")
        ),
        "LUMIN_* env": {k: v for k, v in os.environ.items() if k.startswith("LUMIN_")},
        "running observatory": lumin_nb._current is not None,
    }


@pytest.fixture(autouse=True)
def _no_leaked_global_state() -> Iterator[None]:
    """Fail any test that leaves a tool id, a Lumin thread, env or an observatory behind."""
    before = _lumin_state()
    yield
    after = _lumin_state()
    leaked = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not leaked, f"test leaked global state (before, after): {leaked}"
