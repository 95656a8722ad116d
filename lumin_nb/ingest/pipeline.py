"""The ingest pipeline: validate -> enrich -> redact -> sample -> batch, on whole Arrow batches.

Every source (agent batches, parsed external logs, OTLP) goes through one `Pipeline` before
the store. Row-level problems never fail a batch: rows with nulls in required columns, an
unknown kind or source type, a severity outside 0..24, a negative duration or attrs that are
not a JSON object go to a bounded dead-letter table (`Pipeline.rejected()`) with the reason;
the other rows go on. ``producer`` is not checked: the store stamps it afterwards
(`lumin_nb.event.with_producer`). Redaction counts become ``lumin.redacted`` metric events
(attrs ``{"rule": ...}``), which are never sampled out. Small batches are coalesced up to
``max_batch_rows`` rows or ``max_delay_ms`` before the sink is called.

`parse` is the one entry for text: it dispatches on ``format`` to the parsers of this package.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc

from lumin_nb.config import Config
from lumin_nb.errors import IngestError, closest
from lumin_nb.event import COLUMNS, EVENT_SCHEMA, KINDS, SOURCE_TYPES, batch_from_columns
from lumin_nb.ingest.fields import (
    REJECTED_SCHEMA,
    ParseResult,
    concat_batches,
    rejected_table,
)
from lumin_nb.ingest.grok import parse_grok, parse_regex
from lumin_nb.ingest.jsonlog import parse_json, parse_ndjson
from lumin_nb.ingest.logfmt import parse_logfmt
from lumin_nb.ingest.redact import Redactor
from lumin_nb.ingest.sample import AdaptiveSampler, sample
from lumin_nb.ingest.syslog import parse_syslog

Format = Literal["ndjson", "json_lines", "json", "logfmt", "syslog", "regex", "grok"]
FORMATS: Final[tuple[str, ...]] = get_args(Format)

Sink = Callable[[pa.RecordBatch], object]

# Required columns the pipeline checks (producer is stamped downstream).
_CHECKED: Final = ("event_id", "ts", "kind", "source_type", "severity", "seq")


def parse(
    data: bytes,
    format: str = "ndjson",
    pattern: str | None = None,
    *,
    service: str | None = None,
    host: str | None = None,
) -> ParseResult:
    """Return the events and rejected lines of `data` read as `format`.

    Formats: ``ndjson``/``json_lines`` (one object per line), ``json`` (an array as Vector's
    and Fluent Bit's ``json`` send, or NDJSON), ``logfmt``, ``syslog`` (RFC 5424 and 3164),
    ``regex`` (RE2 with named groups) and ``grok`` (``%{PATTERN:field}`` or a library name
    such as ``COMBINEDAPACHELOG``), both needing `pattern`.

    Raises
    ------
    IngestError
        For an unknown format, a missing or bad pattern.
    """
    if format in ("ndjson", "json_lines"):
        return parse_ndjson(data, service=service, host=host)
    if format == "json":
        return parse_json(data, service=service, host=host)
    if format == "logfmt":
        return parse_logfmt(data, service=service, host=host)
    if format == "syslog":
        return parse_syslog(data, service=service, host=host)
    if format in ("regex", "grok"):
        if not pattern:
            raise IngestError(
                f"format={format!r} needs a pattern.\n"
                "Expected a regex with named groups or a grok expression / library name.\n"
                f'Fix: parse(data, format="grok", pattern="COMBINEDAPACHELOG")'
            )
        parser = parse_grok if format == "grok" else parse_regex
        return parser(data, pattern=pattern, service=service, host=host)
    raise IngestError(
        f"format={format!r} is not a log format Lumin reads.{closest(format, FORMATS)}\n"
        f"Expected one of: {', '.join(FORMATS)}.\n"
        'Fix: parse(data, format="ndjson")'
    )


@dataclass(frozen=True)
class PipelineResult:
    """What one `Pipeline.process` call did.

    ``accepted``: rows passed on to the batcher; ``rejected``: the dead-lettered rows of this
    call (line_no, raw, reason); ``redacted``: replacements per rule; ``sampled_out``: rows
    dropped by sampling.
    """

    accepted: int
    rejected: pa.Table
    redacted: dict[str, int] = field(default_factory=dict)
    sampled_out: int = 0


class Pipeline:
    """Runs event batches through validate -> enrich -> redact -> sample -> batch -> sink.

    Parameters
    ----------
    config
        The observatory's Config; ``config.redact`` switches redaction on.
    service, host, pid
        Filled in on rows where they are null (host defaults to this machine's name).
    sink
        Called with each coalesced RecordBatch (the store's append).
    redactor
        The rules to apply when ``config.redact`` (default `Redactor()`).
    sample_rate, target_events_per_s
        A fixed rate, or a target for `AdaptiveSampler` (which then wins).
    slow_ns
        Events at least this long are always kept.
    max_batch_rows, max_delay_ms
        The sink gets a batch once this many rows are pending or the oldest pending row is
        this old (checked on each call and by `poll`).
    max_rejected_rows
        The dead-letter table keeps at most this many rows (oldest dropped, counted).
    clock
        Monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        config: Config,
        *,
        service: str | None = None,
        host: str | None = None,
        pid: int | None = None,
        sink: Sink | None = None,
        redactor: Redactor | None = None,
        sample_rate: float = 1.0,
        target_events_per_s: float | None = None,
        slow_ns: int | None = 1_000_000_000,
        max_batch_rows: int = 65_536,
        max_delay_ms: float = 200.0,
        max_rejected_rows: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise IngestError(
                f"sample_rate={sample_rate!r}: expected a fraction between 0.0 and 1.0.\n"
                "Fix: Pipeline(config, sample_rate=0.1)"
            )
        self.config = config
        self.service = service or config.service
        self.host = host or socket.gethostname()
        self.pid = pid
        self.sink = sink
        self.redactor = redactor or (Redactor() if config.redact else None)
        self.sample_rate = sample_rate
        self.sampler = (
            AdaptiveSampler(target_events_per_s, slow_ns=slow_ns, clock=clock)
            if target_events_per_s
            else None
        )
        self.slow_ns = slow_ns
        self.max_batch_rows = max_batch_rows
        self.max_delay_ms = max_delay_ms
        self.max_rejected_rows = max_rejected_rows
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_since: float | None = None
        self._dead: deque[pa.Table] = deque()
        self._dead_rows = 0
        #: dead-letter rows dropped because the table was full
        self.rejected_dropped = 0
        #: totals since start: accepted, rejected, sampled_out, and per redaction rule
        self.totals: dict[str, int] = {"accepted": 0, "rejected": 0, "sampled_out": 0}

    # -- stages ---------------------------------------------------------------------------

    def ingest(
        self, data: bytes, *, format: str = "ndjson", pattern: str | None = None
    ) -> PipelineResult:
        """Parse `data` (see `parse`) and process its events; parse rejects are dead-lettered."""
        parsed = parse(data, format, pattern, service=self.service, host=self.host)
        result = self.process(parsed.batch)
        if parsed.rejected.num_rows:
            self._dead_letter(parsed.rejected)
            rejected = pa.concat_tables([parsed.rejected, result.rejected])
            return PipelineResult(result.accepted, rejected, result.redacted, result.sampled_out)
        return result

    def process(self, batch: pa.RecordBatch) -> PipelineResult:
        """Run `batch` through the stages; return what was accepted, rejected and dropped."""
        if isinstance(batch, pa.Table):
            batch = concat_batches(batch.to_batches()) if batch.num_rows else batch.to_batches()
        good, rejected = self.validate(batch)
        if rejected.num_rows:
            self._dead_letter(rejected)
        good = self.enrich(good)
        counts: dict[str, int] = {}
        if self.redactor is not None and good.num_rows:
            good, counts = self.redactor(good)
        if self.sampler is not None:
            good, dropped = self.sampler(good)
        else:
            good, dropped = sample(good, self.sample_rate, slow_ns=self.slow_ns)
        accepted = good.num_rows
        with self._lock:
            self.totals["accepted"] += accepted
            self.totals["rejected"] += rejected.num_rows
            self.totals["sampled_out"] += dropped
            for rule, n in counts.items():
                key = f"redacted.{rule}"
                self.totals[key] = self.totals.get(key, 0) + n
        if good.num_rows:
            self._add(good)
        if counts:
            self._add(self._redaction_metrics(counts))
        self.poll()
        return PipelineResult(accepted, rejected, counts, dropped)

    def validate(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.Table]:
        """Return the rows of `batch` that fit the event schema, and the rejected ones."""
        n = batch.num_rows
        conformed = _conform(batch)
        if isinstance(conformed, str):
            return _empty(), rejected_table(
                [0], [f"<batch of {n} rows: {', '.join(batch.schema.names)}>"], [conformed]
            )
        batch = conformed
        reason = pa.nulls(n, pa.string())

        def flag(bad: pa.Array, why: str) -> None:
            nonlocal reason
            bad = pc.fill_null(bad, False)
            if pc.any(bad).as_py():
                reason = pc.if_else(pc.and_(bad, pc.is_null(reason)), why, reason)

        for name in _CHECKED:
            col = batch.column(name)
            if col.null_count:
                flag(pc.is_null(col), f"{name} is null (a required column)")
        kind = batch.column("kind")
        flag(
            pc.invert(pc.is_in(kind.cast(pa.string()), value_set=pa.array(KINDS))),
            f"kind not one of {', '.join(KINDS)}",
        )
        source = batch.column("source_type")
        flag(
            pc.invert(pc.is_in(source.cast(pa.string()), value_set=pa.array(SOURCE_TYPES))),
            f"source_type not one of {', '.join(SOURCE_TYPES)}",
        )
        sev = batch.column("severity")
        flag(pc.or_(pc.less(sev, 0), pc.greater(sev, 24)), "severity outside 0..24 (OTel)")
        flag(pc.less(batch.column("duration_ns"), 0), "negative duration_ns")
        attrs = batch.column("attrs")
        if attrs.null_count < n:
            stripped = pc.utf8_trim_whitespace(attrs)
            obj = pc.and_(pc.starts_with(stripped, "{"), pc.ends_with(stripped, "}"))
            flag(pc.invert(obj), "attrs is not a JSON object ('{...}')")
        if reason.null_count == n:
            return batch, rejected_table()
        bad = pc.is_valid(reason)
        idx = pc.indices_nonzero(bad)
        rows = batch.take(idx).to_pylist()
        raw = [json.dumps(r, default=_jsonable, ensure_ascii=False) for r in rows]
        reasons = [
            f"row {i}: {r}"
            for i, r in zip(idx.to_pylist(), pc.take(reason, idx).to_pylist(), strict=True)
        ]
        rejected = pa.table(
            [idx.cast(pa.int64()), pa.array(raw, pa.string()), pa.array(reasons, pa.string())],
            schema=REJECTED_SCHEMA,
        )
        return batch.filter(pc.invert(bad)), rejected

    def enrich(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Return `batch` with service, host (and pid when given) filled where null."""
        if batch.num_rows == 0:
            return batch
        columns = list(batch.columns)
        changed = False
        for name, value in (("service", self.service), ("host", self.host)):
            i = EVENT_SCHEMA.get_field_index(name)
            col = columns[i]
            if value is not None and col.null_count:
                filled = pc.fill_null(col.cast(pa.string()), value)
                columns[i] = pc.dictionary_encode(filled).cast(EVENT_SCHEMA.field(name).type)
                changed = True
        i = EVENT_SCHEMA.get_field_index("pid")
        if self.pid is not None and columns[i].null_count:
            columns[i] = pc.fill_null(columns[i], pa.scalar(self.pid, pa.int32()))
            changed = True
        if not changed:
            return batch
        return pa.RecordBatch.from_arrays(columns, schema=EVENT_SCHEMA)

    # -- batching -------------------------------------------------------------------------

    def _add(self, batch: pa.RecordBatch) -> None:
        with self._lock:
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
            if self._pending_since is None:
                self._pending_since = self._clock()

    def poll(self) -> int:
        """Flush when enough rows are pending or the oldest is old enough; return rows sent."""
        with self._lock:
            due = self._pending_rows >= self.max_batch_rows or (
                self._pending_since is not None
                and (self._clock() - self._pending_since) * 1000.0 >= self.max_delay_ms
            )
        return self.flush() if due else 0

    def flush(self) -> int:
        """Send every pending row to the sink now; return how many rows were sent."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._pending_rows = 0
            self._pending_since = None
        # Coalesce runs of small batches; a large batch goes on alone (no copy).
        small = max(1, self.max_batch_rows // 4)
        out: list[pa.RecordBatch] = []
        run: list[pa.RecordBatch] = []
        for batch in pending:
            if batch.num_rows >= small:
                if run:
                    out.append(concat_batches(run))
                    run = []
                out.append(batch)
            else:
                run.append(batch)
        if run:
            out.append(concat_batches(run))
        for batch in out:
            if self.sink is not None:
                self.sink(batch)
        return sum(int(b.num_rows) for b in out)

    @property
    def pending_rows(self) -> int:
        """Return how many rows wait for the next flush."""
        return self._pending_rows

    # -- dead letters ---------------------------------------------------------------------

    def _dead_letter(self, rows: pa.Table) -> None:
        with self._lock:
            self._dead.append(rows)
            self._dead_rows += rows.num_rows
            while self._dead_rows > self.max_rejected_rows and self._dead:
                extra = self._dead_rows - self.max_rejected_rows
                oldest = self._dead[0]
                if oldest.num_rows <= extra:
                    self._dead.popleft()
                    self._dead_rows -= oldest.num_rows
                    self.rejected_dropped += oldest.num_rows
                else:
                    self._dead[0] = oldest.slice(extra)
                    self._dead_rows -= extra
                    self.rejected_dropped += extra

    def rejected(self) -> pa.Table:
        """Return the dead-letter table (line_no, raw, reason), oldest first, bounded."""
        with self._lock:
            tables = list(self._dead)
        if not tables:
            return rejected_table()
        return pa.concat_tables(tables)

    def _redaction_metrics(self, counts: dict[str, int]) -> pa.RecordBatch:
        rules = list(counts)
        return batch_from_columns(
            len(rules),
            kind="metric",
            source_type="metric",
            severity=0,
            service=self.service,
            host=self.host,
            entity="lumin.redacted",
            value=pa.array([float(counts[r]) for r in rules]),
            attrs=pa.array([json.dumps({"rule": r}) for r in rules]),
            seq=0,
        )


def _conform(batch: pa.RecordBatch) -> pa.RecordBatch | str:
    """Return `batch` as EVENT_SCHEMA (columns reordered, types cast), or why it cannot be."""
    names = batch.schema.names
    missing = [c for c in COLUMNS if c not in names]
    extra = [c for c in names if c not in COLUMNS]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unknown column(s) {extra} (put extra fields in attrs)")
        return "batch does not fit the event schema: " + "; ".join(parts)
    if batch.schema.equals(EVENT_SCHEMA, check_metadata=False) and names == list(COLUMNS):
        return batch
    try:
        arrays = [batch.column(c).cast(EVENT_SCHEMA.field(c).type) for c in COLUMNS]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
        return f"batch does not fit the event schema: {err}"
    return pa.RecordBatch.from_arrays(arrays, schema=EVENT_SCHEMA)


def _empty() -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([], f.type) for f in EVENT_SCHEMA], schema=EVENT_SCHEMA
    )


def _jsonable(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
