"""The governor: rate limits, a memory cap and per-collector circuit breakers; self-monitoring.

Place in the flow: beside the sources. Collectors append to bounded buffers; the observatory
(or an agent) asks the governor before it keeps a batch (`RateLimiter.admit`,
`ResourceGovernor.admit_batch`, `ResourceGovernor.admit_bytes`), and a ``lumin-governor``
thread feeds it one `Sample` of CPU and memory per second. `SelfMonitor` turns what Lumin
does (ingest rate, queue depth, drops, overhead, store size, tripped breakers) into
``lumin.*`` metric events and the dict `lm.status()` shows.

Invariants:

- every decision is a pure function of the samples fed and the injected clock: tests feed
  samples, the thread only measures;
- a breaker trips when a collector's share of the process's CPU over the last ``window_s``
  is above the profile's ``overhead_budget`` (exactly at the budget it does not trip); it
  calls that collector's ``turn_off()`` once, records a ``CollectorDisabled`` domain event
  saying why, and after a cool-down turns the collector on again (half-open, recorded as
  ``CollectorEnabled``): a full window within budget closes it, another breach opens it again
  with twice the cool-down (up to 16 times);
- when the collectors with a breaker are each within budget but together are not over a
  full window, the largest closed one is turned off (a breaker on half-open trial is judged
  by its own window); after any breaker changes state the whole's window starts again;
- shares are of the process's CPU time, but never of less than ``cpu_floor_cores`` (0.1) of
  one core: an idle program does not trip breakers on Lumin's small fixed costs;
- nothing here raises into the program: a failing ``turn_off``, probe or measurement is
  caught and counted.

How overhead is measured:

- Lumin's threads (named ``lumin-*``): their own CPU time, read per thread with psutil (the
  kernel's per-task counters) once per sample; a thread that ended keeps what it used.
- Callbacks on the program's threads that time themselves (the OTel bridge sums
  ``time.thread_time_ns()`` around each span): their counter, passed as ``cpu_s``.
- The call tracer cannot time each call (a clock read would cost as much as the record). Its
  CPU is estimated: `calibrate_call_cost` runs a loop of calls of a dummy function once
  unwatched, once watched and recorded, once watched but sampled out, and takes the
  per-call differences (best of several runs); then
  ``cpu ~ recorded * recorded_ns + (starts - recorded) * unsampled_ns`` from
  `CallTracer.stats()`. It is an estimate: caches and branch predictors make a real
  workload's per-call cost differ from a tight loop's, usually upward, so the breaker may
  trip a little late, never early.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypedDict

if TYPE_CHECKING:
    import pyarrow as pa

    from lumin_nb.event import EventBuilder

__all__ = [
    "CallCost",
    "CircuitBreaker",
    "GovernorEvent",
    "RateLimiter",
    "Readings",
    "ResourceGovernor",
    "Sample",
    "SelfMonitor",
    "ThreadCpuMeter",
    "calibrate_call_cost",
    "call_cost",
]

Clock = Callable[[], float]
BreakerState = Literal["closed", "open", "half_open"]

#: a trip doubles the cool-down of the next one, up to this factor
MAX_COOLDOWN_FACTOR: Final = 16
#: threads whose names start with this are Lumin's own
LUMIN_THREAD_PREFIX: Final = "lumin-"
_SEVERITY_ERROR: Final = 17  # lumin_nb.event.SEVERITY_ERROR (not imported: it loads pyarrow)


class GovernorEvent(TypedDict):
    """A domain event the governor asks the observatory to store (`Store.record`)."""

    type: str
    collector: str
    reason: str
    overhead: float
    budget: float
    window_s: float
    cooldown_s: float
    trips: int


class Readings(TypedDict, total=False):
    """What the observatory reports to `SelfMonitor` each interval (all cumulative or now)."""

    #: events stored so far (the monitor derives the rate)
    events_total: int
    #: events waiting in each buffer now
    queue_depth: dict[str, int]
    #: events dropped so far per source (the monitor emits the increments)
    dropped: dict[str, int]
    #: bytes of the store on disk now
    store_bytes: int


class _GovernedConfig(Protocol):
    @property
    def overhead_budget(self) -> float: ...


# ---- rate limits ----------------------------------------------------------------------


class _Bucket:
    __slots__ = ("burst", "last", "rate_per_s", "tokens")

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = burst
        self.last = now


class RateLimiter:
    """Token buckets per source: at most ``rate_per_s`` events per second plus ``burst``.

    Over any interval of length t a source is admitted at most ``rate_per_s * t + burst``
    events. Sources without their own rate use the default (None: unlimited). Thread-safe;
    `clock` (seconds, monotonic) is injectable for tests.
    """

    def __init__(
        self,
        rate_per_s: float | None = None,
        *,
        burst: float | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._check(rate_per_s, burst)
        self.default_rate_per_s = rate_per_s
        self.default_burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._rates: dict[str, tuple[float | None, float | None]] = {}
        self._buckets: dict[str, _Bucket | None] = {}
        self.admitted: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()

    @staticmethod
    def _check(rate_per_s: float | None, burst: float | None) -> None:
        if rate_per_s is not None and not (rate_per_s > 0 and math.isfinite(rate_per_s)):
            raise ValueError(
                f"rate_per_s={rate_per_s!r}: expected a positive number of events per second "
                "(or None for no limit). Fix: RateLimiter(10_000)"
            )
        if burst is not None and not (burst >= 1 and math.isfinite(burst)):
            raise ValueError(
                f"burst={burst!r}: expected at least 1 event. Fix: RateLimiter(100, burst=200)"
            )

    def set_rate(
        self, source: str, rate_per_s: float | None, *, burst: float | None = None
    ) -> None:
        """Give `source` its own rate (None: unlimited); its bucket starts full."""
        self._check(rate_per_s, burst)
        with self._lock:
            self._rates[source] = (rate_per_s, burst)
            self._buckets.pop(source, None)

    def is_limited(self, source: str) -> bool:
        """Whether `source` has a rate limit (its own or the default)."""
        with self._lock:
            rate, _ = self._rates.get(source, (self.default_rate_per_s, None))
            return rate is not None

    def _bucket(self, source: str, now: float) -> _Bucket | None:
        if source in self._buckets:
            return self._buckets[source]
        rate, burst = self._rates.get(source, (self.default_rate_per_s, self.default_burst))
        bucket = None if rate is None else _Bucket(rate, burst if burst else max(rate, 1.0), now)
        self._buckets[source] = bucket
        return bucket

    def admit(self, source: str, n: int = 1) -> int:
        """Return how many of `n` events of `source` pass now; the rest are counted refused."""
        if n <= 0:
            return 0
        with self._lock:
            now = self._clock()
            bucket = self._bucket(source, now)
            if bucket is None:
                passed = n
            else:
                elapsed = max(0.0, now - bucket.last)
                bucket.last = max(bucket.last, now)
                bucket.tokens = min(bucket.burst, bucket.tokens + elapsed * bucket.rate_per_s)
                passed = min(n, int(bucket.tokens))
                bucket.tokens -= passed
            self.admitted[source] += passed
            if passed < n:
                self.refused[source] += n - passed
            return passed

    def stats(self) -> dict[str, dict[str, int]]:
        """Return admitted and refused counts per source."""
        with self._lock:
            sources = sorted(set(self.admitted) | set(self.refused))
            return {s: {"admitted": self.admitted[s], "refused": self.refused[s]} for s in sources}


# ---- circuit breakers -----------------------------------------------------------------


def _pct(share: float) -> str:
    percent = share * 100
    return f"{percent:.1f}%" if percent >= 0.1 or percent == 0 else f"{percent:.2g}%"


class CircuitBreaker:
    """Turns one collector off while its CPU share is over budget; retries after a cool-down.

    Fed cumulative CPU seconds (the collector's and the whole process's) with `observe`;
    see the module docstring for the rules. `turn_off` is called once per trip, `turn_on`
    (if given) when the cool-down is over.
    """

    def __init__(
        self,
        name: str,
        *,
        budget: float,
        window_s: float = 10.0,
        cooldown_s: float = 60.0,
        cpu_floor_cores: float = 0.1,
        turn_off: Callable[[], None],
        turn_on: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.budget = budget
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self.cpu_floor_cores = cpu_floor_cores
        self.turn_off = turn_off
        self.turn_on = turn_on
        self.state: BreakerState = "closed"
        self.share: float | None = None
        self.trips = 0
        self.reason: str | None = None
        self.callback_errors = 0
        self._in_a_row = 0
        self._opened_at = 0.0
        self._history: collections.deque[tuple[float, float, float]] = collections.deque()

    @property
    def current_cooldown_s(self) -> float:
        """The cool-down of the current (or next) trip: doubled by each trip in a row."""
        factor: int = min(1 << max(self._in_a_row - 1, 0), MAX_COOLDOWN_FACTOR)
        return self.cooldown_s * factor

    def window_share(self, t: float, cpu_s: float, process_cpu_s: float) -> float | None:
        """Add a sample; return the share over the last full window (None until one is full)."""
        hist = self._history
        hist.append((t, cpu_s, process_cpu_s))
        start = t - self.window_s
        while len(hist) >= 2 and hist[1][0] <= start:
            hist.popleft()
        t0, c0, p0 = hist[0]
        if t0 > start or t <= t0:
            return None
        floor = self.cpu_floor_cores * (t - t0)
        return max(0.0, cpu_s - c0) / max(process_cpu_s - p0, floor, 1e-12)

    def observe(self, t: float, cpu_s: float, process_cpu_s: float) -> GovernorEvent | None:
        """Feed one sample; return the domain event of a state change, else None."""
        if self.state == "open":
            if t - self._opened_at < self.current_cooldown_s:
                return None
            return self._retry(t, cpu_s, process_cpu_s)
        share = self.window_share(t, cpu_s, process_cpu_s)
        if share is None:
            return None
        self.share = share
        if share > self.budget:
            return self.trip(
                t, f"overhead {_pct(share)} > budget {_pct(self.budget)} over {self.window_s:g} s"
            )
        if self.state == "half_open":
            self.state = "closed"
            self._in_a_row = 0
        return None

    def trip(self, t: float, reason: str) -> GovernorEvent | None:
        """Open the breaker now (once: an open breaker stays open); call `turn_off`."""
        if self.state == "open":
            return None
        self.state = "open"
        self.trips += 1
        self._in_a_row += 1
        self._opened_at = t
        self._history.clear()
        self.reason = reason
        try:
            self.turn_off()
        except Exception as exc:  # the breaker stays open; the failure is counted and said
            self.callback_errors += 1
            reason = f"{reason}; turn_off failed: {exc!r}"
        return self._event("CollectorDisabled", reason)

    def _retry(self, t: float, cpu_s: float, process_cpu_s: float) -> GovernorEvent:
        waited = t - self._opened_at
        self.state = "half_open"
        self._history.clear()
        self._history.append((t, cpu_s, process_cpu_s))
        reason = f"half-open retry after a {waited:g} s cool-down"
        if self.turn_on is not None:
            try:
                self.turn_on()
            except Exception as exc:
                self.callback_errors += 1
                reason = f"{reason}; turn_on failed: {exc!r}"
        return self._event("CollectorEnabled", reason)

    def _event(self, type_: str, reason: str) -> GovernorEvent:
        return GovernorEvent(
            type=type_,
            collector=self.name,
            reason=reason,
            overhead=round(self.share or 0.0, 6),
            budget=self.budget,
            window_s=self.window_s,
            cooldown_s=self.current_cooldown_s,
            trips=self.trips,
        )


# ---- measurements ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One measurement the governor decides on: all CPU figures are cumulative seconds."""

    t_s: float
    process_cpu_s: float
    collector_cpu_s: Mapping[str, float] = field(default_factory=dict)
    held_bytes: Mapping[str, int] = field(default_factory=dict)


