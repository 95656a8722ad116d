"""The call tracer on real sys.monitoring, with the native backend and the Python fallback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pyarrow as pa
import pytest

from lumin_nb.collect import calls as calls_mod
from lumin_nb.collect.calls import MODE_NATIVE, MODE_PYTHON, CallTracer, TracerBusyError
from lumin_nb.errors import LuminError
from lumin_nb.event import validate, with_producer

MOD = __name__
BACKENDS = [
    pytest.param(
        True,
        id="native",
        marks=pytest.mark.skipif(calls_mod._native is None, reason="C extension not built"),
    ),
    pytest.param(False, id="python"),
]


# ---- code the tests trace (patterns pick these by name) -------------------------------


def w_fib(n: int) -> int:
    return n if n < 2 else w_fib(n - 1) + w_fib(n - 2)


class WShape:
    def __init__(self, side: int) -> None:
        self.side = side

    def area(self) -> int:
        return self.side * self.side

    def scaled(self, k: int) -> int:
        return WShape(self.side * k).area()


def w_gen(n: int) -> Iterator[int]:
    yield from range(n)


async def w_coro() -> int:
    await asyncio.sleep(0.05)
    return await w_inner()


async def w_inner() -> int:
    return 1


def w_raiser() -> None:
    raise ValueError("bad input 42")


def w_middle() -> None:
    w_raiser()


def w_catcher() -> str:
    try:
        w_middle()
    except ValueError as exc:
        return str(exc)
    return "no error"


def w_key_error() -> None:
    {}["missing"]


def u_helper(x: int) -> int:  # never watched
    return x + 1


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


def w_bad_str() -> None:
    raise BadStr()


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def make_tracer(request: pytest.FixtureRequest) -> Iterator[Callable[..., CallTracer]]:
    """A factory of CallTracers on the parametrised backend, all stopped afterwards."""
    made: list[CallTracer] = []

    def make(**kwargs: object) -> CallTracer:
        tracer = CallTracer(native=request.param, **kwargs)  # type: ignore[arg-type]
        made.append(tracer)
        return tracer

    yield make
    for tracer in made:
        tracer.stop()
    held = {t: sys.monitoring.get_tool(t) for t in range(6)}
    assert "lumin" not in held.values(), f"a test leaked Lumin's tool id: {held}"


def rows(batch: pa.RecordBatch | None, kind: str | None = None) -> list[dict[str, object]]:
    assert batch is not None, "the tracer recorded nothing"
    assert batch.column("producer").null_count == batch.num_rows, "the observatory stamps it"
    validate(with_producer(batch, "test", 0))
    ts = batch.schema.get_field_index("ts")
    out = batch.set_column(ts, "ts", batch.column(ts).cast(pa.int64())).to_pylist()
    return [r for r in out if kind is None or r["kind"] == kind]


def by_entity(rs: list[dict[str, object]], suffix: str) -> list[dict[str, object]]:
    return [r for r in rs if str(r["entity"]).endswith(suffix)]


# ---- the call tree ---------------------------------------------------------------------


def test_recursion_and_methods_produce_the_right_call_tree(make_tracer) -> None:
    tracer = make_tracer()
    tracer.watch(f"{MOD}:w_*", f"{MOD}:WShape.*")
    tracer.start()
    assert w_fib(5) == 5
    assert WShape(3).scaled(2) == 36
    tracer.stop()
    calls = rows(tracer.drain(), "call")

    fib = by_entity(calls, ":w_fib")
    assert len(fib) == 15  # fib(5) makes 15 calls
    assert {r["entity"] for r in calls} == {
        f"{MOD}:w_fib",
        f"{MOD}:WShape.__init__",
        f"{MOD}:WShape.scaled",
        f"{MOD}:WShape.area",
    }
    spans = {r["span_id"]: r for r in calls}
    assert len(spans) == len(calls), "span ids are unique"
    roots = [r for r in calls if r["parent_span_id"] is None]
    assert [r["entity"] for r in roots] == [
        f"{MOD}:w_fib",
        f"{MOD}:WShape.__init__",
        f"{MOD}:WShape.scaled",
    ]
    for r in calls:
        if r["parent_span_id"] is not None:
            parent = spans[r["parent_span_id"]]
            assert parent["trace_id"] == r["trace_id"], "a tree shares one trace id"
    fib_root = roots[0]
    children = [r for r in fib if r["parent_span_id"] == fib_root["span_id"]]
    assert len(children) == 2
    scaled = roots[2]
    under_scaled = sorted(
        str(r["entity"]) for r in calls if r["parent_span_id"] == scaled["span_id"]
    )
    assert under_scaled == [f"{MOD}:WShape.__init__", f"{MOD}:WShape.area"]
    assert len({r["trace_id"] for r in roots}) == 3, "each root starts its own trace"
    assert {r["tid"] for r in calls} == {threading.get_ident()}
    assert all(r["attrs"] is None for r in calls)


def test_child_durations_nest_within_their_parent(make_tracer) -> None:
    tracer = make_tracer()
    tracer.watch(f"{MOD}:w_fib")
    tracer.start()
    before = time.time_ns()
    w_fib(8)
    after = time.time_ns()
    tracer.stop()
    assert tracer.stats()["clock"] in ("tsc", "monotonic")
    calls = rows(tracer.drain(), "call")
    slack = 2_000_000  # the wall clock and CLOCK_MONOTONIC are anchored once per start()
    for r in calls:
        assert before - slack <= r["ts"] <= r["ts"] + r["duration_ns"] <= after + slack
    spans = {r["span_id"]: r for r in calls}
    checked = 0
    for r in calls:
        parent = spans.get(r["parent_span_id"])
        if parent is None:
            continue
        start, end = r["ts"], r["ts"] + r["duration_ns"]
        p_start, p_end = parent["ts"], parent["ts"] + parent["duration_ns"]
        assert p_start <= start and end <= p_end
        checked += 1
    assert checked == len(calls) - 1


# ---- generators and coroutines ---------------------------------------------------------


def test_generators_and_coroutines_are_one_call_timed_across_yields(make_tracer) -> None:
    tracer = make_tracer()
    tracer.watch(f"{MOD}:w_gen", f"{MOD}:w_coro", f"{MOD}:w_inner")
    tracer.start()
    assert list(w_gen(3)) == [0, 1, 2]
    assert asyncio.run(w_coro()) == 1
    tracer.stop()
    calls = rows(tracer.drain(), "call")

    (gen,) = by_entity(calls, ":w_gen")
    gen_attrs = json.loads(str(gen["attrs"]))
    assert gen_attrs["suspensions"] == 3
    assert 0 < gen_attrs["active_ns"] <= gen["duration_ns"]

    (coro,) = by_entity(calls, ":w_coro")
    coro_attrs = json.loads(str(coro["attrs"]))
    assert coro["duration_ns"] >= 50_000_000, "wall time includes the 50 ms sleep"
    assert coro_attrs["active_ns"] < 20_000_000, "active time excludes the sleep"
    assert coro_attrs["suspensions"] >= 1
    (inner,) = by_entity(calls, ":w_inner")
    assert inner["parent_span_id"] == coro["span_id"]


# ---- exceptions --------------------------------------------------------------------------


def test_raised_and_handled_exceptions_become_exception_events(make_tracer) -> None:
    tracer = make_tracer()
    tracer.watch(f"{MOD}:w_*")
    tracer.start()
    assert w_catcher() == "bad input 42"
    tracer.stop()
    assert tracer.stats()["recorded"] == 5  # 3 calls, 2 exception events
    batch = tracer.drain()
    calls = rows(batch, "call")
    excs = rows(batch, "exception")

    assert [e["attrs"] and json.loads(e["attrs"])["phase"] for e in excs] == [
        "raised",
        "handled",
    ], "one 'raised' although the exception passed through two recorded frames"
    raised, handled = excs
    (raiser,) = by_entity(calls, ":w_raiser")
    (catcher,) = by_entity(calls, ":w_catcher")
    assert raised["entity"] == f"{MOD}:w_raiser"
    assert raised["severity"] == 13
    assert raised["message"] == "ValueError: bad input 42"
    assert raised["span_id"] == raiser["span_id"]
    assert raised["trace_id"] == raiser["trace_id"]
    attrs = json.loads(str(raised["attrs"]))
    assert attrs["exception.type"] == "ValueError"
    assert attrs["exception.message"] == "bad input 42"
    assert "w_raiser" in attrs["exception.stacktrace"]
    assert "Traceback" in attrs["exception.stacktrace"]
    assert handled["entity"] == f"{MOD}:w_catcher"
    assert handled["severity"] == 9
    assert handled["span_id"] == catcher["span_id"]
    assert json.loads(str(raiser["attrs"])) == {"unwound": True}
    assert catcher["attrs"] is None


def test_exception_leaving_a_trace_block_is_unhandled_and_propagates(make_tracer) -> None:
    tracer = make_tracer()
    tracer.start()
    with pytest.raises(KeyError), tracer.trace("failing block") as block:
        w_key_error()
    tracer.stop()
    excs = rows(tracer.drain(), "exception")
    unhandled = [e for e in excs if json.loads(str(e["attrs"]))["phase"] == "unhandled"]
    assert len(unhandled) == 1
    (event,) = unhandled
    assert event["severity"] == 17
    assert event["message"] == "KeyError: 'missing'"
    assert event["span_id"] == block.span_id
    assert event["entity"] == f"{MOD}:w_key_error"
    assert "w_key_error" in json.loads(str(event["attrs"]))["exception.stacktrace"]


def test_a_failing_exception_handler_never_reaches_user_code(make_tracer) -> None:
    tracer = make_tracer()
    tracer.watch(f"{MOD}:w_bad_str")
    tracer.start()
    with pytest.raises(BadStr):
        w_bad_str()
    tracer.stop()
    assert tracer.stats()["handler_errors"] >= 1
    assert len(by_entity(rows(tracer.drain(), "call"), ":w_bad_str")) == 1


# ---- what is recorded --------------------------------------------------------------------


def test_unwatched_code_is_not_recorded_and_is_disabled(make_tracer) -> None:
    tracer = make_tracer()
    tracer.watch(f"{MOD}:w_fib")
    tracer.start()
    u_helper(0)  # first call: classified once, then DISABLE
    before = tracer.stats()["starts"]
    for i in range(1000):
        u_helper(i)
    after = tracer.stats()["starts"]
    tracer.stop()
    assert after - before < 10, "unwatched code keeps paying for PY_START"
    assert tracer.drain() is None


def test_watch_after_code_was_seen_starts_recording_it(make_tracer) -> None:
    tracer = make_tracer()
    tracer.start()
    u_helper(1)
    assert tracer.drain() is None
    tracer.watch(f"{MOD}:u_helper")
    assert tracer.patterns == (f"{MOD}:u_helper",)
    u_helper(2)
    u_helper(3)
    assert len(by_entity(rows(tracer.drain(), "call"), ":u_helper")) == 2
    tracer.unwatch(f"{MOD}:u_helper")
    u_helper(4)
    tracer.stop()
    assert tracer.drain() is None


def test_module_patterns_match_the_module_and_its_children(make_tracer) -> None:
    tracer = make_tracer()
    tracer.watch("nomatch.*", f"{MOD}.*")  # "pkg.*" also matches "pkg" itself
    tracer.start()
    u_helper(1)
    tracer.stop()
    assert len(by_entity(rows(tracer.drain(), "call"), ":u_helper")) == 1
    assert tracer.stats()["watched_code_objects"] >= 1


def test_threads_get_their_own_tids_and_trees(make_tracer) -> None:
    tracer = make_tracer()
    tracer.watch(f"{MOD}:w_fib")
    tracer.start()
    idents: list[int] = []
    both_alive = threading.Barrier(2)  # alive together, so the OS cannot reuse a thread id

    def work() -> None:
        idents.append(threading.get_ident())
        both_alive.wait(timeout=10)
        w_fib(4)
        both_alive.wait(timeout=10)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tracer.stop()
    calls = rows(tracer.drain(), "call")
    assert {r["tid"] for r in calls} == set(idents)
    spans = {r["span_id"]: r for r in calls}
    for tid in idents:
        mine = [r for r in calls if r["tid"] == tid]
        assert len(mine) == 9  # fib(4) makes 9 calls
        assert sum(r["parent_span_id"] is None for r in mine) == 1
        assert all(spans[r["parent_span_id"]]["tid"] == tid for r in mine if r["parent_span_id"])


def test_lumin_threads_are_never_traced(make_tracer) -> None:
    tracer = make_tracer()
    tracer.watch(f"{MOD}:w_fib")
    tracer.start()
    t = threading.Thread(target=w_fib, args=(4,), name="lumin-worker")
    t.start()
    t.join()
    tracer.stop()
    assert tracer.drain() is None


def test_buffer_overflow_is_counted_and_never_blocks(make_tracer) -> None:
    tracer = make_tracer(buffer_records=10)
    tracer.watch(f"{MOD}:w_fib")
    tracer.start()
    assert w_fib(10) == 55  # 177 calls
    tracer.stop()
    stats = tracer.stats()
    assert stats["recorded"] == 10
    assert stats["dropped"] == 167
    assert stats["dropped_reason"]["buffer_full"] == 167  # type: ignore[index]
    assert len(rows(tracer.drain(), "call")) == 10


def test_stop_frees_the_tool_id_and_start_stop_repeat(make_tracer) -> None:
    tracer = make_tracer()
    tracer.watch(f"{MOD}:w_fib")
    for n in (3, 4, 5):
        tracer.start()
        tracer.start()  # idempotent
        tool = tracer.stats()["tool_id"]
        assert isinstance(tool, int)
        assert sys.monitoring.get_tool(tool) == "lumin"
        w_fib(n)
        tracer.stop()
        tracer.stop()
        assert sys.monitoring.get_tool(tool) is None
        calls = rows(tracer.drain(), "call")
        assert len(calls) == {3: 5, 4: 9, 5: 15}[n]
    w_fib(3)
    assert tracer.drain() is None, "nothing is recorded after stop()"


def test_no_free_tool_id_is_a_clear_error(make_tracer) -> None:
    taken = [t for t in calls_mod.TOOL_IDS if sys.monitoring.get_tool(t) is None]
    for t in taken:
        sys.monitoring.use_tool_id(t, "someone else")
    try:
        tracer = make_tracer()
        with pytest.raises(TracerBusyError, match=r"no sys\.monitoring tool id is free") as info:
            tracer.start()
        assert isinstance(info.value, RuntimeError)
        assert isinstance(info.value, LuminError)
    finally:
        for t in taken:
            sys.monitoring.free_tool_id(t)


@pytest.mark.skipif(calls_mod._native is None, reason="C extension not built")
def test_a_failed_start_releases_the_tool_id() -> None:
    tracer = CallTracer(buffer_records=1 << 55, native=True)  # no machine has 2.8 EB
    with pytest.raises(MemoryError):
        tracer.start()
    assert not tracer.is_running
    assert "lumin" not in {sys.monitoring.get_tool(t) for t in range(6)}
    tracer = CallTracer(native=True)
    tracer.watch(f"{MOD}:w_fib")
    tracer.start()
    w_fib(2)
    tracer.stop()
    assert len(rows(tracer.drain(), "call")) == 3


# ---- trace() blocks and sampling -------------------------------------------------------


def test_trace_block_span_is_the_parent_of_its_top_level_calls(make_tracer) -> None:
    tracer = make_tracer()
    with tracer.trace("my block") as block:
        json.dumps({"stdlib": "is not recorded"})
        w_fib(3)
        u_helper(1)
    w_fib(3)  # after the block: not recorded
    batch = tracer.drain()
    calls = rows(batch, "call")
    (span,) = rows(batch, "span")
    assert span["entity"] == "my block"
    assert span["span_id"] == block.span_id
    assert span["trace_id"] == block.trace_id
    assert span["parent_span_id"] is None
    assert sorted({str(r["entity"]) for r in calls}) == [f"{MOD}:u_helper", f"{MOD}:w_fib"]
    top = [r for r in calls if r["parent_span_id"] == block.span_id]
    assert sorted(str(r["entity"]) for r in top) == [f"{MOD}:u_helper", f"{MOD}:w_fib"]
    assert len(calls) == 6  # fib(3) is 5 calls, plus u_helper
    assert {r["trace_id"] for r in calls} == {block.trace_id}
    assert span["duration_ns"] >= max(r["duration_ns"] for r in calls)
    assert not tracer.is_running, "trace() stops the tracer it started"


def test_trace_block_records_other_threads_too(make_tracer) -> None:
    tracer = make_tracer()
    tracer.start()
    with tracer.trace("threads") as block:
        t = threading.Thread(target=w_fib, args=(3,))
        t.start()
        t.join()
    tracer.stop()
    calls = rows(tracer.drain(), "call")
    assert len(calls) == 5
    assert {r["trace_id"] for r in calls} == {block.trace_id}
    assert {r["tid"] for r in calls} != {threading.get_ident()}


def test_sampling_keeps_or_drops_whole_trees(make_tracer) -> None:
    tracer = make_tracer(sample_rate=0.5)
    tracer.watch(f"{MOD}:w_fib")
    tracer.start()
    for _ in range(200):
        w_fib(3)  # trees of 5 calls
    tracer.stop()
    calls = rows(tracer.drain(), "call")
    trees: dict[bytes, int] = {}
    for r in calls:
        trees[r["trace_id"]] = trees.get(r["trace_id"], 0) + 1  # type: ignore[index]
    assert set(trees.values()) == {5}, "every kept tree is complete"
    assert 40 <= len(trees) <= 160


def test_sample_rate_changes_apply_to_a_running_tracer(make_tracer) -> None:
    tracer = make_tracer(sample_rate=1.0)
    tracer.watch(f"{MOD}:w_fib")
    tracer.start()
    w_fib(3)
    tracer.sample_rate = 0.0  # the observatory does this when the config changes
    for _ in range(20):
        w_fib(3)
    tracer.sample_rate = 1.0
    w_fib(3)
    tracer.stop()
    assert len(rows(tracer.drain(), "call")) == 10
    with pytest.raises(ValueError, match=r"sample_rate=1\.5"):
        tracer.sample_rate = 1.5


def test_exceptions_are_recorded_even_in_unsampled_trees(make_tracer) -> None:
    tracer = make_tracer(sample_rate=0.0)
    tracer.watch(f"{MOD}:w_*")
    tracer.start()
    w_catcher()
    tracer.stop()
    batch = tracer.drain()
    assert rows(batch, "call") == []
    assert len(rows(batch, "exception")) == 2


def test_stats_say_which_backend_runs(make_tracer) -> None:
    tracer = make_tracer()
    stats = tracer.stats()
    assert stats["mode"] == (MODE_NATIVE if tracer.is_native else MODE_PYTHON)
    assert stats["native"] is tracer.is_native
    assert stats["recorded"] == 0 and stats["dropped"] == 0


def test_bad_arguments_name_the_value_and_the_fix() -> None:
    with pytest.raises(ValueError, match="sample_rate=2"):
        CallTracer(sample_rate=2)
    with pytest.raises(ValueError, match="buffer_records=0"):
        CallTracer(buffer_records=0)


def test_wait_for_drain_wakes_when_the_buffer_is_half_full(make_tracer) -> None:
    tracer = make_tracer(buffer_records=10)
    tracer.watch(f"{MOD}:w_fib")
    tracer.start()
    assert tracer.wait_for_drain(0.01) is False, "nothing recorded yet: waits out the timeout"
    w_fib(4)  # 9 calls in a buffer of 10
    started = time.monotonic()
    assert tracer.wait_for_drain(30.0) is True
    assert time.monotonic() - started < 5.0
    assert len(rows(tracer.drain(), "call")) == 9
    tracer.stop()


def test_an_idle_tracer_loads_no_numpy_or_pyarrow() -> None:
    code = (
        "import sys\n"
        "from lumin_nb.collect.calls import CallTracer\n"
        "t = CallTracer(); t.watch('nothing.*'); t.start(); sum(range(10)); t.stop()\n"
        "print(sorted(m for m in ('numpy', 'pyarrow', 'lumin_nb.event') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_the_normal_end_of_generators_is_not_an_exception_event() -> None:
    """StopIteration ending a coroutine or generator is control flow, not an error."""
    import asyncio

    from lumin_nb.collect.calls import CallTracer

    async def child() -> int:
        return 1

    async def parent() -> int:
        task = asyncio.ensure_future(child())
        (gathered,) = await asyncio.gather(task)
        return await child() + gathered + sum(x for x in range(3))

    tracer = CallTracer()
    tracer.start()
    try:
        with tracer.trace("block"):
            asyncio.run(parent())
        batch = tracer.drain()
    finally:
        tracer.stop()
    assert batch is not None
    kinds = batch.column("kind").to_pylist()
    assert "call" in kinds
    assert [
        m
        for k, m in zip(kinds, batch.column("message").to_pylist(), strict=True)
        if k == "exception"
    ] == []
