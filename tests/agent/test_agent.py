"""Real monitored child processes shipping to a real Receiver over ZeroMQ on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable

import numpy as np
import pytest
from _agent_helpers import producer_of, rows, wait_until
from conftest import Child

from lumin_nb.agent import ControlError, Receiver
from lumin_nb.store import Store

pytestmark = pytest.mark.slow


def test_child_logs_and_watched_calls_arrive_with_pid_service_and_producer(
    make_child: Callable[..., Child], receiver: Receiver, store: Store
) -> None:
    child = make_child(service="orders")
    child.send("log INFO order 42 accepted")
    child.send("work 5")
    pid = child.proc.pid
    producer = producer_of(receiver, pid)

    wait_until(
        lambda: rows(store, message="order 42 accepted"), what="the child's log event stored"
    )
    wait_until(
        lambda: len(rows(store, kind="call", entity="shopmod:work")) == 5,
        what="5 watched calls of shopmod:work stored",
    )
    log = rows(store, message="order 42 accepted")[0]
    assert (log["pid"], log["service"], log["producer"]) == (pid, "orders", producer)
    assert log["kind"] == "log" and log["entity"] == "app"
    assert producer.startswith(f"orders:{log['host']}:{pid}:")
    calls = rows(store, kind="call", entity="shopmod:price")
    assert len(calls) == 5 and all(c["pid"] == pid for c in calls)
    start = rows(store, kind="process", producer=producer)
    assert start and json.loads(start[0]["attrs"])["producer"] == producer
    info = receiver.agent(producer)
    assert info["service"] == "orders" and info["pid"] == pid and info["lost"] == 0
    assert info["events"] >= 11 and info["batches"] >= 1
    assert [a["producer"] for a in child.proc.agents()] == [producer]


def test_configure_over_the_control_channel_is_acknowledged_and_takes_effect(
    make_child: Callable[..., Child], receiver: Receiver, store: Store
) -> None:
    child = make_child()
    producer = producer_of(receiver, child.proc.pid)
    child.send("log INFO before")
    wait_until(lambda: rows(store, message="before"), what="info log before the change")

    reply = receiver.send_control(producer, {"op": "configure", "changes": {"log_level": 30}})
    assert reply["ok"] is True, reply
    assert reply["result"]["config"]["log_level"] == 30

    child.send("log INFO hidden")
    child.send("log WARNING shown")
    wait_until(lambda: rows(store, message="shown"), what="warning after the change")
    assert not rows(store, message="hidden"), "an info log passed a warning-level config"

    bad = receiver.send_control(producer, {"op": "configure", "changes": {"log_levle": 10}})
    assert bad["ok"] is False and "log_level" in bad["error"]  # names the closest key
    unknown = receiver.send_control(producer, {"op": "no-such-op"})
    assert unknown["ok"] is False and "configure" in unknown["error"]
    status = receiver.send_control(producer, {"op": "status"})
    assert status["result"]["log_level"] == 30
    with pytest.raises(ControlError, match="Known producers"):
        receiver.send_control("nobody:here:1:x", {"op": "status"})


def test_sigkill_mid_stream_leaves_no_duplicates_no_gaps_and_counts_loss(
    make_child: Callable[..., Child], receiver: Receiver, store: Store
) -> None:
    child = make_child()
    producer = producer_of(receiver, child.proc.pid)
    child.send("spam")
    wait_until(lambda: receiver.agent(producer)["events"] > 2000, what="2000 events mid-stream")
    os.kill(child.proc.pid, signal.SIGKILL)
    child.proc.wait(10)

    table = store.scan(columns=["producer", "seq", "event_id"])
    mine = table.filter(np.asarray(table.column("producer").to_pylist()) == producer)
    seqs = np.sort(mine.column("seq").to_numpy())
    assert len(seqs) > 2000
    assert len(np.unique(seqs)) == len(seqs), "duplicate (producer, seq) stored"
    assert len(set(mine.column("event_id").to_pylist())) == len(seqs), "duplicate event ids"
    assert seqs[0] == 1 and seqs[-1] == len(seqs), "a gap inside the shipped prefix"
    info = receiver.agent(producer)
    # what the agent said it had stamped but never arrived is counted, exactly
    assert info["lost"] == max(0, info["seq_next"] - 1 - int(seqs[-1]))
    assert info["duplicates"] == 0


def test_restarted_receiver_gets_the_unacknowledged_batches_once(
    make_child: Callable[..., Child], receiver: Receiver, store: Store
) -> None:
    child = make_child()
    producer = producer_of(receiver, child.proc.pid)
    child.send("log INFO first")
    wait_until(lambda: rows(store, message="first"), what="first log stored")
    port = int(receiver.endpoint.rsplit(":", 1)[1])
    control_port = int(receiver.control_endpoint.rsplit(":", 1)[1])
    receiver.stop()

    for i in range(20):  # shipped while nobody listens: kept by the agent, unacknowledged
        child.send(f"log INFO while-away {i}")
    second = Receiver(store, token=receiver.token, port=port, control_port=control_port)
    try:
        wait_until(
            lambda: (
                len([r for r in rows(store) if (r["message"] or "").startswith("while-")]) == 20
            ),
            timeout_s=20,
            what="the 20 logs sent while the receiver was down",
        )
        wait_until(
            lambda: any(a["producer"] == producer for a in second.agents()),
            what="the agent says hello to the new receiver",
        )
        child.send("log INFO after")
        wait_until(lambda: rows(store, message="after"), what="log after the restart")
        table = store.scan(columns=["producer", "seq"])
        seqs = [s for p, s in zip(*table.to_pydict().values(), strict=True) if p == producer]
        assert len(seqs) == len(set(seqs)), "a resent batch was stored twice"
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), "a gap after the restart"
        assert second.agent(producer)["lost"] == 0
    finally:
        second.stop()


def test_wrong_token_is_refused_and_nothing_is_stored(
    make_child: Callable[..., Child], receiver: Receiver, store: Store
) -> None:
    child = make_child(token="not-the-token")
    child.send("log WARNING intruder")
    wait_until(lambda: receiver.refused >= 2, what="data and hello refused")
    assert not rows(store, message="intruder")
    assert receiver.agents() == []


def test_child_of_a_monitored_process_is_monitored_with_a_parent_link(
    make_child: Callable[..., Child], receiver: Receiver, store: Store
) -> None:
    child = make_child()
    parent = producer_of(receiver, child.proc.pid)
    child.send("child")
    wait_until(lambda: rows(store, message="hello from the child"), what="grandchild's log")
    kid = rows(store, message="hello from the child")[0]
    assert kid["pid"] != child.proc.pid and kid["service"] == "orders"
    info = receiver.agent(kid["producer"])
    assert info["parent_producer"] == parent
    start = rows(store, kind="process", producer=kid["producer"])[0]
    assert json.loads(start["attrs"])["parent_producer"] == parent
    assert {a["producer"] for a in child.proc.agents()} == {parent, kid["producer"]}


def test_forked_child_gets_its_own_producer_linked_to_the_parent(
    make_child: Callable[..., Child], receiver: Receiver, store: Store
) -> None:
    child = make_child()
    parent = producer_of(receiver, child.proc.pid)
    child.send("fork")
    wait_until(lambda: rows(store, message="hello from the fork"), what="forked child's log")
    kid = rows(store, message="hello from the fork")[0]
    assert kid["pid"] != child.proc.pid and kid["producer"] != parent
    assert receiver.agent(kid["producer"])["parent_producer"] == parent


def test_stop_ships_the_tail_before_the_process_ends(
    make_child: Callable[..., Child], receiver: Receiver, store: Store
) -> None:
    child = make_child()
    producer_of(receiver, child.proc.pid)
    child.send("log INFO last words")
    assert child.proc.stop(timeout_s=10) == -signal.SIGTERM
    assert rows(store, message="last words"), "SIGTERM lost the unshipped tail"


def test_hook_without_endpoint_loads_nothing_of_lumin() -> None:
    import subprocess
    import sys

    from lumin_nb.agent.autostart import environment

    env = environment(endpoint="tcp://127.0.0.1:9", token="t", service="s")
    del env["LUMIN_ENDPOINT"]
    heavy = "('lumin', 'zmq', 'pyarrow')"
    code = f"import sys; print(sorted(m for m in sys.modules if m.startswith({heavy})))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
    assert (
        "sitecustomize"
        in subprocess.run(
            [sys.executable, "-c", "import sys; print(sys.modules['sitecustomize'].__file__)"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
