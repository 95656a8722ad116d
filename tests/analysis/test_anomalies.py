"""lumin_nb.analysis.anomalies: planted anomalies are found soon and never before they happen."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings, strategies as st

from lumin_nb.analysis.anomalies import ANOMALY_COLUMNS, anomalies, score_series
from lumin_nb.errors import UnknownColumnError
from lumin_nb.event import batch_from_columns

STEP_NS = 300 * 1_000_000_000  # 5 minutes: 288 points a day
T0 = 1_700_000_000 * 1_000_000_000


def _seasonal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 50 + 20 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1.0, n)


def _ts(n: int) -> np.ndarray:
    return (T0 + np.arange(n, dtype=np.int64) * STEP_NS).astype("datetime64[ns]")


def _metric_events(values: np.ndarray, entity: str = "rss") -> pl.DataFrame:
    n = len(values)
    batch = batch_from_columns(
        n,
        ts=T0 + np.arange(n, dtype=np.int64) * STEP_NS,
        kind="metric",
        source_type="metric",
        entity=entity,
        value=values,
        producer="test",
    )
    return pl.from_arrow(batch)  # type: ignore[return-value]


@pytest.mark.parametrize("kind", ["spike", "level_shift"])
def test_planted_anomaly_is_flagged_soon_after_it_starts_and_not_before(kind: str) -> None:
    n, at = 288 * 5, 288 * 3 + 100
    values = _seasonal(n)
    if kind == "spike":
        values[at] += 30
    else:
        values[at:] += 30
    frame = anomalies(_metric_events(values))
    assert frame.columns == list(ANOMALY_COLUMNS)
    flagged = frame.filter(pl.col("is_anomaly"))["ts"].dt.epoch("ns").to_numpy()
    rows = (flagged - T0) // STEP_NS
    assert len(rows) and rows.min() >= at, f"flagged before the anomaly: {rows[:10]}"
    assert rows.min() <= at + 3, f"first flag {rows.min()}, anomaly at {at}"
    # quiet before: the score stays under the threshold over the whole day before it
    assert frame["score"][at - 288 : at].max() < 0.53


def test_seasonal_series_without_anomaly_stays_mostly_quiet() -> None:
    frame = anomalies(_metric_events(_seasonal(288 * 5, seed=2)))
    assert frame["is_anomaly"].sum() <= 3


@settings(max_examples=25, deadline=None)
@given(
    data=st.lists(
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=400
    ),
    cut=st.integers(1, 400),
)
def test_scores_of_a_prefix_do_not_change_when_the_future_is_appended(
    data: list[float], cut: int
) -> None:
    values = np.asarray(data)
    cut = min(cut, len(values))
    ts = _ts(len(values))
    full = score_series(values, ts, window=50)
    prefix = score_series(values[:cut], ts[:cut], window=50)
    np.testing.assert_array_equal(prefix, full[:cut])


def test_prefix_property_holds_on_a_long_seasonal_series() -> None:
    values = _seasonal(288 * 4, seed=5)
    values[700:] += 10
    ts = _ts(len(values))
    full = score_series(values, ts)
    for cut in (300, 577, 701, 900):
        np.testing.assert_array_equal(score_series(values[:cut], ts[:cut]), full[:cut])


def test_scores_are_between_0_and_1() -> None:
    values = _seasonal(1000)
    values[500] = 1e9
    s = score_series(values, _ts(1000))
    assert s.min() >= 0.0 and s.max() <= 1.0


def test_flat_series_gives_no_anomalies() -> None:
    frame = anomalies(_metric_events(np.full(2000, 45.0)))
    assert frame.height == 2000
    assert not frame["is_anomaly"].any()
    assert (score_series(np.full(500, 3.0), None) == 0).all()


def test_empty_events_give_an_empty_frame_with_the_columns() -> None:
    empty = pl.from_arrow(batch_from_columns(0, producer="t"))
    assert isinstance(empty, pl.DataFrame)
    frame = anomalies(empty)
    assert frame.height == 0
    assert frame.columns == list(ANOMALY_COLUMNS)
    assert frame.schema["ts"] == pl.Datetime("ns", "UTC")
    assert score_series(np.empty(0)).shape == (0,)


def test_many_series_are_scored_independently() -> None:
    a, b = _seasonal(1500, seed=1), _seasonal(1500, seed=2)
    b[1200] += 40
    events = pl.concat([_metric_events(a, "a"), _metric_events(b, "b")])
    frame = anomalies(events)
    assert frame["series"].unique().sort().to_list() == ["a", "b"]
    flagged = frame.filter(pl.col("is_anomaly"))
    assert "b" in flagged["series"].to_list()
    alone = anomalies(_metric_events(b, "b"))
    np.testing.assert_allclose(
        frame.filter(pl.col("series") == "b")["score"].to_numpy(), alone["score"].to_numpy()
    )


def test_event_rates_are_scored_per_entity() -> None:
    rng = np.random.default_rng(0)
    minutes = 600
    per_minute = rng.poisson(5, minutes)
    per_minute[500] = 80  # a burst of errors
    ts = np.concatenate(
        [T0 + m * 60_000_000_000 + np.arange(k, dtype=np.int64) for m, k in enumerate(per_minute)]
    )
    events = pl.from_arrow(
        batch_from_columns(len(ts), ts=ts, kind="log", entity="orders", producer="t")
    )
    frame = anomalies(events, every="1m")  # type: ignore[arg-type]
    assert frame["series"].unique().to_list() == ["rate:orders"]
    assert frame.height == minutes
    top = frame.sort("score", descending=True).row(0, named=True)
    assert top["value"] == 80 and top["is_anomaly"]


def test_since_until_and_entity_filter() -> None:
    events = pl.concat([_metric_events(_seasonal(600), "a"), _metric_events(_seasonal(600), "b")])
    frame = anomalies(events, entity="a", since=T0 + 100 * STEP_NS, until=T0 + 200 * STEP_NS)
    assert frame["series"].unique().to_list() == ["a"]
    assert frame.height == 100


def test_unknown_entity_names_the_closest_series() -> None:
    with pytest.raises(UnknownColumnError, match="Did you mean 'rss'"):
        anomalies(_metric_events(_seasonal(100)), entity="rsss")
