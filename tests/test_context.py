"""W3C trace context: header round trips, invalid headers ignored, context propagation."""

from __future__ import annotations

import asyncio

from hypothesis import example, given, strategies as st

from lumin_nb import context
from lumin_nb.context import TraceContext, parse_traceparent, parse_tracestate

ids16 = st.binary(min_size=16, max_size=16).filter(any)
ids8 = st.binary(min_size=8, max_size=8).filter(any)
keys = st.from_regex(r"\A[a-z][a-z0-9_\-]{0,20}\Z")
values = st.from_regex(r"\A[a-zA-Z0-9!#-+\-.:;<>?@^_`{|}~]{1,20}\Z")


@given(
    ids16,
    ids8,
    st.booleans(),
    st.lists(st.tuples(keys, values), max_size=5, unique_by=lambda kv: kv[0]),
)
def test_traceparent_round_trip(
    trace_id: bytes, span_id: bytes, sampled: bool, state: list[tuple[str, str]]
) -> None:
    ctx = TraceContext(trace_id, span_id, sampled, tuple(state))
    headers: dict[str, str] = {}
    context.inject(headers, ctx)
    assert context.extract({k.upper(): v for k, v in headers.items()}) == ctx


@given(st.text(max_size=80))
@example("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
@example("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")
@example("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
@example("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
def test_invalid_headers_are_ignored_never_raise(text: str) -> None:
    ctx = parse_traceparent(text)
    if ctx is not None:
        assert any(ctx.trace_id) and any(ctx.span_id)
        assert ctx.traceparent[3:52] == text.strip()[3:52]


def test_spec_example_and_future_version() -> None:
    ctx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert ctx is not None and ctx.sampled and ctx.span_id.hex() == "00f067aa0ba902b7"
    future = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more")
    assert future is not None and not future.sampled


def test_tracestate_keeps_valid_members_first_key_wins() -> None:
    assert parse_tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,rojo=x, bad key=1,=v") == (
        ("rojo", "00f067aa0ba902b7"),
        ("congo", "t61rcWkgMzE"),
    )


def test_context_follows_asyncio_tasks() -> None:
    root = TraceContext.new()

    async def child() -> TraceContext | None:
        await asyncio.sleep(0)
        return context.current()

    async def main() -> TraceContext | None:
        with context.use(root):
            task = asyncio.create_task(child())
        assert context.current() is None
        return await task

    assert asyncio.run(main()) == root
    kid = root.child()
    assert kid.trace_id == root.trace_id and kid.span_id != root.span_id
