"""The OTel bridge: spans and logs made by the real OpenTelemetry SDK arrive as Lumin events."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from lumin_nb.collect import otel
from lumin_nb.event import EventBuilder, validate, with_producer

RESOURCE = Resource.create({"service.name": "orders", "host.name": "box-1", "deploy": "v2"})


@pytest.fixture
def providers() -> Iterator[tuple[TracerProvider, LoggerProvider, InMemorySpanExporter]]:
    tp = TracerProvider(resource=RESOURCE)
    exporter = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    lp = LoggerProvider(resource=RESOURCE)
    yield tp, lp, exporter
    otel.uninstall()
    tp.shutdown()
    lp.shutdown()


def _rows(builder: EventBuilder) -> list[dict[str, Any]]:
    batch = builder.build()
    assert batch is not None
    validate(with_producer(batch, "test", 1))
    rows = batch.to_pylist()
    for row, ts_ns in zip(rows, batch.column("ts").cast("int64").to_pylist(), strict=True):
        row["ts_ns"] = ts_ns
    return rows


def test_spans_arrive_with_the_sdk_ids_parents_and_attrs(
    providers: tuple[TracerProvider, LoggerProvider, InMemorySpanExporter],
) -> None:
    tp, lp, exporter = providers
    builder = EventBuilder()
    otel.install(builder, tracer_provider=tp, logger_provider=lp)
    tracer = tp.get_tracer("shop.http", "1.2")
    with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.route", "/checkout")
        root.set_attribute("retries", (1, 2))
        with tracer.start_as_current_span("db.query") as child:
            child.add_event("rows", {"n": 3})
    rows = _rows(builder)
    sdk = {s.name: s for s in exporter.get_finished_spans()}
    assert [r["entity"] for r in rows] == ["db.query", "GET /checkout"]
    for row in rows:
        span = sdk[row["entity"]]
        assert row["kind"] == "span" and row["source_type"] == "otel"
        assert row["trace_id"] == span.context.trace_id.to_bytes(16, "big")
        assert row["span_id"] == span.context.span_id.to_bytes(8, "big")
        assert row["ts_ns"] == span.start_time
        assert row["duration_ns"] == span.end_time - span.start_time
        assert row["service"] == "orders" and row["host"] == "box-1"
        assert row["severity"] == 0
    child_row, root_row = rows
    assert child_row["parent_span_id"] == root_row["span_id"]
    assert root_row["parent_span_id"] is None
    attrs = json.loads(root_row["attrs"])
    assert attrs["http.route"] == "/checkout" and attrs["retries"] == [1, 2]
    assert attrs["otel.span_kind"] == "server"
    assert attrs["otel.resource"]["deploy"] == "v2"
    assert attrs["otel.scope"] == {"name": "shop.http", "version": "1.2"}
    child_attrs = json.loads(child_row["attrs"])
    assert child_attrs["otel.events"][0]["name"] == "rows"
    assert child_attrs["otel.events"][0]["attributes"] == {"n": 3}


def test_recorded_exceptions_and_error_status_show(
    providers: tuple[TracerProvider, LoggerProvider, InMemorySpanExporter],
) -> None:
    tp, lp, _ = providers
    builder = EventBuilder()
    otel.install(builder, tracer_provider=tp, logger_provider=lp)
    tracer = tp.get_tracer("shop.pay")
    with tracer.start_as_current_span("first") as first:
        pass
    with (
        pytest.raises(ZeroDivisionError),
        tracer.start_as_current_span("charge", links=[Link(first.get_span_context())]),
    ):
        1 / 0  # noqa: B018
    with tracer.start_as_current_span("refund") as span:
        span.set_status(Status(StatusCode.ERROR, "card declined"))
    rows = {r["entity"]: r for r in _rows(builder)}
    charge = rows["charge"]
    assert charge["severity"] == 17
    assert charge["message"] == "ZeroDivisionError: division by zero"
    attrs = json.loads(charge["attrs"])
    assert attrs["otel.status_code"] == "error"
    (event,) = attrs["otel.events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ZeroDivisionError"
    assert "1 / 0" in event["attributes"]["exception.stacktrace"]
    (link,) = attrs["otel.links"]
    assert link["span_id"] == rows["first"]["span_id"].hex()
    assert rows["refund"]["severity"] == 17 and rows["refund"]["message"] == "card declined"
    assert rows["first"]["severity"] == 0


@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
def test_logs_arrive_with_severity_body_and_trace_context(
    providers: tuple[TracerProvider, LoggerProvider, InMemorySpanExporter],
) -> None:
    tp, lp, _ = providers
    builder = EventBuilder()
    otel.install(builder, tracer_provider=tp, logger_provider=lp)
    std = logging.getLogger("test_otel.app")
    std.propagate = False
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=lp)
    std.addHandler(handler)
    std.setLevel(logging.DEBUG)
    try:
        with tp.get_tracer("t").start_as_current_span("handle") as span:
            std.warning("stock low: %s", "sku-1", extra={"sku": "sku-1"})
        lp.get_logger("raw").emit(
            severity_number=SeverityNumber.ERROR, body={"order": 7, "ok": False}
        )
    finally:
        std.removeHandler(handler)
        std.propagate = True
    rows = _rows(builder)
    logs = [r for r in rows if r["kind"] == "log"]
    warn, raw = logs
    ctx = span.get_span_context()
    assert warn["severity"] == 13 and warn["message"] == "stock low: sku-1"
    assert warn["trace_id"] == ctx.trace_id.to_bytes(16, "big")
    assert warn["span_id"] == ctx.span_id.to_bytes(8, "big")
    assert warn["source_type"] == "otel" and warn["service"] == "orders"
    assert warn["entity"] == "test_otel.app"
    attrs = json.loads(warn["attrs"])
    assert attrs["sku"] == "sku-1" and attrs["otel.severity_text"] == "WARN"
    assert raw["severity"] == 17 and json.loads(raw["message"]) == {"order": 7, "ok": False}
    assert raw["trace_id"] is None and raw["entity"] == "raw"


def test_uninstall_stops_events_and_removes_the_processors(
    providers: tuple[TracerProvider, LoggerProvider, InMemorySpanExporter],
) -> None:
    tp, lp, exporter = providers
    builder = EventBuilder()
    bridge = otel.install(builder, tracer_provider=tp, logger_provider=lp)
    assert otel.installed() is bridge
    otel.uninstall()
    assert otel.installed() is None
    with tp.get_tracer("t").start_as_current_span("after"):
        pass
    lp.get_logger("x").emit(body="after")
    assert builder.build() is None
    assert len(exporter.get_finished_spans()) == 1  # the app's own exporter still works
    assert bridge.spans not in tp._active_span_processor._span_processors


def test_turn_off_and_on_and_cpu_accounting(
    providers: tuple[TracerProvider, LoggerProvider, InMemorySpanExporter],
) -> None:
    tp, lp, _ = providers
    builder = EventBuilder()
    bridge = otel.install(builder, tracer_provider=tp, logger_provider=lp)
    tracer = tp.get_tracer("t")
    bridge.turn_off()
    with tracer.start_as_current_span("off"):
        pass
    bridge.turn_on()
    for _ in range(50):
        with tracer.start_as_current_span("on"):
            pass
    assert {r["entity"] for r in _rows(builder)} == {"on"}
    stats = bridge.stats()
    assert stats["spans"] == 50 and stats["failed"] == 0 and stats["enabled"] is True
    assert bridge.cpu_s() > 0


def test_a_full_builder_drops_and_a_bad_span_is_counted_never_raised(
    providers: tuple[TracerProvider, LoggerProvider, InMemorySpanExporter],
) -> None:
    tp, lp, _ = providers
    bridge = otel.install(EventBuilder(max_events=2), tracer_provider=tp, logger_provider=lp)
    tracer = tp.get_tracer("t")
    for _ in range(5):
        with tracer.start_as_current_span("s"):
            pass
    assert bridge.stats()["dropped"] == 3
    bridge.spans.on_end(object())  # type: ignore[arg-type]  # not a span: must not raise
    bridge.logs.on_emit(object())  # type: ignore[arg-type]
    assert bridge.stats()["failed"] == 2


def test_install_uses_the_global_sdk_providers_and_skips_the_noop_default(
    providers: tuple[TracerProvider, LoggerProvider, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tp, lp, _ = providers
    builder = EventBuilder()
    monkeypatch.setattr(otel.trace_api, "get_tracer_provider", lambda: tp)
    monkeypatch.setattr(otel, "get_logger_provider", lambda: lp)
    bridge = otel.install(builder)
    assert bridge.tracer_provider is tp and bridge.logger_provider is lp
    with trace_api.get_tracer_provider().get_tracer("g").start_as_current_span("global"):
        pass
    assert [r["entity"] for r in _rows(builder)] == ["global"]
    monkeypatch.setattr(otel.trace_api, "get_tracer_provider", trace_api.NoOpTracerProvider)
    second = otel.install(builder)
    assert second.tracer_provider is None
    assert str(second.stats()["tracer_provider"]).startswith("none")
    assert bridge.spans not in tp._active_span_processor._span_processors
