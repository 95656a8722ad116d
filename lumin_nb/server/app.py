"""The starlette app of an observatory's HTTP server: status, OTLP/HTTP and log ingestion.

Routes (all but ``/health`` need ``Authorization: Bearer <token>``):

- ``GET /health``: ``{"status": "ok"}``.
- ``GET /status``: the observatory's `status()` as JSON.
- ``POST /v1/traces``, ``/v1/logs``, ``/v1/metrics``: OTLP/HTTP, binary protobuf or JSON
  (answered in the request's encoding), with partial success (`lumin_nb.server.otlp`).
- ``POST /ingest/logs``: NDJSON, JSON arrays (Vector's ``http`` sink, Fluent Bit's ``json`` and
  ``json_lines``) or text with ``?format=logfmt|syslog|regex|grok`` and ``&pattern=``;
  ``?service=`` names the service of lines that carry none. Answers
  ``{"accepted": n, "rejected": m, "errors": [...]}``.

Each request passes, in order: token (401), rate limit per client address (429 with
Retry-After), Content-Type (415), body size before and after gzip/deflate (413), decoding
(400 naming the problem and offset). Bad input is answered with JSON
``{"error", "expected", "fix"}``; it never reaches the store and never crashes the server.

Data path: decoded batches go through one `lumin_nb.ingest.Pipeline` whose sink stamps
producer ``http:<observatory producer>`` with consecutive seqs and appends to the store. One
request's process + flush run under a lock, so a 200 means its rows are in the store (queued
for the writer, visible to queries); when the store refuses them the answer is 503 and the
client retries. Records rejected by decoding or parsing are kept in a bounded dead-letter table
beside the pipeline's (`Ingestor.rejected`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lumin_nb.errors import IngestError, LuminError, StoreError
from lumin_nb.server import otlp
from lumin_nb.server.auth import is_authorized
from lumin_nb.server.limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_RATE_LIMIT_PER_S,
    ENCODINGS,
    BodyTooLargeError,
    EncodingError,
    RateLimiter,
    inflate,
    read_body,
    retry_after,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from lumin_nb._observatory import Observatory
    from lumin_nb.ingest import Pipeline, PipelineResult

_PROTOBUF_TYPES: Final = ("application/x-protobuf", "application/protobuf")
_JSON_TYPES: Final = ("application/json",)
_NDJSON_TYPES: Final = (
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonlines",
    "application/x-jsonlines",
    "application/json-lines",
)
# Bodies /ingest/logs reads as text; curl's default form type is here because `curl -d` sends it.
_TEXT_TYPES: Final = (
    "",
    "text/plain",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
)
_MAX_ERRORS: Final = 5
_PATTERN_KIND: Final = {"regex": "regex with named groups", "grok": "grok expression"}
_SHAPES: Final = {
    "json": " (a JSON array of objects, one object, or one object per line)",
    "ndjson": " (one JSON object per line)",
    "json_lines": " (one JSON object per line)",
}
_MAX_DEAD_ROWS: Final = 10_000


class Problem(Exception):
    """A request the server refuses: an HTTP status and the house-style JSON error body."""

    def __init__(
        self,
        status: int,
        error: str,
        expected: str,
        fix: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error, "expected": expected, "fix": fix}
        self.body.update(extra or {})
        self.headers = headers or {}

    @classmethod
    def from_error(
        cls,
        status: int,
        err: Exception,
        *,
        expected: str = "Expected a request this server can read.",
        fix: str = "see the error and the route's documentation (lumin_nb.server.app)",
        **kwargs: Any,
    ) -> Problem:
        """Return a Problem from an error message in house form (problem, Expected, Fix);
        `expected` and `fix` fill in what the message does not say."""
        error, said_expected, said_fix = split_message(str(err))
        return cls(status, error, said_expected or expected, said_fix or fix, **kwargs)


def split_message(text: str) -> tuple[str, str, str]:
    """Split a house-style error message into (what was wrong, what was expected, the fix)."""
    error: list[str] = []
    expected: list[str] = []
    fix: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("Expected", "Known ", "Valid ")):
            expected.append(stripped)
        elif stripped.startswith("Fix:"):
            fix.append(stripped[4:].strip())
        elif stripped:
            (fix if fix else expected if expected else error).append(stripped)
    return " ".join(error), " ".join(expected), " ".join(fix)


class Ingestor:
    """The pipeline between the routes and the store, and the dead letters of decoding.

    Parameters
    ----------
    observatory
        Its config drives the pipeline (redaction); its store receives the batches.
    clock
        Wall-clock nanoseconds for records without a time; injectable for tests.
    """

    def __init__(
        self, observatory: Observatory, *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        from lumin_nb.ingest import Pipeline

        self.observatory = observatory
        self.producer = f"http:{observatory.producer}"
        self.clock = clock
        self._seq = 1
        self._lock = threading.Lock()
        self._dead: deque[pa.Table] = deque()
        self._dead_rows = 0
        #: dead-letter rows dropped because the table was full
        self.rejected_dropped = 0
        self.pipeline: Pipeline = Pipeline(
            observatory.config,
            service=otlp.UNKNOWN_SERVICE,
            host=observatory.host,
            sink=self._append,
            # adaptive, trace-consistent sampling towards the governor's event-rate target
            target_events_per_s=observatory.config.rate_limit_events_per_s,
        )

    def _append(self, batch: pa.RecordBatch) -> None:
        from lumin_nb.event import with_producer

        if not self.observatory.is_running:
            raise StoreError(
                "the observatory has stopped; nothing more is stored.\n"
                "Fix: lm.start() and lm.serve() again"
            )
        stamped = with_producer(batch, self.producer, self._seq)
        self.observatory.store.append(stamped)
        self._seq += batch.num_rows  # only after the store took it: no gaps on refusal

    def store(self, batch: pa.RecordBatch) -> PipelineResult:
        """Run `batch` through the pipeline and into the store now; return what happened."""
        with self._lock:
            result = self.pipeline.process(batch)
            self.pipeline.flush()
        return result

    def dead_letter(self, rows: pa.Table) -> None:
        """Keep rejected records (line_no, raw, reason), oldest dropped past the bound."""
        if rows.num_rows == 0:
            return
        with self._lock:
            self._dead.append(rows)
            self._dead_rows += rows.num_rows
            while self._dead_rows > _MAX_DEAD_ROWS and len(self._dead) > 1:
                oldest = self._dead.popleft()
                self._dead_rows -= oldest.num_rows
                self.rejected_dropped += oldest.num_rows

    def rejected(self) -> pa.Table:
        """Return every rejected record: decoding and parsing first, then the pipeline's."""
        import pyarrow as pa

        with self._lock:
            tables = [*self._dead, self.pipeline.rejected()]
        return pa.concat_tables(tables)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


