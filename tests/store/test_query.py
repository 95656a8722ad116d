"""The query layer: events_frame filters and ordering, SQL over the whole store, errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import polars as pl
import pytest
from conftest import T0_NS, make_batch

from lumin_nb.errors import QueryError, UnknownColumnError
from lumin_nb.store import Store, events_frame, sql_table


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    s = make_store(segment_max_bytes=20_000)
    s.append(make_batch(600, 400))  # later ts first: results must still come ordered by ts
    s.append(make_batch(0, 600))
    s.flush()
    return s


def test_events_frame_filters_and_orders_by_ts(store: Store) -> None:
    df = events_frame(store, kind="log", service=["orders"], min_severity="warn")
    assert df.height > 0
    assert df["ts"].is_sorted()
    assert set(df["kind"].cast(pl.String)) == {"log"}
    assert set(df["service"].cast(pl.String)) == {"orders"}
    assert df["severity"].min() >= 13  # type: ignore[operator]
    assert df.schema["kind"] == pl.Categorical
    assert df.schema["ts"] == pl.Datetime("ns", "UTC")


def test_events_frame_entity_wildcards_lists_and_limit(store: Store) -> None:
    df = events_frame(store, entity="mod[12]*", columns=["ts", "entity"], limit=7)
    assert df.columns == ["ts", "entity"]
    assert df.height == 7
    assert set(df["entity"].cast(pl.String)) <= {"mod1:fn", "mod2:fn"}
    both = events_frame(store, entity=["mod0:fn", "mod4*"], producer="p1")
    assert set(both["entity"].cast(pl.String)) == {"mod0:fn", "mod4:fn"}


def test_events_frame_time_range_accepts_datetimes_and_text(store: Store) -> None:
    since = datetime.fromtimestamp((T0_NS + 100_000_000) / 1e9, UTC)
    since_text = since.isoformat().replace("+00:00", "Z")
    df = events_frame(store, since=since, until=T0_NS + 200_000_000)
    assert df["seq"].to_list() == list(range(100, 200))
    assert events_frame(store, since=since_text, until=T0_NS + 200_000_000).height == 100
    assert events_frame(store, since="-5m").height == 0  # 2025 data, now is later


def test_unknown_filter_or_column_names_the_closest_match(store: Store) -> None:
    with pytest.raises(UnknownColumnError, match="Did you mean 'entity'") as err:
        events_frame(store, entitty="x")
    assert "event_id" in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(UnknownColumnError, match="Did you mean 'severity'"):
        events_frame(store, columns=["ts", "sevrity"])
    with pytest.raises(UnknownColumnError, match="Did you mean 'duration_ns'"):
        store.scan(columns=["duration"])
    assert store.scan().num_rows == 1000  # nothing lost after errors


def test_sql_sees_hot_segments_and_pending_batches(store: Store) -> None:
    store.append(make_batch(1000, 50))  # maybe still queued: must be counted either way
    out = store.sql("select kind, count(*) as n from events group by kind order by kind")
    assert sum(out["n"].to_pylist()) == 1050
    hist = store.sql("select type from history order by seq")
    assert hist["type"][0].as_py() == "StoreOpened"


def test_bad_sql_raises_query_error_with_columns_and_fix(store: Store) -> None:
    with pytest.raises(QueryError) as err:
        sql_table(store, "select entitty from events")
    text = str(err.value)
    assert "entitty" in text and "entity dictionary" in text and "Fix:" in text
    with pytest.raises(QueryError, match="syntax"):
        store.sql("selec 1")
    assert store.sql("select count(*) as n from events")["n"][0].as_py() == 1000
    store.append(make_batch(1000, 10))
    store.flush()
    assert store.scan().num_rows == 1010


def test_scan_time_range_is_half_open(store: Store) -> None:
    table = store.scan(since_ns=T0_NS + 10_000_000, until_ns=T0_NS + 20_000_000)
    assert sorted(table["seq"].to_pylist()) == list(range(10, 20))
