"""Threads, asyncio tasks and subprocesses: start/end events with parent links."""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lumin_nb.collect.tasks import TaskCollector
from lumin_nb.event import EventBuilder


@pytest.fixture
def tasks() -> Iterator[TaskCollector]:
    collector = TaskCollector(EventBuilder())
    originals = (threading.Thread.start, asyncio.BaseEventLoop.create_task, threading.excepthook)
    collector.install()
    try:
        yield collector
    finally:
        collector.uninstall()
    assert (threading.Thread.start, asyncio.BaseEventLoop.create_task, threading.excepthook) == (
        originals
    ), "uninstall must restore every wrapped entry point"


def _rows(collector: TaskCollector, kind: str) -> list[dict[str, Any]]:
    batch = collector.builder.build()
    rows = [] if batch is None else batch.to_pylist()
    out = []
    for r in rows:
        if r["kind"] == kind:
            r["attrs"] = json.loads(r["attrs"])
            out.append(r)
    return out


def test_threads_have_start_and_end_with_parent(tasks: TaskCollector) -> None:
    def work() -> None:
        sum(range(1000))

    t = threading.Thread(target=work, name="worker-1")
    t.start()
    t.join()
    rows = [r for r in _rows(tasks, "thread") if r["entity"] == "worker-1"]
    assert [r["attrs"]["phase"] for r in rows] == ["start", "end"]
    assert rows[0]["attrs"]["parent_tid"] == threading.get_ident()
    assert rows[0]["tid"] == rows[1]["tid"] == t.ident
    assert rows[1]["duration_ns"] >= 0 and rows[0]["attrs"]["target"].endswith("work")


def test_unhandled_thread_exception_is_recorded(tasks: TaskCollector) -> None:
    def fail() -> None:
        raise RuntimeError("worker died")

    chained = tasks._excepthook
    tasks._excepthook = lambda args: None  # the hook ours chains to: keeps pytest's output clean
    try:
        t = threading.Thread(target=fail)
        t.start()
        t.join()
    finally:
        tasks._excepthook = chained
    (row,) = _rows(tasks, "exception")
    assert row["message"] == "RuntimeError: worker died" and row["severity"] == 17
    assert row["attrs"]["phase"] == "unhandled" and row["tid"] == t.ident
    assert row["entity"].endswith(":test_unhandled_thread_exception_is_recorded.<locals>.fail")


def test_asyncio_tasks_link_to_their_parent(tasks: TaskCollector) -> None:
    async def child(n: int) -> int:
        await asyncio.sleep(0)
        if n == 2:
            raise ValueError("bad n")
        return n

    async def main() -> None:
        await asyncio.gather(
            *(asyncio.create_task(child(n), name=f"child-{n}") for n in range(3)),
            return_exceptions=True,
        )

    asyncio.run(main())
    rows = _rows(tasks, "task")
    starts = {r["task"]: r for r in rows if r["attrs"]["phase"] == "start"}
    ends = {r["task"]: r for r in rows if r["attrs"]["phase"] == "end"}
    assert {"child-0", "child-1", "child-2"} <= starts.keys()
    main_task = starts["child-0"]["attrs"]["parent_task"]
    assert main_task is not None and main_task in starts
    assert starts["child-1"]["entity"].endswith("child")
    assert ends["child-2"]["attrs"]["status"] == "error" and ends["child-2"]["severity"] == 17
    assert ends["child-0"]["attrs"]["status"] == "ok"


def test_subprocesses_have_start_and_end(tasks: TaskCollector) -> None:
    subprocess.run([sys.executable, "-c", "raise SystemExit(3)"], check=False)
    rows = _rows(tasks, "process")
    assert [r["attrs"]["phase"] for r in rows] == ["start", "end"]
    assert rows[0]["attrs"]["child_pid"] == rows[1]["attrs"]["child_pid"] > 0
    assert rows[1]["attrs"]["returncode"] == 3 and rows[1]["severity"] == 17
    assert "raise SystemExit(3)" in rows[0]["attrs"]["process.command_line"]


def test_thread_events_end_records_one_event_stamped_at_the_start() -> None:
    import time

    collector = TaskCollector(EventBuilder(), thread_events="end")
    collector.install()
    try:
        before = time.time_ns()
        t = threading.Thread(target=time.sleep, args=(0.02,), name="worker-end")
        t.start()
        t.join()
        after = time.time_ns()
    finally:
        collector.uninstall()
    rows = [r for r in _rows(collector, "thread") if r["entity"] == "worker-end"]
    assert len(rows) == 1
    (row,) = rows
    assert row["attrs"] == {
        "thread.name": "worker-end",
        "parent_tid": threading.get_ident(),
        "daemon": False,
        "target": "sleep",
        "phase": "end",
    }
    assert row["tid"] == t.ident and row["duration_ns"] >= 20_000_000
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    ts_us = (row["ts"] - epoch) // datetime.timedelta(microseconds=1)
    assert before // 1000 - 1 <= ts_us <= (after - row["duration_ns"]) // 1000 + 1, "ts = start"


def test_thread_events_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="thread_events"):
        TaskCollector(EventBuilder(), thread_events="both")
