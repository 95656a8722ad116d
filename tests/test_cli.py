"""The `lumin` command as a user runs it: a subprocess, real store folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lumin as lm

BIN = Path(sys.executable).parent / "lumin"


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMIN_")}
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "store"
    lm.start(store=path)
    import logging

    for i in range(5):
        logging.getLogger("cli").warning("event %d", i)
    lm.stop()
    return path


def test_version() -> None:
    out = _run("version")
    assert out.returncode == 0 and out.stdout.strip() == f"lumin {lm.__version__}"
    mod = subprocess.run(
        [sys.executable, "-m", "lumin_nb", "version"], capture_output=True, text=True, check=True
    )
    assert mod.stdout == out.stdout


def test_query_as_json(store: Path) -> None:
    out = _run(
        "query",
        "select message from events where entity = 'cli' order by ts",
        "--store",
        str(store),
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["message"] for line in out.stdout.splitlines()] == [
        f"event {i}" for i in range(5)
    ]


def test_status_of_a_store(store: Path) -> None:
    out = _run("status", "--store", str(store))
    assert out.returncode == 0, out.stderr
    assert str(store) in out.stdout


def test_bad_sql_exits_1_with_the_columns(store: Path) -> None:
    out = _run("query", "select nope from events", "--store", str(store))
    assert out.returncode == 1
    assert "QueryError" in out.stderr and "entity" in out.stderr


def test_missing_store_says_what_to_pass(tmp_path: Path) -> None:
    out = _run("query", "select 1", "--store", str(tmp_path / "nowhere"))
    assert out.returncode == 1 and "Fix: pass the folder" in out.stderr


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = _run("demo", "--store", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stderr
    assert "lumin_nb.demo.shop:checkout" in out.stdout
    assert "OutOfStock" in out.stdout or "PaymentDeclined" in out.stdout
    assert "running" in out.stdout


def test_run_without_a_running_observatory_says_how(tmp_path: Path) -> None:
    out = _run("run", "--store", str(tmp_path), "--service", "x", "--", sys.executable, "-V")
    assert out.returncode == 1 and "start the observatory first" in out.stderr
