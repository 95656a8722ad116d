"""The canonical event: one Arrow schema for every signal Lumin collects.

Everything upstream (collectors, agents, parsers) produces `pa.RecordBatch`es of
`EVENT_SCHEMA`; everything downstream (store, views, analysis) reads them. The schema version
lives in the schema metadata under ``lumin.schema_version``; a reader refuses a newer one.

Builders are vectorised: `batch_from_columns` takes whole columns (arrays, lists or one scalar
broadcast to every row) and `EventBuilder` collects scalars in per-column lists for sources
that see one event at a time (logs, threads), so no dict per event is kept.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lumin_nb.errors import SchemaError

SCHEMA_VERSION: Final = "1"

KINDS: Final = (
    "span",
    "call",
    "exception",
    "log",
    "metric",
    "process",
    "thread",
    "task",
    "gc",
    "probe",
    "annotation",
    "message",
)
SOURCE_TYPES: Final = (
    "otel",
    "runtime",
    "dynamic_probe",
    "internal_log",
    "external_log",
    "metric",
    "runtime_metric",
    "user",
)

# OpenTelemetry severity numbers (the first of each range).
SEVERITY_UNSET: Final = 0
SEVERITY_DEBUG: Final = 5
SEVERITY_INFO: Final = 9
SEVERITY_WARN: Final = 13
SEVERITY_ERROR: Final = 17
SEVERITY_FATAL: Final = 21

_DICT: Final = pa.dictionary(pa.int32(), pa.string())

EVENT_SCHEMA: Final = pa.schema(
    [
        pa.field("event_id", pa.binary(16), nullable=False),
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("duration_ns", pa.int64()),
        pa.field("kind", _DICT, nullable=False),
        pa.field("source_type", _DICT, nullable=False),
        pa.field("severity", pa.int8(), nullable=False),
        pa.field("service", _DICT),
        pa.field("host", _DICT),
        pa.field("pid", pa.int32()),
        pa.field("tid", pa.int64()),
        pa.field("task", pa.string()),
        pa.field("trace_id", pa.binary(16)),
        pa.field("span_id", pa.binary(8)),
        pa.field("parent_span_id", pa.binary(8)),
        pa.field("entity", _DICT),
        pa.field("message", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("attrs", pa.string()),
        pa.field("producer", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
    ],
    metadata={"lumin.schema_version": SCHEMA_VERSION},
)

COLUMNS: Final = tuple(EVENT_SCHEMA.names)
_REQUIRED: Final = frozenset(f.name for f in EVENT_SCHEMA if not f.nullable)
_DEFAULTS: Final[Mapping[str, Any]] = {"severity": 0, "source_type": "runtime", "seq": 0}


def empty_table() -> pa.Table:
    """Return an events table with no rows."""
    return EVENT_SCHEMA.empty_table()


class _IdSource:
    """Random bits for UUIDv7 ids; reseeded after fork so children never repeat a parent."""

    def __init__(self) -> None:
        self._pid = -1
        self._lock = threading.Lock()
        self._rng = np.random.default_rng()

    def bits(self, n: int) -> np.ndarray:
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
            return self._rng.integers(0, 256, size=(n, 10), dtype=np.uint8)


_ids = _IdSource()


def new_event_ids(ts_ns: np.ndarray | Sequence[int]) -> pa.FixedSizeBinaryArray:
    """Return one time-ordered UUIDv7 per timestamp (RFC 9562, sub-millisecond in rand_a)."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    n = len(ts)
    out = np.empty((n, 16), dtype=np.uint8)
    ms = (ts // 1_000_000).astype(np.uint64)
    frac = (((ts % 1_000_000) * 4096) // 1_000_000).astype(np.uint16)  # 12 bits of sub-ms
    for i in range(6):
        out[:, i] = (ms >> np.uint64(8 * (5 - i))) & np.uint64(0xFF)
    out[:, 6] = 0x70 | ((frac >> 8) & 0x0F).astype(np.uint8)
    out[:, 7] = (frac & 0xFF).astype(np.uint8)
    rand = _ids.bits(n)
    out[:, 8] = 0x80 | (rand[:, 0] & 0x3F)
    out[:, 9:] = rand[:, 1:8]
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), n, [None, pa.py_buffer(out.tobytes())]
    )