class ThreadCpuMeter:
    """Cumulative CPU seconds of Lumin's threads by name, from the kernel's per-thread counters.

    A thread that ended keeps what it used (its last reading is remembered per native id).
    Without psutil, or where it cannot read threads, every reading is empty.
    """

    def __init__(self, prefix: str = LUMIN_THREAD_PREFIX) -> None:
        self.prefix = prefix
        self._last: dict[int, tuple[str, float]] = {}
        self._ended: dict[str, float] = {}
        self.errors = 0
        self._process: Any = None

    def read(self) -> dict[str, float]:
        """Return {thread name: CPU seconds used so far} for threads named ``prefix*``."""
        names = {
            t.native_id: t.name
            for t in threading.enumerate()
            if t.name.startswith(self.prefix) and t.native_id is not None
        }
        times: dict[int, float] = {}
        try:
            if self._process is None:
                import psutil

                self._process = psutil.Process(os.getpid())
            for th in self._process.threads():
                if th.id in names:
                    times[th.id] = th.user_time + th.system_time
        except Exception:
            self.errors += 1
            return {}
        for tid, (name, used) in list(self._last.items()):
            if tid not in times:  # ended since the last reading
                self._ended[name] = self._ended.get(name, 0.0) + used
                del self._last[tid]
        out = dict(self._ended)
        for tid, used in times.items():
            name = names[tid]
            self._last[tid] = (name, used)
            out[name] = out.get(name, 0.0) + used
        return out


