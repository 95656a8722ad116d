"""Source: spans and log records of the OpenTelemetry SDK become ``span`` and ``log`` events.

An app already instrumented with the OTel SDK keeps its code: `install()` adds a
`SpanProcessor` and a `LogRecordProcessor` to its providers (the global ones, or those given),
and every finished span and emitted log record is appended to an `EventBuilder`, in the same
shape the OTLP/HTTP route (`lumin_nb.server.otlp`) gives them:

- span -> ``kind="span"``: ts = start, ``duration_ns`` = end - start, trace/span/parent ids,
  entity = span name, message = status description, severity 17 when the status is ERROR.
- log record -> ``kind="log"``: ts = timestamp (else observed time), severity = severity
  number, message = body (text, or JSON for structured bodies), trace context, entity = the
  scope name.

Every row has ``source_type="otel"``, service = the resource's ``service.name`` (else
``unknown_service``), host = ``host.name``, pid = ``process.pid`` when the resource has them.
``attrs`` holds the record's attributes as top-level keys plus ``otel.resource``,
``otel.scope``, ``otel.span_kind``, ``otel.status_code``, ``otel.trace_state``,
``otel.events`` (exceptions recorded on a span are events named ``exception``) and
``otel.links`` for spans, ``otel.severity_text`` and ``otel.event_name`` for logs.

Invariants: the processors run on the app's threads, so they never raise into it (a record
they cannot convert is counted in ``failed``) and never block (the builder is bounded and
counts its drops). Each measures its own CPU time (``cpu_ns``) so the governor can turn the
bridge off when it costs more than the profile's overhead budget. The SDK has no way to remove
a processor; `uninstall()` takes ours out of the SDK's processor tuple when that internal is
there and, in any case, turns them into no-ops.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace as trace_api
from opentelemetry._logs import get_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from lumin_nb.event import SEVERITY_ERROR, EventBuilder

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import ReadWriteLogRecord
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = ["LogBridge", "OtelBridge", "SpanBridge", "install", "installed", "uninstall"]

#: the service of records whose resource has no ``service.name`` (the OTel SDK default)
UNKNOWN_SERVICE: Final = "unknown_service"


def _jsonable(value: Any) -> Any:
    """Return an attribute value JSON can hold: tuples as lists, bytes as hex, NaN as text."""
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return None if value is None else str(value)


def _attributes(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attrs:
        return {}
    return {str(k): _jsonable(v) for k, v in attrs.items()}


def _dumps(row: Mapping[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class _Origin:
    """A (resource, scope) pair read once: service, host, pid and the attrs JSON tail."""

    __slots__ = ("host", "pid", "scope_name", "service", "tail")

    def __init__(self, resource: Resource | None, scope: InstrumentationScope | None) -> None:
        res = _attributes(resource.attributes if resource is not None else None)
        service = res.get("service.name")
        self.service = service if isinstance(service, str) and service else UNKNOWN_SERVICE
        host = res.get("host.name")
        self.host = host if isinstance(host, str) and host else None
        pid = res.get("process.pid")
        ok = isinstance(pid, int) and not isinstance(pid, bool) and 0 <= pid < 1 << 31
        self.pid: int | None = pid if ok else None
        scope_dict: dict[str, Any] = {"name": scope.name if scope is not None else ""}
        if scope is not None and scope.version:
            scope_dict["version"] = scope.version
        scope_attrs = getattr(scope, "attributes", None)
        if scope_attrs:
            scope_dict["attributes"] = _attributes(scope_attrs)
        self.scope_name: str | None = scope_dict["name"] or None
        # dumped once per (resource, scope), not once per record: most of attrs is this tail
        self.tail = f'"otel.resource":{_dumps(res)},"otel.scope":{_dumps(scope_dict)}}}'

    def attrs(self, row: dict[str, Any]) -> str:
        if not row:
            return "{" + self.tail
        return _dumps(row)[:-1] + "," + self.tail


class _Origins:
    """A small cache of `_Origin`s by (resource, scope) identity; SDKs reuse both objects."""

    _MAX: Final = 256

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], tuple[object, object, _Origin]] = {}

    def get(self, resource: Resource | None, scope: InstrumentationScope | None) -> _Origin:
        key = (id(resource), id(scope))
        hit = self._cache.get(key)
        if hit is not None and hit[0] is resource and hit[1] is scope:
            return hit[2]
        origin = _Origin(resource, scope)
        if len(self._cache) >= self._MAX:
            self._cache.clear()
        self._cache[key] = (resource, scope, origin)  # holding them keeps their ids unique
        return origin


class _Counting:
    """What both processors share: on/off, failures and their own CPU time."""

    def __init__(self, builder: EventBuilder) -> None:
        self.builder = builder
        self.is_enabled = True
        self.seen = 0
        self.failed = 0
        self.dropped = 0
        self.cpu_ns = 0
        self._origins = _Origins()


class SpanBridge(_Counting, SpanProcessor):
    """An OTel SDK `SpanProcessor` appending every finished span to a Lumin EventBuilder."""

    def on_end(self, span: ReadableSpan) -> None:
        if not self.is_enabled:
            return
        began = time.thread_time_ns()
        try:
            self.seen += 1
            if not self._append(span):
                self.dropped += 1
        except Exception:  # never into the app; counted
            self.failed += 1
        self.cpu_ns += time.thread_time_ns() - began

    def _append(self, span: ReadableSpan) -> bool:
        ctx = span.context
        if ctx is None or span.start_time is None:
            self.failed += 1
            return True
        origin = self._origins.get(span.resource, span.instrumentation_scope)
        row = _attributes(span.attributes)
        row["otel.span_kind"] = span.kind.name.lower()
        status = span.status
        if status.status_code is not StatusCode.UNSET:
            row["otel.status_code"] = status.status_code.name.lower()
        if ctx.trace_state:
            row["otel.trace_state"] = ctx.trace_state.to_header()
        if span.events:
            row["otel.events"] = [
                {
                    "name": e.name,
                    "time_unix_nano": e.timestamp,
                    "attributes": _attributes(e.attributes),
                }
                for e in span.events
            ]
        if span.links:
            row["otel.links"] = [
                {
                    "trace_id": link.context.trace_id.to_bytes(16, "big").hex(),
                    "span_id": link.context.span_id.to_bytes(8, "big").hex(),
                    "attributes": _attributes(link.attributes),
                }
                for link in span.links
            ]
        parent = span.parent
        end = span.end_time
        return self.builder.append(
            "span",
            ts=span.start_time,
            duration_ns=max(0, end - span.start_time) if end is not None else None,
            source_type="otel",
            severity=SEVERITY_ERROR if status.status_code is StatusCode.ERROR else 0,
            service=origin.service,
            host=origin.host,
            pid=origin.pid,
            tid=threading.get_ident(),
            trace_id=ctx.trace_id.to_bytes(16, "big"),
            span_id=ctx.span_id.to_bytes(8, "big"),
            parent_span_id=parent.span_id.to_bytes(8, "big") if parent is not None else None,
            entity=span.name,
            message=status.description or None,
            attrs=origin.attrs(row),
        )

    def shutdown(self) -> None:
        self.is_enabled = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class LogBridge(_Counting, LogRecordProcessor):
    """An OTel SDK `LogRecordProcessor` appending every emitted log record to an EventBuilder."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if not self.is_enabled:
            return
        began = time.thread_time_ns()
        try:
            self.seen += 1
            if not self._append(log_record):
                self.dropped += 1
        except Exception:  # never into the app; counted
            self.failed += 1
        self.cpu_ns += time.thread_time_ns() - began

    def _append(self, rw: ReadWriteLogRecord) -> bool:
        record = rw.log_record
        origin = self._origins.get(rw.resource, rw.instrumentation_scope)
        row = _attributes(record.attributes)
        if record.severity_text:
            row["otel.severity_text"] = record.severity_text
        if getattr(record, "event_name", None):
            row["otel.event_name"] = record.event_name
        body = record.body
        message: str | None
        if body is None or isinstance(body, str):
            message = body
        else:
            message = json.dumps(_jsonable(body), ensure_ascii=False)
        severity = record.severity_number.value if record.severity_number is not None else 0
        trace_id = record.trace_id or 0
        span_id = record.span_id or 0
        return self.builder.append(
            "log",
            ts=record.timestamp or record.observed_timestamp or time.time_ns(),
            source_type="otel",
            severity=min(max(int(severity), 0), 24),
            service=origin.service,
            host=origin.host,
            pid=origin.pid,
            tid=threading.get_ident(),
            trace_id=trace_id.to_bytes(16, "big") if trace_id else None,
            span_id=span_id.to_bytes(8, "big") if span_id else None,
            entity=origin.scope_name,
            message=message,
            attrs=origin.attrs(row),
        )

    def shutdown(self) -> None:
        self.is_enabled = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class OtelBridge:
    """The installed pair of processors and the providers they were added to."""

    def __init__(
        self,
        builder: EventBuilder,
        tracer_provider: TracerProvider | None,
        logger_provider: LoggerProvider | None,
    ) -> None:
        self.spans = SpanBridge(builder)
        self.logs = LogBridge(builder)
        self.tracer_provider = tracer_provider
        self.logger_provider = logger_provider

    @property
    def is_enabled(self) -> bool:
        """Whether either processor still converts what it receives."""
        return self.spans.is_enabled or self.logs.is_enabled

    def turn_off(self) -> None:
        """Make both processors no-ops (what the governor's circuit breaker calls)."""
        self.spans.is_enabled = False
        self.logs.is_enabled = False

    def turn_on(self) -> None:
        """Convert spans and logs again (a half-open breaker's retry)."""
        self.spans.is_enabled = self.tracer_provider is not None
        self.logs.is_enabled = self.logger_provider is not None

    def cpu_s(self) -> float:
        """Return the CPU seconds both processors spent on the app's threads so far."""
        return (self.spans.cpu_ns + self.logs.cpu_ns) / 1e9

    def stats(self) -> dict[str, object]:
        """Return what the bridge did: providers hooked, spans and logs seen, dropped, failed."""
        return {
            "tracer_provider": _describe(self.tracer_provider, "TracerProvider"),
            "logger_provider": _describe(self.logger_provider, "LoggerProvider"),
            "enabled": self.is_enabled,
            "spans": self.spans.seen,
            "logs": self.logs.seen,
            "dropped": self.spans.dropped + self.logs.dropped,
            "failed": self.spans.failed + self.logs.failed,
            "cpu_s": round(self.cpu_s(), 6),
        }


