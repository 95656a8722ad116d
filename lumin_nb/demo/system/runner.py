"""Run the demo system under observation: four monitored services, steady load, one fault.

`run_system` starts payments, orders, gateway and the batch job with `lm.run` (each watched
on its own module, so logs, calls, threads and metrics flow into one store), schedules the
fault on every service, writes the ground truth (``ground_truth.json`` in the store folder),
sends checkouts at a steady rate, then stops every process (SIGTERM: each agent ships its
tail). Invariant: no service outlives the run. The processes are stopped in ``finally``, at
interpreter exit (atexit), on SIGTERM to a script, and each service ends by itself when the
process that started it is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import queue
import random
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, TypedDict

from lumin_nb import context
from lumin_nb.demo.system import service
from lumin_nb.demo.system.faults import CULPRITS, Fault, FaultName, check_fault
from lumin_nb.errors import LuminError

if TYPE_CHECKING:
    import os as _os

    from lumin_nb._observatory import Observatory
    from lumin_nb.agent import MonitoredProcess

SERVICES: Final = ("payments", "orders", "gateway", "batch")
GROUND_TRUTH_FILE: Final = "ground_truth.json"
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 10.0
PRODUCTS: Final = 40
_CARDS: Final = ["4111111111111111"] * 19 + ["5500000000000000"]  # 1 in 20 declined


class GroundTruth(TypedDict):
    """What a run broke, when and where: the answer a root-cause analysis should give."""

    run_id: str
    fault: str | None
    start: str | None
    start_ns: int | None
    end: str | None
    end_ns: int | None
    culprit_service: str | None
    culprit_function: str | None
    description: str
    load_start_ns: int
    duration_s: float
    rate_per_s: float
    pids: dict[str, int]


class SystemRun(GroundTruth):
    """`run_system`'s result: the ground truth plus what the load generator and store saw."""

    ground_truth_file: str
    store: str
    requests: int
    ok: int
    failed: int
    statuses: dict[str, int]
    p50_ms: float
    p95_ms: float
    events: dict[str, int]


@dataclass(frozen=True, slots=True)
class Request:
    """One checkout the load generator sent."""

    order_id: int
    sent_ns: int
    duration_ns: int
    status: int
    trace_id: str


def _iso(ns: int | None) -> str | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat()


