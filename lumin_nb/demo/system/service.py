"""One demo service process: a JSON-over-HTTP server and client that carry W3C trace context.

Every request runs inside the trace context of its ``traceparent`` header (a child span of
it, or a new trace when there is none); outgoing calls inject the current context, so one
checkout shares a trace id across gateway, orders and payments. Log records get
``trace_id``/``span_id`` attributes from the current context (a log record factory), which
the agent keeps in each log event's attrs: ``lm.attrs(df, "trace_id")`` joins them.

A service announces itself with one JSON line on stdout (``{"service", "port"}``) once it
listens, ends on SIGTERM (its agent ships what it holds first), and ends by itself when the
process that started it is gone, so an interrupted run leaves no orphans.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import urlsplit

from lumin_nb import context
from lumin_nb.demo.system.faults import Fault, switch

#: a route: the JSON body in, (status, JSON body) out
Route = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]

PARENT_CHECK_S: Final = 0.5
CALL_TIMEOUT_S: Final = 10.0


def install_trace_log_records() -> None:
    """Give every log record of this process the current ``trace_id`` and ``span_id``."""
    make = logging.getLogRecordFactory()
    if getattr(make, "lumin_demo", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        ctx = context.current()
        if ctx is not None:
            record.trace_id = ctx.trace_id.hex()
            record.span_id = ctx.span_id.hex()
        return record

    factory.lumin_demo = True  # type: ignore[attr-defined]  # marks our factory
    logging.setLogRecordFactory(factory)


def call(
    base_url: str, path: str, body: Mapping[str, Any] | None = None, *, method: str = "POST"
) -> tuple[int, dict[str, Any]]:
    """Send a JSON request carrying the current trace context; return (status, JSON body)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=CALL_TIMEOUT_S
    )
    headers = {"Content-Type": "application/json"}
    parent = context.current()
    context.inject(headers, parent.child() if parent else None)
    try:
        data = json.dumps(body or {}).encode()
        conn.request(method, path, body=data if method == "POST" else None, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else {}
    finally:
        conn.close()


def _handler(routes: Mapping[tuple[str, str], Route]) -> type[BaseHTTPRequestHandler]:
    log = logging.getLogger("shop.http")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _serve(self, method: str) -> None:
            route = routes.get((method, self.path.partition("?")[0]))
            if route is None:
                self._reply(404, {"error": f"no route {method} {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length)) if length else {}
            except ValueError:
                self._reply(400, {"error": "the body is not JSON"})
                return
            parent = context.extract(dict(self.headers.items()))
            ctx = parent.child() if parent else context.TraceContext.new()
            with context.use(ctx):
                try:
                    status, reply = route(body)
                except Exception as exc:
                    log.exception("%s %s failed", method, self.path)
                    status, reply = 500, {"error": f"{type(exc).__name__}: {exc}"}
            self._reply(status, reply)

        def _reply(self, status: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the access log would double every request's events; the routes log

    return Handler


def _set_fault(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    try:
        fault = Fault.from_json(body) if body.get("name") else None
    except ValueError as exc:
        return 400, {"error": str(exc)}
    switch.set(fault)
    return 200, {"fault": fault.to_json() if fault else None}


def announce(service: str, port: int = 0) -> None:
    """Tell the runner this service is ready: one JSON line on stdout."""
    sys.stdout.write(json.dumps({"service": service, "port": port}) + "\n")
    sys.stdout.flush()


def end_on_sigterm() -> None:
    """Make SIGTERM a clean exit (code 0): ``finally`` blocks run, then the agent ships at exit.

    A stop is how every run ends, so it should not read as a crash (exit code -15).
    """

    def end(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, end)


def watch_parent(parent_pid: int) -> None:
    """End this process (SIGTERM, so the agent ships first) once `parent_pid` is gone."""

    def check() -> None:
        pause = threading.Event()
        while os.getppid() == parent_pid:
            pause.wait(PARENT_CHECK_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=check, name="demo-parent-watch", daemon=True).start()


def serve(
    service: str,
    routes: Mapping[tuple[str, str], Route],
    *,
    port: int = 0,
    parent_pid: int | None = None,
    on_fault: Callable[[Fault | None], None] | None = None,
) -> None:
    """Serve `routes` (plus ``POST /_fault`` and ``GET /_health``) on 127.0.0.1 until SIGTERM."""
    install_trace_log_records()
    end_on_sigterm()

    def set_fault(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, reply = _set_fault(body)
        if status == 200 and on_fault is not None:
            on_fault(switch.fault)
        return status, reply

    every = {
        **routes,
        ("POST", "/_fault"): set_fault,
        ("GET", "/_health"): lambda _body: (200, {"service": service, "ts": time.time_ns()}),
    }
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(every))
    server.daemon_threads = True
    if parent_pid is not None:
        watch_parent(parent_pid)
    logging.getLogger(f"shop.{service}").info(
        "%s listening on 127.0.0.1:%d", service, server.server_address[1]
    )
    announce(service, int(server.server_address[1]))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
