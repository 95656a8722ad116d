"""Every way a request can be bad: the status, the JSON error naming the problem, and no loss.

Real HTTP for statuses a client sees; `httpx.ASGITransport` with an injected clock for the
rate limit (deterministic) and for hypothesis (arbitrary bytes never produce a 5xx).
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lumin_nb._observatory import Observatory
from lumin_nb.server import Server, create_app

GOOD_SPAN = {
    "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
    "spanId": "00f067aa0ba902b7",
    "name": "good",
    "startTimeUnixNano": "1700000000000000000",
    "endTimeUnixNano": "1700000000500000000",
}


def _auth(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def _error(r: httpx.Response) -> dict[str, Any]:
    """The error of a response: JSON, or on OTLP protobuf requests a google.rpc.Status
    (OTLP/HTTP requires one) whose message holds the error, what was expected and the fix."""
    if r.headers.get("content-type") == "application/x-protobuf":
        from google.rpc import status_pb2

        status = status_pb2.Status.FromString(r.content)
        assert status.code > 0 and "Fix:" in status.message, status
        return {"error": status.message, "expected": status.message, "fix": status.message}
    body = dict(r.json())
    if r.request.url.path.startswith("/v1/"):
        assert isinstance(body["code"], int) and body["message"], "OTLP errors are a Status"
    assert set(body) >= {"error", "expected", "fix"}, body
    assert all(isinstance(body[k], str) and body[k] for k in ("error", "expected", "fix"))
    return body


@pytest.mark.parametrize("path", ["/status", "/v1/traces", "/ingest/logs"])
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc", "Bearer"])
def test_no_or_wrong_token_is_401(
    server: Server, stored: Callable[..., Any], path: str, header: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header
    method = "GET" if path == "/status" else "POST"
    r = httpx.request(method, f"{server.url}{path}", content=b"{}", headers=headers)
    assert r.status_code == 401
    assert "Authorization" in _error(r)["expected"]
    assert len(stored(source_type=["otel", "external_log"])) == 0


def test_malformed_protobuf_is_400_naming_the_offset(server: Server) -> None:
    # field 1 (resource_spans), wire type 2, declares 100 bytes but only 3 follow
    r = httpx.post(
        f"{server.url}/v1/traces",
        content=b"\x0a\x64abc",
        headers={**_auth(server), "Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 400
    body = _error(r)
    assert (
        "ExportTraceServiceRequest.resource_spans declares 100 bytes but 3 remain"
        in (body["error"])
    )
    assert "at byte 0" in body["error"]
    assert "application/x-protobuf" in body["expected"]


def test_invalid_utf8_deep_in_protobuf_names_the_field_and_offset(server: Server) -> None:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    request = logs_service_pb2.ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    scope.scope.name = "abc"
    data = bytearray(request.SerializeToString())
    data[data.index(b"abc")] = 0xFF
    r = httpx.post(
        f"{server.url}/v1/logs",
        content=bytes(data),
        headers={**_auth(server), "Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 400
    assert (
        f"InstrumentationScope.name is not valid UTF-8 at byte {data.index(0xFF)}"
        in (_error(r)["error"])
    )


def test_malformed_json_is_400_naming_the_offset(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/v1/traces",
        content=b'{"resourceSpans": [}',
        headers={**_auth(server), "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert "not valid JSON" in _error(r)["error"]
    assert "at byte 19" in _error(r)["error"]


def test_json_of_the_wrong_shape_is_400(server: Server) -> None:
    for doc, problem in (([], "not an object"), ({"resourceSpans": {}}, "not an array")):
        r = httpx.post(
            f"{server.url}/v1/traces",
            content=json.dumps(doc).encode(),
            headers={**_auth(server), "Content-Type": "application/json"},
        )
        assert r.status_code == 400
        assert problem in _error(r)["error"]


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", ""])
def test_wrong_content_type_for_otlp_is_415(server: Server, ctype: str) -> None:
    r = httpx.post(
        f"{server.url}/v1/traces", content=b"{}", headers={**_auth(server), "Content-Type": ctype}
    )
    assert r.status_code == 415
    assert "application/x-protobuf" in _error(r)["expected"]


def test_wrong_content_type_for_logs_is_415(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/ingest/logs",
        content=b"\x81\xa3log\xa1x",
        headers={**_auth(server), "Content-Type": "application/msgpack"},
    )
    assert r.status_code == 415
    assert "json_lines" in _error(r)["fix"]


def test_unknown_content_encoding_is_415_and_bad_gzip_is_400(server: Server) -> None:
    headers = {**_auth(server), "Content-Type": "application/json"}
    r = httpx.post(
        f"{server.url}/v1/traces", content=b"xx", headers={**headers, "Content-Encoding": "br"}
    )
    assert r.status_code == 415
    assert "gzip" in _error(r)["expected"]
    r = httpx.post(
        f"{server.url}/v1/traces",
        content=b"not gzip",
        headers={**headers, "Content-Encoding": "gzip"},
    )
    assert r.status_code == 400
    assert "not valid gzip" in _error(r)["error"]


def test_unknown_format_is_400_listing_the_formats(server: Server) -> None:
    r = httpx.post(f"{server.url}/ingest/logs?format=csv", content=b"a,b", headers=_auth(server))
    assert r.status_code == 400
    body = _error(r)
    assert "format='csv'" in body["error"]
    for name in ("ndjson", "json", "logfmt", "syslog", "regex", "grok"):
        assert name in body["expected"]


def test_grok_without_pattern_and_bad_pattern_are_400(server: Server) -> None:
    r = httpx.post(f"{server.url}/ingest/logs?format=grok", content=b"x", headers=_auth(server))
    assert r.status_code == 400
    assert "COMBINEDAPACHELOG" in _error(r)["expected"]
    r = httpx.post(
        f"{server.url}/ingest/logs?format=grok&pattern=%25%7BNOPE%7D",
        content=b"x",
        headers=_auth(server),
    )
    assert r.status_code == 400
    assert "NOPE" in _error(r)["error"]


def test_all_lines_bad_is_400_and_they_are_dead_lettered(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/ingest/logs",
        content=b"not json\nalso not json\n",
        headers={**_auth(server), "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 400
    body = _error(r)
    assert (body["accepted"], body["rejected"]) == (0, 2)
    assert "line 1" in body["error"]
    assert server.rejected().num_rows == 2


def test_body_over_the_limit_is_413_compressed_or_inflated(
    make_server: Callable[..., Server], stored: Callable[..., Any]
) -> None:
    srv = make_server(max_body_bytes=1024)
    headers = {**_auth(srv), "Content-Type": "application/json"}
    r = httpx.post(f"{srv.url}/ingest/logs", content=b"[" + b" " * 2000 + b"]", headers=headers)
    assert r.status_code == 413
    assert "1024" in _error(r)["expected"]
    bomb = gzip.compress(b"[" + b" " * 100_000 + b"]")
    assert len(bomb) < 1024
    r = httpx.post(
        f"{srv.url}/ingest/logs", content=bomb, headers={**headers, "Content-Encoding": "gzip"}
    )
    assert r.status_code == 413
    assert "inflated" in _error(r)["error"]
    # chunked (no Content-Length) is counted as it streams
    r = httpx.post(
        f"{srv.url}/ingest/logs", content=iter([b"[", b" " * 2000, b"]"]), headers=headers
    )
    assert r.status_code == 413
    assert len(stored(source_type=["otel", "external_log"])) == 0
    ok = httpx.post(f"{srv.url}/ingest/logs", content=b'[{"msg": "small"}]', headers=headers)
    assert ok.status_code == 200


def test_over_the_rate_limit_is_429_with_retry_after(obs: Observatory) -> None:
    now = [100.0]
    app = create_app(obs, token="t", rate_limit_per_s=2, clock=lambda: now[0])
    headers = {"Authorization": "Bearer t"}

    async def statuses(n: int) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.get("/status", headers=headers) for _ in range(n)]

    first = asyncio.run(statuses(3))
    assert [r.status_code for r in first] == [200, 200, 429]
    assert first[2].headers["retry-after"] == "1"
    assert "2 requests/s" in _error(first[2])["error"]
    now[0] += 0.5  # half a second refills one token
    assert [r.status_code for r in asyncio.run(statuses(2))] == [200, 429]


def test_partially_bad_request_keeps_its_good_records(
    server: Server, stored: Callable[..., Any]
) -> None:
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [GOOD_SPAN, {"traceId": "xyz"}]}]}]}
    r = httpx.post(
        f"{server.url}/v1/traces",
        content=json.dumps(doc).encode(),
        headers={**_auth(server), "Content-Type": "application/json"},
    )
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert stored(kind="span")["entity"].cast(str).to_list() == ["good"]


# -- hypothesis: the server never answers 5xx ----------------------------------------------

ROUTES = [
    ("/v1/traces", "application/x-protobuf"),
    ("/v1/logs", "application/x-protobuf"),
    ("/v1/metrics", "application/x-protobuf"),
    ("/v1/traces", "application/json"),
    ("/v1/logs", "application/json"),
    ("/v1/metrics", "application/json"),
    ("/ingest/logs", "application/json"),
    ("/ingest/logs?format=logfmt", "text/plain"),
    ("/ingest/logs?format=syslog", "text/plain"),
    ("/ingest/logs?format=grok&pattern=SYSLOGLINE", "text/plain"),
]


def _protobuf_like() -> st.SearchStrategy[bytes]:
    """Bytes that often get past the first tags: valid field keys with random payloads."""
    field = st.tuples(st.sampled_from([0x0A, 0x12, 0x1A, 0x22, 0x08, 0x11]), st.binary(max_size=40))
    return st.lists(field, max_size=6).map(
        lambda fs: b"".join(bytes([k, len(v)]) + v if k & 7 == 2 else bytes([k]) + v for k, v in fs)
    )


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(
    route=st.sampled_from(ROUTES),
    body=st.one_of(
        st.binary(max_size=300), _protobuf_like(), st.text(max_size=200).map(str.encode)
    ),
    gzipped=st.booleans(),
)
def test_arbitrary_bytes_never_produce_a_5xx(
    obs: Observatory, route: tuple[str, str], body: bytes, gzipped: bool
) -> None:
    app = create_app(obs, token="t", rate_limit_per_s=None)
    path, ctype = route
    headers = {"Authorization": "Bearer t", "Content-Type": ctype}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(path, content=body, headers=headers)

    r = asyncio.run(post())
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        _error(r)