class Load:
    """Sends checkouts to the gateway at a steady rate (open model: late ones still go)."""

    def __init__(self, url: str, *, rate_per_s: float, duration_s: float, seed: int = 7) -> None:
        self.url = url
        self.rate_per_s = rate_per_s
        self.duration_s = duration_s
        self.seed = seed
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue[int | None] = queue.Queue()
        self.workers = max(4, min(48, math.ceil(rate_per_s)))

    def cart(self, order_id: int) -> dict[str, object]:
        """The checkout body of order `order_id` (deterministic per seed)."""
        rng = random.Random(self.seed * 1_000_003 + order_id)
        items = {f"p{rng.randrange(PRODUCTS)}": rng.randint(1, 3) for _ in range(rng.randint(2, 8))}
        return {"order_id": order_id, "items": items, "card": rng.choice(_CARDS)}

    def _work(self) -> None:
        while (order_id := self._queue.get()) is not None:
            ctx = context.TraceContext.new()
            start = time.time_ns()
            t0 = time.perf_counter_ns()
            try:
                with context.use(ctx):
                    status, _ = service.call(self.url, "/checkout", self.cart(order_id))
            except OSError:
                status = 0  # connection refused or timed out
            done = Request(order_id, start, time.perf_counter_ns() - t0, status, ctx.trace_id.hex())
            with self._lock:
                self.requests.append(done)

    def run(self, stop: threading.Event | None = None) -> list[Request]:
        """Send ``rate_per_s * duration_s`` checkouts on schedule; return them when all answered."""
        threads = [
            threading.Thread(target=self._work, name=f"demo-load-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for t in threads:
            t.start()
        stop = stop or threading.Event()
        try:
            t0 = time.monotonic()
            for order_id in range(int(self.rate_per_s * self.duration_s)):
                # pacing the schedule, not synchronisation: the next send time
                if stop.wait(max(0.0, t0 + order_id / self.rate_per_s - time.monotonic())):
                    break
                self._queue.put(order_id)
        finally:
            for _ in threads:
                self._queue.put(None)
            for t in threads:
                t.join(service.CALL_TIMEOUT_S + 5)
        with self._lock:
            return sorted(self.requests, key=lambda r: r.order_id)


class System:
    """The four running services (a context manager: leaving it stops them all)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, MonitoredProcess] = {}
        self.urls: dict[str, str] = {}
        self._files: list[IO[bytes]] = []

    def start(self) -> System:
        """Start payments, orders, then gateway and batch; return when all are ready."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        self._spawn("payments")
        self._ready("payments")
        self._spawn("orders", "--payments-url", self.urls["payments"])
        self._ready("orders")
        self._spawn("gateway", "--orders-url", self.urls["orders"])
        self._spawn("batch", "--orders-url", self.urls["orders"])
        self._ready("gateway")
        self._ready("batch")
        return self

    def _spawn(self, name: str, *args: str) -> None:
        import lumin_nb as lm

        stderr = open(self.log_dir / f"{name}.stderr", "wb")  # noqa: SIM115  # closed in stop()
        self._files.append(stderr)
        argv = [sys.executable, "-m", "lumin_nb.demo.system", name, *args]
        self.processes[name] = lm.run(
            [*argv, "--parent-pid", str(os.getpid())],
            service=name,
            watch=[f"lumin_nb.demo.system.{name}"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # a Ctrl-C reaches the runner, which stops them in order
        )

    def _ready(self, name: str) -> None:
        proc = self.processes[name]
        out = proc.popen.stdout
        assert out is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            while not sel.select(timeout=0.2):
                if proc.returncode is not None or time.monotonic() > deadline:
                    break
            line = out.readline() if proc.returncode is None else b""
        try:
            port = int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            self.stop()
            tail = (self.log_dir / f"{name}.stderr").read_text(errors="replace")[-2000:]
            raise LuminError(
                f"the demo service {name!r} did not start (exit code {proc.returncode}, "
                f"first line {line[:200]!r}).\nIts stderr ends:\n{tail}\n"
                "Fix: run it alone to see why: python -m lumin_nb.demo.system "
                f"{name} --help"
            ) from None
        self.urls[name] = f"http://127.0.0.1:{port}"

    def schedule(self, fault: Fault | None) -> None:
        """Tell every HTTP service which fault is on when."""
        body = fault.to_json() if fault else {}
        for name in ("payments", "orders", "gateway"):
            status, reply = service.call(self.urls[name], "/_fault", body)
            if status != 200:
                raise LuminError(f"{name} refused the fault {body}: {reply}")

    def stop(self) -> None:
        """Stop every service, front to back (SIGTERM, then kill after a timeout)."""
        for name in ("gateway", "batch", "orders", "payments"):
            proc = self.processes.get(name)
            if proc is not None:
                with contextlib.suppress(OSError):
                    proc.stop(timeout_s=STOP_TIMEOUT_S)
                if proc.popen.stdout is not None:
                    proc.popen.stdout.close()
        for f in self._files:
            f.close()
        self._files.clear()
        atexit.unregister(self.stop)

    def __enter__(self) -> System:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def _sigterm_ends_the_run() -> Iterator[None]:
    """In a script's main thread, a SIGTERM raises KeyboardInterrupt so ``finally`` runs."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    installed = False
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, interrupt)
                installed = True
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _observatory(store: str | _os.PathLike[str] | None) -> Iterator[Observatory]:
    """The running observatory, or one started (and stopped after) on `store`."""
    import lumin_nb as lm

    running = lm._current
    if running is not None and running.is_running:
        if store is not None and Path(store).resolve() != Path(running.store.path).resolve():
            raise LuminError(
                f"store={str(store)!r}, but Lumin already runs here with store "
                f"{str(running.store.path)!r}.\n"
                "Fix: run_system() without store= uses the running observatory; or lm.stop() first."
            )
        yield running
        return
    folder = Path(store) if store is not None else Path(tempfile.mkdtemp(prefix="lumin-system-"))
    obs = lm.start(store=folder, flush_interval_s=0.2)
    try:
        yield obs
    finally:
        lm.stop()


def _fault_window(name: FaultName, start_ns: int, duration_s: float, fault_at_s: float) -> Fault:
    end_ns = None
    if name == "error_burst":  # a burst: on for half of what is left of the run (at least 2 s)
        end_ns = start_ns + int(max(2.0, (duration_s - fault_at_s) / 2) * 1e9)
    return Fault(name, start_ns, end_ns)


def _event_counts(obs: Observatory, since_ns: int) -> dict[str, int]:
    table = obs.store.sql(
        "select cast(service as varchar) as service, count(*) as n from events "
        f"where epoch_ns(ts) >= {int(since_ns)} group by 1 order by 1"
    )
    return {str(s): int(n) for s, n in zip(*table.to_pydict().values(), strict=True)}


def run_system(
    fault: str | None = None,
    duration_s: float = 60.0,
    rate_per_s: float = 20.0,
    store: str | _os.PathLike[str] | None = None,
    *,
    fault_at_s: float | None = None,
    seed: int = 7,
    progress: Callable[[str], None] | None = None,
) -> SystemRun:
    """Run the demo system under observation with one fault; return the ground truth and counts.

    Uses the running observatory (``lm.start()`` / ``%load_ext lumin``), or starts one on
    `store` (default: a temporary folder) and stops it at the end.

    Parameters
    ----------
    fault
        None or "none", "slow_db", "memory_leak", "error_burst", "n_plus_one",
        "lock_contention" or "bad_deploy".
    duration_s, rate_per_s
        How long the load runs and how many checkouts per second it sends.
    store
        The store folder when no observatory runs.
    fault_at_s
        When the fault starts, in seconds after the load starts (default: half way).
    seed
        Seeds the carts the load generator sends.
    progress
        Called with a line of text at each step (``print`` in ``lumin demo``).

    Returns
    -------
    SystemRun
        The ground truth (``fault``, ``start``/``start_ns``, ``end``/``end_ns``,
        ``culprit_service``, ``culprit_function``, ``description``, ``pids``...), also in
        ``ground_truth_file``, plus ``requests``, ``ok``, ``failed``, ``statuses``,
        ``p50_ms``, ``p95_ms`` and ``events`` (events stored per service during the run).

    Examples
    --------
    >>> lm.start(store="/tmp/shop")  # doctest: +SKIP
    >>> truth = run_system("slow_db", duration_s=30)  # doctest: +SKIP
    >>> lm.events(entity=truth["culprit_function"], since=truth["start"])  # doctest: +SKIP
    """
    name = check_fault(fault)
    if duration_s <= 0 or rate_per_s <= 0:
        raise LuminError(
            f"duration_s={duration_s!r}, rate_per_s={rate_per_s!r}: both must be above 0.\n"
            "Fix: run_system('slow_db', duration_s=60, rate_per_s=20)"
        )
    at_s = duration_s / 2 if fault_at_s is None else fault_at_s
    say = progress or (lambda _line: None)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{name or 'none'}"
    with _sigterm_ends_the_run(), _observatory(store) as obs:
        folder = Path(obs.store.path)
        say(f"Starting gateway, orders, payments and batch (store {folder}) ...")
        with System(folder / "demo-logs") as system:
            load_start_ns = time.time_ns()
            scheduled = (
                _fault_window(name, load_start_ns + int(at_s * 1e9), duration_s, at_s)
                if name
                else None
            )
            system.schedule(scheduled)
            culprit = CULPRITS[name] if name else None
            truth = GroundTruth(
                run_id=run_id,
                fault=name,
                start=_iso(scheduled.start_ns if scheduled else None),
                start_ns=scheduled.start_ns if scheduled else None,
                end=_iso(scheduled.end_ns if scheduled else None),
                end_ns=scheduled.end_ns if scheduled else None,
                culprit_service=culprit["service"] if culprit else None,
                culprit_function=culprit["function"] if culprit else None,
                description=culprit["description"] if culprit else "no fault: a healthy run",
                load_start_ns=load_start_ns,
                duration_s=float(duration_s),
                rate_per_s=float(rate_per_s),
                pids={n: p.pid for n, p in system.processes.items()},
            )
            truth_file = folder / GROUND_TRUTH_FILE
            truth_file.write_text(json.dumps(truth, indent=2) + "\n")
            when = f" from {truth['start']}" if name else ""
            say(f"Sending {rate_per_s:g} checkouts/s for {duration_s:g}s; fault {name}{when}.")
            requests = Load(
                system.urls["gateway"], rate_per_s=rate_per_s, duration_s=duration_s, seed=seed
            ).run()
        say("Stopped the services.")
        counts = _event_counts(obs, load_start_ns)
    statuses = Counter(str(r.status) for r in requests)
    ms = sorted(r.duration_ns / 1e6 for r in requests) or [0.0]
    return SystemRun(
        **truth,
        ground_truth_file=str(truth_file),
        store=str(folder),
        requests=len(requests),
        ok=statuses.get("200", 0),
        failed=len(requests) - statuses.get("200", 0),
        statuses=dict(sorted(statuses.items())),
        p50_ms=round(ms[len(ms) // 2], 1),
        p95_ms=round(ms[min(len(ms) - 1, int(len(ms) * 0.95))], 1),
        events=counts,
    )


def describe(run: SystemRun) -> str:
    """Return a few lines saying what a run did and where its fault lives (for the CLI)."""
    lines = [
        f"Sent {run['requests']} checkouts: {run['ok']} ok, {run['failed']} failed "
        f"(status counts {run['statuses']}); p50 {run['p50_ms']} ms, p95 {run['p95_ms']} ms.",
        "Events stored per service: "
        + ", ".join(f"{s} {n}" for s, n in run["events"].items() if s in SERVICES),
    ]
    if run["fault"]:
        lines.append(
            f"Fault {run['fault']} from {run['start']}"
            + (f" to {run['end']}" if run["end"] else "")
            + f": {run['description']}."
        )
        lines.append(f"Culprit: {run['culprit_service']} / {run['culprit_function']}")
    lines.append(f"Ground truth: {run['ground_truth_file']}")
    lines.append(f"Store: {run['store']}   (lm.open({run['store']!r}).events())")
    return "\n".join(lines)
