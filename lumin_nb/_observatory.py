"""The observatory: owns the collectors of this process, the store, and the flusher between.

Data flow inside one process: collectors (calls, tasks, logs, runtime metrics) append to
bounded buffers -> the ``lumin-flusher`` thread drains them every `flush_interval_s`, stamps
service/host/pid/producer/seq on whole batches, and appends them to the store, whose writer
makes them durable. Queries first drain the buffers, so what just happened is visible.
A read-only observatory (`lm.open`) has a store and no collectors.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lumin_nb._options import to_frame
from lumin_nb._time import TimeLike, parse_time
from lumin_nb.config import (
    DEFAULT_HOME,
    ENV_HOME,
    ENV_PROFILE,
    Config,
    ConfigManager,
    profile_config,
)
from lumin_nb.errors import LuminError

if TYPE_CHECKING:
    import pyarrow as pa

    from lumin_nb.agent import MonitoredProcess, Receiver
    from lumin_nb.collect.calls import CallTracer, TraceBlock
    from lumin_nb.collect.collectors import Collectors
    from lumin_nb.collect.logs import LogCollector
    from lumin_nb.collect.otel import OtelBridge
    from lumin_nb.collect.runtime_metrics import RuntimeMetrics
    from lumin_nb.collect.tasks import TaskCollector
    from lumin_nb.event import EventBuilder
    from lumin_nb.govern import CallCost, GovernorEvent, ResourceGovernor, SelfMonitor
    from lumin_nb.server import Server
    from lumin_nb.store import Store


#: how often the flusher applies the retention rules (age, size) to the store
RETENTION_EVERY_S = 60.0

#: where a running observatory writes its agents' endpoints and token (for `lumin run`)
AGENT_FILE = "agent.json"


class _AgentSink:
    """What agents' batches go through before the store: the profile's redaction.

    Agents stamp producer/seq and sample at the source, so rows are never dropped here (a
    dropped row would look like loss); PII is replaced when the profile redacts.
    """

    def __init__(self, observatory: Observatory) -> None:
        self._obs = observatory

    def append(self, batch: pa.RecordBatch) -> int:
        if self._obs.config.redact:
            from lumin_nb.ingest import redact

            batch, _ = redact(batch)
        return self._obs.store.append(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._obs.store, name)


class Status(dict[str, Any]):
    """What `lm.status()` returns: a dict that prints as a readable report."""

    def __repr__(self) -> str:
        width = max(len(k) for k in self) if self else 0
        lines = ["Lumin status"]
        for key, value in self.items():
            if isinstance(value, dict):
                lines.append(f"  {key}:")
                for k, v in value.items():
                    lines.append(f"    {k:<{width}} {v}")
            else:
                lines.append(f"  {key:<{width}} {value}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        rows = ["| | |", "|---|---|"]
        for key, value in self.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}: {v}" for k, v in value.items())
            rows.append(f"| {key} | {value} |")
        return "\n".join(rows)


def _check_kinds(kind: str | Sequence[str] | None) -> None:
    """Refuse an event kind that does not exist (a typo would silently match nothing)."""
    from lumin_nb.errors import UnknownValueError, closest
    from lumin_nb.event import KINDS

    for value in [kind] if isinstance(kind, str) else list(kind or ()):
        if value not in KINDS and not any(ch in value for ch in "*?["):
            raise UnknownValueError(
                f"kind={value!r} is not an event kind.{closest(value, KINDS)}\n"
                f"Expected one of: {', '.join(KINDS)}.\nFix: lm.events(kind='exception')"
            )


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Observatory:
    """One process's observatory: collectors, a store, and the queries over it.

    Create it with `Observatory.start(...)` (what `lm.start()` and `%load_ext lumin` call)
    or read a store with `Observatory.open(path)` (read-only, no collectors).
    """

    def __init__(self, store: Store, manager: ConfigManager, *, read_only: bool) -> None:
        self.store = store
        self.manager = manager
        self.read_only = read_only
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.producer = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.started_ns = time.time_ns()
        self._seq = 1
        self._sync_lock = threading.Lock()
        self._rates: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)
        self._stored = 0
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._drainer: threading.Thread | None = None
        self.builder: EventBuilder | None = None
        self.tracer: CallTracer | None = None
        self.logs: LogCollector | None = None
        self.tasks: TaskCollector | None = None
        self.runtime: RuntimeMetrics | None = None
        self.collectors: Collectors | None = None
        self.servers: list[Server] = []
        self.receiver: Receiver | None = None
        self.governor: ResourceGovernor | None = None
        self.monitor: SelfMonitor | None = None
        self.otel: OtelBridge | None = None
        self.is_running = False

    # -- life cycle ------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        *,
        profile: str | None = None,
        store: str | os.PathLike[str] | None = None,
        **changes: Any,
    ) -> Observatory:
        """Start collecting in this process into the store at `store` (see `lm.start`)."""
        from lumin_nb.store import Store

        config = profile_config(profile or os.environ.get(ENV_PROFILE, "dev"), **changes)
        path = Path(store or os.environ.get(ENV_HOME) or DEFAULT_HOME)
        st = Store.open(path, config=config)
        obs = cls(st, ConfigManager(config), read_only=False)
        try:
            obs._start_collectors()
        except BaseException:
            st.close()
            raise
        return obs

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Observatory:
        """Open the store at `path` read-only: every query works, nothing is collected."""
        from lumin_nb.store import Store

        st = Store.open(Path(path), read_only=True)
        return cls(st, ConfigManager(profile_config("dev")), read_only=True)

    def _start_collectors(self) -> None:
        from lumin_nb.collect.collectors import Collectors
        from lumin_nb.event import EventBuilder
        from lumin_nb.govern import call_cost

        cfg = self.config
        self.builder = EventBuilder(max_events=cfg.buffer_max_events)
        # calibrated once per process, before the tracer takes the tool id it needs
        cost = call_cost() if cfg.collect_calls else None
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self.collectors = Collectors(cfg, self.builder).start(loop=loop, always_tasks=True)
        self.tracer = self.collectors.tracer
        self.logs = self.collectors.logs
        self.tasks = self.collectors.tasks
        self.runtime = self.collectors.runtime
        if cfg.accept_agents:
            self.receiver_info()
        self._start_governor(cost)
        self.manager.subscribe(self._on_config_changed)
        self.store.record(
            "DebugSessionStarted",
            producer=self.producer,
            profile=cfg.profile,
            service=cfg.service,
            host=self.host,
            pid=self.pid,
        )
        self.is_running = True
        self._flusher = threading.Thread(target=self._flush_loop, name="lumin-flusher", daemon=True)
        self._flusher.start()
        if self.tracer is not None:
            self._drainer = threading.Thread(
                target=self._drain_loop, name="lumin-drain-calls", daemon=True
            )
            self._drainer.start()

    def _start_governor(self, cost: CallCost | None) -> None:
        from lumin_nb.collect import otel
        from lumin_nb.govern import Readings, ResourceGovernor, SelfMonitor

        def record(event: GovernorEvent) -> None:
            self.store.record(event["type"], **{k: v for k, v in event.items() if k != "type"})

        gov = self.governor = ResourceGovernor(self.config, on_event=record)
        tracer, runtime, builder = self.tracer, self.runtime, self.builder
        assert builder is not None
        if tracer is not None and cost is not None:
            gov.add_collector(
                "calls",
                threads=("lumin-drain-calls",),
                cpu_s=lambda: cost.cpu_s(tracer.stats()),
                turn_off=lambda: tracer.unwatch(*tracer.patterns),  # trace blocks end by themselves
            )
        if runtime is not None:
            gov.add_collector(
                "runtime_metrics",
                threads=("lumin-metrics",),
                turn_off=runtime.stop,
                turn_on=runtime.start,
            )
        self.otel = otel.install(builder)  # a no-op unless the app set OTel SDK providers
        gov.add_collector(
            "otel", cpu_s=self.otel.cpu_s, turn_off=self.otel.turn_off, turn_on=self.otel.turn_on
        )
        gov.add_collector("store", threads=("lumin-flusher", "lumin-store-writer"))
        gov.add_collector("agents", threads=("lumin-receiver", "lumin-serve"))
        gov.add_buffer("buffer", lambda: len(builder) * 256)  # ~bytes per pending event

        def readings() -> Readings:
            dropped = {"buffer": builder.dropped}
            if tracer is not None:
                dropped["calls"] = int(tracer.stats()["dropped"])  # type: ignore[call-overload]
            return Readings(
                events_total=self._stored,
                queue_depth={"buffer": len(builder)},
                dropped=dropped,
                store_bytes=int(self.store.stats().get("bytes_on_disk", 0)),  # type: ignore[call-overload]
            )

        self.monitor = SelfMonitor(
            builder, readings, governor=gov, interval_s=self.config.metrics_interval_s
        )
        gov.start(interval_s=1.0, on_tick=self.monitor.tick)

    def stop(self) -> None:
        """Stop every collector, store what they hold, and close the store (idempotent)."""
        if self.read_only:
            self.store.close()
            return
        if not self.is_running:
            return
        for server in self.servers:  # first, so no request is answered 503 mid-shutdown
            server.stop()
        self.servers.clear()
        if self.receiver is not None:  # before the store closes: what agents sent is kept
            self.receiver.stop()
            self.receiver = None
            (self.store.path / AGENT_FILE).unlink(missing_ok=True)
        self.is_running = False
        self._stop.set()
        if self.governor is not None:
            self.governor.stop()
        if self.otel is not None:
            from lumin_nb.collect import otel

            otel.uninstall()
            self.otel = None
        if self._flusher is not None:
            self._flusher.join(timeout=10)
        if self._drainer is not None:
            self._drainer.join(timeout=10)
        if self.collectors is not None:
            self.collectors.stop()
        self.sync()
        self.store.record("DebugSessionEnded", producer=self.producer, events=self._stored)
        self.store.close()

    def __enter__(self) -> Observatory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def config(self) -> Config:
        """The live configuration."""
        return self.manager.config

    def configure(self, **changes: Any) -> Config:
        """Change settings at run time; each change is checked and recorded (ConfigChanged)."""
        return self.manager.update(**changes)

    def _on_config_changed(self, config: Config, changes: dict[str, Any]) -> None:
        self.store.record("ConfigChanged", profile=config.profile, changes=changes)
        if self.logs is not None:
            self.logs.setLevel(config.log_level)
        if self.runtime is not None:
            self.runtime.interval_s = config.metrics_interval_s
        if self.builder is not None:
            self.builder.max_events = config.buffer_max_events
        if self.tracer is not None:
            self.tracer.sample_rate = config.call_sample_rate
        if self.governor is not None:
            self.governor.set_budget(config.overhead_budget)
        if self.monitor is not None:
            self.monitor.interval_s = config.metrics_interval_s

    # -- the flusher ---------------------------------------------------------------------
    def _flush_loop(self) -> None:
        next_retention = time.monotonic() + RETENTION_EVERY_S
        while not self._stop.wait(self.config.flush_interval_s):
            try:
                self.sync()
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + RETENTION_EVERY_S
                    self.store.compact()
            except Exception as exc:  # the flusher must outlive a bad batch
                self._last_error = repr(exc)

    def _drain_loop(self) -> None:
        # The native ring fills in ~150 ms when hot code is watched: drain it as soon as it
        # is half full (the tracer wakes us), not only at the flush interval.
        tracer = self.tracer
        assert tracer is not None
        while not self._stop.is_set():
            try:
                tracer.wait_for_drain(0.1)
                batch = tracer.drain()
                if batch is not None and batch.num_rows:
                    self._append(batch)
            except Exception as exc:
                self._last_error = repr(exc)

    def _append(self, batch: pa.RecordBatch) -> int:
        with self._sync_lock:
            moved = self.store.append(self._stamp(batch))
            self._stored += moved
            self._rates.append((time.monotonic(), self._stored))
        return moved

    def sync(self) -> int:
        """Move everything the collectors hold into the store now; return the rows moved."""
        if self.read_only or self.builder is None:
            return 0
        moved = 0
        batch = self.builder.build()
        if batch is not None and self.governor is not None:
            # logs, tasks, metrics: the profile's per-source rate limit (errors always pass).
            # Calls are bounded by sampling and the tracer's ring instead.
            batch = self.governor.admit_batch("buffer", batch)
        batches = [batch, self.tracer.drain() if self.tracer is not None else None]
        for batch in batches:
            if batch is not None and batch.num_rows:
                moved += self._append(batch)
        return moved

    def _stamp(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from lumin_nb.event import EVENT_SCHEMA, with_producer

        n = batch.num_rows
        zeros = pa.array(np.zeros(n, dtype=np.int32))

        def constant(value: str) -> pa.DictionaryArray:
            return pa.DictionaryArray.from_arrays(zeros, pa.array([value]))

        cols = dict(zip(batch.schema.names, batch.columns, strict=True))
        for name, value in (("service", self.config.service), ("host", self.host)):
            col = cols[name]
            if col.null_count == n:
                cols[name] = constant(value)
            elif col.null_count:  # some rows (OTel spans, say) name their own
                filled = pc.fill_null(col.cast(pa.string()), pa.scalar(value))
                cols[name] = pc.dictionary_encode(filled).cast(EVENT_SCHEMA.field(name).type)
        if cols["pid"].null_count:
            cols["pid"] = pc.fill_null(cols["pid"], pa.scalar(self.pid, pa.int32()))
        stamped = pa.RecordBatch.from_arrays(list(cols.values()), schema=EVENT_SCHEMA)
        first, self._seq = self._seq, self._seq + n
        return with_producer(stamped, self.producer, first)

    # -- collectors ------------------------------------------------------------------
    def _require_tracer(self) -> CallTracer:
        if self.tracer is None:
            raise LuminError(
                "call tracing is off in this observatory (collect_calls=False or read-only).\n"
                "Fix: lm.stop(); lm.start(collect_calls=True)"
            )
        return self.tracer

    def watch(self, *patterns: str) -> tuple[str, ...]:
        """Trace calls of code whose module (or module:qualname) matches a pattern."""
        tracer = self._require_tracer()
        tracer.watch(*patterns)
        return tracer.patterns

    def unwatch(self, *patterns: str) -> tuple[str, ...]:
        """Stop tracing these patterns (all of them when none is given)."""
        tracer = self._require_tracer()
        tracer.unwatch(*(patterns or tracer.patterns))
        return tracer.patterns

    @contextlib.contextmanager
    def trace(
        self, name: str = "trace", *, include_libraries: bool = False
    ) -> Iterator[TraceBlock]:
        """Trace every call made inside the block (stdlib and Lumin excluded)."""
        tracer = self._require_tracer()
        with tracer.trace(name, include_libraries=include_libraries) as block:
            yield block

    def record_exception(self, exc: BaseException, phase: str = "unhandled") -> None:
        """Record an exception that nothing caught (the kernel's cells, threads)."""
        if self.tasks is not None:
            self.tasks.record_exception(exc, phase)

    # -- monitored processes -------------------------------------------------------------
    def receiver_info(self) -> dict[str, str]:
        """Start the agents' receiver if needed; return its endpoints and token.

        They are also written (mode 0600) to ``<store>/agent.json`` so `lumin run` in a
        terminal can reach this observatory.
        """
        from lumin_nb.agent import start_receiver

        if self.receiver is None:
            self.receiver = start_receiver(_AgentSink(self))  # type: ignore[arg-type]
            info = {
                "endpoint": self.receiver.endpoint,
                "control_endpoint": self.receiver.control_endpoint,
                "token": self.receiver.token,
            }
            path = self.store.path / AGENT_FILE
            path.touch(mode=0o600)
            path.write_text(json.dumps(info))
        rx = self.receiver
        return {"endpoint": rx.endpoint, "control_endpoint": rx.control_endpoint, "token": rx.token}

    def run(
        self,
        argv: Sequence[str],
        *,
        service: str,
        watch: Sequence[str] = (),
        env: dict[str, str] | None = None,
        **popen: Any,
    ) -> MonitoredProcess:
        """Start `argv` as a monitored process shipping to this observatory; see `lm.run`."""
        from lumin_nb.agent import spawn

        info = self.receiver_info()
        return spawn(
            list(argv),
            service=service,
            endpoint=info["endpoint"],
            control_endpoint=info["control_endpoint"],
            token=info["token"],
            env=env,
            watch=tuple(watch),
            query=self.events,
            receiver=self.receiver,
            **popen,
        )

    # -- servers -----------------------------------------------------------------------
    def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_body_bytes: int | None = None,
        rate_limit_per_s: float | None = None,
    ) -> Server:
        """Start the HTTP server (ingestion, OTLP, status) of this observatory; see `lm.serve`."""
        from lumin_nb.server import DEFAULT_MAX_BODY_BYTES, DEFAULT_RATE_LIMIT_PER_S, start_server

        server = start_server(
            self,
            host=host,
            port=port,
            token=token,
            max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES,
            rate_limit_per_s=rate_limit_per_s or DEFAULT_RATE_LIMIT_PER_S,
        )
        self.servers.append(server)
        return server

    def rejected(self) -> Any:
        """Return the records the servers could not read: line_no, raw, reason."""
        import polars as pl
        import pyarrow as pa

        tables = [server.rejected() for server in self.servers]
        if not tables:
            schema = pa.schema(
                [("line_no", pa.int64()), ("raw", pa.string()), ("reason", pa.string())]
            )
            tables = [schema.empty_table()]
        df = pl.from_arrow(pa.concat_tables(tables, promote_options="default"))
        assert isinstance(df, pl.DataFrame)
        return to_frame(df)

    # -- queries -----------------------------------------------------------------------
    def events(
        self,
        *,
        since: TimeLike = None,
        until: TimeLike = None,
        kind: str | Sequence[str] | None = None,
        service: str | Sequence[str] | None = None,
        entity: str | Sequence[str] | None = None,
        min_severity: int | None = None,
        limit: int | None = None,
        columns: Sequence[str] | None = None,
        **filters: Any,
    ) -> Any:
        """Return events as a frame; see `lm.events`."""
        from lumin_nb.store.query import events_frame

        _check_kinds(kind)
        self.sync()
        df = events_frame(
            self.store,
            since=since,
            until=until,
            kind=kind,
            service=service,
            entity=entity,
            min_severity=min_severity,
            limit=limit,
            columns=list(columns) if columns is not None else None,
            **filters,
        )
        return to_frame(df)

    def _frame(self, **filters: Any) -> Any:
        """The events matching `filters` as a polars frame, whatever `options.frame` says."""
        from lumin_nb.store.query import events_frame

        self.sync()
        return events_frame(self.store, **filters)

    def log_patterns(
        self,
        events: Any = None,
        *,
        since: TimeLike = None,
        until: TimeLike = None,
        service: str | Sequence[str] | None = None,
        entity: str | Sequence[str] | None = None,
    ) -> Any:
        """Return the log templates of `events` (default: the stored log events); see
        `lm.log_patterns`."""
        from lumin_nb.analysis import log_patterns

        if events is None:
            events = self._frame(kind="log", since=since, until=until)
        frame = log_patterns(events, since=since, until=until, service=service, entity=entity)
        return to_frame(frame)

    def anomalies(
        self,
        events: Any = None,
        *,
        since: TimeLike = None,
        until: TimeLike = None,
        entity: str | Sequence[str] | None = None,
        every: str | None = None,
    ) -> Any:
        """Return online anomaly scores of metric series and event rates; see `lm.anomalies`."""
        from lumin_nb.analysis import anomalies

        if events is None:
            columns = ["ts", "kind", "entity", "value"]
            events = self._frame(since=since, until=until, columns=columns)
        frame = anomalies(events, since=since, until=until, entity=entity, every=every)
        return to_frame(frame)

    def sql(self, text: str) -> Any:
        """Run DuckDB SQL over the view `events` (and `history`); see `lm.sql`."""
        import polars as pl

        from lumin_nb.store.query import sql_table

        self.sync()
        df = pl.from_arrow(sql_table(self.store, text))
        assert isinstance(df, pl.DataFrame)
        return to_frame(df)

    def history(
        self, *, type: str | None = None, since: TimeLike = None, until: TimeLike = None
    ) -> Any:
        """Return the domain events (sessions, config changes, batches recorded)."""
        import polars as pl

        self.store.flush()
        table = self.store.history(
            type=type,
            since_ns=parse_time(since, name="since"),
            until_ns=parse_time(until, name="until"),
        )
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        return to_frame(df)

    def status(self) -> Status:
        """Return what runs, how fast events arrive, what was dropped, and the store."""
        self.sync()
        stats = self.store.stats()
        rate = 0.0
        if len(self._rates) >= 2:
            t1, n1 = self._rates[-1]
            # the oldest sample of the last 10 s (the newest one always qualifies)
            t0, n0 = next((t, n) for t, n in self._rates if t1 - t <= 10.0)
            rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        collectors: dict[str, str] = {}
        dropped: dict[str, int] = {}
        if self.tracer is not None:
            ts = self.tracer.stats()
            watching = ", ".join(self.tracer.patterns) or "nothing (lm.watch / lm.trace)"
            collectors["calls"] = f"{ts['mode']}; watching {watching}"
            dropped["calls"] = int(ts.get("dropped", 0))  # type: ignore[call-overload]
        else:
            collectors["calls"] = "off"
        collectors["otel"] = (
            str(self.otel.stats().get("tracer_provider", "on")) if self.otel is not None else "off"
        )
        collectors["logs"] = "on" if self.logs is not None else "off"
        collectors["tasks"] = (
            "on" if self.tasks is not None and self.config.collect_tasks else "off"
        )
        collectors["runtime_metrics"] = (
            f"every {self.config.metrics_interval_s:g}s" if self.runtime is not None else "off"
        )
        if self.builder is not None:
            dropped["buffer"] = self.builder.dropped
        size = int(stats.get("bytes_on_disk", 0))  # type: ignore[call-overload]
        servers = {s.url: "running" if s.is_running else "stopped" for s in self.servers}
        agents = self.receiver.agents() if self.receiver is not None else []
        return Status(
            state="read-only" if self.read_only else ("running" if self.is_running else "stopped"),
            profile=self.config.profile,
            service=self.config.service,
            producer=self.producer,
            collectors=collectors,
            events_per_s=round(rate, 1),
            events_stored=stats.get("events_stored", 0),
            dropped=dropped,
            store=str(self.store.path),
            store_size=_human_bytes(size),
            servers=servers or "none (lm.serve())",
            agents={a["producer"]: f"{a['service']} pid {a['pid']}" for a in agents}
            or "none (lm.run([...]))",
            governor=self.governor.status() if self.governor is not None else "off",
        )
