"""Source: runtime metrics sampled every `metrics_interval_s` (RSS, CPU, GC, threads, loop lag).

A ``lumin-metrics`` thread wakes on a timer (or at once on stop) and appends one `metric`
event per series. GC pauses are measured by `gc.callbacks` as they happen, summed per
interval, and full (generation 2) collections also become `gc` events with their duration.
The asyncio loop lag of a watched loop is the delay of a callback scheduled from the thread.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from typing import Any

from lumin_nb.event import EventBuilder

#: A gen-2 collection longer than this becomes its own `gc` event.
_GC_EVENT_MIN_NS = 0


class RuntimeMetrics:
    """Samples process metrics into an EventBuilder from a background thread."""

    def __init__(self, builder: EventBuilder, interval_s: float = 1.0) -> None:
        self.builder = builder
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gc_start: dict[int, int] = {}
        self._gc_counts = [0, 0, 0]
        self._gc_pause_ns = 0
        self._gc_max_pause_ns = 0
        self._gc_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lag_ns: int | None = None
        self._lag_sent: int | None = None
        self.failed = 0

    def watch_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Measure the lag of `loop` (the kernel's own loop when the observatory starts)."""
        self._loop = loop

    def start(self) -> None:
        """Start sampling (idempotent)."""
        if self._thread is not None:
            return
        import psutil

        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # primes the CPU counter
        gc.callbacks.append(self._on_gc)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lumin-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and take one last sample."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter_ns()
        generation = int(info.get("generation", 0))
        if phase == "start":
            self._gc_start[generation] = now
            return
        began = self._gc_start.pop(generation, None)
        if began is None:
            return
        pause = now - began
        with self._gc_lock:
            self._gc_counts[generation] += 1
            self._gc_pause_ns += pause
            self._gc_max_pause_ns = max(self._gc_max_pause_ns, pause)
        if generation == 2 and pause >= _GC_EVENT_MIN_NS:
            self.builder.append(
                "gc",
                ts=time.time_ns() - pause,
                duration_ns=pause,
                source_type="runtime_metric",
                tid=threading.get_ident(),
                entity="gc.collection",
                value=float(info.get("collected", 0)),
                attrs=f'{{"generation": 2, "collected": {int(info.get("collected", 0))}, '
                f'"uncollectable": {int(info.get("uncollectable", 0))}}}',
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:
                self.failed += 1

    def _probe_loop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        if self._lag_sent is not None:
            # the last probe has not run yet: the loop is blocked at least this long
            self._lag_ns = time.perf_counter_ns() - self._lag_sent
            return
        sent = self._lag_sent = time.perf_counter_ns()

        def arrived() -> None:
            self._lag_ns = time.perf_counter_ns() - sent
            self._lag_sent = None

        try:
            loop.call_soon_threadsafe(arrived)
        except RuntimeError:
            self._loop = None

    def sample(self) -> None:
        """Append one event per metric series now."""
        now = time.time_ns()
        proc = self._process
        with proc.oneshot():
            rss = proc.memory_info().rss
            cpu = proc.cpu_percent(None)
            threads = proc.num_threads()
        with self._gc_lock:
            counts, self._gc_counts = self._gc_counts, [0, 0, 0]
            pause, self._gc_pause_ns = self._gc_pause_ns, 0
            max_pause, self._gc_max_pause_ns = self._gc_max_pause_ns, 0
        series: list[tuple[str, float, str | None]] = [
            ("process.rss_bytes", float(rss), None),
            ("process.cpu_percent", float(cpu), None),
            ("process.threads", float(threads), None),
            ("gc.pause_ns", float(pause), None),
            ("gc.max_pause_ns", float(max_pause), None),
        ]
        series += [
            ("gc.collections", float(n), f'{{"generation": {gen}}}') for gen, n in enumerate(counts)
        ]
        self._probe_loop()
        if self._lag_ns is not None:
            series.append(("asyncio.loop_lag_ns", float(self._lag_ns), None))
            self._lag_ns = None
        for name, value, attrs in series:
            self.builder.append(
                "metric",
                ts=now,
                source_type="runtime_metric",
                entity=name,
                value=value,
                attrs=attrs,
            )
