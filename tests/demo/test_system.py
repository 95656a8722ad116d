"""The demo system end to end: four real monitored processes over 127.0.0.1, one fault a run.

Each run is short (a few seconds at a modest rate) and shared by the tests that read it
(module-scoped); the observatory is stopped before each test ends, so the leak guard holds.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest

import lumin_nb as lm
from lumin_nb.demo.system import CULPRITS, FAULTS, SystemRun, run_system
from lumin_nb.demo.system.faults import Fault, FaultSwitch, check_fault
from lumin_nb.errors import ConfigError, LuminError
from lumin_nb.testing import wait_until

pytestmark = pytest.mark.slow

SERVICES = ("gateway", "orders", "payments", "batch")
DB_QUERY = "lumin_nb.demo.system.orders:Database.query"


def _run(folder: pathlib.Path, fault: str, **options: Any) -> SystemRun:
    """One run of the system into a store the test process observes, then stopped."""
    lm.start(store=folder, flush_interval_s=0.1)
    try:
        return run_system(fault, duration_s=7, rate_per_s=12, **options)
    finally:
        lm.stop()


@pytest.fixture(scope="module")
def slow_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SystemRun, pathlib.Path]]:
    folder = tmp_path_factory.mktemp("slow_db") / "store"
    yield _run(folder, "slow_db"), folder


@pytest.fixture(scope="module")
def error_burst(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SystemRun, pathlib.Path]]:
    folder = tmp_path_factory.mktemp("error_burst") / "store"
    yield _run(folder, "error_burst", fault_at_s=2.0), folder


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[tuple[SystemRun, pathlib.Path]]:
    """The run named by the test's parameter, its store opened by a live observatory."""
    run, folder = request.getfixturevalue(request.param)
    lm.start(store=folder)
    try:
        yield run, folder
    finally:
        lm.stop()


@pytest.mark.parametrize("store", ["slow_db"], indirect=True)
def test_every_service_ships_logs_calls_and_metrics_into_one_store(
    store: tuple[SystemRun, pathlib.Path],
) -> None:
    run, _ = store
    assert run["requests"] == 7 * 12 and run["ok"] >= run["requests"] * 0.8, run
    for service in SERVICES:
        kinds = set(lm.events(service=service, columns=["kind"])["kind"].to_list())
        assert {"log", "call", "metric"} <= kinds, (service, kinds)
        assert run["events"][service] > 0
    assert sorted(run["pids"]) == sorted(SERVICES)
    for pid in run["pids"].values():  # every service ended with the run
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("store", ["slow_db"], indirect=True)
def test_slow_db_raises_the_db_query_p95_after_the_fault_start(
    store: tuple[SystemRun, pathlib.Path],
) -> None:
    run, _ = store
    assert run["start_ns"] is not None
    calls = lm.events(kind="call", entity=DB_QUERY, columns=["ts", "duration_ns"])
    after = pl.col("ts").dt.epoch("ns") >= run["start_ns"]
    before_ms = calls.filter(~after)["duration_ns"].quantile(0.95) / 1e6
    after_ms = calls.filter(after)["duration_ns"].quantile(0.95) / 1e6
    assert calls.filter(~after).height > 20 and calls.filter(after).height > 20
    assert before_ms < 40 and after_ms > 100 and after_ms > 3 * before_ms, (before_ms, after_ms)


@pytest.mark.parametrize("store", ["slow_db"], indirect=True)
def test_ground_truth_file_names_fault_start_and_culprit(
    store: tuple[SystemRun, pathlib.Path],
) -> None:
    run, folder = store
    truth = json.loads((folder / "ground_truth.json").read_text())
    assert pathlib.Path(run["ground_truth_file"]) == folder / "ground_truth.json"
    assert truth["fault"] == "slow_db"
    assert truth["culprit_service"] == "orders" and truth["culprit_function"] == DB_QUERY
    assert truth["start_ns"] == run["start_ns"] and truth["start"].endswith("+00:00")
    assert truth["load_start_ns"] < truth["start_ns"]
    assert truth["description"]
    # the culprit is a function the call tracer actually names
    assert lm.events(entity=truth["culprit_function"], limit=1).height == 1


