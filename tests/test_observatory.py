"""The public API end to end in one process: start, watch, query, configure, stop, reopen."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

import lumin as lm
from lumin_nb.errors import (
    ConfigError,
    LuminError,
    NotRunningError,
    QueryError,
    TimeParseError,
    UnknownColumnError,
    UnknownValueError,
)

APP = """
import logging

log = logging.getLogger("app")

class Repo:
    def get(self, key):
        return {"key": key}

def handler(n):
    repo = Repo()
    out = [repo.get(i) for i in range(n)]
    log.info("handled %d", n)
    return out
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    (tmp_path / "lumin_test_app.py").write_text(textwrap.dedent(APP))
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("lumin_test_app")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("lumin_test_app", None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "store"
    lm.start(store=path, flush_interval_s=0.1)
    try:
        yield path
    finally:
        lm.stop()
        lm.options.frame = "polars"


def test_watched_calls_are_queryable(store: Path, app: ModuleType) -> None:
    assert lm.watch("lumin_test_app") == ("lumin_test_app",)
    app.handler(3)
    calls = lm.events(kind="call")
    assert isinstance(calls, pl.DataFrame)
    counts = dict(calls.group_by("entity").len().iter_rows())
    assert counts == {"lumin_test_app:handler": 1, "lumin_test_app:Repo.get": 3}
    assert set(calls["service"]) == {"kernel"} and calls["producer"].n_unique() == 1
    logs = lm.events(kind="log", entity="app")
    assert logs["message"].to_list() == ["handled 3"]
    top = lm.sql("select entity, count(*) as n from events where kind='call' group by 1 order by 2")
    assert top.rows() == [("lumin_test_app:handler", 1), ("lumin_test_app:Repo.get", 3)]
    status = lm.status()
    assert status["state"] == "running" and status["events_stored"] >= 5
    assert "lumin_test_app" in status["collectors"]["calls"]
    assert str(store) in repr(status)


def test_bad_input_gets_clear_errors_and_loses_nothing(store: Path, app: ModuleType) -> None:
    lm.watch("lumin_test_app")
    app.handler(2)
    before = lm.events(kind="call").height
    with pytest.raises(QueryError) as info:
        lm.sql("select nonsense from events")
    assert "entity" in str(info.value) and "Fix" in str(info.value)
    with pytest.raises(UnknownColumnError, match="entity"):
        lm.events(entitty="x")
    with pytest.raises(UnknownValueError, match="Did you mean 'exception'"):
        lm.events(kind="exeption")
    with pytest.raises(TimeParseError, match="since='-5 mins'"):
        lm.events(since="-5 mins")
    with pytest.raises(ConfigError, match="Did you mean 'log_level'"):
        lm.configure(log_levle=20)
    with pytest.raises(LuminError, match="already running"):
        lm.start(store=store)
    assert lm.events(kind="call").height == before


def test_config_changes_are_domain_events(store: Path) -> None:
    lm.configure(log_level=30, metrics_interval_s=2.0)
    history = lm.history()
    types = history["type"].to_list()
    assert "StoreOpened" in types and "DebugSessionStarted" in types
    (change,) = lm.history(type="ConfigChanged")["data"].to_list()
    assert json.loads(change)["changes"] == {"log_level": 30, "metrics_interval_s": 2.0}


def test_pandas_option_switches_every_return(store: Path, app: ModuleType) -> None:
    import pandas as pd

    lm.watch("lumin_test_app")
    app.handler(1)
    lm.options.frame = "pandas"
    assert isinstance(lm.events(kind="call"), pd.DataFrame)
    assert isinstance(lm.sql("select 1 as one"), pd.DataFrame)
    with pytest.raises(ConfigError, match="Expected one of: polars, pandas"):
        lm.options.frame = "arrow"  # type: ignore[assignment]


def test_a_stopped_store_reopens_read_only(tmp_path: Path, app: ModuleType) -> None:
    path = tmp_path / "s"
    lm.start(store=path)
    lm.watch("lumin_test_app")
    app.handler(4)
    lm.stop()
    reader = lm.open(path)
    try:
        calls = reader.events(kind="call")
        assert calls.height == 5
        assert reader.status()["state"] == "read-only"
    finally:
        reader.stop()


def test_api_without_observatory_says_how_to_start() -> None:
    with pytest.raises(NotRunningError, match=r"%load_ext lumin"):
        lm.events()


def test_serve_takes_external_logs_and_keeps_the_bad_lines(store: Path) -> None:
    import httpx

    srv = lm.serve()
    assert srv.url.startswith("http://127.0.0.1:")
    body = b'{"msg": "disk full", "level": "error", "service": "db"}\nnot json\n'
    answer = httpx.post(
        srv.url + "/ingest/logs",
        content=body,
        headers={"Authorization": f"Bearer {srv.token}", "Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1 and answer.json()["rejected"] == 1
    assert httpx.get(srv.url + "/status").status_code == 401
    logs = lm.events(kind="log", service="db")
    assert logs["message"].to_list() == ["disk full"] and logs["severity"].to_list() == [17]
    assert "invalid JSON" in lm.rejected()["reason"][0]
    assert lm.status()["servers"] == {srv.url: "running"}


CHILD = """
import logging, sys
logging.getLogger("child").warning("hello from %s", sys.argv[1])
"""


def test_run_monitors_a_child_process(store: Path) -> None:
    from conftest import wait_until

    p = lm.run([sys.executable, "-c", CHILD, "orders"], service="orders")
    assert p.wait(timeout_s=60) == 0

    def arrived() -> bool:
        logs = lm.events(kind="log", service="orders")
        return "hello from orders" in logs["message"].to_list()

    wait_until(arrived, timeout_s=20, what="the child's log event in the store")
    (row,) = lm.events(kind="log", service="orders").rows(named=True)
    assert row["pid"] == p.pid and row["severity"] == 13
    assert any(a.startswith("orders:") for a in lm.status()["agents"])


def test_lumin_run_from_a_terminal_reaches_the_running_observatory(store: Path) -> None:
    import subprocess

    from conftest import wait_until

    lumin_bin = Path(sys.executable).parent / "lumin"
    out = subprocess.run(
        [
            *(str(lumin_bin), "run", "--store", str(store), "--service", "cli-job", "--"),
            *(sys.executable, "-c", CHILD, "cli"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    wait_until(
        lambda: lm.events(kind="log", service="cli-job").height == 1,
        timeout_s=20,
        what="the log of the process started by `lumin run`",
    )


def test_prod_profiles_redact_what_agents_send(tmp_path: Path) -> None:
    from conftest import wait_until

    lm.start("prod_safe", store=tmp_path / "s", flush_interval_s=0.1)
    try:
        code = "import logging; logging.getLogger('pay').warning('refund to ann@example.com')"
        p = lm.run([sys.executable, "-c", code], service="pay")
        assert p.wait(timeout_s=60) == 0
        wait_until(
            lambda: lm.events(kind="log", service="pay").height == 1,
            timeout_s=20,
            what="the child's log event",
        )
        (message,) = lm.events(kind="log", service="pay")["message"].to_list()
        assert "ann@example.com" not in message and "[REDACTED:email]" in message
    finally:
        lm.stop()


def test_retention_runs_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from conftest import wait_until

    import lumin_nb._observatory as observatory

    monkeypatch.setattr(observatory, "RETENTION_EVERY_S", 0.05)
    lm.start(
        store=tmp_path / "s", flush_interval_s=0.05, segment_max_bytes=16_384, retention_age_s=0.5
    )
    try:
        log = logging.getLogger("retention")

        def compacted() -> bool:
            log.warning("x" * 200)  # keeps sealing segments that then age
            history = lm.history(type="StoreCompacted")
            return any(json.loads(d)["compacted"] for d in history["data"].to_list())

        wait_until(compacted, timeout_s=30, what="a StoreCompacted event with compacted > 0")
        assert lm.events(kind="log", entity="retention").height > 0
    finally:
        lm.stop()


def test_a_log_flood_is_rate_limited_but_errors_pass(tmp_path: Path) -> None:
    import logging

    lm.start(store=tmp_path / "s", rate_limit_events_per_s=100.0)
    try:
        log = logging.getLogger("flood")
        for i in range(5000):
            log.info("line %d", i)
        log.error("the one that matters")
        logs = lm.events(kind="log", entity="flood")
        assert logs.height < 1000, "the flood passed the rate limit"
        assert "the one that matters" in logs["message"].to_list()
        limited = lm.status()["governor"]["rate_limited"]
        assert limited["buffer"] >= 4000
    finally:
        lm.stop()


def test_unknown_profile_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'prod_safe'"):
        lm.start("prod-safe", store=tmp_path / "s")
    assert not (tmp_path / "s").exists()
    with pytest.raises(NotRunningError):
        lm.status()


def test_log_patterns_and_anomalies_read_the_store(store: Path) -> None:
    import logging

    log = logging.getLogger("orders")
    for i in range(50):
        log.warning("order %d paid in %d ms", i, 10 + i % 7)
    log.error("payment gateway timeout after 3000 ms")
    patterns = lm.log_patterns(service="kernel")
    top = patterns.row(0, named=True)
    assert top["template"] == "order <*> paid in <*> ms" and top["count"] == 50
    assert patterns.height == 2
    scores = lm.anomalies(every="1s")
    assert {"series", "score", "is_anomaly"} <= set(scores.columns)
    assert "rate:orders" in set(scores["series"].to_list())
