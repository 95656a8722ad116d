"""Map parsed log fields onto event columns: the last step of every parser in `ingest/`.

A parser turns text into a table of fields (one column per key: typed columns from JSON,
strings from regex captures); `events_from_fields` turns that table into a `pa.RecordBatch` of
`EVENT_SCHEMA` with whole-column operations only:

- ``ts``: the first of ``ts``/``time``/``timestamp``/``@timestamp``/``date`` present on a row;
  epoch numbers (seconds below 1e10, then ms, us or ns by size), ISO 8601 / RFC 3339 text,
  and the common log formats (Apache, syslog, log4j, HDFS, Spark); rows without one get
  the receive time.
- ``severity``: ``level``/``severity``/``levelname``/``loglevel`` as OpenTelemetry numbers.
- ``message``: ``message``/``msg``/``log``/``MESSAGE``; ``service``: ``service``/``app``;
  ``host``: ``host``/``hostname``; ``trace_id``/``span_id`` from hex; ``pid`` from ``pid``.
- every other field goes to ``attrs`` as one JSON object (null fields left out).

Every batch is ``kind="log"``, ``source_type="external_log"``, producer unset and seq 0: the
caller stamps them (`lumin_nb.event.with_producer`). Invariant: a row that reaches this module
is never dropped; lines a parser could not read travel beside the batch in ``rejected``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lumin_nb.event import EVENT_SCHEMA, batch_from_columns

# Alias groups, in priority order: the first non-null on a row wins.
TS_KEYS: Final = ("ts", "time", "timestamp", "@timestamp", "date")
LEVEL_KEYS: Final = ("level", "severity", "levelname", "loglevel", "lvl", "severity_text")
MESSAGE_KEYS: Final = ("message", "msg", "log", "MESSAGE", "short_message")
SERVICE_KEYS: Final = ("service", "app", "service.name", "application")
HOST_KEYS: Final = ("host", "hostname")
PID_KEYS: Final = ("pid",)
TRACE_KEYS: Final = ("trace_id", "traceId", "trace.id")
SPAN_KEYS: Final = ("span_id", "spanId", "span.id")

REJECTED_SCHEMA: Final = pa.schema(
    [("line_no", pa.int64()), ("raw", pa.string()), ("reason", pa.string())]
)

# Level words (lower case) to OpenTelemetry severity numbers.
_LEVEL_WORDS: Final = {
    "trace": 1,
    "debug": 5,
    "dbg": 5,
    "fine": 5,
    "info": 9,
    "information": 9,
    "informational": 9,
    "notice": 10,
    "warn": 13,
    "warning": 13,
    "error": 17,
    "err": 17,
    "severe": 17,
    "critical": 21,
    "crit": 21,
    "fatal": 21,
    "panic": 21,
    "alert": 22,
    "emerg": 24,
    "emergency": 24,
}
_LEVEL_NAMES: Final = pa.array(list(_LEVEL_WORDS))
_LEVEL_NUMBERS: Final = pa.array(list(_LEVEL_WORDS.values()), pa.int8())

_ISO_RE: Final = (
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?"
    r"(?:Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)
_HAS_ZONE_RE: Final = r"(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"
# Formats tried, in order, on text that is not ISO 8601 (Arrow strptime, RE2-free).
_TEXT_FORMATS: Final = (
    "%d/%b/%Y:%H:%M:%S %z",  # Apache/nginx access logs (HTTPDATE)
    "%a %b %d %H:%M:%S %Y",  # Apache error log
    "%y%m%d %H%M%S",  # HDFS
    "%y/%m/%d %H:%M:%S",  # Spark
    "%Y/%m/%d %H:%M:%S",  # nginx error log
)
_SYSLOG_TS_RE: Final = r"^[A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2}$"


@dataclass(frozen=True)
class ParseResult:
    """What a parser returns: the events it read and the lines it could not read.

    ``batch`` is a RecordBatch of EVENT_SCHEMA; ``rejected`` a table with columns
    ``line_no`` (int64, 1-based), ``raw`` (the line) and ``reason`` (what was wrong, where).
    """

    batch: pa.RecordBatch
    rejected: pa.Table

    @property
    def num_rejected(self) -> int:
        """Return how many lines were rejected."""
        return int(self.rejected.num_rows)


def rejected_table(
    line_no: Sequence[int] = (), raw: Sequence[str] = (), reason: Sequence[str] = ()
) -> pa.Table:
    """Return a rejected-lines table (line_no, raw, reason) from three equal-length lists."""
    return pa.table(
        [
            pa.array(line_no, pa.int64()),
            pa.array(raw, pa.string()),
            pa.array(reason, pa.string()),
        ],
        schema=REJECTED_SCHEMA,
    )


def empty_batch() -> pa.RecordBatch:
    """Return a RecordBatch of EVENT_SCHEMA with no rows."""
    return pa.RecordBatch.from_arrays(
        [pa.array([], f.type) for f in EVENT_SCHEMA], schema=EVENT_SCHEMA
    )


def concat_batches(batches: Sequence[pa.RecordBatch]) -> pa.RecordBatch:
    """Return one RecordBatch holding the rows of `batches` (all of EVENT_SCHEMA)."""
    if not batches:
        return empty_batch()
    if len(batches) == 1:
        return batches[0]
    table = pa.Table.from_batches(list(batches), schema=EVENT_SCHEMA).unify_dictionaries()
    return table.combine_chunks().to_batches()[0]


def events_from_fields(
    fields: pa.Table,
    *,
    service: str | None = None,
    host: str | None = None,
    severity: pa.Array | None = None,
    ts: pa.Array | None = None,
    now_ns: int | None = None,
) -> pa.RecordBatch:
    """Return a RecordBatch of EVENT_SCHEMA mapping the columns of `fields` onto events.

    Parameters
    ----------
    fields
        One column per parsed key; any Arrow types (nested ones end up in attrs).
    service, host
        Used on rows whose fields name none.
    severity, ts
        Already-decoded columns (syslog PRI, syslog dates) that take precedence.
    now_ns
        The receive time given to rows without a readable timestamp (default: now).
    """
    n = fields.num_rows
    if n == 0:
        return empty_batch()
    now = time.time_ns() if now_ns is None else now_ns
    cols = {name: _plain(fields.column(name)) for name in fields.column_names}
    used: set[str] = set()

    def pick(keys: Sequence[str]) -> list[tuple[str, pa.Array]]:
        found = [(k, cols[k]) for k in keys if k in cols and _is_scalar(cols[k].type)]
        used.update(k for k, _ in found)
        return found

    ts_col = _coalesce([_to_timestamp(a) for _, a in pick(TS_KEYS)])
    if ts is not None:
        ts_col = ts if ts_col is None else pc.coalesce(ts, ts_col)
    ts_ns = (
        pa.repeat(pa.scalar(now, pa.int64()), n)
        if ts_col is None
        else pc.fill_null(ts_col.cast(pa.int64()), now)
    )
    sev = _coalesce([_to_severity(k, a) for k, a in pick(LEVEL_KEYS)])
    if severity is not None:
        sev = severity if sev is None else pc.coalesce(severity, sev)
    message = _coalesce([_to_string(a) for _, a in pick(MESSAGE_KEYS)])
    svc = _coalesce([_to_string(a) for _, a in pick(SERVICE_KEYS)])
    if service is not None:
        svc = pc.fill_null(svc, service) if svc is not None else service
    hst = _coalesce([_to_string(a) for _, a in pick(HOST_KEYS)])
    if host is not None:
        hst = pc.fill_null(hst, host) if hst is not None else host
    pid = _coalesce([_to_int(a, pa.int32()) for _, a in pick(PID_KEYS)])
    trace_id = _coalesce([hex_to_binary(a, 16) for _, a in pick(TRACE_KEYS)])
    span_id = _coalesce([hex_to_binary(a, 8) for _, a in pick(SPAN_KEYS)])
    rest = [name for name in fields.column_names if name not in used]
    attrs = encode_attrs(pa.table({k: cols[k] for k in rest})) if rest else None
    return batch_from_columns(
        n,
        ts=ts_ns,
        kind="log",
        source_type="external_log",
        severity=pc.fill_null(sev, 0) if sev is not None else 0,
        service=svc,
        host=hst,
        pid=pid,
        trace_id=trace_id,
        span_id=span_id,
        message=message,
        attrs=attrs,
        seq=0,
    )


def encode_attrs(table: pa.Table) -> pa.Array:
    """Return one JSON object per row of `table`, leaving out null fields; null when empty."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    encoded = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series().to_arrow()
    arr = _plain(encoded)
    keys = "|".join(
        re.escape(json.dumps(k)[1:-1])
        for k in table.column_names
        if _safe_key(k) and table.column(k).null_count
    )
    if keys:
        # A quoted key followed by ':' only occurs structurally in JSON (quotes inside strings
        # are escaped), so these patterns cannot touch string contents.
        arr = pc.replace_substring_regex(arr, f'"(?:{keys})":null,', "")
        arr = pc.replace_substring_regex(arr, f',?"(?:{keys})":null}}', "}")
    empty = pc.equal(arr, "{}")
    return pc.if_else(empty, pa.scalar(None, pa.string()), arr)