def _column(name: str, value: Any, n: int) -> pa.Array:
    field = EVENT_SCHEMA.field(name)
    target = field.type
    if value is None:
        if name in _DEFAULTS:
            value = _DEFAULTS[name]
        else:
            return pa.nulls(n, type=target)
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if isinstance(value, pa.Array):
        arr = value
    elif isinstance(value, np.ndarray):
        arr = pa.array(value)
    elif isinstance(value, str | bytes | int | float | bool):
        scalar_type = target.value_type if pa.types.is_dictionary(target) else target
        if pa.types.is_timestamp(scalar_type):
            scalar_type = pa.int64()
        if pa.types.is_dictionary(target):
            return pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(n, dtype=np.int32)), pa.array([value], type=pa.string())
            )
        arr = pa.repeat(pa.scalar(value, type=scalar_type), n)
    else:
        arr = pa.array(list(value))
    if len(arr) != n:
        raise SchemaError(f"column {name!r} has {len(arr)} values, expected {n} (one per event).")
    if arr.type == target:
        return arr
    if pa.types.is_dictionary(target):
        if pa.types.is_dictionary(arr.type):
            return arr.cast(target)
        return pc.dictionary_encode(arr.cast(pa.string())).cast(target)
    if pa.types.is_timestamp(target) and pa.types.is_integer(arr.type):
        return arr.cast(pa.int64()).view(target) if arr.type != pa.int64() else arr.view(target)
    return arr.cast(target)


def batch_from_columns(n: int | None = None, /, **columns: Any) -> pa.RecordBatch:
    """Return a RecordBatch of EVENT_SCHEMA from whole columns.

    Each column is an Arrow array, a numpy array, a list, or a scalar repeated on every row;
    columns left out are null (or their default: severity 0, source_type "runtime", seq 0).
    ``ts`` may be epoch nanoseconds; ``event_id`` is generated from ``ts`` when absent.
    """
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise SchemaError(
            f"unknown event column(s) {sorted(unknown)}. The event columns are: "
            f"{', '.join(COLUMNS)}."
        )
    if n is None:
        n = next(
            (len(v) for v in columns.values() if isinstance(v, pa.Array | np.ndarray | list)),
            1,
        )
    if columns.get("ts") is None:
        columns["ts"] = np.full(n, time.time_ns(), dtype=np.int64)
    if columns.get("event_id") is None:
        ts = _column("ts", columns["ts"], n)
        columns["event_id"] = new_event_ids(ts.cast(pa.int64()).to_numpy(zero_copy_only=False))
    arrays = [_column(name, columns.get(name), n) for name in COLUMNS]
    return pa.RecordBatch.from_arrays(arrays, schema=EVENT_SCHEMA)


class EventBuilder:
    """Collects events one at a time in per-column lists and emits RecordBatches.

    Bounded: beyond ``max_events`` pending events new ones are dropped and counted, so a
    source never blocks or grows without limit. Thread-safe; `append` holds no lock across
    anything slow.
    """

    __slots__ = ("_cols", "_lock", "dropped", "max_events")

    _FIELDS: Final = tuple(c for c in COLUMNS if c not in ("event_id", "producer", "seq"))

    def __init__(self, max_events: int = 100_000) -> None:
        self.max_events = max_events
        self.dropped = 0
        self._lock = threading.Lock()
        self._cols: dict[str, list[Any]] = {c: [] for c in self._FIELDS}

    def __len__(self) -> int:
        return len(self._cols["ts"])

    def append(
        self,
        kind: str,
        *,
        ts: int | None = None,
        duration_ns: int | None = None,
        source_type: str = "runtime",
        severity: int = 0,
        service: str | None = None,
        host: str | None = None,
        pid: int | None = None,
        tid: int | None = None,
        task: str | None = None,
        trace_id: bytes | None = None,
        span_id: bytes | None = None,
        parent_span_id: bytes | None = None,
        entity: str | None = None,
        message: str | None = None,
        value: float | None = None,
        attrs: str | None = None,
    ) -> bool:
        """Add one event; return False when it was dropped because the builder is full."""
        with self._lock:
            cols = self._cols
            if len(cols["ts"]) >= self.max_events:
                self.dropped += 1
                return False
            cols["ts"].append(time.time_ns() if ts is None else ts)
            cols["duration_ns"].append(duration_ns)
            cols["kind"].append(kind)
            cols["source_type"].append(source_type)
            cols["severity"].append(severity)
            cols["service"].append(service)
            cols["host"].append(host)
            cols["pid"].append(pid)
            cols["tid"].append(tid)
            cols["task"].append(task)
            cols["trace_id"].append(trace_id)
            cols["span_id"].append(span_id)
            cols["parent_span_id"].append(parent_span_id)
            cols["entity"].append(entity)
            cols["message"].append(message)
            cols["value"].append(value)
            cols["attrs"].append(attrs)
            return True

    def build(self) -> pa.RecordBatch | None:
        """Return the pending events as one batch and start afresh; None when empty."""
        with self._lock:
            cols = self._cols
            if not cols["ts"]:
                return None
            self._cols = {c: [] for c in self._FIELDS}
        n = len(cols["ts"])
        arrays: dict[str, Any] = {}
        for name, values in cols.items():
            field = EVENT_SCHEMA.field(name)
            t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
            if pa.types.is_timestamp(t):
                t = pa.int64()
            arrays[name] = pa.array(values, type=t)
        return batch_from_columns(n, **arrays)


