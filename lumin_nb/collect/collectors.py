"""The in-process sources a profile turns on, started and stopped together.

The kernel's observatory and the agent inside a monitored process run the same set: the call
tracer, the logging handler, the thread/task/subprocess hooks and runtime metrics, all
feeding one bounded EventBuilder (calls go to the tracer's own ring). Stopping undoes every
hook; what the sources still hold stays readable (`builder.build()`, `tracer.drain()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lumin_nb.collect.calls import CallTracer
    from lumin_nb.collect.logs import LogCollector
    from lumin_nb.collect.runtime_metrics import RuntimeMetrics
    from lumin_nb.collect.tasks import TaskCollector
    from lumin_nb.config import Config
    from lumin_nb.event import EventBuilder


class Collectors:
    """The sources `config` enables, each None when off; `start()` then `stop()`."""

    def __init__(self, config: Config, builder: EventBuilder) -> None:
        self.config = config
        self.builder = builder
        self.tracer: CallTracer | None = None
        self.logs: LogCollector | None = None
        self.tasks: TaskCollector | None = None
        self.runtime: RuntimeMetrics | None = None

    def start(
        self,
        *,
        watch: Sequence[str] = (),
        loop: asyncio.AbstractEventLoop | None = None,
        always_tasks: bool = False,
    ) -> Collectors:
        """Start every enabled source; `loop` is the asyncio loop whose lag is measured.

        With `always_tasks` the task collector exists even when not installed (the
        observatory records unhandled cell exceptions through it).
        """
        from lumin_nb.collect.logs import LogCollector
        from lumin_nb.collect.tasks import TaskCollector

        cfg = self.config
        if cfg.collect_calls:
            from lumin_nb.collect.calls import CallTracer

            self.tracer = CallTracer(
                buffer_records=cfg.call_buffer_records, sample_rate=cfg.call_sample_rate
            )
            self.tracer.start()
            if watch:
                self.tracer.watch(*watch)
        if cfg.collect_logs:
            self.logs = LogCollector(self.builder, cfg.log_level)
            self.logs.install()
        if cfg.collect_tasks or always_tasks:
            self.tasks = TaskCollector(self.builder, cfg.thread_events)
            if cfg.collect_tasks:
                self.tasks.install()
        if cfg.collect_runtime_metrics:
            from lumin_nb.collect.runtime_metrics import RuntimeMetrics

            self.runtime = RuntimeMetrics(self.builder, cfg.metrics_interval_s)
            self.runtime.watch_loop(loop)
            self.runtime.start()
        return self

    def stop(self) -> None:
        """Undo every hook and stop the tracer (idempotent)."""
        if self.runtime is not None:
            self.runtime.stop()
        if self.logs is not None:
            self.logs.uninstall()
        if self.tasks is not None:
            self.tasks.uninstall()
        if self.tracer is not None:
            self.tracer.stop()