@dataclass(frozen=True)
class CallCost:
    """What one call of watched code costs the call tracer, measured by `calibrate_call_cost`."""

    #: extra nanoseconds per call that is recorded
    recorded_ns: float
    #: extra nanoseconds per call of watched code that sampling left out
    unsampled_ns: float
    #: the tracer backend measured (native C extension or the Python fallback)
    is_native: bool

    def cpu_s(self, stats: Mapping[str, object]) -> float:
        """Return the estimated CPU seconds the tracer has cost, from `CallTracer.stats()`."""
        recorded = _as_int(stats.get("recorded"))
        starts = _as_int(stats.get("starts"))
        return (recorded * self.recorded_ns + max(starts - recorded, 0) * self.unsampled_ns) / 1e9


def _as_int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


_CALIBRATION_SOURCE: Final = """
def leaf(x):
    return x

def loop(f, n):
    for i in range(n):
        f(i)
"""
#: the calibration functions' module: not Lumin's own (which is never traced), not the user's
_CALIBRATION_FILE: Final = "<lumin-calibration>"


def calibrate_call_cost(*, calls: int = 5_000, repeat: int = 5) -> CallCost:
    """Measure the call tracer's cost per recorded and per sampled-out call; see the module doc.

    Runs a dummy function `calls` times unwatched, watched, and watched with sample_rate 0,
    `repeat` times interleaved, and keeps the fastest of each (the least disturbed). Takes
    about 30-50 ms with the native tracer (see `call_cost` for the once-per-process cached
    figure). Call it before the observatory starts its tracer: it needs the tracer's
    `sys.monitoring` tool id. What it records is discarded.

    Raises
    ------
    TracerBusyError
        When another call tracer is running.
    """
    from lumin_nb.collect.calls import CallTracer

    namespace: dict[str, Any] = {"__name__": "lumin-calibration"}
    exec(compile(_CALIBRATION_SOURCE, _CALIBRATION_FILE, "exec"), namespace)
    leaf, loop = namespace["leaf"], namespace["loop"]
    tracer = CallTracer(buffer_records=calls + 1024, sample_rate=1.0)
    best = {"plain": math.inf, "recorded": math.inf, "unsampled": math.inf}
    tracer.start()
    try:
        loop(leaf, 10)  # the first calls classify the code objects (DISABLE for unwatched)
        for _ in range(repeat):
            for variant in ("plain", "recorded", "unsampled"):
                if variant == "plain":
                    tracer.unwatch(*tracer.patterns)
                else:
                    if not tracer.patterns:
                        tracer.watch("lumin-calibration:leaf")
                    tracer.sample_rate = 1.0 if variant == "recorded" else 0.0
                loop(leaf, 10)
                began = time.perf_counter_ns()
                loop(leaf, calls)
                best[variant] = min(best[variant], time.perf_counter_ns() - began)
                tracer.drain()  # keep the ring buffer from filling; the records are discarded
    finally:
        tracer.stop()
        tracer.drain()
    return CallCost(
        recorded_ns=max(0.0, (best["recorded"] - best["plain"]) / calls),
        unsampled_ns=max(0.0, (best["unsampled"] - best["plain"]) / calls),
        is_native=tracer.is_native,
    )


