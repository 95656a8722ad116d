"""The query layer over a Store: filtered polars frames and DuckDB SQL.

`events_frame` reads only what it needs: segments outside the time range are skipped by
their ts range, cold Parquet row groups by their statistics, and the remaining rows are
filtered batch by batch with numpy masks before anything is converted to polars. Filters on
dictionary columns (kind, service, entity, ...) are evaluated once per dictionary (a few
dozen strings) and applied to the int32 codes by a table lookup, never by decoding strings.

`sql_table` runs DuckDB over a view ``events`` that unions the hot tail (zero-copy Arrow)
with the cold Parquet files (scanned by DuckDB itself), plus a ``history`` view of the
domain events.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lumin_nb._time import TimeLike, parse_time
from lumin_nb.errors import QueryError, UnknownColumnError, closest
from lumin_nb.event import COLUMNS, EVENT_SCHEMA

if TYPE_CHECKING:
    import polars as pl
    from numpy.typing import NDArray

    from lumin_nb.store._store import Store

    Mask = NDArray[np.bool_]

#: names accepted by min_severity besides OTel severity numbers
SEVERITY_NAMES: Final = {
    "debug": 5,
    "info": 9,
    "warn": 13,
    "warning": 13,
    "error": 17,
    "fatal": 21,
}
_KEYWORDS: Final = (
    "since",
    "until",
    "kind",
    "service",
    "entity",
    "min_severity",
    "limit",
    "columns",
)

FilterValue = str | int | float | bytes | bool | Sequence[str | int | float | bytes | bool] | None


def _unknown(name: str, what: str) -> UnknownColumnError:
    return UnknownColumnError(
        f"{what} {name!r} is not an event column.{closest(name, (*COLUMNS, *_KEYWORDS))}\n"
        f"The event columns are: {', '.join(COLUMNS)}.\n"
        "Fix: events_frame(store, kind='log', entity='orders.*', columns=['ts', 'entity'])"
    )


def _values(value: FilterValue) -> list[object]:
    if isinstance(value, str | bytes | int | float | bool):
        return [value]
    return list(value or ())


def _string_matcher(values: Iterable[object]) -> re.Pattern[str]:
    """One regex for exact strings and `*`/`?` wildcards: matches whole values."""
    parts = [
        fnmatch.translate(v) if any(ch in v for ch in "*?[") else re.escape(v) + r"\Z"
        for v in map(str, values)
    ]
    return re.compile("|".join(f"(?:{p})" for p in parts) or r"(?!)")


def _dictionary_mask(col: pa.ChunkedArray, pattern: re.Pattern[str]) -> Mask:
    """Rows of a dictionary column whose value matches: the pattern runs once per dictionary
    entry, the rows are a numpy lookup of their codes."""
    masks = []
    for chunk in col.chunks:
        words = chunk.dictionary.to_pylist()
        lut = np.fromiter(
            (w is not None and pattern.match(w) is not None for w in words),
            dtype=bool,
            count=len(words),
        )
        codes = chunk.indices.to_numpy(zero_copy_only=False)
        if chunk.null_count:
            codes = np.where(chunk.is_null().to_numpy(zero_copy_only=False), 0, codes)
            hit = lut[codes] if len(lut) else np.zeros(len(codes), bool)
            hit &= chunk.is_valid().to_numpy(zero_copy_only=False)
        else:
            hit = lut[codes] if len(lut) else np.zeros(len(codes), bool)
        masks.append(hit)
    return np.concatenate(masks) if masks else np.zeros(0, bool)


def _column_mask(table: pa.Table, name: str, values: list[object]) -> Mask:
    col = table.column(name)
    typ = EVENT_SCHEMA.field(name).type
    if pa.types.is_dictionary(typ):
        return _dictionary_mask(col, _string_matcher(values))
    if pa.types.is_string(typ) and any(isinstance(v, str) and "*" in v for v in values):
        pattern = _string_matcher(values).pattern
        hit = pc.match_substring_regex(col, "^(?:" + pattern.replace(r"\Z", "$") + ")")
    else:
        hit = pc.is_in(col, value_set=pa.array(values, type=typ))
    return np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), dtype=bool)


def _severity(value: int | str) -> int:
    if isinstance(value, str):
        if value.lower() not in SEVERITY_NAMES:
            raise ValueError(
                f"min_severity={value!r} is not a severity.{closest(value, SEVERITY_NAMES)}\n"
                f"Expected an OTel number (0-24) or one of {', '.join(SEVERITY_NAMES)}.\n"
                "Fix: events_frame(store, min_severity='warn')"
            )
        return SEVERITY_NAMES[value.lower()]
    return int(value)


def events_frame(
    store: Store,
    *,
    since: TimeLike = None,
    until: TimeLike = None,
    kind: str | Sequence[str] | None = None,
    service: str | Sequence[str] | None = None,
    entity: str | Sequence[str] | None = None,
    min_severity: int | str | None = None,
    limit: int | None = None,
    columns: Sequence[str] | None = None,
    **filters: FilterValue,
) -> pl.DataFrame:
    """Return the stored events that match every filter, ordered by ts, as a polars frame.

    Parameters
    ----------
    since, until
        Time range ``since <= ts < until``: datetime, ISO text, epoch ns or "-5m".
    kind, service, entity
        A value or a list of values; `entity` (and any string filter) accepts ``*``
        wildcards, e.g. ``entity="orders.*"``.
    min_severity
        The lowest OTel severity kept: a number or "debug", "info", "warn", "error", "fatal".
    limit
        Keep the first `limit` events (in ts order).
    columns
        The columns returned (default: all event columns).
    **filters
        Any other event column: a value or a list of values, e.g. ``producer="agent-1"``.

    Returns
    -------
    polars.DataFrame
        The event columns asked for. Dictionary columns (kind, source_type, service, host,
        entity) are ``pl.Categorical``; ts is ``Datetime("ns", "UTC")``.

    Raises
    ------
    UnknownColumnError
        A filter or column that is not an event column (the closest one is suggested).
    TimeParseError
        A since/until Lumin cannot read.

    Examples
    --------
    >>> events_frame(store, since="-5m", kind="log", min_severity="warn")  # doctest: +SKIP
    """
    import polars as pl

    for name in filters:
        if name not in COLUMNS:
            raise _unknown(name, "filter")
    for name in columns or ():
        if name not in COLUMNS:
            raise _unknown(name, "column")
    since_ns = parse_time(since, name="since")
    until_ns = parse_time(until, name="until")
    conditions: dict[str, list[object]] = {
        name: _values(value) for name, value in filters.items() if value is not None
    }
    for name, value in (("kind", kind), ("service", service), ("entity", entity)):
        if value is not None:
            conditions[name] = _values(value)
    severity = None if min_severity is None else _severity(min_severity)

    def where(table: pa.Table) -> Mask:
        mask = np.ones(table.num_rows, dtype=bool)
        if severity is not None:
            sev = np.concatenate(
                [c.to_numpy(zero_copy_only=False) for c in table.column("severity").chunks]
            )
            mask &= sev >= severity
        for name, values in conditions.items():
            mask &= _column_mask(table, name, values)
        return mask

    needed = tuple(conditions) + (("severity",) if severity is not None else ())
    has_filter = bool(needed)
    table, _ = store._read(
        since_ns=since_ns,
        until_ns=until_ns,
        columns=list(columns) if columns is not None else None,
        where=where if has_filter else None,
        extra_columns=(*needed, "ts"),
    )
    frame = pl.from_arrow(_order_by_ts(table, limit), rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _order_by_ts(table: pa.Table, limit: int | None) -> pa.Table:
    if table.num_rows == 0 or "ts" not in table.column_names:
        return table.slice(0, limit) if limit is not None else table
    ts = np.concatenate(
        [c.to_numpy(zero_copy_only=False).view(np.int64) for c in table.column("ts").chunks]
    )
    if len(ts) > 1 and not bool(np.all(ts[1:] >= ts[:-1])):
        order = np.argsort(ts, kind="stable")
        if limit is not None:
            order = order[:limit]
        return table.take(pa.array(order))
    return table.slice(0, limit) if limit is not None else table


def sql_table(store: Store, text: str) -> pa.Table:
    """Run DuckDB SQL `text` over the views ``events`` and ``history``; return an Arrow table.

    Raises
    ------
    QueryError
        DuckDB refused the query: its message, the columns of ``events`` and a fix.
    """
    import duckdb

    try:
        return store._run_sql(text)
    except duckdb.Error as exc:
        types = ", ".join(f"{f.name} {f.type}" for f in EVENT_SCHEMA)
        raise QueryError(
            f"DuckDB could not run the query: {exc}\n"
            f"The view `events` has the columns: {types}.\n"
            "The view `history` has: seq, ts, type, data (JSON text).\n"
            'Fix: store.sql("select kind, count(*) as n from events group by kind")'
        ) from exc
