"""Fixtures for the store tests: a store factory, event batches, and `wait_until`."""

from __future__ import annotations

import pathlib
import sys
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pytest

from lumin_nb.config import Config
from lumin_nb.event import batch_from_columns
from lumin_nb.store import Store
from lumin_nb.testing import wait_until as wait_until

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

T0_NS = 1_750_000_000_000_000_000


def make_batch(
    first_seq: int,
    n: int,
    *,
    producer: str = "p1",
    ts0_ns: int = T0_NS,
    step_ns: int = 1_000_000,
) -> pa.RecordBatch:
    """Return `n` log events of `producer` with seq first_seq.. and ts spaced by step_ns."""
    seq = np.arange(first_seq, first_seq + n, dtype=np.int64)
    kinds = np.array(["log", "span", "metric"], dtype=object)[seq % 3]
    return batch_from_columns(
        n,
        ts=ts0_ns + seq * step_ns,
        kind=pa.array(kinds),
        severity=pa.array((seq % 4 * 4 + 5).astype(np.int8)),
        service=pa.array(np.array(["orders", "payments"], dtype=object)[seq % 2]),
        entity=pa.array([f"mod{i % 5}:fn" for i in range(n)]),
        duration_ns=seq * 10,
        message=pa.array([f"message {s}" for s in seq.tolist()]),
        producer=producer,
        seq=seq,
    )


@pytest.fixture
def make_store(tmp_path: pathlib.Path) -> Iterator[Callable[..., Store]]:
    """Factory: `make_store(name="s", read_only=False, **config)` opens a store under tmp_path;
    every store it opened is closed after the test."""
    opened: list[Store] = []

    def factory(name: str = "store", *, read_only: bool = False, **config: object) -> Store:
        store = Store.open(
            tmp_path / name,
            config=Config(**config),  # type: ignore[arg-type]  # keys checked by Config itself
            read_only=read_only,
        )
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture(autouse=True)
def no_leaked_writer_threads() -> Iterator[None]:
    """Fail a test that leaves a store writer thread running."""
    yield
    alive = [t.name for t in threading.enumerate() if t.name == "lumin-store-writer"]
    assert not alive, f"store writer thread(s) still running after the test: {alive}"
