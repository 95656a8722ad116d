"""Helpers of the agent tests (imported by conftest and the tests)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from lumin_nb.agent import Receiver
from lumin_nb.store import Store
from lumin_nb.testing import wait_until as wait_until


def rows(store: Store, **where: Any) -> list[dict[str, Any]]:
    """Stored events whose columns equal `where`, as dicts (small tables only)."""
    table = store.scan()
    out = []
    for row in table.to_pylist():
        if all(row[k] == v for k, v in where.items()):
            out.append(row)
    return out


def table(store: Store) -> pa.Table:
    """Every stored event."""
    return store.scan()


def producer_of(receiver: Receiver, pid: int) -> str:
    """Wait for the agent of `pid` to say hello; return its producer."""
    found: list[str] = []

    def hello() -> bool:
        found[:] = [a["producer"] for a in receiver.agents() if a["pid"] == pid]
        return bool(found)

    wait_until(hello, timeout_s=20, what=f"hello from the agent of pid {pid}")
    return found[0]