@pytest.mark.parametrize("store", ["slow_db"], indirect=True)
def test_one_checkout_shares_its_trace_id_across_gateway_orders_and_payments(
    store: tuple[SystemRun, pathlib.Path],
) -> None:
    logs = lm.events(kind="log", service=list(SERVICES), columns=["service", "attrs"])
    traced = logs.with_columns(
        trace_id=pl.col("attrs").str.json_path_match("$.trace_id")
    ).drop_nulls("trace_id")
    per_trace = traced.group_by("trace_id").agg(pl.col("service").unique().sort())
    spanning = per_trace.filter(
        pl.col("service").list.contains("gateway") & pl.col("service").list.contains("orders")
    )
    assert spanning.height >= 50, per_trace
    assert spanning.filter(pl.col("service").list.contains("payments")).height >= 50


@pytest.mark.parametrize("store", ["error_burst"], indirect=True)
def test_error_burst_shows_payment_errors_with_exceptions_inside_the_window(
    store: tuple[SystemRun, pathlib.Path],
) -> None:
    run, _ = store
    assert run["culprit_service"] == "payments" and run["end_ns"] is not None
    errors = lm.events(service="payments", min_severity=17, columns=["ts", "kind", "attrs"])
    logs = errors.filter(pl.col("kind") == "log")
    assert logs.height >= 3, errors
    ts = logs["ts"].dt.epoch("ns")
    assert ts.min() >= run["start_ns"] and ts.max() < run["end_ns"] + 2_000_000_000
    types = logs["attrs"].str.json_path_match("$['exception.type']").unique().to_list()
    assert types == ["ProcessorError"]
    raised = lm.events(service="payments", kind="exception", columns=["entity", "message"])
    assert raised.filter(pl.col("message").str.contains("card processor timed out")).height >= 3
    assert run["statuses"].get("502", 0) >= 3  # orders turns a failed charge into a 502


def test_fault_names_are_checked_with_the_valid_ones_listed() -> None:
    assert check_fault(None) is None and check_fault("none") is None
    with pytest.raises(ConfigError, match=r"(?s)slow_dbb.*Did you mean 'slow_db'.*Expected one of"):
        check_fault("slow_dbb")
    assert set(CULPRITS) == set(FAULTS)
    for culprit in CULPRITS.values():
        assert culprit["function"].startswith(f"lumin_nb.demo.system.{culprit['service']}:")


def test_a_fault_is_on_only_inside_its_window() -> None:
    switch = FaultSwitch()
    now = time.time_ns()
    switch.set(Fault("error_burst", now - 1_000_000_000, now + 60_000_000_000))
    assert switch.active("error_burst") and not switch.active("slow_db")
    switch.set(Fault("error_burst", now + 60_000_000_000))
    assert not switch.active("error_burst")
    switch.set(Fault("slow_db", now - 2_000_000_000, now - 1_000_000_000))
    assert not switch.active("slow_db")
    assert Fault.from_json(Fault("bad_deploy", 5).to_json()) == Fault("bad_deploy", 5)


def test_a_store_other_than_the_running_observatorys_is_refused(tmp_path: pathlib.Path) -> None:
    lm.start(store=tmp_path / "a")
    try:
        with pytest.raises(LuminError, match="already runs here"):
            run_system("slow_db", duration_s=1, store=tmp_path / "b")
    finally:
        lm.stop()


RUNNER = """
import sys
from lumin_nb.demo.system import run_system

run_system("lock_contention", duration_s=60, rate_per_s=5, store=sys.argv[1], progress=print)
"""


def _is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone too: it only waits for its (dead) parent's reaper
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_run_leaves_no_service_running(
    tmp_path: pathlib.Path, sig: signal.Signals
) -> None:
    folder = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMIN_")}
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert runner.stdout is not None
        seen = []
        for line in runner.stdout:  # the runner prints "Sending ..." once the load starts
            seen.append(line)
            if line.startswith("Sending"):
                break
        assert seen and seen[-1].startswith("Sending"), "".join(seen)
        pids = json.loads((folder / "ground_truth.json").read_text())["pids"]
        assert sorted(pids) == sorted(SERVICES)
        runner.send_signal(sig)
        runner.wait(timeout=30)
        wait_until(
            lambda: all(_is_gone(pid) for pid in pids.values()),
            timeout_s=15,
            what=f"every service of the run ended after {sig.name} to the runner",
        )
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if runner.stdout is not None:
            runner.stdout.close()
