"""The wire format: round trips, and arbitrary bytes never crash the decoder or the receiver."""

from __future__ import annotations

import contextlib
import pathlib
import time
from collections.abc import Iterator

import pyarrow as pa
import pytest
import zmq
from _agent_helpers import wait_until
from hypothesis import example, given, strategies as st

from lumin_nb.agent import Agent, Receiver, WireError
from lumin_nb.agent.wire import (
    MAGIC,
    decode_batch,
    decode_control,
    decode_header,
    encode_batch,
    encode_control,
    encode_header,
)
from lumin_nb.event import batch_from_columns, with_producer
from lumin_nb.store import Store

producers = st.text(min_size=1, max_size=80).filter(lambda s: len(s.encode()) <= 1024)
tokens = st.binary(max_size=64)


@given(tokens, producers, st.integers(1, 1 << 62), st.integers(1, 1 << 40))
def test_header_round_trip(token: bytes, producer: str, first: int, count: int) -> None:
    header = decode_header(encode_header(token, producer, first, count))
    assert (header.token, header.producer, header.first_seq, header.count) == (
        token,
        producer,
        first,
        count,
    )


@given(st.lists(st.text(max_size=30), min_size=1, max_size=20), producers, st.integers(1, 1000))
def test_batch_round_trip(messages: list[str], producer: str, first: int) -> None:
    batch = with_producer(
        batch_from_columns(len(messages), kind="log", message=messages), producer, first
    )
    back = decode_batch(encode_batch(batch).to_pybytes())
    assert back.equals(batch)
    assert back.schema.metadata == batch.schema.metadata


@given(
    st.dictionaries(
        st.text(max_size=10), st.one_of(st.integers(), st.text(), st.booleans()), max_size=5
    ),
    st.text(min_size=1, max_size=20),
)
def test_control_round_trip(body: dict[str, object], op: str) -> None:
    message = {**body, "op": op}
    assert decode_control(encode_control(message)) == message


@given(st.binary(max_size=200))
@example(MAGIC + b"\x00" * 20)
@example(b"")
def test_arbitrary_bytes_decode_to_wire_error_or_a_header(data: bytes) -> None:
    for decode in (decode_header, decode_batch, decode_control):
        with contextlib.suppress(WireError):
            decode(data)


@given(st.binary(min_size=1, max_size=300))
def test_corrupted_payload_raises_wire_error_only(noise: bytes) -> None:
    batch = with_producer(batch_from_columns(3, kind="log", message=["a", "b", "c"]), "p", 1)
    payload = bytearray(encode_batch(batch).to_pybytes())
    at = len(noise) % len(payload)
    payload[at : at + len(noise)] = noise
    with contextlib.suppress(WireError):
        decode_batch(bytes(payload))


@pytest.fixture
def rx(tmp_path: pathlib.Path) -> Iterator[Receiver]:
    store = Store.open(tmp_path / "s")
    receiver = Receiver(store, token="tok")
    yield receiver
    receiver.stop()
    store.close()


def test_garbage_and_forged_messages_never_crash_the_receiver_and_are_not_stored(
    rx: Receiver,
) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    dealer = ctx.socket(zmq.DEALER)
    try:
        push.connect(rx.endpoint)
        dealer.connect(rx.control_endpoint)
        good = with_producer(batch_from_columns(2, kind="log", message=["x", "y"]), "p:h:1:a", 1)
        payload = encode_batch(good).to_pybytes()
        bad_kind = with_producer(batch_from_columns(1, kind="log"), "p:h:1:a", 3)
        bad_kind_payload = encode_batch(bad_kind).to_pybytes().replace(b"log", b"lag")
        sends = [
            [b"garbage"],
            [b"x", b"y", b"z"],
            [b"LMB1" + b"\xff" * 30, payload],
            [encode_header(b"wrong", "p:h:1:a", 1, 2), payload],
            [encode_header(b"tok", "p:h:1:a", 1, 3), payload],  # row count lies
            [encode_header(b"tok", "other:h:1:a", 1, 2), payload],  # producer lies
            [encode_header(b"tok", "p:h:1:a", 5, 2), payload],  # seq lies
            [encode_header(b"tok", "p:h:1:a", 3, 1), bad_kind_payload],
            [encode_header(b"tok", "p:h:1:a", 1, 2), payload[:-9]],
        ]
        for frames in sends:
            push.send_multipart(frames)
        dealer.send(b"{not json")
        dealer.send(encode_control({"op": "hello", "token": "wrong", "producer": "p"}))
        push.send_multipart([encode_header(b"tok", "p:h:1:a", 1, 2), payload])
        wait_until(lambda: rx.store.scan().num_rows == 2, what="the one good batch stored")
        wait_until(lambda: rx.refused == 2, what="two wrong tokens refused")
        assert rx.is_running and rx.errors == 0
        assert sum(rx.rejected.values()) == 9, rx.rejected
        assert rx.store.scan().column("message").to_pylist() == ["x", "y"]
    finally:
        ctx.destroy(linger=0)


