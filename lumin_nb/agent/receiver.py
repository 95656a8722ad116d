"""The observatory side of the agent fabric: ZeroMQ PULL for batches, ROUTER for control.

One ``lumin-receiver`` thread owns every socket. For each data message it checks the token
(a wrong one is counted in ``refused`` and the batch is never decoded), decodes the Arrow IPC
payload, validates it against the event schema and the header's producer and seq range
(a bad batch is counted in ``rejected`` and never stored), appends it to the store (which
drops replays by (producer, seq)) and acknowledges it to the agent over the control channel.

Loss: per producer the receiver keeps the seq ranges it has received. An agent's ``hello``
says how far it has stamped (``seq_next``) and the lowest seq it still holds unacknowledged
(``seq_floor``: everything below was stored by this or an earlier observatory), so
``lost = seq_next - seq_floor - received seqs in [seq_floor, seq_next)``: batches the agent
stamped that never arrived (dropped on the way, or in flight when it was killed).

Invariants: the thread never dies on bad input (every error is counted); a batch is acked only
after `Store.append` accepted it; the store is the caller's and stays open after `stop()`.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import queue
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypedDict

from lumin_nb.agent.wire import (
    Header,
    decode_batch,
    decode_control,
    decode_header,
    encode_control,
)
from lumin_nb.errors import (
    ControlError as ControlError,  # re-exported by lumin_nb.agent
    WireError,
    closest,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import zmq

    from lumin_nb.store import Store

#: batches a PULL socket holds before the agent's PUSH waits (the agent keeps them instead)
RCV_HWM: Final = 64
_POLL_MS: Final = 100


class AgentInfo(TypedDict):
    """One agent as `Receiver.agents` reports it."""

    producer: str
    service: str | None
    host: str | None
    pid: int | None
    parent_producer: str | None
    last_seen: float  #: epoch seconds of the last message from it
    batches: int  #: batches stored (replays included)
    events: int  #: new events stored (replays excluded)
    duplicates: int  #: replayed events the store dropped
    lost: int  #: stamped events that never arrived
    dropped: dict[str, int]  #: events the agent dropped before stamping, by reason
    seq_next: int  #: the next seq the agent will stamp (as last reported)


class _Ranges:
    """Disjoint sorted half-open seq ranges; a few per producer, so plain lists suffice."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        starts, ends = self.starts, self.ends
        if ends and start == ends[-1]:  # the usual case: the next batch in order
            ends[-1] = end
            return
        pairs = sorted([*zip(starts, ends, strict=True), (start, end)])
        merged: list[list[int]] = []
        for s, e in pairs:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        self.starts = [m[0] for m in merged]
        self.ends = [m[1] for m in merged]

    def covered(self, start: int, end: int) -> int:
        return sum(
            max(0, min(e, end) - max(s, start)) for s, e in zip(self.starts, self.ends, strict=True)
        )

    @property
    def end(self) -> int:
        return self.ends[-1] if self.ends else 0


@dataclass
class _Agent:
    producer: str
    route: bytes | None = None
    service: str | None = None
    host: str | None = None
    pid: int | None = None
    parent_producer: str | None = None
    last_seen: float = 0.0
    batches: int = 0
    events: int = 0
    duplicates: int = 0
    seq_next: int = 0
    seq_floor: int | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    received: _Ranges = field(default_factory=_Ranges)
    acks: list[int] = field(default_factory=list)

    def info(self) -> AgentInfo:
        floor = self.seq_floor
        if floor is None:
            floor = self.received.starts[0] if self.received.starts else 1
        end = max(self.seq_next, self.received.end)
        lost = max(0, end - floor - self.received.covered(floor, end))
        return AgentInfo(
            producer=self.producer,
            service=self.service,
            host=self.host,
            pid=self.pid,
            parent_producer=self.parent_producer,
            last_seen=self.last_seen,
            batches=self.batches,
            events=self.events,
            duplicates=self.duplicates,
            lost=lost,
            dropped=dict(self.dropped),
            seq_next=self.seq_next,
        )