def _safe_key(key: str) -> bool:
    return '"' not in key and "\\" not in key and all(ord(c) >= 0x20 for c in key)


def hex_to_binary(values: pa.Array, nbytes: int) -> pa.Array:
    """Return `values` (hex text) as fixed_size_binary(nbytes); null where not valid hex.

    All-zero ids are invalid in W3C trace context and become null too.
    """
    target = pa.binary(nbytes)
    if pa.types.is_fixed_size_binary(values.type):
        return (
            values.cast(target)
            if values.type.byte_width == nbytes
            else pa.nulls(len(values), target)
        )
    if not pa.types.is_string(values.type):
        return pa.nulls(len(values), target)
    ok = pc.fill_null(pc.equal(pc.binary_length(values), 2 * nbytes), False)
    good = values.filter(ok)
    k = len(good)
    if k == 0:
        return pa.nulls(len(values), target)
    offsets = np.frombuffer(good.buffers()[1], dtype=np.int32)[good.offset : good.offset + k + 1]
    data = np.frombuffer(good.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    nib = np.take(_HEX_LUT, data).reshape(k, 2 * nbytes)
    is_hex = nib.max(axis=1) < 16
    if not is_hex.all():
        ok_np = ok.to_numpy(zero_copy_only=False).copy()
        ok_np[np.flatnonzero(ok_np)[~is_hex]] = False
        ok = pa.array(ok_np)
        nib = nib[is_hex]
        k = len(nib)
    raw = ((nib[:, 0::2] << 4) | nib[:, 1::2]).astype(np.uint8)
    nonzero = raw.any(axis=1)
    fixed = pa.FixedSizeBinaryArray.from_buffers(target, k, [None, pa.py_buffer(raw.tobytes())])
    index = np.full(len(values), -1, dtype=np.int64)
    ok_np = ok.to_numpy(zero_copy_only=False)
    index[ok_np] = np.arange(k)
    index[ok_np] = np.where(nonzero, index[ok_np], -1)
    return pc.take(fixed, pa.array(index, mask=index < 0))


_HEX_LUT: Final = np.full(256, 255, dtype=np.uint8)  # 255: not a hex digit
for _i, _c in enumerate("0123456789abcdef"):
    _HEX_LUT[ord(_c)] = _HEX_LUT[ord(_c.upper())] = _i


def parse_timestamps(values: pa.Array, *, year: int | None = None) -> pa.Array:
    """Return text timestamps as timestamp(ns, UTC); null where none of the formats fit.

    ISO 8601 / RFC 3339 (offset optional: UTC assumed; comma or dot fractions), the
    Apache/nginx, log4j, HDFS and Spark layouts, and syslog's ``Mmm dd hh:mm:ss`` (dated in
    `year`, default the current one).
    """
    target = pa.timestamp("ns", tz="UTC")
    values = _plain(values)
    if not pa.types.is_string(values.type):
        return pa.nulls(len(values), target)
    try:
        return values.cast(target)  # fast path: every value is RFC 3339 with an offset
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out = pa.nulls(len(values), target)
    iso = pc.fill_null(pc.match_substring_regex(values, _ISO_RE), False)
    if pc.any(iso).as_py():
        text = pc.replace_substring_regex(values, r"(\d{2}:\d{2}:\d{2}),(\d)", r"\1.\2")
        zoned = pc.match_substring_regex(text, _HAS_ZONE_RE)
        text = pc.if_else(zoned, text, pc.binary_join_element_wise(text, "Z", ""))
        out = pc.if_else(iso, _cast_each(text, iso, target), out)
    todo = pc.invert(iso)
    if pc.any(todo).as_py():
        syslog = pc.fill_null(pc.match_substring_regex(values, _SYSLOG_TS_RE), False)
        if pc.any(syslog).as_py():
            y = str(time.gmtime().tm_year if year is None else year)
            ns = _syslog_date(values, y)
            if year is None:
                # No year in the line: a date more than a day ahead is from last year.
                ahead = pc.greater(ns, time.time_ns() + 86_400_000_000_000)
                ns = pc.if_else(ahead, _syslog_date(values, str(int(y) - 1)), ns)
            out = pc.if_else(syslog, ns.cast(target), out)
        for fmt in _TEXT_FORMATS:
            todo = pc.and_(pc.is_null(out), pc.is_valid(values))
            if not pc.any(todo).as_py():
                break
            parsed = pc.strptime(values, format=fmt, unit="ns", error_is_null=True)
            if parsed.type.tz is None:
                parsed = parsed.cast(pa.int64()).cast(target)
            out = pc.coalesce(out, parsed.cast(target))
    return out


def _syslog_date(values: pa.Array, year: str) -> pa.Array:
    text = pc.binary_join_element_wise(year, pc.replace_substring(values, "  ", " "), " ")
    parsed = pc.strptime(text, format="%Y %b %d %H:%M:%S", unit="ns", error_is_null=True)
    return parsed.cast(pa.int64())


def _cast_each(text: pa.Array, mask: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast the masked rows of `text` to `target`; rows that fail become null."""
    subset = pc.if_else(mask, text, pa.scalar(None, pa.string()))
    try:
        return subset.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        series = pl.from_arrow(subset)
        assert isinstance(series, pl.Series)
        parsed = series.str.to_datetime(time_unit="ns", time_zone="UTC", strict=False)
        return _plain(parsed.to_arrow()).cast(pa.int64()).cast(target)


def _to_timestamp(values: pa.Array) -> pa.Array:
    target = pa.timestamp("ns", tz="UTC")
    t = values.type
    if pa.types.is_timestamp(t):
        return values.cast(pa.timestamp("ns", tz=t.tz)).cast(pa.int64()).cast(target)
    if pa.types.is_integer(t):
        ints = values.cast(pa.int64())
        mag = pc.abs(ints)
        scaled = pc.case_when(
            pc.make_struct(
                pc.less(mag, 10_000_000_000),
                pc.less(mag, 10_000_000_000_000),
                pc.less(mag, 10_000_000_000_000_000),
            ),
            # case_when computes every branch; unchecked products of unchosen rows may wrap
            pc.multiply(ints, 1_000_000_000),
            pc.multiply(ints, 1_000_000),
            pc.multiply(ints, 1_000),
            ints,
        )
        return scaled.cast(target)
    if pa.types.is_floating(t):
        f = values.cast(pa.float64())
        f = pc.if_else(pc.is_finite(f), f, pa.scalar(None, pa.float64()))
        mag = pc.abs(f)
        scale = pc.case_when(
            pc.make_struct(pc.less(mag, 1e10), pc.less(mag, 1e13), pc.less(mag, 1e16)),
            1e9,
            1e6,
            1e3,
            1.0,
        )
        ns = pc.multiply(f, scale)
        ns = pc.if_else(pc.less(pc.abs(ns), 9.2e18), ns, pa.scalar(None, pa.float64()))
        return pc.round(ns).cast(pa.int64()).cast(target)
    if pa.types.is_string(t):
        return parse_timestamps(values)
    return pa.nulls(len(values), target)


def level_to_severity(values: pa.Array) -> pa.Array:
    """Return level words (``INFO``, ``warning``, ``Err``...) as OTel severity numbers (int8)."""
    words = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    return pc.take(_LEVEL_NUMBERS, pc.index_in(words, value_set=_LEVEL_NAMES))


def _to_severity(key: str, values: pa.Array) -> pa.Array:
    t = values.type
    if pa.types.is_string(t):
        return level_to_severity(values)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return pa.nulls(len(values), pa.int8())
    num = values.cast(pa.float64())
    if key in ("level", "lvl"):
        # pino/bunyan numbers: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal
        cuts = pc.make_struct(
            pc.less_equal(num, 10),
            pc.less_equal(num, 20),
            pc.less_equal(num, 30),
            pc.less_equal(num, 40),
            pc.less_equal(num, 50),
        )
        mapped = pc.case_when(cuts, 1, 5, 9, 13, 17, 21).cast(pa.int8())
        return pc.if_else(pc.is_null(num), pa.scalar(None, pa.int8()), mapped)
    # severity / severity_number: OTel numbers already
    clipped = pc.max_element_wise(pc.min_element_wise(pc.round(num), 24.0), 0.0)
    return clipped.cast(pa.int8())


def _to_string(values: pa.Array) -> pa.Array:
    t = values.type
    if pa.types.is_string(t):
        return values
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return values.cast(pa.string())
    return pa.nulls(len(values), pa.string())


def _to_int(values: pa.Array, target: pa.DataType) -> pa.Array:
    t = values.type
    if pa.types.is_string(t):
        ok = pc.fill_null(pc.match_substring_regex(values, r"^\s*\d{1,9}\s*$"), False)
        values = pc.if_else(ok, pc.utf8_trim_whitespace(values), pa.scalar(None, pa.string()))
        return values.cast(target)
    if pa.types.is_integer(t):
        ok = pc.and_(pc.greater_equal(values, 0), pc.less(values, 2**31))
        return pc.if_else(ok, values, pa.scalar(None, t)).cast(target)
    return pa.nulls(len(values), target)


def _coalesce(arrays: Sequence[pa.Array]) -> pa.Array | None:
    if not arrays:
        return None
    if len(arrays) == 1:
        return arrays[0]
    return pc.coalesce(*arrays)


def _is_scalar(t: pa.DataType) -> bool:
    return not (pa.types.is_nested(t) or pa.types.is_null(t))


def _plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Return one contiguous array with plain string/binary types (no large/view/dict)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    t = values.type
    if pa.types.is_dictionary(t):
        values = values.cast(t.value_type)
        t = values.type
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return values.cast(pa.string())
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return values.cast(pa.binary())
    return values


def split_lines(data: bytes) -> tuple[pa.Array, pa.Array, pa.Table]:
    """Return the non-blank lines of `data` (trailing CR removed), their 1-based numbers, and
    a rejected table for lines that are not UTF-8."""
    bad_no: list[int] = []
    bad_raw: list[str] = []
    bad_reason: list[str] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Rare path: find the lines that are not UTF-8 and keep the others.
        good: list[str] = []
        numbers: list[int] = []
        offset = 0
        for i, raw in enumerate(data.split(b"\n"), start=1):
            try:
                good.append(raw.decode("utf-8"))
                numbers.append(i)
            except UnicodeDecodeError as err:
                bad_no.append(i)
                bad_raw.append(raw.decode("utf-8", "replace"))
                bad_reason.append(
                    f"line {i}: invalid UTF-8 at byte {err.start} of the line "
                    f"(byte {offset + err.start} of the body)"
                )
            offset += len(raw) + 1
        lines: pa.Array = pa.array(good, pa.string())
        line_no: pa.Array = pa.array(numbers, pa.int64())
    else:
        lines = pc.split_pattern(pa.array([text], pa.string()), "\n").flatten()
        line_no = pa.array(np.arange(1, len(lines) + 1, dtype=np.int64))
    lines = pc.utf8_rtrim(lines, characters="\r")
    keep = pc.not_equal(pc.utf8_trim_whitespace(lines), "")
    return (
        lines.filter(keep),
        line_no.filter(keep),
        rejected_table(bad_no, bad_raw, bad_reason),
    )


def reject_rows(lines: pa.Array, line_no: pa.Array, mask: pa.Array, why: str) -> pa.Table:
    """Return a rejected table for the rows of `lines` where `mask` is true: 'line N: why'."""
    bad_lines = lines.filter(mask)
    bad_no = line_no.filter(mask)
    reason = pc.binary_join_element_wise("line ", bad_no.cast(pa.string()), f": {why}", "")
    return pa.table([bad_no, bad_lines, reason], schema=REJECTED_SCHEMA)


def concat_rejected(tables: Sequence[pa.Table]) -> pa.Table:
    """Return the rows of several rejected tables, ordered by line number."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return rejected_table()
    out = pa.concat_tables(tables)
    return out.sort_by("line_no") if len(tables) > 1 else out
