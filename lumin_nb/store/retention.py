"""Retention: compact old sealed hot segments to zstd Parquet, then delete by age and size.

Policy (from `Config`): a sealed hot segment whose newest event is older than
``retention_age_s`` is rewritten as a cold Parquet segment (temp file, fsync, rename, then the
hot file is deleted, so a crash keeps at least one copy); a cold segment older than twice the
age is deleted; then, while the store is larger than ``retention_max_bytes``, the oldest
sealed segment (lowest number) is deleted. The segment being written is never touched. The
dedupe index keeps the seq ranges of deleted events, so a late replay is still dropped.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING

import pyarrow as pa

from lumin_nb.event import EVENT_SCHEMA
from lumin_nb.store.segment import COLD_DIR, COLD_SUFFIX, read_hot, segment_name, write_cold

if TYPE_CHECKING:
    from lumin_nb.store._store import Store
    from lumin_nb.store._writer import SegmentInfo


def _delete(store: Store, seg: SegmentInfo) -> int:
    with store._cond:
        store._catalog.segments = [s for s in store._catalog.segments if s is not seg]
    with contextlib.suppress(FileNotFoundError):
        seg.path.unlink()
    return seg.bytes


def apply_retention(store: Store, now_ns: int) -> dict[str, int]:
    """Apply the retention policy of `store.config` at time `now_ns`; return the counts."""
    config = store.config
    age_ns = int(config.retention_age_s * 1e9)
    with store._cond:
        segments = list(store._catalog.segments)
    bytes_before = sum(s.bytes for s in segments)
    counts = {"compacted": 0, "deleted_by_age": 0, "deleted_by_size": 0}

    for seg in segments:
        if seg.is_cold or not seg.is_sealed:
            continue
        if seg.rows == 0:
            _delete(store, seg)
            continue
        if seg.max_ts is not None and seg.max_ts < now_ns - age_ns:
            read = read_hot(seg.path, max_batches=seg.batches)
            table = pa.Table.from_batches(read.batches, schema=EVENT_SCHEMA)
            cold_path = store.path / COLD_DIR / segment_name(seg.number, COLD_SUFFIX)
            write_cold(table, cold_path)
            cold = replace(seg, path=cold_path, is_cold=True, bytes=cold_path.stat().st_size)
            with store._cond:
                store._catalog.segments = [cold if s is seg else s for s in store._catalog.segments]
            seg.path.unlink()
            counts["compacted"] += 1

    with store._cond:
        segments = list(store._catalog.segments)
    for seg in segments:
        if seg.is_cold and seg.max_ts is not None and seg.max_ts < now_ns - 2 * age_ns:
            _delete(store, seg)
            counts["deleted_by_age"] += 1

    with store._cond:
        segments = list(store._catalog.segments)
    total = sum(s.bytes for s in segments)
    for seg in sorted(segments, key=lambda s: s.number):
        if total <= config.retention_max_bytes:
            break
        if not seg.is_sealed:
            continue
        total -= _delete(store, seg)
        counts["deleted_by_size"] += 1
    return {**counts, "bytes_before": bytes_before, "bytes_after": total}
