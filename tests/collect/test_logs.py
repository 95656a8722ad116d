"""The logging source: records become log events with OTel severities and tracebacks."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from lumin_nb.collect.logs import LogCollector, otel_severity
from lumin_nb.event import EventBuilder, validate, with_producer


@pytest.fixture
def collected() -> Iterator[EventBuilder]:
    builder = EventBuilder()
    handler = LogCollector(builder, logging.DEBUG)
    handler.install()
    try:
        yield builder
    finally:
        handler.uninstall()


def test_records_become_log_events(collected: EventBuilder) -> None:
    log = logging.getLogger("shop.orders")
    log.debug("cart %s", 7)
    log.warning("slow", extra={"route": "/checkout", "order": {"id": 1}})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("boom")
    batch = collected.build()
    assert batch is not None
    validate(with_producer(batch, "t", 1))
    rows = batch.to_pylist()
    assert [r["message"] for r in rows] == ["cart 7", "slow", "boom"]
    assert [r["severity"] for r in rows] == [5, 13, 17]
    assert {r["entity"] for r in rows} == {"shop.orders"}
    assert all(r["kind"] == "log" and r["source_type"] == "internal_log" for r in rows)
    warn = json.loads(rows[1]["attrs"])
    assert warn["route"] == "/checkout" and warn["order"] == "{'id': 1}"
    boom = json.loads(rows[2]["attrs"])
    assert boom["exception.type"] == "ZeroDivisionError"
    assert "1 / 0" in boom["exception.stacktrace"]


def test_uninstall_restores_the_root_logger() -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    handler = LogCollector(EventBuilder(), logging.DEBUG)
    handler.install()
    assert handler in root.handlers
    handler.uninstall()
    assert (root.level, list(root.handlers)) == before


def test_severity_mapping_follows_opentelemetry() -> None:
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    assert [otel_severity(level) for level in levels] == [5, 9, 13, 17, 21]


def test_a_full_buffer_counts_drops_and_never_blocks(collected: EventBuilder) -> None:
    collected.max_events = 10
    for i in range(25):
        logging.getLogger("flood").info("line %d", i)
    assert len(collected) == 10 and collected.dropped == 15


def test_records_logged_inside_a_trace_carry_its_ids(collected: EventBuilder) -> None:
    from lumin_nb.context import TraceContext, use

    ctx = TraceContext.new()
    with use(ctx):
        logging.getLogger("traced").info("inside")
    logging.getLogger("traced").info("outside")
    rows = collected.build().to_pylist()  # type: ignore[union-attr]
    assert [(r["trace_id"], r["span_id"]) for r in rows] == [
        (ctx.trace_id, ctx.span_id),
        (None, None),
    ]