def _bind(sock: zmq.Socket[bytes], host: str, port: int) -> str:
    import zmq

    sock.bind(f"tcp://{host}:{port or '*'}")
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(endpoint, bytes)
    return endpoint.decode()


class Receiver:
    """Receives agents' batches into `store` and sends them control messages.

    Parameters
    ----------
    store
        Where batches go (`Store.append`; replays are dropped there).
    token
        The shared secret agents must present (``LUMIN_TOKEN`` in their environment).
    host, port, control_port
        Where to listen; port 0 picks a free port. A new Receiver on the ports of a stopped
        one lets its agents reconnect and resend what was not acknowledged.

    Examples
    --------
    >>> rx = Receiver(store, token="s3cret")  # doctest: +SKIP
    >>> rx.endpoint, rx.control_endpoint  # doctest: +SKIP
    ('tcp://127.0.0.1:40123', 'tcp://127.0.0.1:40124')
    """

    def __init__(
        self,
        store: Store,
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int = 0,
    ) -> None:
        import zmq

        if not token:
            raise ValueError("token='': expected a non-empty secret. Fix: secrets.token_hex(16)")
        self.store = store
        self.token = token
        self._token = token.encode()
        self.session = uuid.uuid4().hex
        self.refused = 0  #: data or hello messages with a wrong token (never stored)
        self.rejected: dict[str, int] = {}  #: bad messages by reason (never stored)
        self.errors = 0  #: failures inside the receiver itself (e.g. the store refused)
        self.last_error: str | None = None
        self._agents: dict[str, _Agent] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiters: dict[int, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._outbox: queue.SimpleQueue[tuple[bytes, bytes]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        try:
            self._pull = self._ctx.socket(zmq.PULL)
            self._pull.setsockopt(zmq.RCVHWM, RCV_HWM)
            self._pull.setsockopt(zmq.LINGER, 0)
            self.endpoint = _bind(self._pull, host, port)
            self._router = self._ctx.socket(zmq.ROUTER)
            self._router.setsockopt(zmq.LINGER, 0)
            self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.control_endpoint = _bind(self._router, host, control_port)
            wake_address = f"inproc://lumin-receiver-{id(self)}"
            self._wake_in = self._ctx.socket(zmq.PULL)
            self._wake_in.bind(wake_address)
            self._wake_out = self._ctx.socket(zmq.PUSH)
            self._wake_out.setsockopt(zmq.LINGER, 0)
            self._wake_out.connect(wake_address)
        except BaseException:
            self._ctx.destroy(linger=0)
            raise
        self._wake_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lumin-receiver", daemon=True)
        self._thread.start()

    # -- public ---------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        """Whether the receiver thread runs."""
        return self._thread.is_alive()

    def agents(self) -> list[AgentInfo]:
        """Return every agent heard from: producer, service, pid, last seen, batches, lost."""
        with self._lock:
            return [a.info() for a in sorted(self._agents.values(), key=lambda a: a.producer)]

    def agent(self, producer: str) -> AgentInfo:
        """Return one agent by producer; raise ControlError listing the known producers."""
        with self._lock:
            found = self._agents.get(producer)
            if found is None:
                raise self._unknown(producer)
            return found.info()

    def send_control(
        self, producer: str, message: dict[str, Any], *, timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """Send a control message (``{"op": "configure", "changes": {...}}``) to one agent.

        Returns the agent's reply: ``{"op": "reply", "id", "ok": True, "result"}`` or
        ``{"ok": False, "error"}``. Raises ControlError when the agent is unknown or does not
        answer within `timeout_s`.
        """
        with self._lock:
            found = self._agents.get(producer)
            route = found.route if found is not None else None
            if route is None:
                raise self._unknown(producer)
            request_id = next(self._ids)
            done = threading.Event()
            slot: list[dict[str, Any]] = []
            self._waiters[request_id] = (done, slot)
        frame = encode_control({**message, "id": request_id})
        self._outbox.put((route, frame))
        self._wake()
        try:
            if not done.wait(timeout_s):
                raise ControlError(
                    f"agent {producer!r} did not answer {message.get('op')!r} within "
                    f"{timeout_s} s. Expected a reply from a running agent.\n"
                    "Fix: check it is alive in receiver.agents(), or pass a longer timeout_s."
                )
        finally:
            with self._lock:
                self._waiters.pop(request_id, None)
        return slot[0]

    def stop(self) -> None:
        """Stop the thread and close the sockets (idempotent); the store stays open."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake()
        self._thread.join(timeout=10)
        self._ctx.destroy(linger=0)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<lumin Receiver {self.endpoint} {state}, {len(self._agents)} agent(s)>"

    # -- internals --------------------------------------------------------------------------
    def _unknown(self, producer: str) -> ControlError:
        known = list(self._agents)
        return ControlError(
            f"no connected agent with producer {producer!r}.{closest(producer, known)}\n"
            f"Known producers: {', '.join(known) or 'none yet'}.\n"
            "Fix: pick one from receiver.agents(), or wait for the agent's hello."
        )

    def _wake(self) -> None:
        import zmq

        with self._wake_lock:
            if self._ctx.closed:
                return
            with contextlib.suppress(zmq.ZMQError):  # a queued wake-up does the job
                self._wake_out.send(b"", zmq.NOBLOCK)

    def _reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _run(self) -> None:
        import zmq

        poller = zmq.Poller()
        for sock in (self._pull, self._router, self._wake_in):
            poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                ready = dict(poller.poll(_POLL_MS))
                if self._wake_in in ready:
                    while self._wake_in.poll(0):
                        self._wake_in.recv()
                if self._pull in ready:
                    for _ in range(64):  # then serve control, so acks never starve
                        try:
                            frames = self._pull.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_data(frames)
                if self._router in ready:
                    while True:
                        try:
                            parts = self._router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_control(parts)
                self._send_outbox()
                self._send_acks()
            except Exception as exc:  # the receiver must outlive anything
                self.errors += 1
                self.last_error = repr(exc)

    def _on_data(self, frames: list[zmq.Frame]) -> None:
        if len(frames) != 2:
            self._reject("framing")
            return
        try:
            header = decode_header(frames[0].buffer)
        except WireError:
            self._reject("header")
            return
        if not hmac.compare_digest(header.token, self._token):
            self.refused += 1
            return
        try:
            batch = decode_batch(frames[1].buffer)
            problem = _check(batch, header)
        except WireError:
            problem = "payload"
        if problem is not None:
            self._reject(problem)
            return
        try:
            new = self.store.append(batch)
        except Exception as exc:  # not acked: the agent resends it later
            self.errors += 1
            self.last_error = repr(exc)
            return
        with self._lock:
            agent = self._agents.get(header.producer)
            if agent is None:
                agent = self._agents[header.producer] = _Agent(header.producer)
            agent.last_seen = time.time()
            agent.batches += 1
            agent.events += new
            agent.duplicates += header.count - new
            agent.received.add(header.first_seq, header.first_seq + header.count)
            agent.acks.append(header.first_seq)

    def _on_control(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self._reject("control framing")
            return
        route, frame = frames
        try:
            message = decode_control(frame)
        except WireError:
            self._reject("control")
            return
        op = message["op"]
        if op == "hello":
            self._on_hello(route, message)
        elif op == "reply":
            with self._lock:
                waiter = self._waiters.get(message.get("id"))  # type: ignore[arg-type]
                # only the route of a known agent may answer
                known = any(a.route == route for a in self._agents.values())
            if waiter is not None and known:
                waiter[1].append(message)
                waiter[0].set()
        else:
            self._reject("control op")

    def _on_hello(self, route: bytes, message: dict[str, Any]) -> None:
        token = message.get("token")
        producer = message.get("producer")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self._token):
            self.refused += 1
            return
        if not isinstance(producer, str) or not producer:
            self._reject("hello")
            return
        with self._lock:
            agent = self._agents.get(producer)
            if agent is None:
                agent = self._agents[producer] = _Agent(producer)
            agent.route = route
            agent.last_seen = time.time()
            for key in ("service", "host", "parent_producer"):
                value = message.get(key)
                if isinstance(value, str):
                    setattr(agent, key, value)
            pid = message.get("pid")
            if isinstance(pid, int):
                agent.pid = pid
            seq_next = message.get("seq_next")
            if isinstance(seq_next, int) and seq_next > agent.seq_next:
                agent.seq_next = seq_next
            floor = message.get("seq_floor")
            if isinstance(floor, int) and floor >= 1:
                agent.seq_floor = floor if agent.seq_floor is None else min(agent.seq_floor, floor)
            dropped = message.get("dropped")
            if isinstance(dropped, dict):
                agent.dropped = {str(k): int(v) for k, v in dropped.items() if isinstance(v, int)}
        if message.get("session") != self.session:  # new agent, or this receiver is new
            self._send(route, encode_control({"op": "welcome", "session": self.session}))

    def _send(self, route: bytes, frame: bytes) -> bool:
        import zmq

        try:
            self._router.send_multipart([route, frame], zmq.NOBLOCK)
        except zmq.ZMQError:  # the agent is gone (or its queue is full): it will say hello
            return False
        return True

    def _send_outbox(self) -> None:
        while True:
            try:
                route, frame = self._outbox.get_nowait()
            except queue.Empty:
                return
            self._send(route, frame)

    def _send_acks(self) -> None:
        with self._lock:
            pending = [
                (a.route, a.acks) for a in self._agents.values() if a.acks and a.route is not None
            ]
            for a in self._agents.values():
                if a.route is not None:
                    a.acks = []
        for route, firsts in pending:
            assert route is not None
            self._send(route, encode_control({"op": "ack", "firsts": firsts}))


def _check(batch: pa.RecordBatch, header: Header) -> str | None:
    """Return why `batch` cannot be stored under `header` (None when it can); vectorised."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from lumin_nb.event import EVENT_SCHEMA, KINDS, SCHEMA_VERSION, SOURCE_TYPES

    if not batch.schema.equals(EVENT_SCHEMA):
        return "schema"
    meta = batch.schema.metadata or {}
    if meta.get(b"lumin.schema_version") != SCHEMA_VERSION.encode():
        return "schema version"
    if batch.num_rows != header.count:
        return "row count"
    try:
        batch.validate(full=True)  # offsets, UTF-8, dictionary indices in range
    except (pa.ArrowException, ValueError):
        return "payload"
    for f in EVENT_SCHEMA:
        if not f.nullable and batch.column(f.name).null_count:
            return "nulls"
    seq = batch.column("seq").to_numpy(zero_copy_only=False)
    if int(seq[0]) != header.first_seq or not bool(np.all(np.diff(seq) == 1)):
        return "seq"
    producer = batch.column("producer")
    if not pc.all(pc.equal(producer, pa.scalar(header.producer))).as_py():
        return "producer"
    for name, allowed in (("kind", KINDS), ("source_type", SOURCE_TYPES)):
        words = batch.column(name).dictionary.to_pylist()
        if not set(words) <= set(allowed):
            return name
    lo, hi = pc.min_max(batch.column("severity")).values()
    if lo.as_py() < 0 or hi.as_py() > 24:
        return "severity"
    return None


def start_receiver(store: Store, *, token: str | None = None, port: int = 0) -> Receiver:
    """Start a Receiver into `store` on 127.0.0.1 with `token` (a new random one by default)."""
    return Receiver(store, token=token or secrets.token_hex(16), port=port)
