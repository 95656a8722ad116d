"""kill -9 of a process running the observatory: another process reads what was flushed.

The promise (README, "Durability"): every event flushed up to one second before the kill is
readable with `lm.open(path)`, with the default profile (flush interval 0.5 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lumin as lm

CHILD = """
import logging, sys, time
import lumin as lm

lm.start(store=sys.argv[1])
log = logging.getLogger("crash")
n = 0
while True:
    n += 1
    log.warning("n=%d", n)
    print(n, time.time(), flush=True)
    time.sleep(0.002)  # the workload's own pace, not synchronisation
"""


def test_events_flushed_a_second_before_kill_9_survive(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUMIN_")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    logged: list[tuple[int, float]] = []
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        for line in child.stdout:
            n, t = line.split()
            logged.append((int(n), float(t)))
            if logged[-1][1] - logged[0][1] > 2.5 or time.monotonic() > deadline:
                break
        killed_at = time.time()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    assert len(logged) > 100, child.stderr.read() if child.stderr else ""

    reader = lm.open(store)
    try:
        messages = reader.events(kind="log", entity="crash")["message"].to_list()
    finally:
        reader.stop()
    stored = {int(m.removeprefix("n=")) for m in messages}
    due = {n for n, t in logged if t <= killed_at - 1.0}
    missing = sorted(due - stored)
    assert not missing, (
        f"{len(missing)} events logged > 1 s before the kill are lost: {missing[:5]}"
    )
    assert len(stored) == len(messages), "an event was stored twice"
