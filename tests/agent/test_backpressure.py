"""A slow store under a monitored process: backpressure reaches the agent, never the program.

The slow store is a stand-in: `SlowStore` wraps what the observatory's Receiver appends to
and, while slow, holds each `append` for (new rows / `SLOW_ROWS_PER_S`) after storing them, as
a disk writing ~10% of what arrives would (`Store.append` blocks the same way when the
writer's queue is full). The Receiver's thread is held there, so it reads no more data and
sends no acks; the agent's unacknowledged backlog fills and the agent drops new batches,
counting them, while the program goes on.

The child (`CHILD`, started with `lm.run` in ``prod_safe``) logs numbered WARNING records of
`MESSAGE_BYTES` in a paced loop and reports, ten times a second, its loop count and its
agent's stats on stdout. It lowers its agent's unacknowledged-backlog bound to
`MAX_PENDING_BYTES` (the default, 256 MiB, has no config key; this keeps the test at a few
seconds) and stops runtime metrics first, so every event stamped after that is one of its
numbered logs and the drop count can be checked against the log numbers exactly.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from _agent_helpers import wait_until

import lumin_nb as lm
from lumin_nb.agent import MonitoredProcess
from lumin_nb.agent.agent import DROPPED_METRIC

pytestmark = pytest.mark.slow

MESSAGE_BYTES = 4096
LOGS_PER_ITERATION = 10  # ~150-190 iterations/s (5 ms pause each): ~1,800 logs/s, ~7 MB/s
MAX_PENDING_BYTES = 8 << 20  # about two of the agent's 0.5 s batches
SLOW_ROWS_PER_S = 200.0  # the slow store stores ~10% of what the child produces
# Growth of the child's RSS over its healthy peak while the store is slow: the backlog
# (MAX_PENDING_BYTES, plus what stamping adds to the batches it was checked against) and one
# 0.5 s batch in flight: its log records (~4 MiB), its Arrow copy and its IPC encoding
# (~4 MiB each; the healthy peak already holds one of each), plus allocator slack.
RSS_GROWTH_BOUND = MAX_PENDING_BYTES + (24 << 20)
# ...while the slow phase offers at least twice that, so keeping everything would break it.
SLOW_OFFERED_BYTES = 2 * RSS_GROWTH_BOUND
MAX_REPORT_GAP_S = 1.0  # reports come every 0.1 s; a blocked program would miss seconds

CHILD = textwrap.dedent(
    """
    import json, logging, select, sys, time
    import lumin_nb.agent

    message_bytes, per_iteration, max_pending = map(int, sys.argv[1:4])
    agent = lumin_nb.agent.current()  # started by the auto-start hook of lm.run
    agent.max_pending_bytes = max_pending
    if agent.runtime is not None:
        agent.runtime.stop()  # from here on, the only events are the numbered logs
    log = logging.getLogger("app")
    pad = "x" * message_bytes
    produced = iterations = 0
    producing = True
    next_report = 0.0
    while True:
        if producing:
            for _ in range(per_iteration):
                log.warning("evt %d %s", produced, pad)
                produced += 1
        iterations += 1
        now = time.monotonic()
        if now >= next_report:
            next_report = now + 0.1
            stats = agent.stats()
            report = {"t": now, "iterations": iterations, "produced": produced}
            for key in ("producer", "seq_next", "pending_bytes", "dropped"):
                report[key] = stats[key]
            print(json.dumps(report), flush=True)
            if select.select([sys.stdin], [], [], 0)[0]:
                command = sys.stdin.readline().strip()
                if command == "stop":
                    producing = False
                elif command == "flush":
                    print(json.dumps({"flushed": agent.flush(60), **agent.stats()}), flush=True)
                else:
                    break
        time.sleep(0.005)  # the program's own pace
    """
)


class SlowStore:
    """Stand-in for a slow store between the Receiver and the real one (see module doc)."""

    def __init__(self, inner: Any, rows_per_s: float) -> None:
        self.inner = inner
        self.rows_per_s = rows_per_s
        self.recovered = threading.Event()
        self.recovered.set()

    def append(self, batch: pa.RecordBatch) -> int:
        new = int(self.inner.append(batch))
        if not self.recovered.is_set():
            self.recovered.wait(new / self.rows_per_s)  # the slow disk; ends on recovery
        return new

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Reports:
    """Reads the child's JSON report lines in a thread, each with the child's RSS then."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._process = psutil.Process(popen.pid)
        self._thread = threading.Thread(target=self._read, name="test-child-reports")
        self._thread.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = json.loads(raw)
            try:
                line["rss"] = self._process.memory_info().rss
            except psutil.Error:
                line["rss"] = 0
            with self._lock:
                self.lines.append(line)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.lines)

    def last(self) -> dict[str, Any]:
        with self._lock:
            return next(line for line in reversed(self.lines) if "iterations" in line)

    def has_reports(self) -> bool:
        with self._lock:
            return any("iterations" in line for line in self.lines)

    def since(self, t: float) -> list[dict[str, Any]]:
        return [line for line in self.all() if "iterations" in line and line["t"] >= t]

    def send(self, command: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(f"{command}\n".encode())
        self.popen.stdin.flush()

    def join(self) -> None:
        self._thread.join(timeout=30)


def _dropped(report: dict[str, Any]) -> int:
    return sum(report["dropped"].values())


def _stored(store: Any, producer: str) -> pa.Table:
    table = store.scan(columns=["producer", "seq", "kind", "entity", "message", "value", "attrs"])
    return table.filter(pc.equal(table.column("producer"), producer))


def test_slow_store_drops_are_counted_memory_bounded_and_the_program_never_blocked(
    tmp_path: Path,
) -> None:
    obs = lm.start(store=tmp_path / "store")
    proc: MonitoredProcess | None = None
    reports: Reports | None = None
    slow: SlowStore | None = None
    try:
        obs.receiver_info()
        receiver = obs.receiver
        assert receiver is not None
        slow = SlowStore(receiver.store, SLOW_ROWS_PER_S)
        receiver.store = slow  # type: ignore[assignment]  # duck-typed like _AgentSink
        (tmp_path / "app.py").write_text(CHILD)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUMIN_")}
        argv = [sys.executable, "app.py", str(MESSAGE_BYTES), str(LOGS_PER_ITERATION)]
        proc = lm.run(
            [*argv, str(MAX_PENDING_BYTES)],
            service="producer",
            env={**env, "LUMIN_PROFILE": "prod_safe"},
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        reports = Reports(proc.popen)
        wait_until(reports.has_reports, timeout_s=30, what="the child's first report")
        producer = reports.last()["producer"]

        # healthy: batches are stored and acknowledged, nothing is dropped
        wait_until(
            lambda: any(
                a["producer"] == producer and a["events"] >= 4000 for a in receiver.agents()
            ),
            timeout_s=30,
            what="4,000 of the child's events stored while the store is healthy",
        )
        healthy = reports.all()
        slow.recovered.clear()  # the store turns slow
        at_slow = reports.last()
        assert _dropped(at_slow) == 0, f"drops while the store was healthy: {at_slow}"

        # slow: the backlog fills, new batches are dropped and counted, the program goes on
        wait_until(
            lambda: (
                reports.last()["dropped"].get("unacked_full", 0) > 0
                and (reports.last()["produced"] - at_slow["produced"]) * MESSAGE_BYTES
                >= SLOW_OFFERED_BYTES
            ),
            timeout_s=90,
            what=f"drops counted and {SLOW_OFFERED_BYTES >> 20} MiB offered by the slow phase",
        )
        during = reports.since(at_slow["t"])
        slow.recovered.set()  # the store recovers
        reports.send("stop")
        asked = reports.last()["t"]

        def stopped() -> bool:
            after = reports.since(asked)
            return len(after) >= 3 and after[-1]["produced"] == after[-2]["produced"]

        wait_until(stopped, timeout_s=10, what="the child to stop producing")
        reports.send("flush")
        wait_until(
            lambda: any("flushed" in line for line in reports.all()),
            timeout_s=90,
            what="the child's agent to ship and get acks for everything after recovery",
        )
        final = next(line for line in reports.all() if "flushed" in line)
        produced = reports.last()["produced"]
        assert final["flushed"] is True, final

        # backpressure reached the agent: its backlog filled up to its bound, no further
        peak_pending = max(r["pending_bytes"] for r in during)
        assert MAX_PENDING_BYTES // 2 <= peak_pending <= MAX_PENDING_BYTES + (2 << 20), (
            f"peak unacknowledged backlog {peak_pending:,} bytes; bound {MAX_PENDING_BYTES:,}"
        )
        # the program was never blocked: reports kept coming, at the healthy loop rate
        gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(during)]
        assert max(gaps) < MAX_REPORT_GAP_S, f"the child stalled for {max(gaps):.2f} s"
        warm = [r for r in healthy if "iterations" in r][-20:]
        healthy_rate = (warm[-1]["iterations"] - warm[0]["iterations"]) / (
            warm[-1]["t"] - warm[0]["t"]
        )
        slow_rate = (during[-1]["iterations"] - during[0]["iterations"]) / (
            during[-1]["t"] - during[0]["t"]
        )
        assert slow_rate >= 0.5 * healthy_rate, (healthy_rate, slow_rate)
        # memory stayed bounded although the slow phase offered more than the bound
        baseline_rss = max(r["rss"] for r in healthy if "rss" in r)
        growth = max(r["rss"] for r in during) - baseline_rss
        offered = (during[-1]["produced"] - during[0]["produced"]) * MESSAGE_BYTES
        assert offered >= SLOW_OFFERED_BYTES
        assert growth <= RSS_GROWTH_BOUND, (
            f"the child's RSS grew {growth >> 20} MiB over its healthy peak "
            f"({baseline_rss >> 20} MiB) while {offered >> 20} MiB were offered; "
            f"bound {RSS_GROWTH_BOUND >> 20} MiB"
        )

        # after recovery: every stamped event stored once, drops counted exactly
        seq_next = final["seq_next"]
        dropped = final["dropped"]
        wait_until(
            lambda: _stored(obs.store, producer).num_rows == seq_next - 1,
            timeout_s=30,
            what=f"all {seq_next - 1} stamped events of {producer} stored",
        )
        stored = _stored(obs.store, producer)
        seqs = sorted(stored.column("seq").to_pylist())
        assert seqs == list(range(1, seq_next)), "duplicates or gaps in the stored seqs"
        logs = stored.filter(pc.equal(stored.column("entity"), "app"))
        found = pc.extract_regex(logs.column("message"), r"^evt (?P<n>\d+) ")
        numbers = pc.cast(pc.struct_field(found, "n"), pa.int64()).to_pylist()
        assert len(set(numbers)) == len(numbers), "a log stored twice"
        assert set(numbers) <= set(range(produced))
        assert dropped.get("unacked_full", 0) > 0 and set(dropped) == {"unacked_full"}, dropped
        assert produced - len(numbers) == sum(dropped.values()), (
            f"{produced} logs produced, {len(numbers)} stored, drops counted {dropped}"
        )
        reported = stored.filter(pc.equal(stored.column("entity"), DROPPED_METRIC))
        assert pc.sum(reported.column("value")).as_py() == sum(dropped.values())
        reasons = {json.loads(a)["reason"] for a in reported.column("attrs").to_pylist()}
        assert reasons == set(dropped)
        wait_until(
            lambda: receiver.agent(producer)["dropped"] == dropped,
            timeout_s=10,
            what="the receiver to hear the agent's final drop counts",
        )
        info = receiver.agent(producer)
        assert info["lost"] == 0, info
        print(
            f"\nslow store: {produced} logs produced, {len(numbers)} stored, "
            f"{sum(dropped.values())} dropped ({dropped}); peak backlog {peak_pending >> 10} KiB; "
            f"RSS +{growth >> 20} MiB over {baseline_rss >> 20} MiB while {offered >> 20} MiB "
            f"were offered; loop {healthy_rate:.0f}/s healthy, {slow_rate:.0f}/s slow; "
            f"replays the store dropped {info['duplicates']}"
        )
    finally:
        if slow is not None:
            slow.recovered.set()
        if proc is not None:
            if reports is not None and proc.is_running:
                reports.send("exit")
                try:
                    proc.wait(timeout_s=30)
                except subprocess.TimeoutExpired:
                    proc.stop()
            proc.stop()
            if proc.popen.stdin is not None:
                proc.popen.stdin.close()
        if reports is not None:
            reports.join()
        if proc is not None and proc.popen.stdout is not None:
            proc.popen.stdout.close()
        lm.stop()
