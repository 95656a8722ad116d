"""Sampling: the sample stage of the ingest pipeline, consistent across processes.

An event is kept when a hash of its trace id falls below ``rate`` (of the 64-bit range), so
every process, agent and collector keeps or drops the same whole traces with no
coordination. Events without a trace id are decided by a hash of their event id. Errors
(severity >= 17) and slow events (``duration_ns >= slow_ns``) are always kept. The hash is
splitmix64 over both halves of the id, computed with numpy over the whole column.

`AdaptiveSampler` moves the rate so that the kept events per second follow a target (the
governor's event-rate budget), from an exponentially weighted view of the input rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lumin_nb.event import SEVERITY_ERROR

_M1: Final = np.uint64(0xBF58476D1CE4E5B9)
_M2: Final = np.uint64(0x94D049BB133111EB)
_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def id_hash(ids: pa.Array) -> np.ndarray:
    """Return a uint64 hash per fixed-size binary id (16 or 8 bytes); 0 for nulls."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    width = ids.type.byte_width
    n = len(ids)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    flat = np.frombuffer(ids.buffers()[1], dtype=np.uint8)
    raw = flat[ids.offset * width : (ids.offset + n) * width].reshape(n, width)
    words: np.ndarray = raw.copy().view(">u8").astype(np.uint64)  # big-endian everywhere
    h = _mix(words[:, 0])
    for k in range(1, width // 8):
        h = _mix(h ^ words[:, k])
    if ids.null_count:
        h[~ids.is_valid().to_numpy(zero_copy_only=False)] = 0
    return h


def keep_mask(
    batch: pa.RecordBatch, rate: float, *, slow_ns: int | None = 1_000_000_000
) -> np.ndarray:
    """Return a bool per row: kept by the trace/event id hash, an error, or slow."""
    n = batch.num_rows
    if rate >= 1.0:
        return np.ones(n, dtype=bool)
    threshold = np.uint64(min(int(max(rate, 0.0) * 2.0**64), 2**64 - 1))
    trace = batch.column("trace_id")
    h = id_hash(batch.column("event_id"))
    if trace.null_count < n:
        has_trace = trace.is_valid().to_numpy(zero_copy_only=False)
        h = np.where(has_trace, id_hash(trace), h)
    keep = h < threshold if rate > 0 else np.zeros(n, dtype=bool)
    sev = batch.column("severity").to_numpy(zero_copy_only=False)
    keep |= sev >= SEVERITY_ERROR
    if slow_ns is not None:
        dur = batch.column("duration_ns")
        if dur.null_count < n:
            slow = pc.fill_null(pc.greater_equal(dur, slow_ns), False)
            keep |= np.asarray(slow.to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray(keep, dtype=bool)


def sample(
    batch: pa.RecordBatch, rate: float, *, slow_ns: int | None = 1_000_000_000
) -> tuple[pa.RecordBatch, int]:
    """Return the kept rows of `batch` at `rate` (0..1) and how many were dropped."""
    if rate >= 1.0 or batch.num_rows == 0:
        return batch, 0
    keep = keep_mask(batch, rate, slow_ns=slow_ns)
    kept = int(keep.sum())
    if kept == batch.num_rows:
        return batch, 0
    return batch.filter(pa.array(keep)), batch.num_rows - kept


class AdaptiveSampler:
    """Keeps about `target_events_per_s` events per second, whatever the input rate.

    Each batch updates an exponentially weighted input rate (half-life `half_life_s`); the
    sampling rate is ``target / input`` clipped to ``[min_rate, 1]``. Errors and slow events
    are always kept on top. `clock` (seconds) is injectable for tests.
    """

    def __init__(
        self,
        target_events_per_s: float,
        *,
        half_life_s: float = 5.0,
        min_rate: float = 0.001,
        slow_ns: int | None = 1_000_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if target_events_per_s <= 0:
            raise ValueError(
                f"target_events_per_s={target_events_per_s!r}: expected a positive number."
            )
        self.target_events_per_s = float(target_events_per_s)
        self.half_life_s = half_life_s
        self.min_rate = min_rate
        self.slow_ns = slow_ns
        self._clock = clock
        self._last: float | None = None
        self._input_per_s: float | None = None
        self._pending = 0
        self.rate = 1.0

    @property
    def input_per_s(self) -> float:
        """Return the smoothed input rate (events per second); 0 before two observations."""
        return self._input_per_s or 0.0

    def observe(self, n: int) -> float:
        """Count `n` arriving events, update the input rate, and return the new rate."""
        now = self._clock()
        if self._last is None:
            self._last = now
            self._pending = n
            return self.rate
        dt = now - self._last
        if dt <= 0:
            self._pending += n
            return self.rate
        current = (self._pending + n) / dt
        self._pending = 0
        self._last = now
        if self._input_per_s is None:
            self._input_per_s = current
        else:
            alpha = 1.0 - math.exp(-math.log(2) * dt / self.half_life_s)
            self._input_per_s += alpha * (current - self._input_per_s)
        if self._input_per_s <= self.target_events_per_s:
            self.rate = 1.0
        else:
            self.rate = max(self.min_rate, self.target_events_per_s / self._input_per_s)
        return self.rate

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, int]:
        """Observe `batch`, then return its kept rows and how many were dropped."""
        self.observe(batch.num_rows)
        return sample(batch, self.rate, slow_ns=self.slow_ns)
