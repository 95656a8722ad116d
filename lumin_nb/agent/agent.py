"""The agent: what runs inside a monitored process (DESIGN.md, data flow step 2).

Sources (lumin_nb.collect: logs, tasks, runtime metrics, the call tracer) append to bounded
buffers; `Agent.ship` takes ready batches into a bounded queue. One ``lumin-agent`` thread
drains them every `flush_interval_s`, stamps service/host/pid and the producer
(``service:host:pid:random``) with consecutive seq numbers, encodes Arrow IPC and sends over
ZeroMQ PUSH to the observatory's PULL. It keeps every sent batch until the observatory acks
it on the control channel (DEALER -> ROUTER), resends what is unacknowledged when the
observatory's session changes (it restarted) or after `resend_after_s`, and ZeroMQ reconnects
by itself. The same channel carries control ops (``configure``, ``watch``, ``status`` and any
op registered with `Agent.on`), each answered with a ``reply``.

Invariants:

- the program is never blocked: a full buffer, queue or unacknowledged backlog drops the new
  events before they get a seq, counts them by reason and ships the counts as ``metric``
  events ``lumin.agent.dropped`` (so a producer's seq has no gaps of its own making);
- a batch leaves the backlog only when acknowledged: a crash loses at most the unshipped tail;
- children inherit ``LUMIN_*`` (and ``LUMIN_PARENT_PRODUCER``), so subprocesses started by a
  monitored process are monitored; after ``fork`` the child gets a new producer, parent linked.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zmq

from lumin_nb.agent.autostart import (
    ENV_CONTROL,
    ENV_ENDPOINT,
    ENV_PARENT,
    ENV_SERVICE,
    ENV_TOKEN,
    ENV_WATCH,
)
from lumin_nb.agent.wire import decode_control, encode_batch, encode_control, encode_header
from lumin_nb.config import ENV_PROFILE, Config, ConfigManager, profile_config
from lumin_nb.errors import LuminError
from lumin_nb.event import EVENT_SCHEMA, EventBuilder, with_producer

if TYPE_CHECKING:
    from lumin_nb.collect.calls import CallTracer
    from lumin_nb.collect.collectors import Collectors
    from lumin_nb.collect.logs import LogCollector
    from lumin_nb.collect.runtime_metrics import RuntimeMetrics
    from lumin_nb.collect.tasks import TaskCollector


DROPPED_METRIC: Final = "lumin.agent.dropped"
HELLO_INTERVAL_S: Final = 0.25  #: until the observatory welcomed this agent
HELLO_IDLE_INTERVAL_S: Final = 5.0  #: once welcomed (a collect that ships also says hello)
SNDHWM: Final = 16
RESEND_MAX_S: Final = 60.0  #: the resend interval doubles per timed resend up to this


@dataclass(slots=True)
class _Pending:
    header: bytes
    payload: pa.Buffer
    rows: int
    sent_at: float | None = None


OpHandler = Callable[[dict[str, Any]], object]


class Agent:
    """Collects this process's events and ships them to an observatory.

    Parameters
    ----------
    endpoint
        The observatory's data endpoint (``Receiver.endpoint``).
    token
        The observatory's token.
    service
        The service name stamped on every event.
    control_endpoint
        The observatory's control endpoint; without it batches count as delivered once sent.
    profile, **changes
        The configuration (``LUMIN_PROFILE`` or "dev", then `changes`).
    watch
        Watch patterns for the call tracer.
    parent_producer
        The producer of the process that started this one (``LUMIN_PARENT_PRODUCER``).
    collect
        Run the profile's collectors (False: only `ship` feeds the agent, as in benchmarks).
    max_pending_bytes
        The unacknowledged backlog; beyond it new batches are dropped and counted.
    max_queued_batches
        Ready batches `ship` may queue before it drops and counts.
    resend_after_s
        Resend a batch not acknowledged after this long; the wait doubles after each such
        resend (up to `RESEND_MAX_S`) and is back to `resend_after_s` at the next ack.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        token: str,
        service: str,
        control_endpoint: str | None = None,
        profile: str | None = None,
        watch: Sequence[str] = (),
        parent_producer: str | None = None,
        collect: bool = True,
        max_pending_bytes: int = 256 << 20,
        max_queued_batches: int = 64,
        resend_after_s: float = 5.0,
        **changes: Any,
    ) -> None:
        config = profile_config(
            profile or os.environ.get(ENV_PROFILE, "dev"), service=service, **changes
        )
        self.manager = ConfigManager(config)
        self.endpoint = endpoint
        self.control_endpoint = control_endpoint
        self.token = token
        self.host = socket.gethostname()
        self.watch_patterns = tuple(watch)
        self.collect = collect
        self.max_pending_bytes = max_pending_bytes
        self.max_queued_batches = max_queued_batches
        self.resend_after_s = resend_after_s
        self.parent_producer = parent_producer
        self._ops: dict[str, OpHandler] = {
            "configure": self._op_configure,
            "watch": self._op_watch,
            "unwatch": self._op_unwatch,
            "status": lambda _m: self.stats(),
        }
        self.builder = EventBuilder(max_events=config.buffer_max_events)
        self.tracer: CallTracer | None = None
        self.logs: LogCollector | None = None
        self.tasks: TaskCollector | None = None
        self.runtime: RuntimeMetrics | None = None
        self._collectors: Collectors | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._wake_lock = threading.Lock()
        self._reset_identity()

    def _reset_identity(self) -> None:
        """A new producer, seq, backlog and sockets (at start and in a forked child)."""
        self.pid = os.getpid()
        service = self.config.service
        self.producer = f"{service}:{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self._seq = 1
        self._ready: collections.deque[pa.RecordBatch] = collections.deque()
        self._pending: collections.OrderedDict[int, _Pending] = collections.OrderedDict()
        self._pending_bytes = 0
        self.dropped: dict[str, int] = {}  # reason -> events dropped before stamping
        self._reported: dict[str, int] = {}
        self.sent_batches = 0
        self.resent_batches = 0
        self.acked_events = 0
        self._resend_after = self.resend_after_s  # doubles per timed resend, reset on ack
        self.session: str | None = None
        self.last_error: str | None = None
        self.failures = 0
        self._flush_requested = 0
        self._flush_done = 0
        self._stopping = False
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None

    @property
    def config(self) -> Config:
        """The live configuration."""
        return self.manager.config

    @property
    def is_running(self) -> bool:
        """Whether the agent thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> Agent:
        """Start the collectors and the ``lumin-agent`` thread; return self."""
        if self._thread is not None:
            return self
        # pyarrow imports pandas (if installed) the first time it converts a list, and pandas
        # imports concurrent.futures, which cannot load once the interpreter shuts down: load
        # it now so a short program's last batch can still be built at exit.
        import concurrent.futures.thread  # noqa: F401

        if self.collect:
            self._start_collectors()
        self._open_sockets()
        self._emit_process_start()
        self._thread = threading.Thread(target=self._run, name="lumin-agent", daemon=True)
        self._thread.start()
        # multiprocessing's forked children end with os._exit (no atexit): it runs its own
        # finalizers instead, so the child's agent registers one there to ship its tail.
        import multiprocessing.util

        multiprocessing.util.register_after_fork(self, _finalize_in_mp_child)
        return self

    def _start_collectors(self) -> None:
        from lumin_nb.collect.collectors import Collectors

        self._collectors = Collectors(self.config, self.builder).start(watch=self.watch_patterns)
        self.tracer = self._collectors.tracer
        self.logs = self._collectors.logs
        self.tasks = self._collectors.tasks
        self.runtime = self._collectors.runtime

    def _stop_collectors(self) -> None:
        if self._collectors is not None:
            self._collectors.stop()

    def _open_sockets(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._ctx = ctx
        self._push = ctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.SNDHWM, SNDHWM)
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self._push.connect(self.endpoint)
        self._dealer: zmq.Socket[bytes] | None = None
        if self.control_endpoint:
            self._dealer = ctx.socket(zmq.DEALER)
            self._dealer.setsockopt(zmq.LINGER, 0)
            self._dealer.setsockopt(zmq.SNDHWM, 64)
            self._dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            self._dealer.connect(self.control_endpoint)
        address = f"inproc://lumin-agent-{id(self)}"
        self._wake_in = ctx.socket(zmq.PULL)
        self._wake_in.bind(address)
        self._wake_out = ctx.socket(zmq.PUSH)
        self._wake_out.setsockopt(zmq.LINGER, 0)
        self._wake_out.connect(address)
        self._wake_lock = threading.Lock()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop collecting, ship what is left (waiting up to `timeout_s` for acks), close.

        Returns True when everything collected was acknowledged. Idempotent.
        """
        if self._thread is None:
            return True
        self._stop_collectors()
        delivered = self.flush(timeout_s)
        with self._lock:
            self._stopping = True
        self._wake()
        self._thread.join(timeout=5)
        self._thread = None
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None
        return delivered

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Ship everything collected so far; True once the observatory acknowledged all of it."""
        if not self.is_running:
            return not self._pending
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._flush_requested += 1
            want = self._flush_requested
        self._wake()
        with self._cond:
            while self._flush_done < want or self._pending or self._ready:
                left = deadline - time.monotonic()
                if left <= 0 or not self.is_running:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    # -- ready batches --------------------------------------------------------------------
    def ship(self, batch: pa.RecordBatch) -> bool:
        """Queue a ready batch of the event schema (producer and seq are stamped here).

        Never blocks: when `max_queued_batches` are waiting the batch is dropped, counted
        (reason ``queue_full``) and False is returned.
        """
        with self._lock:
            if len(self._ready) >= self.max_queued_batches:
                self.dropped["queue_full"] = self.dropped.get("queue_full", 0) + batch.num_rows
                return False
            self._ready.append(batch)
        self._wake()
        return True

    def backlog(self) -> tuple[int, int]:
        """Return (batches queued by `ship`, bytes sent and not yet acknowledged)."""
        with self._lock:
            return len(self._ready), self._pending_bytes

    def on(self, op: str, handler: OpHandler) -> None:
        """Answer control messages ``{"op": op, ...}`` with ``handler(message)`` (JSON-able).

        Handlers run on the agent thread; keep them short. A handler that raises answers
        ``{"ok": False, "error": ...}``.
        """
        self._ops[op] = handler

    def stats(self) -> dict[str, Any]:
        """Return producer, seq, backlog, sent/resent/acked counts and drops by reason."""
        with self._lock:
            return {
                "producer": self.producer,
                "parent_producer": self.parent_producer,
                "service": self.config.service,
                "pid": self.pid,
                "seq_next": self._seq,
                "pending_batches": len(self._pending),
                "pending_bytes": self._pending_bytes,
                "queued_batches": len(self._ready),
                "sent_batches": self.sent_batches,
                "resent_batches": self.resent_batches,
                "resend_after_s": self._resend_after,
                "acked_events": self.acked_events,
                "dropped": self._drop_totals(),
                "session": self.session,
                "failures": self.failures,
                "last_error": self.last_error,
                "watching": list(self.tracer.patterns) if self.tracer else [],
                "log_level": self.config.log_level,
            }

    # -- the thread ---------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._wake_lock:
            if self._ctx is None:
                return
            with contextlib.suppress(zmq.ZMQError):  # a wake-up already queued does the job
                self._wake_out.send(b"", zmq.NOBLOCK)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._wake_in, zmq.POLLIN)
        if self._dealer is not None:
            poller.register(self._dealer, zmq.POLLIN)
        now = time.monotonic()
        next_collect = now + self.config.flush_interval_s
        next_hello = now
        while True:
            timeout_ms = max(0.0, min(next_collect, next_hello) - time.monotonic()) * 1000
            try:
                ready = dict(poller.poll(int(timeout_ms) + 1))
                if self._wake_in in ready:
                    while self._wake_in.poll(0):
                        self._wake_in.recv()
                if self._dealer is not None and self._dealer in ready:
                    self._read_control()
                with self._lock:
                    flush_to = self._flush_requested
                    stopping = self._stopping
                now = time.monotonic()
                shipped = 0
                if now >= next_collect or flush_to > self._flush_done or stopping:
                    shipped = self._collect()
                    next_collect = now + self.config.flush_interval_s
                self._take_ready()
                self._send(now)
                if now >= next_hello or shipped:  # keeps seq_next and dropped current
                    self._hello()
                    welcomed = self.session is not None
                    next_hello = now + (HELLO_IDLE_INTERVAL_S if welcomed else HELLO_INTERVAL_S)
                with self._cond:
                    self._flush_done = max(self._flush_done, flush_to)
                    self._cond.notify_all()
                if stopping:
                    return
            except Exception as exc:  # the agent must outlive anything; never into the program
                self.failures += 1
                self.last_error = repr(exc)

    def _collect(self) -> int:
        """Enqueue what the sources hold, then one metric event per drop reason since the
        last report (last, so it counts the drops of this very collection); return the
        number of events enqueued."""
        enqueued = self._take_ready()
        batches = [self.builder.build()]
        if self.tracer is not None:
            batches.append(self.tracer.drain())
        batch = _merge([b for b in batches if b is not None and b.num_rows])
        if batch is not None:  # one batch per collect: one encode, send and ack
            enqueued += self._enqueue(batch)
        report = self._drop_batch()
        if report is not None:
            enqueued += self._enqueue(report, always=True)
        return enqueued

    def _take_ready(self) -> int:
        enqueued = 0
        while True:
            with self._lock:
                if not self._ready:
                    return enqueued
                batch = self._ready.popleft()
            enqueued += self._enqueue(batch)

    def _enqueue(self, batch: pa.RecordBatch, *, always: bool = False) -> int:
        """Stamp and encode `batch` into the backlog, or drop it when the backlog is full;
        return the number of events enqueued."""
        size = batch.nbytes
        with self._lock:
            if not always and self._pending_bytes + size > self.max_pending_bytes:
                self.dropped["unacked_full"] = self.dropped.get("unacked_full", 0) + batch.num_rows
                return 0
            first = self._seq
            self._seq += batch.num_rows
        stamped = with_producer(self._fill(batch), self.producer, first)
        payload = encode_batch(stamped)
        header = encode_header(self.token.encode(), self.producer, first, batch.num_rows)
        with self._lock:
            self._pending[first] = _Pending(header, payload, batch.num_rows)
            self._pending_bytes += payload.size
        return int(batch.num_rows)

    def _fill(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Fill service, host and pid where the source left them null."""
        n = batch.num_rows
        cols = dict(zip(batch.schema.names, batch.columns, strict=True))
        zeros = pa.array(np.zeros(n, dtype=np.int32))
        for name, value in (("service", self.config.service), ("host", self.host)):
            if cols[name].null_count == n:
                cols[name] = pa.DictionaryArray.from_arrays(zeros, pa.array([value]))
        if cols["pid"].null_count:
            cols["pid"] = pc.fill_null(cols["pid"], pa.scalar(self.pid, pa.int32()))
        return pa.RecordBatch.from_arrays(list(cols.values()), schema=EVENT_SCHEMA)

    def _send(self, now: float) -> None:
        with self._lock:
            wait = self._resend_after
            todo = [
                (first, p)
                for first, p in self._pending.items()
                if p.sent_at is None or now - p.sent_at > wait
            ]
        resent = False
        try:
            for first, p in todo:
                try:
                    self._push.send_multipart([p.header, p.payload], zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return  # the observatory is slow or away: the backlog keeps it
                with self._lock:
                    if p.sent_at is None:
                        self.sent_batches += 1
                    else:
                        self.resent_batches += 1
                        resent = True
                    p.sent_at = now
                    if self._dealer is None:  # no acks without a control channel
                        self._acked(first)
        finally:
            if resent:  # nobody acks: back off (an ack resets it)
                with self._lock:
                    cap = max(RESEND_MAX_S, self.resend_after_s)
                    self._resend_after = min(self._resend_after * 2, cap)

    def _acked(self, first: int) -> None:
        p = self._pending.pop(first, None)
        if p is not None:
            self._pending_bytes -= p.payload.size
            self.acked_events += p.rows
            self._resend_after = self.resend_after_s

    def _hello(self) -> None:
        if self._dealer is None:
            return
        with self._lock:
            floor = next(iter(self._pending), self._seq)
            message = {
                "op": "hello",
                "token": self.token,
                "producer": self.producer,
                "service": self.config.service,
                "host": self.host,
                "pid": self.pid,
                "parent_producer": self.parent_producer,
                "seq_next": self._seq,
                "seq_floor": floor,
                "dropped": self._drop_totals(),
                "session": self.session,  # the observatory welcomes only a stranger
            }
        with contextlib.suppress(zmq.ZMQError):  # not connected: the next hello goes
            self._dealer.send(encode_control(message), zmq.NOBLOCK)

    def _read_control(self) -> None:
        assert self._dealer is not None
        while True:
            try:
                frame = self._dealer.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = decode_control(frame)
            except LuminError:
                continue
            op = message["op"]
            if op == "ack":
                firsts = message.get("firsts")
                with self._lock:
                    for first in firsts if isinstance(firsts, list) else ():
                        if isinstance(first, int):
                            self._acked(first)
            elif op == "welcome":
                session = message.get("session")
                with self._lock:
                    if self.session is not None and session != self.session:
                        for p in self._pending.values():  # a new observatory: resend all
                            p.sent_at = None
                    self.session = session if isinstance(session, str) else None
            else:
                self._answer(message)

    def _answer(self, message: dict[str, Any]) -> None:
        assert self._dealer is not None
        handler = self._ops.get(message["op"])
        reply: dict[str, Any] = {"op": "reply", "id": message.get("id")}
        if handler is None:
            reply.update(
                ok=False,
                error=f"unknown op {message['op']!r}; this agent answers: "
                f"{', '.join(sorted(self._ops))}",
            )
        else:
            try:
                reply.update(ok=True, result=handler(message))
            except Exception as exc:
                reply.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        try:
            frame = encode_control(reply)
        except (TypeError, ValueError) as exc:
            frame = encode_control({**reply, "ok": False, "result": None, "error": repr(exc)})
        with contextlib.suppress(zmq.ZMQError):
            self._dealer.send(frame, zmq.NOBLOCK)

    # -- drops ------------------------------------------------------------------------------
    def _drop_totals(self) -> dict[str, int]:
        totals = dict(self.dropped)
        if self.builder.dropped:
            totals["buffer_full"] = self.builder.dropped
        if self.tracer is not None:
            reasons = self.tracer.stats()["dropped_reason"]
            assert isinstance(reasons, dict)
            for reason, count in reasons.items():
                if count:
                    totals[f"calls_{reason}"] = int(count)
        return totals

    def _drop_batch(self) -> pa.RecordBatch | None:
        """Metric events for drops since the last report (one per reason), or None."""
        with self._lock:
            totals = self._drop_totals()
        rows = [(r, n - self._reported.get(r, 0), n) for r, n in sorted(totals.items())]
        rows = [row for row in rows if row[1] > 0]
        if not rows:
            return None
        self._reported.update(totals)
        from lumin_nb.event import batch_from_columns

        return batch_from_columns(
            len(rows),
            kind="metric",
            source_type="runtime_metric",
            severity=13,
            tid=threading.get_ident(),
            entity=DROPPED_METRIC,
            value=pa.array([float(row[1]) for row in rows]),
            attrs=pa.array([json.dumps({"reason": r, "total": t}) for r, _, t in rows]),
        )

    def _emit_process_start(self) -> None:
        self.builder.append(
            "process",
            source_type="runtime",
            severity=9,
            entity=self.config.service,
            message=f"agent started: {self.producer}",
            attrs=json.dumps(
                {
                    "phase": "start",
                    "producer": self.producer,
                    "parent_producer": self.parent_producer,
                    "parent_pid": os.getppid(),
                    "process.command_line": " ".join(sys.argv),
                }
            ),
        )

    # -- control ops --------------------------------------------------------------------------
    def _op_configure(self, message: dict[str, Any]) -> dict[str, Any]:
        changes = message.get("changes")
        if not isinstance(changes, dict):
            changes = {k: v for k, v in message.items() if k not in ("op", "id")}
        cfg = self.manager.update(**changes)
        if self.logs is not None:
            self.logs.setLevel(cfg.log_level)
            root = __import__("logging").getLogger()
            if root.level > cfg.log_level:
                root.setLevel(cfg.log_level)
        if self.runtime is not None:
            self.runtime.interval_s = cfg.metrics_interval_s
        self.builder.max_events = cfg.buffer_max_events
        if self.tasks is not None:
            self.tasks.thread_events = cfg.thread_events
        if self.tracer is not None:
            self.tracer.sample_rate = cfg.call_sample_rate
        return {"applied": changes, "config": cfg.as_dict()}

    def _op_watch(self, message: dict[str, Any]) -> list[str]:
        if self.tracer is None:
            raise LuminError("call tracing is off in this agent (collect_calls=False)")
        self.tracer.watch(*message.get("patterns", ()))
        return list(self.tracer.patterns)

    def _op_unwatch(self, message: dict[str, Any]) -> list[str]:
        if self.tracer is None:
            raise LuminError("call tracing is off in this agent (collect_calls=False)")
        self.tracer.unwatch(*message.get("patterns", ()))
        return list(self.tracer.patterns)

    # -- fork -------------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        """A forked child is a new producer whose parent is the agent it was forked from."""
        parent = self.producer
        self._ctx = None  # the parent's sockets are not ours to touch (nor to close)
        self._thread = None
        self.builder._lock = threading.Lock()  # a lock held at fork time would never free
        self.builder.build()  # the parent's events are the parent's to ship
        if self.tracer is not None:
            with contextlib.suppress(Exception):
                self.tracer.drain()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._reset_identity()
        self.parent_producer = parent
        os.environ[ENV_PARENT] = self.producer
        self._open_sockets()
        self._emit_process_start()
        self._thread = threading.Thread(target=self._run, name="lumin-agent", daemon=True)
        self._thread.start()


def _merge(batches: list[pa.RecordBatch]) -> pa.RecordBatch | None:
    """One batch of the event schema holding `batches` in order (None for none)."""
    if len(batches) <= 1:
        return batches[0] if batches else None
    table = pa.Table.from_batches(batches, schema=EVENT_SCHEMA)
    # one chunk per column after combine_chunks, so exactly one batch
    return table.unify_dictionaries().combine_chunks().to_batches()[0]


_current: Agent | None = None
_start_lock = threading.Lock()


def current() -> Agent | None:
    """Return the agent of this process, or None."""
    return _current


def start(
    endpoint: str | None = None,
    *,
    token: str | None = None,
    service: str | None = None,
    control_endpoint: str | None = None,
    watch: Sequence[str] | None = None,
    handle_sigterm: bool = False,
    **options: Any,
) -> Agent:
    """Start this process's agent (arguments default to the ``LUMIN_*`` environment).

    The agent stops (shipping what is left) at interpreter exit; with `handle_sigterm` a
    SIGTERM does the same first, then ends the process as SIGTERM would.
    """
    global _current
    env = os.environ
    endpoint = endpoint or env.get(ENV_ENDPOINT)
    token = token or env.get(ENV_TOKEN)
    if not endpoint or not token:
        raise LuminError(
            f"no observatory to ship to: endpoint={endpoint!r}, token set: {bool(token)}.\n"
            f"Expected {ENV_ENDPOINT} and {ENV_TOKEN} (Receiver.endpoint and .token).\n"
            "Fix: lumin_nb.agent.start('tcp://127.0.0.1:PORT', token=..., service='orders')"
        )
    if watch is None:
        watch = [p.strip() for p in env.get(ENV_WATCH, "").split(",") if p.strip()]
    if service is None:
        main = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        service = env.get(ENV_SERVICE) or os.path.splitext(main)[0] or "python"
    with _start_lock:
        if _current is not None and _current.is_running:
            raise LuminError(
                f"an agent already runs in this process ({_current.producer}).\n"
                "Fix: lumin_nb.agent.current() returns it; stop() it first to start another."
            )
        agent = Agent(
            endpoint,
            token=token,
            service=service,
            control_endpoint=control_endpoint or env.get(ENV_CONTROL),
            watch=watch,
            parent_producer=env.get(ENV_PARENT),
            **options,
        )
        agent.start()
        _current = agent
    env[ENV_PARENT] = agent.producer  # children link to us
    import atexit

    atexit.register(_stop_at_exit)
    if handle_sigterm and threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
    return agent


def stop(timeout_s: float = 2.0) -> bool:
    """Stop this process's agent, shipping what is left; True when all of it was acknowledged."""
    global _current
    with _start_lock:
        agent, _current = _current, None
    if agent is None:
        return True
    if os.environ.get(ENV_PARENT) == agent.producer:
        if agent.parent_producer:
            os.environ[ENV_PARENT] = agent.parent_producer
        else:
            del os.environ[ENV_PARENT]
    return agent.stop(timeout_s)


def _stop_at_exit() -> None:
    agent = _current
    if agent is not None and agent.pid == os.getpid():
        agent.stop()


def _finalize_in_mp_child(agent: Agent) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(agent, agent.stop, exitpriority=100)


def _on_sigterm(signum: int, frame: object) -> None:
    _stop_at_exit()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _after_fork() -> None:
    agent = _current
    if agent is not None and agent._thread is not None:
        agent._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork)