#: gRPC status codes of HTTP statuses (google.rpc.Code), for OTLP error bodies
_GRPC_CODES: Final = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 413: 8, 415: 3, 429: 8, 503: 14}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _status_proto(code: int, message: str) -> bytes:
    """Encode a `google.rpc.Status` (code = field 1, message = field 2) by hand."""
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _problem_response(problem: Problem, request: Request | None = None) -> Response:
    """The house-style JSON error; on OTLP routes also a `google.rpc.Status` as OTLP/HTTP
    requires: protobuf for protobuf requests, and `code`/`message` keys in the JSON."""
    if request is None or not request.url.path.startswith("/v1/"):
        return JSONResponse(problem.body, status_code=problem.status, headers=problem.headers)
    code = _GRPC_CODES.get(problem.status, 13 if problem.status >= 500 else 2)
    message = f"{problem.body['error']} {problem.body['expected']} Fix: {problem.body['fix']}"
    if _media_type(request) == "application/x-protobuf":
        return Response(
            _status_proto(code, message),
            status_code=problem.status,
            headers=problem.headers,
            media_type="application/x-protobuf",
        )
    body = {"code": code, "message": message, **problem.body}
    return JSONResponse(body, status_code=problem.status, headers=problem.headers)


def create_app(
    observatory: Observatory,
    *,
    token: str,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_limit_per_s: float | None = DEFAULT_RATE_LIMIT_PER_S,
    ingestor: Ingestor | None = None,
    clock: Callable[[], float] | None = None,
) -> Starlette:
    """Return the starlette app serving `observatory` (see the module docstring for routes).

    Parameters
    ----------
    observatory
        A running observatory; its store receives what the routes accept.
    token
        The bearer token every route but ``/health`` requires.
    max_body_bytes
        The largest body accepted, before and after decompression (413 above it).
    rate_limit_per_s
        Requests per second per client address, bursts up to one second's worth
        (429 above it); None or 0 turns the limit off.
    ingestor
        The pipeline and sink (default: a new `Ingestor` on `observatory`).
    clock
        Monotonic seconds for the rate limiter; injectable for tests.
    """
    sink = ingestor or Ingestor(observatory)
    limiter = (
        RateLimiter(rate_limit_per_s, clock=clock)
        if clock is not None
        else RateLimiter(rate_limit_per_s)
    )

    def authorize(request: Request) -> None:
        if not is_authorized(request.headers.get("authorization"), token):
            given = (
                "no Authorization header"
                if "authorization" not in request.headers
                else ("a token that is not this server's")
            )
            raise Problem(
                401,
                f"the request carries {given}.",
                "Expected the header 'Authorization: Bearer <token>' with the token of this "
                "server.",
                "use the token of the server (srv.token from lm.serve()); for OTLP exporters: "
                "headers={'Authorization': 'Bearer <token>'}",
                headers={"WWW-Authenticate": 'Bearer realm="lumin"'},
            )
        wait = limiter.allow(_client(request))
        if wait:
            raise Problem(
                429,
                f"client {_client(request)} sent more than {limiter.rate_per_s:g} requests/s.",
                f"Expected at most {limiter.rate_per_s:g} requests per second per client "
                f"(bursts of {limiter.burst:g}).",
                f"retry after {retry_after(wait)} s, or send larger batches less often",
                headers={"Retry-After": retry_after(wait)},
            )

    async def body_of(request: Request) -> bytes:
        try:
            raw = await read_body(
                request.stream(), request.headers.get("content-length"), max_body_bytes
            )
            encoding = request.headers.get("content-encoding")
            if not encoding or encoding.strip().lower() == "identity":
                return raw
            return await run_in_threadpool(inflate, raw, encoding, max_body_bytes)
        except BodyTooLargeError as err:
            raise Problem(
                413,
                f"{err}.",
                f"Expected a body of at most {max_body_bytes} bytes "
                "(compressed and after decompression).",
                "send smaller batches (OTel: lower max_export_batch_size; Vector: "
                "batch.max_bytes; Fluent Bit: flush more often), or lm.serve(max_body_bytes=...)",
            ) from None
        except EncodingError as err:
            if err.is_unknown:
                raise Problem(
                    415,
                    f"{err}.",
                    f"Expected Content-Encoding one of: {', '.join(ENCODINGS)}.",
                    "send gzip (compression gzip) or no compression",
                ) from None
            raise Problem(
                400,
                f"{err}.",
                "Expected a body encoded as its Content-Encoding header says.",
                "compress the body with gzip, or drop the Content-Encoding header",
            ) from None

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def status(request: Request) -> Response:
        authorize(request)
        report = await run_in_threadpool(observatory.status)
        text = json.dumps(dict(report), default=str)
        return Response(text, media_type="application/json")

    def store(batch: pa.RecordBatch) -> PipelineResult:
        try:
            return sink.store(batch)
        except (StoreError, OSError) as err:
            raise Problem.from_error(503, err, headers={"Retry-After": "1"}) from None

    def make_otlp(signal: otlp.Signal) -> Callable[[Request], Any]:
        async def route(request: Request) -> Response:
            authorize(request)
            media = _media_type(request)
            if media not in _PROTOBUF_TYPES + _JSON_TYPES:
                raise Problem(
                    415,
                    f"Content-Type {media or '(none)'!r} is not an OTLP/HTTP encoding.",
                    "Expected Content-Type application/x-protobuf (binary protobuf) or "
                    f"application/json (OTLP JSON) carrying an {otlp.request_name(signal)}.",
                    "use an OTLP/HTTP exporter (protocol http/protobuf or http/json)",
                )
            is_json = media in _JSON_TYPES
            body = await body_of(request)
            try:
                decoded = await run_in_threadpool(
                    otlp.decode, signal, body, is_json=is_json, now_ns=sink.clock()
                )
            except IngestError as err:
                raise Problem.from_error(400, err) from None
            result = await run_in_threadpool(store, decoded.batch)
            sink.dead_letter(decoded.rejected)
            reasons = decoded.reasons + [str(r) for r in result.rejected.column("reason")]
            rejected = decoded.rejected_count + result.rejected.num_rows
            word = otlp.record_word(signal)
            message = otlp.reasons_summary(reasons, rejected, word) if rejected else ""
            content = otlp.export_response(signal, rejected, message, is_json=is_json)
            return Response(content, media_type=media if not is_json else "application/json")

        return route

    async def ingest_logs(request: Request) -> Response:
        from lumin_nb.ingest import FORMATS, PATTERNS, parse

        authorize(request)
        params = request.query_params
        media = _media_type(request)
        fmt = params.get("format")
        pattern = params.get("pattern") or None
        service = params.get("service") or None
        if fmt is not None and fmt not in FORMATS:
            raise Problem(
                400,
                f"format={fmt!r} is not a log format Lumin reads.",
                f"Expected format one of: {', '.join(FORMATS)}.",
                "POST /ingest/logs?format=logfmt (or ndjson, json, syslog, "
                "grok&pattern=COMBINEDAPACHELOG)",
            )
        if media not in _JSON_TYPES + _NDJSON_TYPES + _TEXT_TYPES and not media.startswith("text/"):
            raise Problem(
                415,
                f"Content-Type {media!r} is not one /ingest/logs reads.",
                "Expected application/json (an array, an object or JSON lines), "
                "application/x-ndjson, or text/plain with ?format=logfmt|syslog|regex|grok.",
                "Vector: encoding.codec = 'json'; Fluent Bit: Format json_lines",
            )
        if fmt is None:
            if pattern:
                fmt = "grok"
            elif media in _NDJSON_TYPES:
                fmt = "ndjson"
            else:
                fmt = "json"
        if fmt in ("regex", "grok") and not pattern:
            names = ", ".join(sorted(PATTERNS)[:12])
            raise Problem(
                400,
                f"format={fmt!r} needs a pattern.",
                f"Expected &pattern= a {_PATTERN_KIND[fmt]} or a library name ({names}, ...).",
                f"POST /ingest/logs?format={fmt}&pattern=COMBINEDAPACHELOG",
            )
        body = await body_of(request)
        try:
            parsed = await run_in_threadpool(parse, body, fmt, pattern, service=service)
        except IngestError as err:
            raise Problem.from_error(400, err) from None
        result = await run_in_threadpool(store, parsed.batch)
        sink.dead_letter(parsed.rejected)
        reasons = [str(r) for r in parsed.rejected.column("reason")]
        reasons += [str(r) for r in result.rejected.column("reason")]
        rejected = parsed.num_rejected + result.rejected.num_rows
        payload: dict[str, Any] = {
            "accepted": result.accepted,
            "rejected": rejected,
            "errors": reasons[:_MAX_ERRORS],
        }
        if rejected and not result.accepted:
            raise Problem(
                400,
                f"none of the {rejected} record(s) could be read as {fmt}: {reasons[0]}",
                f"Expected {fmt} records{_SHAPES.get(fmt, '')}.",
                "check the ?format= matches the body "
                f"(formats: {', '.join(FORMATS)}); rejected lines are kept in the dead letters",
                extra=payload,
            )
        return JSONResponse(payload)

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return _problem_response(exc, request)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        routes = "GET /health, GET /status, POST /v1/traces, /v1/logs, /v1/metrics, /ingest/logs"
        return _problem_response(
            Problem(
                exc.status_code,
                f"{request.method} {request.url.path}: {exc.detail}.",
                f"Expected one of: {routes}.",
                "check the URL and method (OTLP exporters append /v1/<signal> to the endpoint)",
                headers=dict(exc.headers or {}),
            ),
            request,
        )

    async def on_error(request: Request, exc: Exception) -> Response:
        return _problem_response(
            Problem(
                500,
                f"the server failed on this request: {type(exc).__name__}: {exc}",
                "Expected the server to answer every request; this is a Lumin bug.",
                "report it with the request that caused it; the server keeps running",
            ),
            request,
        )

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/v1/traces", make_otlp("traces"), methods=["POST"]),
        Route("/v1/logs", make_otlp("logs"), methods=["POST"]),
        Route("/v1/metrics", make_otlp("metrics"), methods=["POST"]),
        Route("/ingest/logs", ingest_logs, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            Problem: on_problem,
            HTTPException: on_http,
            Exception: on_error,
            LuminError: on_error,
        },
    )
    app.state.ingestor = sink
    app.state.limiter = limiter
    return app
