"""Retention: compaction to Parquet, deletion by age and by size, queries across both."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from conftest import T0_NS, make_batch

from lumin_nb.store import Store, events_frame

DAY_NS = 86_400 * 10**9


def _fill(store: Store, batches: int = 10, n: int = 200) -> None:
    for i in range(batches):
        store.append(make_batch(i * n, n, step_ns=DAY_NS // 100))
        store.flush()


def test_compaction_moves_old_segments_to_parquet_and_queries_still_see_them(
    make_store: Callable[..., Store],
) -> None:
    store = make_store(segment_max_bytes=30_000, retention_age_s=7 * 86_400.0)
    _fill(store)
    hot_before = store.stats()["hot_segments"]
    counts = store.compact(now_ns=T0_NS + 13 * DAY_NS)
    stats = store.stats()
    assert counts["compacted"] >= 2
    assert stats["cold_segments"] == counts["compacted"]
    assert stats["hot_segments"] == hot_before - counts["compacted"]  # type: ignore[operator]
    assert list(store.path.glob("cold/*.parquet"))
    seqs = np.sort(store.scan(columns=["seq"])["seq"].to_numpy())
    np.testing.assert_array_equal(seqs, np.arange(2000))
    assert store.sql("select count(distinct seq) as n from events")["n"][0].as_py() == 2000
    df = events_frame(store, kind="log", until=T0_NS + DAY_NS // 10)
    assert df["seq"].to_list() == list(range(0, 10, 3))
    assert store.scan(since_ns=T0_NS + 15 * DAY_NS, columns=["seq"]).num_rows > 0
    store.close()
    reopened = Store.open(store.path, read_only=True)
    assert reopened.scan().num_rows == 2000
    assert reopened.history(type="StoreCompacted").num_rows == 1


def test_age_limit_deletes_cold_segments_past_twice_the_age(
    make_store: Callable[..., Store],
) -> None:
    store = make_store(segment_max_bytes=100_000, retention_age_s=86_400.0)
    _fill(store)
    active = [s for s in store._catalog.segments if not s.is_sealed]
    assert len(active) == 1
    counts = store.compact(now_ns=T0_NS + 100 * DAY_NS)
    assert counts["deleted_by_age"] == counts["compacted"] > 0
    left = store.scan(columns=["seq"]).num_rows
    assert left == active[0].rows  # only the segment being written survives
    assert store.append(make_batch(0, 200)) == 0  # deleted events still count as seen


def test_size_limit_trims_the_oldest_segments_first(make_store: Callable[..., Store]) -> None:
    store = make_store(segment_max_bytes=30_000, retention_max_bytes=100_000)
    _fill(store)
    before = store.stats()["bytes_on_disk"]
    counts = store.compact(now_ns=T0_NS)
    assert counts["deleted_by_size"] > 0
    assert counts["bytes_after"] <= 100_000 < counts["bytes_before"]
    seqs = np.sort(store.scan(columns=["seq"])["seq"].to_numpy())
    assert seqs[0] > 0 and seqs[-1] == 1999  # the oldest went, the newest stayed
    np.testing.assert_array_equal(seqs, np.arange(seqs[0], 2000))
    assert store.stats()["bytes_on_disk"] < before  # type: ignore[operator]