def _describe(provider: object | None, kind: str) -> str:
    if provider is None:
        return f"none (no OpenTelemetry SDK {kind} is set)"
    return type(provider).__name__


_lock = threading.Lock()
_installed: OtelBridge | None = None


def install(
    builder: EventBuilder,
    tracer_provider: TracerProvider | None = None,
    logger_provider: LoggerProvider | None = None,
) -> OtelBridge:
    """Send the spans and log records of the OTel SDK to `builder`; return the bridge.

    Without providers, the global ones (`trace.get_tracer_provider()`,
    `_logs.get_logger_provider()`) are used when they are SDK providers; a global provider
    that is not (the API's no-op default) is left alone and `stats()` says so, since an app
    that never set one produces no spans. A second `install()` replaces the first.
    """
    global _installed
    if tracer_provider is None:
        found = trace_api.get_tracer_provider()
        tracer_provider = found if isinstance(found, TracerProvider) else None
    if logger_provider is None:
        found_logs = get_logger_provider()
        logger_provider = found_logs if isinstance(found_logs, LoggerProvider) else None
    with _lock:
        if _installed is not None:
            _remove(_installed)
        bridge = OtelBridge(builder, tracer_provider, logger_provider)
        if tracer_provider is not None:
            tracer_provider.add_span_processor(bridge.spans)
        else:
            bridge.spans.is_enabled = False
        if logger_provider is not None:
            logger_provider.add_log_record_processor(bridge.logs)
        else:
            bridge.logs.is_enabled = False
        _installed = bridge
        return bridge


def uninstall() -> None:
    """Stop sending spans and logs to Lumin (idempotent)."""
    global _installed
    with _lock:
        if _installed is not None:
            _remove(_installed)
            _installed = None


def installed() -> OtelBridge | None:
    """Return the bridge `install()` put in place, or None."""
    return _installed


def _remove(bridge: OtelBridge) -> None:
    bridge.turn_off()
    if bridge.tracer_provider is not None:
        _drop_from(
            getattr(bridge.tracer_provider, "_active_span_processor", None),
            "_span_processors",
            bridge.spans,
        )
    if bridge.logger_provider is not None:
        _drop_from(
            getattr(bridge.logger_provider, "_multi_log_record_processor", None),
            "_log_record_processors",
            bridge.logs,
        )


def _drop_from(multi: object, field: str, processor: object) -> None:
    """Take `processor` out of the SDK's processor tuple (SDK internals; no-op if absent)."""
    current = getattr(multi, field, None)
    lock = getattr(multi, "_lock", None)
    if not isinstance(current, tuple) or lock is None:
        return
    with lock:
        setattr(multi, field, tuple(p for p in getattr(multi, field) if p is not processor))
