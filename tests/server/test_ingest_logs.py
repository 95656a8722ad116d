"""POST /ingest/logs over real HTTP: Vector and Fluent Bit payloads, text formats, dead letters."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from lumin_nb._observatory import Observatory
from lumin_nb.server import Server


def _post(
    server: Server, body: bytes, *, params: str = "", ctype: str = "application/json"
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/ingest/logs{params}",
        content=body,
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": ctype},
    )


def test_vector_http_sink_json_array_is_stored(
    server: Server, obs: Observatory, stored: Callable[..., Any]
) -> None:
    # Vector `http` sink, encoding.codec = "json": one JSON array of events per request.
    events = [
        {
            "message": "GET /cart 200",
            "timestamp": "2025-03-01T12:00:00.123456Z",
            "host": "web-1",
            "source_type": "file",
            "file": "/var/log/app.log",
        },
        {
            "message": "payment failed",
            "timestamp": "2025-03-01T12:00:01Z",
            "host": "web-1",
            "level": "error",
            "source_type": "file",
        },
    ]
    r = _post(server, json.dumps(events).encode(), params="?service=web")
    assert r.status_code == 200
    assert r.json() == {"accepted": 2, "rejected": 0, "errors": []}
    logs = stored(kind="log", service="web").sort("ts")
    assert logs["message"].to_list() == ["GET /cart 200", "payment failed"]
    assert logs["host"].cast(str).to_list() == ["web-1", "web-1"]
    assert logs["severity"].to_list()[1] == 17
    assert str(logs["ts"][0]) == "2025-03-01 12:00:00.123456+00:00"
    assert json.loads(logs["attrs"][0])["file"] == "/var/log/app.log"
    assert set(logs["producer"].to_list()) == {f"http:{obs.producer}"}
    seqs = logs["seq"].to_list()
    assert len(set(seqs)) == 2


def test_fluent_bit_json_lines_with_epoch_date_is_stored(
    server: Server, stored: Callable[..., Any]
) -> None:
    # Fluent Bit `http` output, Format json_lines: the record time under `date` (double s).
    lines = [
        {"date": 1700000000.25, "log": "worker started", "kubernetes": {"pod": "w-1"}},
        {"date": 1700000001.5, "log": "worker busy", "level": "warn"},
    ]
    body = "\n".join(json.dumps(line) for line in lines).encode() + b"\n"
    r = _post(server, body, params="?service=worker", ctype="application/x-ndjson")
    assert r.status_code == 200
    assert r.json()["accepted"] == 2
    logs = stored(kind="log", service="worker").sort("ts")
    assert logs["message"].to_list() == ["worker started", "worker busy"]
    # double epoch seconds: exact to well under a microsecond
    assert abs(logs["ts"].dt.epoch("ns").to_list()[0] - 1_700_000_000_250_000_000) < 1_000
    assert json.loads(logs["attrs"][0])["kubernetes"] == {"pod": "w-1"}


def test_fluent_bit_json_array_is_stored(server: Server, stored: Callable[..., Any]) -> None:
    records = [{"date": 1700000000.0, "log": "a"}, {"date": 1700000002.0, "log": "b"}]
    r = _post(server, json.dumps(records).encode())
    assert r.status_code == 200
    assert r.json()["accepted"] == 2
    assert len(stored(kind="log", service="unknown_service")) == 2


def test_logfmt_text_with_service(server: Server, stored: Callable[..., Any]) -> None:
    body = b'ts=2025-03-01T12:00:00Z level=info msg="order placed" order_id=42\n'
    r = _post(server, body, params="?format=logfmt&service=orders", ctype="text/plain")
    assert r.status_code == 200
    assert r.json()["accepted"] == 1
    logs = stored(kind="log", service="orders")
    assert logs["message"].to_list() == ["order placed"]
    assert json.loads(logs["attrs"][0])["order_id"] in (42, "42")


def test_grok_named_pattern_keeps_good_lines_and_dead_letters_bad_ones(
    server: Server, stored: Callable[..., Any]
) -> None:
    body = (
        b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 '
        b'"http://example.com/" "Mozilla/4.08"\n'
        b"this is not an access log line\n"
    )
    r = _post(server, body, params="?format=grok&pattern=COMBINEDAPACHELOG", ctype="text/plain")
    assert r.status_code == 200
    payload = r.json()
    assert (payload["accepted"], payload["rejected"]) == (1, 1)
    assert "line 2" in payload["errors"][0] or "2" in payload["errors"][0]
    assert len(stored(kind="log")) == 1
    rejected = server.rejected()
    assert rejected.column("raw").to_pylist() == ["this is not an access log line"]


def test_syslog_text(server: Server, stored: Callable[..., Any]) -> None:
    body = b"<34>1 2025-03-01T12:00:00Z mymachine su - ID47 - 'su root' failed for lonvick\n"
    r = _post(server, body, params="?format=syslog", ctype="text/plain")
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert stored(kind="log")["severity"].to_list()[0] >= 17  # PRI 34: severity 2, critical


def test_partly_bad_ndjson_stores_the_good_lines(
    server: Server, stored: Callable[..., Any]
) -> None:
    body = b'{"msg": "one"}\n{"msg": oops}\n{"msg": "three"}\n'
    r = _post(server, body, ctype="application/x-ndjson")
    assert r.status_code == 200
    payload = r.json()
    assert (payload["accepted"], payload["rejected"]) == (2, 1)
    assert "line 2" in payload["errors"][0]
    assert sorted(stored(kind="log")["message"].to_list()) == ["one", "three"]