_call_cost: CallCost | None = None


def call_cost() -> CallCost:
    """Return the call tracer's per-call cost, calibrated at the first call in this process."""
    global _call_cost
    if _call_cost is None:
        _call_cost = calibrate_call_cost()
    return _call_cost


# ---- the governor ---------------------------------------------------------------------


@dataclass
class _Collector:
    name: str
    threads: tuple[str, ...]
    cpu_s: Callable[[], float] | None
    breaker: CircuitBreaker | None


class ResourceGovernor:
    """Rate limits, a memory cap and circuit breakers for the collectors of one process.

    Parameters
    ----------
    config
        The observatory's Config: ``overhead_budget`` (and, when the profile has them,
        ``breaker_window_s``, ``breaker_cooldown_s``, ``rate_limit_events_per_s``,
        ``memory_max_bytes``).
    clock
        Monotonic seconds; injected by tests.
    on_event
        Called with each `GovernorEvent` (the observatory stores them as domain events).
    """

    def __init__(
        self,
        config: _GovernedConfig,
        *,
        clock: Clock = time.monotonic,
        on_event: Callable[[GovernorEvent], None] | None = None,
        cpu_floor_cores: float = 0.1,
    ) -> None:
        self.budget = float(config.overhead_budget)
        self.window_s = float(getattr(config, "breaker_window_s", 10.0))
        self.cooldown_s = float(getattr(config, "breaker_cooldown_s", 60.0))
        rate = getattr(config, "rate_limit_events_per_s", None)
        self.memory_max_bytes: int | None = getattr(config, "memory_max_bytes", None)
        self.cpu_floor_cores = cpu_floor_cores
        self.clock = clock
        self.on_event = on_event
        self.limiter = RateLimiter(rate, clock=clock)
        self.events: collections.deque[GovernorEvent] = collections.deque(maxlen=100)
        self.event_errors = 0
        self.refused_bytes: collections.Counter[str] = collections.Counter()
        self.shares: dict[str, float] = {}
        self.held_bytes: dict[str, int] = {}
        self.last_sample: Sample | None = None
        self._collectors: dict[str, _Collector] = {}
        # (t, CPU of every collector, CPU of those with a breaker, process CPU)
        self._totals: collections.deque[tuple[float, float, float, float]] = collections.deque()
        self._lock = threading.RLock()
        self._probes: dict[str, Callable[[], int]] = {}
        self._meter = ThreadCpuMeter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_tick: Callable[[float], object] | None = None
        self.sample_errors = 0

    # -- what is governed --------------------------------------------------------------
    def add_collector(
        self,
        name: str,
        *,
        threads: tuple[str, ...] = (),
        cpu_s: Callable[[], float] | None = None,
        turn_off: Callable[[], None] | None = None,
        turn_on: Callable[[], None] | None = None,
    ) -> CircuitBreaker | None:
        """Measure a collector: its threads' CPU (names) plus `cpu_s()` (its own counter).

        With `turn_off` it gets a circuit breaker (returned); without, it is only measured
        (the store writer and the governor itself cannot be turned off).
        """
        breaker = None
        if turn_off is not None:
            breaker = CircuitBreaker(
                name,
                budget=self.budget,
                window_s=self.window_s,
                cooldown_s=self.cooldown_s,
                cpu_floor_cores=self.cpu_floor_cores,
                turn_off=turn_off,
                turn_on=turn_on,
            )
        with self._lock:
            self._collectors[name] = _Collector(name, threads, cpu_s, breaker)
        return breaker

    def add_buffer(self, name: str, held_bytes: Callable[[], int]) -> None:
        """Count the bytes `held_bytes()` reports against the memory cap at each sample."""
        with self._lock:
            self._probes[name] = held_bytes

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Return the circuit breakers by collector name."""
        with self._lock:
            return {n: c.breaker for n, c in self._collectors.items() if c.breaker is not None}

    def set_budget(self, budget: float) -> None:
        """Apply a new overhead budget to every breaker (a config change)."""
        with self._lock:
            self.budget = budget
            for breaker in self.breakers().values():
                breaker.budget = budget

    # -- admission ---------------------------------------------------------------------
    def admit(self, source: str, n: int) -> int:
        """Return how many of `n` events of `source` the rate limit lets through now."""
        return self.limiter.admit(source, n)

    def admit_batch(self, source: str, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Return the rows of `batch` within `source`'s rate limit; errors always pass.

        Rows with severity >= 17 are kept and not charged; of the others the first ones the
        bucket admits are kept. Refused rows are counted in ``limiter.refused[source]``.
        """
        n = batch.num_rows
        if n == 0 or not self.limiter.is_limited(source):
            return batch
        import numpy as np
        import pyarrow as pa

        severity = batch.column("severity").to_numpy(zero_copy_only=False)
        is_error = severity >= _SEVERITY_ERROR
        others = np.flatnonzero(~is_error)
        passed = self.limiter.admit(source, len(others))
        if passed == len(others):
            return batch
        keep = is_error.copy()
        keep[others[:passed]] = True
        return batch.filter(pa.array(keep))

    def admit_bytes(self, source: str, nbytes: int) -> bool:
        """Whether `source` may hold `nbytes` more in its buffer under the memory cap."""
        cap = self.memory_max_bytes
        if cap is None:
            return True
        with self._lock:
            held = sum(self.held_bytes.values())
            if held + nbytes <= cap:
                self.held_bytes[source] = self.held_bytes.get(source, 0) + nbytes
                return True
            self.refused_bytes[source] += nbytes
            return False

    @property
    def is_over_memory(self) -> bool:
        """Whether the buffers held more than the memory cap at the last sample."""
        cap = self.memory_max_bytes
        return cap is not None and sum(self.held_bytes.values()) > cap

    # -- decisions (pure on samples) ---------------------------------------------------
    def feed(self, sample: Sample) -> list[GovernorEvent]:
        """Decide on one sample: update shares, trip or re-arm breakers; return the events."""
        out: list[GovernorEvent] = []
        with self._lock:
            self.last_sample = sample
            was_over = self.is_over_memory
            self.held_bytes = dict(sample.held_bytes)
            if self.is_over_memory and not was_over:
                out.append(self._memory_event(sample))
            t, process = sample.t_s, sample.process_cpu_s
            tripped = False
            for name, collector in self._collectors.items():
                cpu = sample.collector_cpu_s.get(name)
                if cpu is None or collector.breaker is None:
                    continue
                event = collector.breaker.observe(t, cpu, process)
                if collector.breaker.share is not None:
                    self.shares[name] = collector.breaker.share
                if event is not None:
                    tripped |= event["type"] == "CollectorDisabled"
                    out.append(event)
            if out:  # a collector went off or on: the whole's window starts again
                self._totals.clear()
            shares = self._total_share(sample)
            if shares is not None:
                self.shares["all"] = shares[0]
                # only what breakers can turn off counts here: the store writer and the
                # governor are measured and shown, never blamed on a collector
                if shares[1] > self.budget and not tripped:
                    event = self._trip_largest(t, shares[1])
                    if event is not None:
                        out.append(event)
                        self._totals.clear()
        for event in out:
            self._emit(event)
        return out

    def _total_share(self, sample: Sample) -> tuple[float, float] | None:
        """Return the window shares of all of Lumin and of the collectors with a breaker."""
        hist = self._totals
        cpu = sample.collector_cpu_s
        breakable = sum(
            cpu.get(c.name, 0.0) for c in self._collectors.values() if c.breaker is not None
        )
        hist.append((sample.t_s, sum(cpu.values()), breakable, sample.process_cpu_s))
        start = sample.t_s - self.window_s
        while len(hist) >= 2 and hist[1][0] <= start:
            hist.popleft()
        t0, all0, b0, p0 = hist[0]
        if t0 > start or sample.t_s <= t0:
            return None
        base = max(sample.process_cpu_s - p0, self.cpu_floor_cores * (sample.t_s - t0), 1e-12)
        _, all1, b1, _ = hist[-1]
        return max(0.0, all1 - all0) / base, max(0.0, b1 - b0) / base

    def _trip_largest(self, t: float, total: float) -> GovernorEvent | None:
        closed = [
            c.breaker
            for c in self._collectors.values()
            if c.breaker is not None and c.breaker.state == "closed" and c.breaker.share
        ]
        if not closed:
            return None
        largest = max(closed, key=lambda b: b.share or 0.0)
        return largest.trip(
            t,
            f"collectors' overhead {_pct(total)} > budget {_pct(self.budget)} over "
            f"{self.window_s:g} s; {largest.name} is the largest share "
            f"({_pct(largest.share or 0.0)})",
        )

    def _memory_event(self, sample: Sample) -> GovernorEvent:
        held = sum(sample.held_bytes.values())
        biggest = max(sample.held_bytes, key=lambda k: sample.held_bytes[k], default="")
        return GovernorEvent(
            type="MemoryCapReached",
            collector=biggest,
            reason=f"buffers hold {held} bytes > cap {self.memory_max_bytes} bytes; "
            f"new batches are refused until they drain",
            overhead=self.shares.get("all", 0.0),
            budget=self.budget,
            window_s=self.window_s,
            cooldown_s=0.0,
            trips=0,
        )

    def _emit(self, event: GovernorEvent) -> None:
        self.events.append(event)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                self.event_errors += 1

    # -- measuring (the lumin-governor thread) -----------------------------------------
    def measure(self) -> Sample:
        """Take one real sample: process CPU, each collector's CPU, the buffers' bytes."""
        threads = self._meter.read()
        with self._lock:
            collectors = list(self._collectors.values())
            probes = dict(self._probes)
        cpu: dict[str, float] = {}
        claimed: set[str] = set()
        for c in collectors:
            used = 0.0
            for name, seconds in threads.items():
                if any(name.startswith(prefix) for prefix in c.threads):
                    used += seconds
                    claimed.add(name)
            if c.cpu_s is not None:
                try:
                    used += float(c.cpu_s())
                except Exception:
                    self.sample_errors += 1
            cpu[c.name] = used
        other = sum(s for n, s in threads.items() if n not in claimed)
        if other:
            cpu["lumin-other"] = other
        held: dict[str, int] = {}
        for name, probe in probes.items():
            try:
                held[name] = int(probe())
            except Exception:
                self.sample_errors += 1
        return Sample(self.clock(), time.process_time(), cpu, held)

    def sample(self) -> list[GovernorEvent]:
        """Measure now and decide on it (what the thread does every interval)."""
        return self.feed(self.measure())

    def start(
        self, *, interval_s: float = 1.0, on_tick: Callable[[float], object] | None = None
    ) -> None:
        """Start the ``lumin-governor`` thread: `sample()`, then `on_tick(now)`, each interval."""
        if self._thread is not None:
            return
        self._on_tick = on_tick
        self._stop.clear()
        self.add_collector("governor", threads=("lumin-governor",))
        self._thread = threading.Thread(
            target=self._run, args=(interval_s,), name="lumin-governor", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (idempotent); breakers keep their state."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.sample()
                if self._on_tick is not None:
                    self._on_tick(self.clock())
            except Exception:
                self.sample_errors += 1

    def status(self) -> dict[str, object]:
        """Return overhead shares, breaker states, memory and rate-limit counts."""
        with self._lock:
            return {
                "overhead_budget": self.budget,
                "overhead": {k: _pct(v) for k, v in sorted(self.shares.items())},
                "breakers": {
                    n: b.state if b.reason is None else f"{b.state} ({b.reason})"
                    for n, b in self.breakers().items()
                },
                "held_bytes": sum(self.held_bytes.values()),
                "memory_max_bytes": self.memory_max_bytes,
                "rate_limited": dict(self.limiter.refused),
            }


# ---- self-monitoring ------------------------------------------------------------------


class SelfMonitor:
    """Emits ``lumin.*`` metric events about Lumin itself every `interval_s`.

    Series (entity, attrs): ``lumin.ingest.events_per_s``; ``lumin.queue.depth``
    ``{"queue"}``; ``lumin.dropped`` ``{"source"}`` (drops since the last emit);
    ``lumin.rate_limited`` ``{"source"}`` (refused since the last emit);
    ``lumin.overhead.share`` ``{"collector"}`` (``"all"`` for the sum);
    ``lumin.store.bytes``; ``lumin.memory.held_bytes``; ``lumin.breakers.tripped`` (open
    breakers, their names in ``{"collectors"}``).
    """

    def __init__(
        self,
        builder: EventBuilder,
        readings: Callable[[], Readings],
        *,
        governor: ResourceGovernor | None = None,
        interval_s: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.builder = builder
        self.readings = readings
        self.governor = governor
        self.interval_s = interval_s
        self.clock = clock
        self.failed = 0
        self._last_t: float | None = None
        self._last_total: int | None = None
        self._last_dropped: dict[str, int] = {}
        self._last_refused: dict[str, int] = {}
        self._status: dict[str, object] = {}

    def tick(self, now: float | None = None) -> int:
        """Emit when `interval_s` has passed since the last emit; return the events emitted."""
        now = self.clock() if now is None else now
        if self._last_t is not None and now - self._last_t < self.interval_s:
            return 0
        try:
            return self.emit(self.readings(), now)
        except Exception:
            self.failed += 1
            return 0

    def emit(self, readings: Readings, now: float) -> int:
        """Append one event per series from `readings` taken at `now`; return how many."""
        series: list[tuple[str, float, str | None]] = []
        total = readings.get("events_total")
        rate = 0.0
        if total is not None:
            if self._last_total is not None and self._last_t is not None and now > self._last_t:
                rate = max(0, total - self._last_total) / (now - self._last_t)
            series.append(("lumin.ingest.events_per_s", rate, None))
            self._last_total = total
        for queue, depth in sorted(readings.get("queue_depth", {}).items()):
            series.append(("lumin.queue.depth", float(depth), _kv("queue", queue)))
        dropped = readings.get("dropped", {})
        for source, count in sorted(dropped.items()):
            new = count - self._last_dropped.get(source, 0)
            series.append(("lumin.dropped", float(max(new, 0)), _kv("source", source)))
        self._last_dropped = dict(dropped)
        store_bytes = readings.get("store_bytes")
        if store_bytes is not None:
            series.append(("lumin.store.bytes", float(store_bytes), None))
        tripped: list[str] = []
        gov = self.governor
        if gov is not None:
            for collector, share in sorted(gov.shares.items()):
                series.append(("lumin.overhead.share", share, _kv("collector", collector)))
            refused = dict(gov.limiter.refused)
            for source, count in sorted(refused.items()):
                new = count - self._last_refused.get(source, 0)
                series.append(("lumin.rate_limited", float(max(new, 0)), _kv("source", source)))
            self._last_refused = refused
            series.append(("lumin.memory.held_bytes", float(sum(gov.held_bytes.values())), None))
            tripped = sorted(n for n, b in gov.breakers().items() if b.state == "open")
            names = ", ".join(f'"{n}"' for n in tripped)
            series.append(
                ("lumin.breakers.tripped", float(len(tripped)), f'{{"collectors": [{names}]}}')
            )
        ts = time.time_ns()
        for name, value, attrs in series:
            self.builder.append(
                "metric",
                ts=ts,
                source_type="runtime_metric",
                entity=name,
                value=value,
                attrs=attrs,
            )
        self._last_t = now
        self._status = {
            "events_per_s": round(rate, 1),
            "queue_depth": dict(readings.get("queue_depth", {})),
            "dropped": dict(dropped),
            "store_bytes": store_bytes,
            "overhead": {k: _pct(v) for k, v in sorted(gov.shares.items())} if gov else {},
            "tripped": tripped,
        }
        return len(series)

    def status(self) -> dict[str, object]:
        """Return the last emitted figures (for `lm.status()`)."""
        return dict(self._status)


def _kv(key: str, value: str) -> str:
    import json

    return json.dumps({key: value})