def problems(batch: pa.RecordBatch | pa.Table) -> list[str]:
    """Return every way `batch` breaks EVENT_SCHEMA, one line per bad column (empty if fine)."""
    found: list[str] = []
    names = batch.schema.names
    for name in COLUMNS:
        if name not in names:
            found.append(f"{name}: missing (expected {EVENT_SCHEMA.field(name).type})")
    for name in names:
        if name not in COLUMNS:
            found.append(f"{name}: not an event column (put extra fields in attrs)")
    for field in EVENT_SCHEMA:
        if field.name not in names:
            continue
        col = batch.column(field.name)
        if col.type != field.type:
            found.append(f"{field.name}: type {col.type}, expected {field.type}")
            continue
        if not field.nullable and col.null_count:
            found.append(f"{field.name}: {col.null_count} null value(s) in a required column")
        if len(col) == 0:
            continue
        if field.name == "kind":
            bad = _outside(col, KINDS)
            if bad:
                found.append(f"kind: unknown value(s) {bad}; expected one of {', '.join(KINDS)}")
        elif field.name == "source_type":
            bad = _outside(col, SOURCE_TYPES)
            if bad:
                found.append(
                    f"source_type: unknown value(s) {bad}; expected one of "
                    f"{', '.join(SOURCE_TYPES)}"
                )
        elif field.name == "severity":
            lo, hi = pc.min_max(col).values()
            if lo.as_py() is not None and (lo.as_py() < 0 or hi.as_py() > 24):
                found.append(f"severity: values from {lo} to {hi}; expected 0..24 (OTel)")
        elif field.name == "duration_ns":
            lo = pc.min(col).as_py()
            if lo is not None and lo < 0:
                found.append(f"duration_ns: negative value {lo}; durations are >= 0")
        elif field.name == "attrs":
            stripped = pc.utf8_trim_whitespace(col)
            ok = pc.and_(pc.starts_with(stripped, "{"), pc.ends_with(stripped, "}"))
            n_bad = pc.sum(pc.invert(pc.fill_null(ok, True))).as_py() or 0
            if n_bad:
                found.append(f"attrs: {n_bad} value(s) are not JSON objects ('{{...}}')")
    return found


def _outside(col: pa.Array | pa.ChunkedArray, allowed: Sequence[str]) -> list[str]:
    values = pc.unique(col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col)
    mask = pc.invert(pc.is_in(values, value_set=pa.array(list(allowed))))
    return sorted(v for v in values.filter(pc.fill_null(mask, False)).to_pylist() if v)[:5]


def validate(batch: pa.RecordBatch | pa.Table) -> None:
    """Raise SchemaError listing every bad column of `batch`; return None when it fits."""
    found = problems(batch)
    if found:
        raise SchemaError(
            f"the batch does not fit the Lumin event schema v{SCHEMA_VERSION} "
            f"({len(found)} problem(s)):\n  - "
            + "\n  - ".join(found)
            + "\nFix: build batches with lumin_nb.event.batch_from_columns(...), which fills "
            "defaults and casts types."
        )


def with_producer(batch: pa.RecordBatch, producer: str, first_seq: int) -> pa.RecordBatch:
    """Return `batch` stamped with its producer and consecutive seq numbers from first_seq."""
    n = batch.num_rows
    cols = [
        *batch.columns[:-2],
        pa.repeat(pa.scalar(producer, pa.string()), n),
        pa.array(np.arange(first_seq, first_seq + n, dtype=np.int64)),
    ]
    return pa.RecordBatch.from_arrays(cols, schema=EVENT_SCHEMA)
