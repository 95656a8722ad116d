"""The governor: token buckets, circuit breakers on fed samples, self-metrics, real threads."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
from conftest import wait_until
from hypothesis import given, strategies as st

from lumin_nb.event import EventBuilder, batch_from_columns
from lumin_nb.govern import (
    CallCost,
    GovernorEvent,
    RateLimiter,
    Readings,
    ResourceGovernor,
    Sample,
    SelfMonitor,
    ThreadCpuMeter,
    calibrate_call_cost,
)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---- token buckets ------------------------------------------------------------------


@given(
    rate=st.floats(0.5, 10_000),
    burst=st.none() | st.floats(1, 1_000),
    steps=st.lists(st.tuples(st.floats(0, 2.0), st.integers(0, 5_000)), min_size=1, max_size=40),
)
def test_a_bucket_never_admits_more_than_rate_times_t_plus_burst(
    rate: float, burst: float | None, steps: list[tuple[float, int]]
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, burst=burst, clock=clock)
    cap = burst if burst is not None else max(rate, 1.0)
    times, passed = [], []
    for dt, n in steps:
        clock.t += dt
        got = limiter.admit("src", n)
        assert 0 <= got <= n
        times.append(clock.t)
        passed.append(got)
    for i in range(len(steps)):
        admitted = 0
        for j in range(i, len(steps)):
            admitted += passed[j]
            allowed = rate * (times[j] - times[i]) + cap
            assert admitted <= allowed + 1e-6 * allowed, (i, j, admitted, allowed)
    assert limiter.refused["src"] == sum(n for _, n in steps) - sum(passed)


def test_buckets_are_per_source_and_refill_with_the_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock)
    limiter.set_rate("noisy", 10, burst=5)
    limiter.set_rate("trusted", None)
    assert limiter.admit("noisy", 8) == 5
    assert limiter.admit("other", 250) == 100
    assert limiter.admit("trusted", 10**6) == 10**6
    clock.t += 0.5
    assert limiter.admit("noisy", 8) == 5  # 5 tokens back in 0.5 s (capped at burst)
    assert limiter.admit("other", 100) == 50
    assert limiter.stats()["noisy"] == {"admitted": 10, "refused": 6}
    assert limiter.stats()["other"] == {"admitted": 150, "refused": 200}
    assert not limiter.refused["trusted"]


def test_admit_batch_keeps_errors_and_the_first_rows_the_bucket_allows() -> None:
    clock = FakeClock()
    config = SimpleNamespace(overhead_budget=0.03, rate_limit_events_per_s=3.0)
    gov = ResourceGovernor(config, clock=clock)
    severity = [9, 17, 9, 9, 9, 21, 9]
    batch = batch_from_columns(
        len(severity),
        ts=pa.array(range(len(severity)), pa.int64()),
        kind="log",
        severity=pa.array(severity, pa.int8()),
        message=pa.array([str(i) for i in range(len(severity))]),
    )
    kept = gov.admit_batch("ext", batch)
    assert kept.column("message").to_pylist() == ["0", "1", "2", "3", "5"]
    assert gov.limiter.refused["ext"] == 2


# ---- circuit breakers on fed samples --------------------------------------------------


def _governor(
    budget: float = 0.03, **extra: Any
) -> tuple[ResourceGovernor, list[GovernorEvent], list[str]]:
    events: list[GovernorEvent] = []
    calls: list[str] = []
    config = SimpleNamespace(overhead_budget=budget, breaker_window_s=10.0, **extra)
    gov = ResourceGovernor(config, clock=FakeClock(), on_event=events.append)
    return gov, events, calls


def _feed_steady(
    gov: ResourceGovernor,
    start: float,
    seconds: int,
    per_s: dict[str, float],
    base: dict[str, float],
) -> list[GovernorEvent]:
    """Feed one sample per second: the process uses one CPU second per second."""
    out = []
    for i in range(seconds + 1):
        t = start + i
        cpu = {name: base.get(name, 0.0) + rate * i for name, rate in per_s.items()}
        out += gov.feed(Sample(t, process_cpu_s=100.0 + t, collector_cpu_s=cpu))
    for name, rate in per_s.items():
        base[name] = base.get(name, 0.0) + rate * seconds
    return out


def test_a_breaker_below_the_budget_never_trips() -> None:
    gov, events, calls = _governor()
    gov.add_collector("calls", turn_off=lambda: calls.append("off"))
    _feed_steady(gov, 0, 60, {"calls": 0.0299}, {})
    assert events == [] and calls == []
    assert gov.breakers()["calls"].state == "closed"
    assert abs(gov.shares["calls"] - 0.0299) < 1e-9


def test_a_breaker_over_the_budget_trips_once_and_records_why() -> None:
    gov, events, calls = _governor()
    gov.add_collector("calls", turn_off=lambda: calls.append("off"))
    _feed_steady(gov, 0, 9, {"calls": 0.042}, base := {})
    assert calls == []  # no full window yet
    _feed_steady(gov, 9, 30, {"calls": 0.042}, base)
    assert calls == ["off"]
    (event,) = events
    assert event["type"] == "CollectorDisabled" and event["collector"] == "calls"
    assert event["reason"] == "overhead 4.2% > budget 3.0% over 10 s"
    assert event["budget"] == 0.03 and abs(event["overhead"] - 0.042) < 1e-6
    assert gov.breakers()["calls"].state == "open"
    assert "overhead 4.2%" in str(gov.status()["breakers"])


def test_a_tripped_breaker_retries_after_the_cooldown_and_rearms() -> None:
    gov, events, calls = _governor(breaker_cooldown_s=60.0)
    gov.add_collector(
        "otel", turn_off=lambda: calls.append("off"), turn_on=lambda: calls.append("on")
    )
    base: dict[str, float] = {}
    _feed_steady(gov, 0, 10, {"otel": 0.05}, base)
    assert calls == ["off"]
    _feed_steady(gov, 10, 59, {"otel": 0.0}, base)  # cool-down not over
    assert calls == ["off"]
    _feed_steady(gov, 69, 1, {"otel": 0.0}, base)
    assert calls == ["off", "on"]
    assert [e["type"] for e in events] == ["CollectorDisabled", "CollectorEnabled"]
    assert events[1]["reason"] == "half-open retry after a 60 s cool-down"
    breaker = gov.breakers()["otel"]
    assert breaker.state == "half_open"
    _feed_steady(gov, 70, 10, {"otel": 0.01}, base)  # one full window within budget
    assert breaker.state == "closed"
    _feed_steady(gov, 80, 10, {"otel": 0.05}, base)  # trips again, armed as before
    assert calls == ["off", "on", "off"] and breaker.trips == 2


def test_a_breach_while_half_open_doubles_the_cooldown() -> None:
    gov, events, calls = _governor(breaker_cooldown_s=60.0)
    gov.add_collector("calls", turn_off=lambda: calls.append("off"))
    base: dict[str, float] = {}
    _feed_steady(gov, 0, 10, {"calls": 0.05}, base)
    _feed_steady(gov, 10, 60, {"calls": 0.0}, base)  # retry at t=70
    _feed_steady(gov, 70, 10, {"calls": 0.05}, base)  # breach in the trial window
    assert calls == ["off", "off"]
    assert events[-1]["cooldown_s"] == 120.0
    _feed_steady(gov, 80, 119, {"calls": 0.0}, base)
    assert gov.breakers()["calls"].state == "open"
    _feed_steady(gov, 199, 1, {"calls": 0.0}, base)
    assert gov.breakers()["calls"].state == "half_open"


def test_an_idle_process_does_not_trip_on_small_fixed_costs() -> None:
    gov, events, _ = _governor()
    gov.add_collector("runtime_metrics", turn_off=lambda: None)
    for t in range(30):  # the process is idle: Lumin's 1 ms/s is all the CPU it uses
        gov.feed(
            Sample(
                float(t), process_cpu_s=0.001 * t, collector_cpu_s={"runtime_metrics": 0.001 * t}
            )
        )
    assert events == []
    assert gov.shares["runtime_metrics"] < 0.03


def test_collectors_over_budget_together_turn_off_the_largest_one() -> None:
    gov, events, calls = _governor()
    gov.add_collector("calls", turn_off=lambda: calls.append("calls"))
    gov.add_collector("otel", turn_off=lambda: calls.append("otel"))
    gov.add_collector("store")  # measured only: no breaker
    base: dict[str, float] = {}
    _feed_steady(gov, 0, 10, {"calls": 0.025, "otel": 0.01, "store": 0.05}, base)
    assert calls == ["calls"]
    _feed_steady(gov, 10, 30, {"calls": 0.0, "otel": 0.01, "store": 0.05}, base)
    assert calls == ["calls"]  # without calls Lumin is within budget: nothing else goes
    (event,) = events
    assert event["reason"] == (
        "collectors' overhead 3.5% > budget 3.0% over 10 s; calls is the largest share (2.5%)"
    )
    assert gov.shares["all"] == pytest.approx(0.06)  # the store counts in the total shown


def test_a_failing_turn_off_is_counted_and_the_breaker_stays_open() -> None:
    gov, events, _ = _governor()

    def boom() -> None:
        raise RuntimeError("stuck")

    gov.add_collector("calls", turn_off=boom)
    _feed_steady(gov, 0, 12, {"calls": 0.5}, {})
    breaker = gov.breakers()["calls"]
    assert breaker.state == "open" and breaker.callback_errors == 1
    assert "turn_off failed: RuntimeError('stuck')" in events[0]["reason"]


def test_memory_cap_refuses_bytes_and_records_when_it_is_reached() -> None:
    gov, events, _ = _governor(memory_max_bytes=1000)
    assert gov.admit_bytes("agent", 600)
    assert not gov.admit_bytes("agent", 600)
    assert gov.refused_bytes["agent"] == 600
    gov.feed(Sample(0.0, 0.0, {}, {"builder": 400, "agent": 700}))
    assert gov.is_over_memory
    assert events[-1]["type"] == "MemoryCapReached" and events[-1]["collector"] == "agent"
    gov.feed(Sample(1.0, 1.0, {}, {"builder": 100}))
    assert not gov.is_over_memory and len(events) == 1


# ---- self-monitoring ------------------------------------------------------------------


def test_self_monitor_emits_the_named_lumin_metrics() -> None:
    clock = FakeClock()
    gov, _, _ = _governor(rate_limit_events_per_s=10.0)
    gov.add_collector("calls", turn_off=lambda: None)
    _feed_steady(gov, 0, 12, {"calls": 0.05}, {})
    gov.limiter.admit("ext", 25)
    builder = EventBuilder()
    state: dict[str, Any] = {"events_total": 1000, "dropped": {"buffer": 3}}

    def readings() -> Readings:
        return Readings(
            events_total=state["events_total"],
            queue_depth={"buffer": 12, "calls": 40},
            dropped=dict(state["dropped"]),
            store_bytes=4096,
        )

    monitor = SelfMonitor(builder, readings, governor=gov, interval_s=1.0, clock=clock)
    assert monitor.tick() > 0
    assert monitor.tick() == 0  # interval not over
    clock.t += 2.0
    state["events_total"] = 1500
    state["dropped"] = {"buffer": 10}
    monitor.tick()
    batch = builder.build()
    assert batch is not None
    rows = batch.to_pylist()
    last = [r for r in rows[len(rows) // 2 :]]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in last:
        assert row["kind"] == "metric"
        by_name.setdefault(row["entity"], []).append(row)
    assert set(by_name) == {
        "lumin.ingest.events_per_s",
        "lumin.queue.depth",
        "lumin.dropped",
        "lumin.store.bytes",
        "lumin.overhead.share",
        "lumin.rate_limited",
        "lumin.memory.held_bytes",
        "lumin.breakers.tripped",
    }
    assert by_name["lumin.ingest.events_per_s"][0]["value"] == 250.0
    assert by_name["lumin.dropped"][0]["value"] == 7.0
    assert json.loads(by_name["lumin.dropped"][0]["attrs"]) == {"source": "buffer"}
    assert {json.loads(r["attrs"])["queue"] for r in by_name["lumin.queue.depth"]} == {
        "buffer",
        "calls",
    }
    tripped = by_name["lumin.breakers.tripped"][0]
    assert tripped["value"] == 1.0 and json.loads(tripped["attrs"]) == {"collectors": ["calls"]}
    status = monitor.status()
    assert status["events_per_s"] == 250.0 and status["tripped"] == ["calls"]


# ---- real threads and the real tracer -------------------------------------------------


def _busy_thread(name: str) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += sum(range(1000))

    thread = threading.Thread(target=spin, name=name, daemon=True)
    thread.start()
    return thread, stop


def test_a_busy_lumin_thread_is_measured_and_kept_after_it_ends() -> None:
    meter = ThreadCpuMeter()
    thread, stop = _busy_thread("lumin-busy-test")
    try:
        wait_until(
            lambda: meter.read().get("lumin-busy-test", 0.0) >= 0.05,
            timeout_s=10,
            what="50 ms of CPU measured for the busy lumin-busy-test thread",
        )
    finally:
        stop.set()
        thread.join()
    used = meter.read()["lumin-busy-test"]
    assert used >= 0.05
    assert meter.read()["lumin-busy-test"] == used  # it ended; what it used stays


def test_the_governor_thread_measures_collectors_and_ticks() -> None:
    gov, _, _ = _governor()
    gov.add_collector("busy", threads=("lumin-busy",), cpu_s=lambda: 0.5)
    ticks: list[float] = []
    thread, stop = _busy_thread("lumin-busy-2")
    gov.start(interval_s=0.02, on_tick=ticks.append)
    try:
        wait_until(
            lambda: (
                gov.last_sample is not None
                and gov.last_sample.collector_cpu_s.get("busy", 0.0) > 0.52
                and len(ticks) >= 2
            ),
            timeout_s=10,
            what="the lumin-governor thread sampling the busy thread's CPU twice",
        )
    finally:
        gov.stop()
        stop.set()
        thread.join()
    assert not any(t.name == "lumin-governor" for t in threading.enumerate())
    assert gov.sample_errors == 0


def test_call_cost_is_calibrated_with_the_real_tracer() -> None:
    cost = calibrate_call_cost(calls=5_000, repeat=3)
    assert cost.recorded_ns > 0
    assert cost.recorded_ns < 50_000  # a sanity bound, not a benchmark
    estimate = CallCost(recorded_ns=200.0, unsampled_ns=50.0, is_native=True)
    assert estimate.cpu_s({"recorded": 1_000_000, "starts": 3_000_000}) == pytest.approx(0.3)
