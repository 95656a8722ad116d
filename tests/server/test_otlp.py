"""OTLP/HTTP into the store: the real OpenTelemetry SDK exporters, and the spec's JSON examples."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from lumin_nb._observatory import Observatory
from lumin_nb.server import Server

# The request examples of opentelemetry-proto (examples/*.json), as OTLP JSON clients send.
TRACE_JSON: dict[str, Any] = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]
            },
            "scopeSpans": [
                {
                    "scope": {
                        "name": "my.library",
                        "version": "1.0.0",
                        "attributes": [
                            {
                                "key": "my.scope.attribute",
                                "value": {"stringValue": "some scope attribute"},
                            }
                        ],
                    },
                    "spans": [
                        {
                            "traceId": "5B8EFFF798038103D269B633813FC60C",
                            "spanId": "EEE19B7EC3C1B174",
                            "parentSpanId": "EEE19B7EC3C1B173",
                            "name": "I'm a server span",
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "kind": 2,
                            "attributes": [
                                {"key": "my.span.attr", "value": {"stringValue": "some value"}}
                            ],
                        }
                    ],
                }
            ],
        }
    ]
}

LOGS_JSON: dict[str, Any] = {
    "resourceLogs": [
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]
            },
            "scopeLogs": [
                {
                    "scope": {"name": "my.library", "version": "1.0.0"},
                    "logRecords": [
                        {
                            "timeUnixNano": "1544712660300000000",
                            "observedTimeUnixNano": "1544712660300000000",
                            "severityNumber": 10,
                            "severityText": "Information",
                            "traceId": "5B8EFFF798038103D269B633813FC60C",
                            "spanId": "EEE19B7EC3C1B174",
                            "body": {"stringValue": "Example log record"},
                            "attributes": [
                                {
                                    "key": "string.attribute",
                                    "value": {"stringValue": "some string"},
                                },
                                {"key": "boolean.attribute", "value": {"boolValue": True}},
                                {"key": "int.attribute", "value": {"intValue": "10"}},
                                {"key": "double.attribute", "value": {"doubleValue": 637.704}},
                                {
                                    "key": "array.attribute",
                                    "value": {
                                        "arrayValue": {
                                            "values": [
                                                {"stringValue": "many"},
                                                {"stringValue": "values"},
                                            ]
                                        }
                                    },
                                },
                                {
                                    "key": "map.attribute",
                                    "value": {
                                        "kvlistValue": {
                                            "values": [
                                                {
                                                    "key": "some.map.key",
                                                    "value": {"stringValue": "some value"},
                                                }
                                            ]
                                        }
                                    },
                                },
                            ],
                        }
                    ],
                }
            ],
        }
    ]
}

METRICS_JSON: dict[str, Any] = {
    "resourceMetrics": [
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]
            },
            "scopeMetrics": [
                {
                    "scope": {"name": "my.library", "version": "1.0.0"},
                    "metrics": [
                        {
                            "name": "my.counter",
                            "unit": "1",
                            "sum": {
                                "aggregationTemporality": 1,
                                "isMonotonic": True,
                                "dataPoints": [
                                    {
                                        "asDouble": 5,
                                        "startTimeUnixNano": "1544712660300000000",
                                        "timeUnixNano": "1544712660300000000",
                                        "attributes": [
                                            {
                                                "key": "my.counter.attr",
                                                "value": {"stringValue": "some value"},
                                            }
                                        ],
                                    }
                                ],
                            },
                        },
                        {
                            "name": "my.gauge",
                            "gauge": {
                                "dataPoints": [
                                    {"asDouble": 10, "timeUnixNano": "1544712660300000000"}
                                ]
                            },
                        },
                        {
                            "name": "my.histogram",
                            "histogram": {
                                "aggregationTemporality": 1,
                                "dataPoints": [
                                    {
                                        "startTimeUnixNano": "1544712660300000000",
                                        "timeUnixNano": "1544712660300000000",
                                        "count": 3,
                                        "sum": 3,
                                        "bucketCounts": [1, 1, 1],
                                        "explicitBounds": [1],
                                        "min": 1,
                                        "max": 1,
                                    }
                                ],
                            },
                        },
                    ],
                }
            ],
        }
    ]
}


def _auth(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def _post_json(server: Server, path: str, doc: object, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}",
        content=json.dumps(doc).encode(),
        headers={**_auth(server), "Content-Type": "application/json", **headers},
    )


def _attrs(frame: Any, row: int = 0) -> dict[str, Any]:
    return dict(json.loads(frame["attrs"][row]))


# -- the real SDK --------------------------------------------------------------------------


def test_sdk_spans_arrive_with_ids_parents_service_and_errors(
    server: Server, obs: Observatory, stored: Callable[..., Any], wait_until: Callable[..., None]
) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{server.url}/v1/traces", headers=_auth(server))
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.checkout", "2.0")
    with (
        tracer.start_as_current_span("checkout", attributes={"http.route": "/pay"}) as parent,
        tracer.start_as_current_span("charge card") as child,
    ):
        child.set_status(Status(StatusCode.ERROR, "card declined"))
        child.add_event("retry", {"attempt": 2})
    provider.shutdown()
    wait_until(lambda: len(stored(kind="span")) == 2, what="2 spans stored")
    spans = stored(kind="span").sort("ts")
    pctx, cctx = parent.get_span_context(), child.get_span_context()
    assert spans["trace_id"].to_list() == [pctx.trace_id.to_bytes(16, "big")] * 2
    assert spans["span_id"].to_list() == [
        pctx.span_id.to_bytes(8, "big"),
        cctx.span_id.to_bytes(8, "big"),
    ]
    assert spans["parent_span_id"].to_list() == [None, pctx.span_id.to_bytes(8, "big")]
    assert spans["entity"].cast(str).to_list() == ["checkout", "charge card"]
    assert set(spans["service"].cast(str).to_list()) == {"checkout"}
    assert set(spans["source_type"].cast(str).to_list()) == {"otel"}
    assert spans["severity"].to_list() == [0, 17]
    assert spans["message"].to_list() == [None, "card declined"]
    assert spans["duration_ns"].to_list()[0] >= spans["duration_ns"].to_list()[1] >= 0
    parent_attrs, child_attrs = _attrs(spans, 0), _attrs(spans, 1)
    assert parent_attrs["http.route"] == "/pay"
    assert parent_attrs["otel.scope"] == {"name": "shop.checkout", "version": "2.0"}
    assert parent_attrs["otel.resource"]["service.name"] == "checkout"
    assert child_attrs["otel.status_code"] == "error"
    assert child_attrs["otel.events"][0]["name"] == "retry"
    assert child_attrs["otel.events"][0]["attributes"] == {"attempt": 2}
    producers = set(spans["producer"].to_list())
    assert producers == {f"http:{obs.producer}"}


@pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")
def test_sdk_logs_arrive_with_severity_body_and_trace_context(
    server: Server, stored: Callable[..., Any], wait_until: Callable[..., None]
) -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": "orders"}))
    exporter = OTLPLogExporter(
        endpoint=f"{server.url}/v1/logs", headers=_auth(server), compression=Compression.Gzip
    )
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("orders.db")
    logger.propagate = False  # keep the record away from the observatory's own log collector
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger.addHandler(handler)
    tracer_provider = TracerProvider()
    try:
        with tracer_provider.get_tracer("t").start_as_current_span("query") as span:
            logger.warning("slow query took %d ms", 812, extra={"db.table": "orders"})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        provider.shutdown()
    wait_until(lambda: len(stored(kind="log", service="orders")) == 1, what="the log stored")
    log = stored(kind="log", service="orders")
    ctx = span.get_span_context()
    assert log["message"][0] == "slow query took 812 ms"
    assert log["severity"][0] == 13
    assert log["entity"].cast(str)[0] == "orders.db"
    assert log["trace_id"][0] == ctx.trace_id.to_bytes(16, "big")
    assert log["span_id"][0] == ctx.span_id.to_bytes(8, "big")
    attrs = _attrs(log)
    assert attrs["db.table"] == "orders"
    assert attrs["otel.severity_text"] == "WARN"


def test_sdk_metrics_arrive_as_metric_events(
    server: Server, stored: Callable[..., Any], wait_until: Callable[..., None]
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": "payments"}), metric_readers=[reader]
    )
    meter = provider.get_meter("payments.worker")
    meter.create_counter("payments.done").add(3, {"method": "card"})
    meter.create_histogram("payments.latency", unit="ms").record(12.5)
    meter.create_histogram("payments.latency", unit="ms").record(7.5)
    meter.create_up_down_counter("payments.queue").add(-2)
    data = reader.get_metrics_data()
    assert data is not None
    exporter = OTLPMetricExporter(endpoint=f"{server.url}/v1/metrics", headers=_auth(server))
    assert exporter.export(data) == MetricExportResult.SUCCESS
    provider.shutdown()
    wait_until(lambda: len(stored(kind="metric", service="payments")) == 3, what="3 points")
    metrics = stored(kind="metric", service="payments").sort("entity")
    by_name = dict(zip(metrics["entity"].cast(str).to_list(), range(3), strict=True))
    assert metrics["value"][by_name["payments.done"]] == 3.0
    assert metrics["value"][by_name["payments.queue"]] == -2.0
    assert metrics["value"][by_name["payments.latency"]] == 20.0  # a histogram's value: its sum
    hist = _attrs(metrics, by_name["payments.latency"])
    assert hist["count"] == 2
    assert sum(hist["bucket_counts"]) == 2
    assert hist["otel.metric_type"] == "histogram"
    assert hist["otel.unit"] == "ms"
    assert _attrs(metrics, by_name["payments.done"])["method"] == "card"


# -- the specification's JSON examples -----------------------------------------------------


def test_json_trace_example_is_stored_with_hex_ids(
    server: Server, stored: Callable[..., Any], wait_until: Callable[..., None]
) -> None:
    r = _post_json(server, "/v1/traces", TRACE_JSON)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {}  # full success: partial_success left unset
    spans = stored(kind="span")
    assert len(spans) == 1
    assert spans["trace_id"][0] == bytes.fromhex("5B8EFFF798038103D269B633813FC60C")
    assert spans["parent_span_id"][0] == bytes.fromhex("EEE19B7EC3C1B173")
    assert spans["duration_ns"][0] == 1_000_000_000
    assert spans["service"].cast(str)[0] == "my.service"
    attrs = _attrs(spans)
    assert attrs["my.span.attr"] == "some value"
    assert attrs["otel.span_kind"] == "server"
    assert attrs["otel.scope"]["attributes"] == {"my.scope.attribute": "some scope attribute"}


def test_json_logs_example_keeps_typed_attributes(
    server: Server, stored: Callable[..., Any]
) -> None:
    r = _post_json(server, "/v1/logs", LOGS_JSON)
    assert r.status_code == 200, r.text
    logs = stored(kind="log", service="my.service")
    assert logs["message"].to_list() == ["Example log record"]
    assert logs["severity"].to_list() == [10]
    assert logs["span_id"][0] == bytes.fromhex("EEE19B7EC3C1B174")
    attrs = _attrs(logs)
    assert attrs["int.attribute"] == 10
    assert attrs["boolean.attribute"] is True
    assert attrs["array.attribute"] == ["many", "values"]
    assert attrs["map.attribute"] == {"some.map.key": "some value"}


def test_json_metrics_example_maps_sum_gauge_and_histogram(
    server: Server, stored: Callable[..., Any]
) -> None:
    r = _post_json(server, "/v1/metrics", METRICS_JSON)
    assert r.status_code == 200, r.text
    metrics = stored(kind="metric", service="my.service").sort("entity")
    assert metrics["entity"].cast(str).to_list() == ["my.counter", "my.gauge", "my.histogram"]
    assert metrics["value"].to_list() == [5.0, 10.0, 3.0]
    counter, _, hist = (_attrs(metrics, i) for i in range(3))
    assert counter["otel.temporality"] == "delta"
    assert counter["otel.is_monotonic"] is True
    assert hist["bucket_counts"] == [1, 1, 1]
    assert hist["explicit_bounds"] == [1.0]


def test_gzip_json_body_is_inflated(server: Server, stored: Callable[..., Any]) -> None:
    r = httpx.post(
        f"{server.url}/v1/traces",
        content=gzip.compress(json.dumps(TRACE_JSON).encode()),
        headers={**_auth(server), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200
    assert len(stored(kind="span")) == 1


# -- partial success -----------------------------------------------------------------------


def _span_doc(trace_id: str, name: str, start: int = 10, end: int = 20) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": "00f067aa0ba902b7",
        "name": name,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
    }


def test_json_partial_success_names_rejected_spans_and_stores_the_good_one(
    server: Server, stored: Callable[..., Any]
) -> None:
    good = "4bf92f3577b34da6a3ce929d0e0e4736"
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            _span_doc("zz" * 16, "bad hex"),
                            _span_doc(good, "good"),
                            _span_doc(good, "backwards", start=30, end=20),
                            {"name": "wrong type", "startTimeUnixNano": "soon"},
                        ]
                    }
                ]
            }
        ]
    }
    r = _post_json(server, "/v1/traces", doc)
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "3"  # int64 as a decimal string (proto3 JSON)
    message = partial["errorMessage"]
    assert "spans[0]: traceId has 3 bytes" in message
    assert "spans[2]: endTimeUnixNano=20 is before startTimeUnixNano=30" in message
    assert "spans[3]: not valid OTLP JSON" in message
    spans = stored(kind="span")
    assert spans["entity"].cast(str).to_list() == ["good"]
    assert spans["service"].cast(str).to_list() == ["unknown_service"]
    rejected = server.rejected()
    assert rejected.num_rows == 3
    assert rejected.column("line_no").to_pylist() == [1, 3, 4]


def test_protobuf_partial_success_is_a_protobuf_response(
    server: Server, stored: Callable[..., Any]
) -> None:
    request = trace_service_pb2.ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    good = trace_pb2.Span(
        trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), name="ok", start_time_unix_nano=5
    )
    spans.append(good)
    spans.append(trace_pb2.Span(trace_id=b"\x01" * 4, span_id=b"\x02" * 8, name="short id"))
    r = httpx.post(
        f"{server.url}/v1/traces",
        content=request.SerializeToString(),
        headers={**_auth(server), "Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-protobuf"
    response = trace_service_pb2.ExportTraceServiceResponse.FromString(r.content)
    assert response.partial_success.rejected_spans == 1
    assert "traceId has 4 bytes, expected 16" in response.partial_success.error_message
    assert stored(kind="span")["entity"].cast(str).to_list() == ["ok"]


def test_full_success_protobuf_response_leaves_partial_success_unset(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/v1/metrics",
        content=b"",
        headers={**_auth(server), "Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 200
    assert r.content == b""  # an empty ExportMetricsServiceResponse


@pytest.mark.parametrize("path", ["/v1/traces", "/v1/logs", "/v1/metrics"])
def test_snake_case_json_is_refused_with_the_camel_case_fix(server: Server, path: str) -> None:
    key = {"/v1/traces": "resource_spans", "/v1/logs": "resource_logs"}.get(
        path, "resource_metrics"
    )
    r = _post_json(server, path, {key: []})
    assert r.status_code == 400
    assert "lowerCamelCase" in r.json()["expected"]
