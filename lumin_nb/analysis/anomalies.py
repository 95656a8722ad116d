"""Online anomaly scores for metric series and event rates, many series at once.

Place in the flow: analysis reads an events frame (the store's, or any frame of the event
schema) and returns a polars DataFrame; widgets and MCP draw it. Invariant: **online** — the
score, expected value and band of a point use only the points before it (and the point itself
for its own residual), so appending the future never changes a past score.

The detector, per series (all series in one polars pipeline, ``.over("series")``):

1. **Two predictors, chosen online.** A *level* predictor (median of the previous 5 points) and
   a *seasonal* one (median of the values 1, 2 and 3 periods back; the period is one day in
   samples, from the series' first 16 intervals, used when a day holds >= 17 samples). For each
   point the predictor whose exponentially weighted mean absolute error *so far* is smaller
   gives ``expected``; a series without a daily rhythm keeps the level predictor.
2. **Spike score.** The residual over a robust scale of the past residuals (max of
   1.4826 x rolling median and 0.5 x rolling mean of |residual| over the last ``window``
   points, floored at 1e-3 of the series' magnitude so flat series stay quiet), divided by the
   largest such ratio of the previous ``window`` points (plus one). A value like the worst of
   the last day scores about 0.5; a new record scores more. Repeated, similar bursts stop
   scoring high: they are the new normal.
3. **Shift score.** The mean of the last 12 points against the median of the ``window``
   points before them, over the mean absolute step of that past; again relative to its own
   recent maximum. It catches level shifts and slow drifts the spike score misses.
4. ``score = s / (1 + s)`` with ``s`` the larger of the two: in 0..1, monotone in the evidence.
   ``is_anomaly`` is ``score >= threshold``; the default 0.53 rounds up the 0.524 that NAB's
   sweeper chose for this detector on the NAB corpus (standard profile,
   `benchmarks/bench_anomalies.py`).
   ``lower``/``upper`` are ``expected -/+ 4 x scale``.

The first 12 points of a series only warm the statistics up (score 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import numpy as np

from lumin_nb._time import TimeLike, parse_duration_ns, parse_time
from lumin_nb.errors import UnknownColumnError, closest

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

__all__ = ["ANOMALY_COLUMNS", "DEFAULT_THRESHOLD", "anomalies", "score_series"]

DEFAULT_THRESHOLD: Final = 0.53
WINDOW: Final = 288
_LEVEL_POINTS: Final = 5
_SHIFT_POINTS: Final = 12
_WARMUP: Final = 12
_MIN_PERIOD: Final = 17
_BAND: Final = 4.0
_DAY_NS: Final = 86_400_000_000_000

ANOMALY_COLUMNS: Final = (
    "series",
    "ts",
    "value",
    "score",
    "expected",
    "lower",
    "upper",
    "is_anomaly",
)


def _schema() -> dict[str, pl.DataType]:
    import polars as pl

    return {
        "series": pl.String(),
        "ts": pl.Datetime("ns", "UTC"),
        "value": pl.Float64(),
        "score": pl.Float64(),
        "expected": pl.Float64(),
        "lower": pl.Float64(),
        "upper": pl.Float64(),
        "is_anomaly": pl.Boolean(),
    }


def _period(step_ns: float) -> int:
    """Return one day in samples, or 0 when a day holds too few samples to learn a rhythm."""
    if not step_ns or step_ns <= 0 or not np.isfinite(step_ns):
        return 0
    p = round(_DAY_NS / step_ns)
    return p if p >= _MIN_PERIOD else 0


def _median3(a: pl.Expr, b: pl.Expr, c: pl.Expr) -> pl.Expr:
    """Median of the non-null values among three (vectorised, no lists)."""
    import polars as pl

    n = (
        a.is_not_null().cast(pl.Int8)
        + b.is_not_null().cast(pl.Int8)
        + c.is_not_null().cast(pl.Int8)
    )
    total = pl.sum_horizontal(a, b, c)
    return (
        pl.when(n == 3)
        .then(total - pl.max_horizontal(a, b, c) - pl.min_horizontal(a, b, c))
        .when(n == 2)
        .then(total / 2)
        .when(n == 1)
        .then(total)
        .otherwise(None)
    )


def _score_frame(frame: pl.DataFrame, period: int, window: int) -> pl.DataFrame:
    """Add expected/scale/score columns to a frame of `series`, `value` sorted by series, time.

    Every series in `frame` shares `period` (callers group series by period).
    """
    import polars as pl

    v = pl.col("value")
    g = "series"
    level = v.rolling_median(_LEVEL_POINTS, min_samples=1).shift(1).over(g)
    if period:
        seasonal = _median3(
            v.shift(period).over(g), v.shift(2 * period).over(g), v.shift(3 * period).over(g)
        )
    else:
        seasonal = pl.lit(None, dtype=pl.Float64)
    span = max(window, period)
    out = frame.lazy().with_columns(level=level, seasonal=seasonal)
    out = out.with_columns(
        mae_level=(v - pl.col("level"))
        .abs()
        .ewm_mean(span=span, adjust=False, ignore_nulls=True)
        .shift(1)
        .over(g),
        mae_seasonal=(v - pl.col("seasonal"))
        .abs()
        .ewm_mean(span=span, adjust=False, ignore_nulls=True)
        .shift(1)
        .over(g),
    )
    use_seasonal = pl.col("mae_seasonal").is_not_null() & (
        pl.col("mae_seasonal") < pl.col("mae_level")
    )
    out = out.with_columns(
        expected=pl.when(use_seasonal).then(pl.col("seasonal")).otherwise(pl.col("level"))
    ).with_columns(resid=(v - pl.col("expected")).abs())
    magnitude = v.abs().rolling_mean(window, min_samples=1).shift(1).over(g) * 1e-3 + 1e-9
    out = out.with_columns(
        scale=pl.max_horizontal(
            pl.col("resid").rolling_median(window, min_samples=1).shift(1).over(g) * 1.4826,
            pl.col("resid").rolling_mean(window, min_samples=1).shift(1).over(g) * 0.5,
            magnitude,
        )
    )
    m = _SHIFT_POINTS
    past = v.shift(m)
    step_scale = (
        (v - v.shift(1)).abs().shift(m).rolling_mean(window, min_samples=m).over(g)
        + past.abs().rolling_mean(window, min_samples=1).over(g) * 1e-3
        + 1e-9
    )
    out = out.with_columns(
        z=pl.col("resid") / pl.col("scale"),
        d=(
            v.rolling_mean(m, min_samples=1).over(g)
            - past.rolling_median(window, min_samples=m).over(g)
        ).abs()
        / step_scale,
    )
    out = out.with_columns(
        spike=pl.col("z") / (pl.col("z").rolling_max(window, min_samples=1).shift(1).over(g) + 1.0),
        shift=pl.col("d") / (pl.col("d").rolling_max(window, min_samples=1).shift(1).over(g) + 1.0),
        row=pl.int_range(pl.len()).over(g),
    )
    s = pl.max_horizontal(pl.col("spike").fill_nan(None), pl.col("shift").fill_nan(None)).fill_null(
        0.0
    )
    return out.with_columns(
        score=pl.when(pl.col("row") < _WARMUP).then(0.0).otherwise(s / (1.0 + s)),
        lower=pl.col("expected") - _BAND * pl.col("scale"),
        upper=pl.col("expected") + _BAND * pl.col("scale"),
    ).collect()


def _score_long(frame: pl.DataFrame, periods: dict[str, int], window: int) -> pl.DataFrame:
    """Score a long frame (`series`, `ts`, `value`), grouping series that share a period."""
    import polars as pl

    by_period: dict[int, list[str]] = {}
    for name, p in periods.items():
        by_period.setdefault(p, []).append(name)
    parts = []
    for p, names in sorted(by_period.items()):
        part = frame.filter(pl.col("series").is_in(names)) if len(by_period) > 1 else frame
        parts.append(_score_frame(part, p, window))
    return pl.concat(parts) if parts else frame


def score_series(
    values: np.ndarray, timestamps: np.ndarray | None = None, *, window: int = WINDOW
) -> np.ndarray:
    """Return one online anomaly score in 0..1 per value (the detector of `anomalies`).

    ``timestamps`` (datetime64 or epoch ns) set the daily period; without them the series has
    no seasonal predictor. No score depends on a later value.
    """
    import polars as pl

    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return np.empty(0)
    period = 0
    if timestamps is not None and len(timestamps) > 1:
        ts = np.asarray(timestamps)
        ts_ns = ts.astype("datetime64[ns]").astype(np.int64) if ts.dtype.kind == "M" else ts
        period = _period(float(np.median(np.diff(ts_ns[:17].astype(np.int64)))))
    frame = pl.DataFrame({"series": np.zeros(len(x), dtype=np.int8), "value": x})
    frame = frame.with_columns(pl.col("series").cast(pl.String))
    return _score_frame(frame, period, window)["score"].to_numpy()


def _to_polars(events: pl.DataFrame | pa.Table | pa.RecordBatch) -> pl.DataFrame:
    import polars as pl

    if isinstance(events, pl.DataFrame):
        return events
    out = pl.from_arrow(events)
    assert isinstance(out, pl.DataFrame)
    return out


def anomalies(
    events: pl.DataFrame | pa.Table | pa.RecordBatch,
    *,
    since: TimeLike = None,
    until: TimeLike = None,
    entity: str | Sequence[str] | None = None,
    every: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    window: int = WINDOW,
) -> pl.DataFrame:
    """Return an online anomaly score for every point of every metric series and event rate.

    Metric events (``kind == "metric"``) form one series per ``entity`` (their ``value``s,
    averaged per ``every`` bucket when given). Every other kind forms one *rate* series per
    entity, ``"rate:<entity>"``: events per ``every`` bucket (default ``"1m"``), empty buckets
    counted as 0. See the module docstring for the detector.

    Parameters
    ----------
    events
        An events frame (polars, or an Arrow table/batch of the event schema).
    since, until
        Keep events in ``[since, until)`` (datetime, ISO text or offsets like ``"-1h"``).
    entity
        Keep these series only (metric names, or ``"rate:<entity>"``).
    every
        Resample metric series to this bucket (``"1s"``, ``"5m"``); the bucket of rates.
    threshold
        ``is_anomaly`` is ``score >= threshold``.
    window
        Points of history the robust scale and the "recent worst" remember (default 288).

    Returns
    -------
    polars.DataFrame
        ``series`` (str), ``ts`` (datetime UTC), ``value``, ``score`` (0..1), ``expected``,
        ``lower``, ``upper`` (floats) and ``is_anomaly`` (bool), sorted by series and time.
        Empty input gives an empty frame with these columns.

    Raises
    ------
    UnknownColumnError
        ``entity`` names a series that is not in the events (the closest is suggested).

    Examples
    --------
    >>> anomalies(lm.events(since="-1h")).filter(pl.col("is_anomaly"))  # doctest: +SKIP
    """
    import polars as pl

    df = _to_polars(events)
    empty = pl.DataFrame(schema=_schema())
    if df.height == 0:
        return empty
    ts = pl.col("ts").cast(pl.Datetime("ns", "UTC"))
    df = df.with_columns(ts=ts)
    lo, hi = parse_time(since, name="since"), parse_time(until, name="until")
    if lo is not None:
        df = df.filter(pl.col("ts").dt.epoch("ns") >= lo)
    if hi is not None:
        df = df.filter(pl.col("ts").dt.epoch("ns") < hi)
    kind = pl.col("kind").cast(pl.String)
    name = pl.col("entity").cast(pl.String).fill_null("")
    metrics = df.filter(kind == "metric").select(
        series=name, ts=pl.col("ts"), value=pl.col("value").cast(pl.Float64)
    )
    metrics = metrics.filter(pl.col("value").is_not_null())
    others = df.filter(kind != "metric").select(series=pl.lit("rate:") + name, ts=pl.col("ts"))
    wanted = None if entity is None else [entity] if isinstance(entity, str) else list(entity)
    if wanted is not None:
        known = set(metrics["series"].unique().to_list()) | set(others["series"].unique().to_list())
        for w in wanted:
            if w not in known:
                raise UnknownColumnError(
                    f"entity={w!r} is not a series in these events.{closest(w, known)} "
                    f"Expected one of: {', '.join(sorted(known)[:20])}. "
                    "Fix: pass a metric name, or 'rate:<entity>' for an event rate."
                )
        metrics = metrics.filter(pl.col("series").is_in(wanted))
        others = others.filter(pl.col("series").is_in(wanted))
    periods: dict[str, int] = {}
    frames = []
    if metrics.height:
        metrics = metrics.sort("series", "ts")
        if every is not None:
            step = parse_duration_ns(every, name="every")
            metrics = (
                metrics.group_by_dynamic("ts", every=every, group_by="series")
                .agg(pl.col("value").mean())
                .sort("series", "ts")
            )
            periods.update({s: _period(step) for s in metrics["series"].unique().to_list()})
        else:
            steps = metrics.group_by("series").agg(
                step=pl.col("ts").dt.epoch("ns").diff().head(17).median()
            )
            periods.update(
                {s: _period(st or 0.0) for s, st in steps.iter_rows()}  # None: a single point
            )
        frames.append(metrics)
    if others.height:
        bucket = every or "1m"
        step = parse_duration_ns(bucket, name="every")
        counts = (
            others.sort("series", "ts")
            .group_by_dynamic("ts", every=bucket, group_by="series")
            .agg(value=pl.len().cast(pl.Float64))
            .sort("series", "ts")
        )
        counts = (
            counts.upsample("ts", every=bucket, group_by="series")
            .with_columns(pl.col("series").forward_fill(), pl.col("value").fill_null(0.0))
            .sort("series", "ts")
        )
        periods.update({s: _period(step) for s in counts["series"].unique().to_list()})
        frames.append(counts.select("series", "ts", "value"))
    if not frames:
        return empty
    long = pl.concat(frames).sort("series", "ts", maintain_order=True)
    scored = _score_long(long, periods, window).sort("series", "ts", maintain_order=True)
    return scored.select(
        pl.col("series"),
        pl.col("ts"),
        pl.col("value"),
        pl.col("score"),
        pl.col("expected"),
        pl.col("lower"),
        pl.col("upper"),
        is_anomaly=pl.col("score") >= threshold,
    ).cast(_schema())  # type: ignore[arg-type]  # polars' cast accepts a name->dtype mapping
