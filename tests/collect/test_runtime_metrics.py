"""Runtime metrics: RSS, CPU, threads, GC pauses and asyncio loop lag as metric events."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

from lumin_nb.collect.runtime_metrics import RuntimeMetrics
from lumin_nb.event import EventBuilder


def test_one_sample_has_every_series() -> None:
    metrics = RuntimeMetrics(EventBuilder(), interval_s=60)
    metrics.start()
    try:
        gc.collect()
        metrics.sample()
    finally:
        metrics.stop()
    rows = metrics.builder.build().to_pylist()  # type: ignore[union-attr]
    by_name = {r["entity"]: r for r in rows if r["kind"] == "metric"}
    assert by_name["process.rss_bytes"]["value"] > 10 * 2**20
    assert by_name["process.threads"]["value"] >= 2
    assert by_name["gc.pause_ns"]["value"] > 0, "the gc.collect() above took time"
    assert any(r["kind"] == "gc" and r["duration_ns"] > 0 for r in rows)
    assert all(r["source_type"] == "runtime_metric" for r in rows)


def test_a_blocked_loop_shows_lag() -> None:
    loop = asyncio.new_event_loop()
    metrics = RuntimeMetrics(EventBuilder(), interval_s=60)
    metrics.watch_loop(loop)
    metrics.start()
    running = threading.Event()

    async def block() -> None:
        running.set()
        time.sleep(0.3)  # the loop is blocked: this is what the metric must show
        await asyncio.sleep(0)

    thread = threading.Thread(target=loop.run_until_complete, args=(block(),), name="t-loop")
    thread.start()
    try:
        assert running.wait(5)
        metrics.sample()  # sends the probe into the blocked loop
        deadline = time.monotonic() + 5
        lags: list[float] = []
        while not any(v > 0.05e9 for v in lags) and time.monotonic() < deadline:
            metrics.sample()
            batch = metrics.builder.build()
            rows = [] if batch is None else batch.to_pylist()
            lags += [r["value"] for r in rows if r["entity"] == "asyncio.loop_lag_ns"]
            running.wait(0.01)  # poll interval
        assert max(lags) > 0.05e9, f"no lag above 50 ms reported while blocked: {lags[-5:]}"
    finally:
        thread.join()
        metrics.stop()
        loop.close()