def test_overloaded_agent_drops_before_stamping_and_counts_exactly(rx: Receiver) -> None:
    agent = Agent(
        rx.endpoint,
        token="tok",
        service="bench",
        control_endpoint=rx.control_endpoint,
        collect=False,
        max_queued_batches=2,
        max_pending_bytes=1,  # every batch beyond the drop report is refused
    )
    batch = batch_from_columns(100, kind="metric", value=pa.array([1.0] * 100))
    agent.start()
    try:
        offered = sum(100 for _ in range(10) if agent.ship(batch) or True)
        assert agent.flush(10)
        stored = rx.store.scan()
        # each offered event is either stored or counted as dropped, by reason
        dropped = sum(agent.stats()["dropped"].values())
        user_rows = stored.filter(pa.compute.equal(stored.column("kind"), "metric")).num_rows
        reports = [
            v
            for e, v in zip(*stored.select(["entity", "value"]).to_pydict().values(), strict=True)
            if e == "lumin.agent.dropped"
        ]
        offered += 1  # the agent's own process-start event
        assert user_rows - len(reports) + dropped == offered
        assert sum(reports) == dropped, "the drop reports ship the exact counts"
        assert rx.agent(agent.producer)["lost"] == 0, "drops happen before seq stamping"
        wait_until(
            lambda: rx.agent(agent.producer)["dropped"] == agent.stats()["dropped"],
            what="hello carries the drop counts",
        )
    finally:
        agent.stop()


def test_receiver_welcomes_only_an_agent_that_does_not_know_its_session(rx: Receiver) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    try:
        dealer.connect(rx.control_endpoint)

        def hello(session: str | None) -> dict[str, object] | None:
            message = {"op": "hello", "token": "tok", "producer": "p:h:1:a", "session": session}
            dealer.send(encode_control(message))
            if not dealer.poll(1000):
                return None
            return decode_control(dealer.recv())

        assert hello(None) == {"op": "welcome", "session": rx.session}
        assert hello(rx.session) is None, "a welcomed agent is not welcomed again"
        assert hello("an-older-observatory") == {"op": "welcome", "session": rx.session}
        assert rx.agent("p:h:1:a")["producer"] == "p:h:1:a"
    finally:
        ctx.destroy(linger=0)


def test_welcomed_agent_says_hello_rarely_but_after_each_shipping_collect(rx: Receiver) -> None:
    from lumin_nb.agent import agent as agent_module

    agent = Agent(  # no collectors: nothing ships while idle
        rx.endpoint,
        token="tok",
        service="bench",
        control_endpoint=rx.control_endpoint,
        collect=False,
    ).start()
    try:
        wait_until(lambda: agent.session == rx.session, what="the agent is welcomed")
        hellos = 0
        original = agent._hello

        def counting() -> None:
            nonlocal hellos
            hellos += 1
            original()

        agent._hello = counting  # type: ignore[method-assign]
        agent.builder.append("log", message="one")
        assert agent.flush(5)
        wait_until(lambda: hellos >= 1, what="a hello piggy-backed on the collect")
        wait_until(
            lambda: rx.agent(agent.producer)["seq_next"] == agent.stats()["seq_next"],
            what="the receiver knows how far the agent has stamped",
        )
        before = hellos
        time.sleep(1.0)  # idle: at most one hello per HELLO_IDLE_INTERVAL_S
        assert hellos - before <= 1
        assert agent_module.HELLO_IDLE_INTERVAL_S >= 5 * agent_module.HELLO_INTERVAL_S
    finally:
        agent.stop()


def test_merge_keeps_the_event_schema_and_the_order() -> None:
    from lumin_nb.agent.agent import _merge
    from lumin_nb.event import EVENT_SCHEMA

    logs = batch_from_columns(2, kind="log", message=["x", "y"], entity=pa.array(["a", "b"]))
    calls = batch_from_columns(3, kind="call", entity=pa.array(["c", "a", "d"]))
    merged = _merge([logs, calls])
    assert merged is not None and merged.schema.equals(EVENT_SCHEMA, check_metadata=True)
    assert merged.column("kind").to_pylist() == ["log", "log", "call", "call", "call"]
    assert merged.column("entity").to_pylist() == ["a", "b", "c", "a", "d"]
    assert _merge([logs]) is logs and _merge([]) is None
    decode_batch(encode_batch(with_producer(merged, "p:h:1:a", 1)))  # ships as one batch


def test_unacknowledged_resends_back_off_and_an_ack_resets_the_wait() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = ctx.socket(zmq.PULL)  # takes every batch, never acks it
    router = ctx.socket(zmq.ROUTER)
    try:
        pull.bind("tcp://127.0.0.1:*")
        router.bind("tcp://127.0.0.1:*")
        endpoints = [s.getsockopt(zmq.LAST_ENDPOINT) for s in (pull, router)]
        data, control = (e.decode() for e in endpoints if isinstance(e, bytes))
        agent = Agent(
            data,
            token="tok",
            service="bench",
            control_endpoint=control,
            collect=False,
            resend_after_s=0.05,
        ).start()
        try:
            wait_until(lambda: agent.stats()["sent_batches"] >= 1, what="the first send")
            time.sleep(1.0)
            stats = agent.stats()
            # without back-off a batch would be resent about every 50 ms (~20 times)
            assert 1 <= stats["resent_batches"] <= 6, stats
            assert stats["resend_after_s"] >= 0.2
            route, _hello = router.recv_multipart()
            router.send_multipart([route, encode_control({"op": "ack", "firsts": [1]})])
            wait_until(lambda: agent.stats()["pending_batches"] == 0, what="the ack")
            assert agent.stats()["resend_after_s"] == 0.05
        finally:
            agent.stop(timeout_s=0.1)
    finally:
        ctx.destroy(linger=0)
