"""The (producer, seq) index that makes replays idempotent: each pair is stored once.

Per producer the index holds the seq numbers already accepted as a set of disjoint,
non-adjacent half-open intervals ``[start, end)`` in two sorted numpy arrays. Checking a batch
is one `np.searchsorted` per producer; committing merges the batch's runs into the intervals
with a sort and a running maximum. Nothing loops over events in Python. The index lives in
memory only and is rebuilt from the stored ``producer``/``seq`` columns when a store opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from numpy.typing import NDArray

    Ints = NDArray[np.int64]
    Mask = NDArray[np.bool_]


def _is_increasing(s: Ints) -> bool:
    """Whether `s` is strictly increasing: the usual batch, which needs no sort."""
    return len(s) < 2 or bool(np.all(s[1:] > s[:-1]))


def _runs(seqs: Ints) -> tuple[Ints, Ints]:
    """Return the maximal runs of consecutive values of `seqs` as (starts, ends exclusive)."""
    u = seqs if _is_increasing(seqs) else np.unique(seqs)
    if len(u) == 0:
        return u, u
    breaks = np.flatnonzero(np.diff(u) != 1) + 1
    first = np.concatenate(([0], breaks))
    last = np.concatenate((breaks - 1, [len(u) - 1]))
    return u[first], u[last] + 1


def _merge(starts: Ints, ends: Ints) -> tuple[Ints, Ints]:
    """Return the union of intervals [starts, ends) as disjoint, non-adjacent sorted intervals."""
    if len(starts) <= 1:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)
    new_group = np.empty(len(s), dtype=bool)
    new_group[0] = True
    new_group[1:] = s[1:] > reach[:-1]  # adjacent intervals (start == reach) merge too
    group_first = np.flatnonzero(new_group)
    group_last = np.concatenate((group_first[1:] - 1, [len(s) - 1]))
    return s[group_first], reach[group_last]


@dataclass
class DedupePlan:
    """What `SeqIndex.check` decided for one batch; `SeqIndex.commit` makes it stick."""

    keep: Mask
    duplicates: int
    runs: dict[str, tuple[Ints, Ints]] = field(default_factory=dict)

    @property
    def producers(self) -> list[str]:
        """The producers with new rows in the batch."""
        return sorted(self.runs)


class SeqIndex:
    """Accepted seq numbers per producer, as interval sets. Not thread-safe: lock outside."""

    def __init__(self) -> None:
        self._starts: dict[str, Ints] = {}
        self._ends: dict[str, Ints] = {}

    def __len__(self) -> int:
        """Return the number of (producer, seq) pairs accepted."""
        return int(sum(int((self._ends[p] - self._starts[p]).sum()) for p in self._starts))

    def intervals(self, producer: str) -> list[tuple[int, int]]:
        """Return the accepted seq ranges of `producer` as [start, end) pairs."""
        s = self._starts.get(producer, np.empty(0, np.int64))
        e = self._ends.get(producer, np.empty(0, np.int64))
        return list(zip(s.tolist(), e.tolist(), strict=True))

    def check(
        self, producer: pa.Array | pa.ChunkedArray, seq: pa.Array | pa.ChunkedArray
    ) -> DedupePlan:
        """Return which rows are new: not accepted before and first of their pair in the batch."""
        seqs = np.asarray(seq.to_numpy(zero_copy_only=False), dtype=np.int64)
        n = len(seqs)
        keep = np.zeros(n, dtype=bool)
        plan = DedupePlan(keep=keep, duplicates=0)
        if n == 0:
            return plan
        if isinstance(producer, pa.ChunkedArray):
            producer = producer.combine_chunks()
        first = producer[0].as_py()
        if pc.all(pc.equal(producer, first)).as_py():
            groups: list[tuple[str, Ints | None]] = [(str(first), None)]
        else:
            encoded = pc.dictionary_encode(producer)
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            names = encoded.dictionary.to_pylist()
            groups = [(str(name), np.flatnonzero(codes == k)) for k, name in enumerate(names)]
        for name, rows in groups:
            s = seqs if rows is None else seqs[rows]
            fresh = self._fresh(name, s)
            if rows is None:
                keep[:] = fresh
            else:
                keep[rows] = fresh
            if fresh.any():
                plan.runs[name] = _runs(s[fresh])
        plan.duplicates = n - int(keep.sum())
        return plan

    def _fresh(self, producer: str, s: Ints) -> Mask:
        if _is_increasing(s):
            fresh = np.ones(len(s), dtype=bool)
        else:
            _, first_idx = np.unique(s, return_index=True)
            fresh = np.zeros(len(s), dtype=bool)
            fresh[first_idx] = True
        starts = self._starts.get(producer)
        if starts is not None and len(starts):
            ends = self._ends[producer]
            i = np.searchsorted(starts, s, side="right") - 1
            covered = (i >= 0) & (s < ends[np.maximum(i, 0)])
            fresh &= ~covered
        return fresh

    def commit(self, plan: DedupePlan) -> None:
        """Record the new rows of `plan` as accepted."""
        for name, (starts, ends) in plan.runs.items():
            self.add_runs(name, starts, ends)

    def add_runs(self, producer: str, starts: Ints, ends: Ints) -> None:
        """Merge the intervals [starts, ends) into `producer`'s accepted set."""
        if producer in self._starts:
            starts = np.concatenate((self._starts[producer], starts))
            ends = np.concatenate((self._ends[producer], ends))
        self._starts[producer], self._ends[producer] = _merge(starts, ends)

    def add_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Mark every (producer, seq) of a stored batch as accepted (used when reopening)."""
        plan = self.check(batch.column("producer"), batch.column("seq"))
        self.commit(plan)
