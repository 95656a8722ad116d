"""Fixtures for the agent tests: a store, a receiver, and a real monitored child program.

The child (`APP`) obeys one command per stdin line and answers ``ok`` on stdout, so tests
drive it step by step instead of sleeping; what reached the observatory is checked with
`wait_until` on the store.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from lumin_nb.agent import MonitoredProcess, Receiver, spawn
from lumin_nb.config import Config
from lumin_nb.store import Store

APP = textwrap.dedent(
    """
    import logging, os, subprocess, sys
    import shopmod

    log = logging.getLogger("app")
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "log":
            level, _, text = arg.partition(" ")
            log.log(getattr(logging, level), text)
        elif cmd == "work":
            for i in range(int(arg)):
                shopmod.work(i)
        elif cmd == "spam":  # log forever: the test kills us
            print("ok", flush=True)
            i = 0
            while True:
                log.info("spam %d", i)
                i += 1
        elif cmd == "child":
            code = "import logging; logging.getLogger('kid').warning('hello from the child')"
            subprocess.run([sys.executable, "-c", code], check=True)
        elif cmd == "fork":
            import multiprocessing as mp
            ctx = mp.get_context("fork")
            p = ctx.Process(target=log.warning, args=("hello from the fork",))
            p.start(); p.join()
        elif cmd == "exit":
            break
        print("ok", flush=True)
    """
)
SHOPMOD = textwrap.dedent(
    """
    def price(i):
        return i * 3

    def work(i):
        return price(i) + 1
    """
)


@pytest.fixture
def store(tmp_path: pathlib.Path) -> Iterator[Store]:
    st = Store.open(tmp_path / "store", config=Config(flush_interval_s=0.05))
    yield st
    st.close()


@pytest.fixture
def receiver(store: Store) -> Iterator[Receiver]:
    rx = Receiver(store, token=secrets.token_hex(8))
    yield rx
    rx.stop()


class Child:
    """A running monitored child program driven over stdin."""

    def __init__(self, proc: MonitoredProcess) -> None:
        self.proc = proc

    def send(self, line: str, *, answer: bool = True) -> None:
        stdin, stdout = self.proc.popen.stdin, self.proc.popen.stdout
        assert stdin is not None and stdout is not None
        stdin.write(f"{line}\n".encode())
        stdin.flush()
        if answer:
            reply = stdout.readline()
            assert reply == b"ok\n", f"child answered {reply!r} to {line!r}"


@pytest.fixture
def make_child(tmp_path: pathlib.Path, receiver: Receiver) -> Iterator[Callable[..., Child]]:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "shopmod.py").write_text(SHOPMOD)
    started: list[MonitoredProcess] = []

    def make(*, service: str = "orders", token: str | None = None, **env: str) -> Child:
        proc = spawn(
            [sys.executable, "app.py"],
            service=service,
            endpoint=receiver.endpoint,
            control_endpoint=receiver.control_endpoint,
            token=token or receiver.token,
            env={**os.environ, "LUMIN_PROFILE": "dev", **env},
            watch=["shopmod"],
            receiver=receiver,
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        started.append(proc)
        return Child(proc)

    yield make
    for proc in started:
        if proc.popen.stdin is not None:
            proc.popen.stdin.close()
        proc.stop(timeout_s=5)
        if proc.popen.stdout is not None:
            proc.popen.stdout.close()
