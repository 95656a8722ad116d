"""OTLP/HTTP requests to event batches: traces, logs and metrics, protobuf and JSON.

The body of ``POST /v1/traces|logs|metrics`` is an ``Export<Signal>ServiceRequest``, binary
(``application/x-protobuf``) or in OTLP JSON (``application/json``: proto3 JSON mapping with
lowerCamelCase keys, hex trace/span ids, integer enums, int64 as numbers or decimal strings,
unknown fields ignored). Both decode to the generated opentelemetry-proto classes, then one
converter fills per-column lists and builds one `pa.RecordBatch` of the event schema:

- span -> ``kind="span"``: ts = start, ``duration_ns`` = end - start, trace/span/parent ids,
  entity = span name, message = status message, severity 17 when the status is ERROR.
- log record -> ``kind="log"``: ts = time (else observed time, else receive time),
  severity = severity_number, message = body (text, or JSON for structured bodies), trace
  context, entity = the scope name (the logger).
- metric data point -> ``kind="metric"``: entity = metric name, value = the number (gauge,
  sum) or the sum (histogram, exponential histogram, summary).

Every row has ``source_type="otel"``; service, host and pid come from the resource attributes
``service.name`` (else ``unknown_service``, as the OTel SDKs default), ``host.name`` and
``process.pid``. ``attrs`` holds the record's attributes as top-level keys plus ``otel.*`` keys:
``otel.resource``, ``otel.scope``, and per signal ``otel.span_kind``, ``otel.status_code``,
``otel.trace_state``, ``otel.events``, ``otel.links`` (spans), ``otel.severity_text``,
``otel.event_name`` (logs), ``otel.metric_type``, ``otel.unit``, ``otel.temporality``,
``otel.is_monotonic`` (metrics); histogram statistics use the plain keys ``count``, ``sum``,
``min``, ``max``, ``bucket_counts``, ``explicit_bounds`` (``scale``, ``zero_count``,
``quantile_values`` for the other kinds).

Invariants: a body that cannot be read at all raises `IngestError` (the server answers 400,
naming the problem and, for protobuf, the byte offset); a record that decodes but is invalid
(ids of the wrong length, no start time, times past 2262, end before start, severity outside
0..24, a JSON record of the wrong shape) is rejected alone with its path and reason, and the
other records go on (OTLP partial success).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import pyarrow as pa

from lumin_nb.errors import IngestError
from lumin_nb.event import SEVERITY_ERROR, batch_from_columns
from lumin_nb.ingest.fields import REJECTED_SCHEMA, empty_batch

Signal = Literal["traces", "logs", "metrics"]
SIGNALS: Final[tuple[Signal, ...]] = ("traces", "logs", "metrics")

#: the service of records whose resource has no ``service.name`` (the OTel SDK default)
UNKNOWN_SERVICE: Final = "unknown_service"

_INT64_MAX: Final = (1 << 63) - 1
_MAX_RAW_CHARS: Final = 2_000
_MAX_DEPTH: Final = 100
_SPAN_KINDS: Final = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUS_CODES: Final = ("unset", "ok", "error")
_TEMPORALITY: Final = ("unspecified", "delta", "cumulative")
_ID_KEYS: Final = frozenset({"traceId", "spanId", "parentSpanId"})
# Bytes standing in for a JSON id that is not hex: no valid id has 3 bytes, so the record is
# rejected by the same length check as a protobuf id of the wrong size.
_BAD_HEX: Final = "YmFk"  # base64 of b"bad"


@dataclass(frozen=True)
class _Layout:
    """Where the records of one signal sit in its request, in protobuf and JSON names."""

    resources: str
    resources_json: str
    scopes: str
    scopes_json: str
    records: str
    records_json: str
    record_word: str  # what partial success counts: spans, log records, data points
    rejected_field: str


_LAYOUTS: Final[dict[str, _Layout]] = {
    "traces": _Layout(
        "resource_spans", "resourceSpans", "scope_spans", "scopeSpans", "spans", "spans",
        "spans", "rejected_spans",
    ),
    "logs": _Layout(
        "resource_logs", "resourceLogs", "scope_logs", "scopeLogs", "log_records",
        "logRecords", "log records", "rejected_log_records",
    ),
    "metrics": _Layout(
        "resource_metrics", "resourceMetrics", "scope_metrics", "scopeMetrics", "metrics",
        "metrics", "data points", "rejected_data_points",
    ),
}  # fmt: skip


def _classes(signal: Signal) -> tuple[Any, Any]:
    """Return the (request, response) message classes of `signal` (imported on first use)."""
    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as t

        return t.ExportTraceServiceRequest, t.ExportTraceServiceResponse
    if signal == "logs":
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as lg

        return lg.ExportLogsServiceRequest, lg.ExportLogsServiceResponse
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as m

    return m.ExportMetricsServiceRequest, m.ExportMetricsServiceResponse


@dataclass(frozen=True)
class Decoded:
    """What `decode` read from one request.

    ``batch``: the good records as one RecordBatch of EVENT_SCHEMA (producer unset, seq 0);
    ``rejected``: one row per rejected record (line_no = the record's 1-based position in the
    request, raw = the record, reason = its path and what was wrong); ``rejected_count``: what
    partial success reports (spans, log records, or data points for metrics).
    """

    batch: pa.RecordBatch
    rejected: pa.Table
    rejected_count: int

    @property
    def reasons(self) -> list[str]:
        """Return the reasons of the rejected records, in request order."""
        return [str(r) for r in self.rejected.column("reason").to_pylist()]


def decode(signal: Signal, body: bytes, *, is_json: bool, now_ns: int) -> Decoded:
    """Return the events and rejected records of an OTLP `signal` request body.

    Parameters
    ----------
    signal
        "traces", "logs" or "metrics".
    body
        The (already inflated) request body.
    is_json
        OTLP JSON when true, binary protobuf otherwise.
    now_ns
        The receive time, given to log records without a time.

    Raises
    ------
    IngestError
        When the body cannot be read as a request at all (the message names where).
    """
    request_cls, _ = _classes(signal)
    rejects = _Rejects()
    if is_json:
        request, skip = _from_json(signal, body, request_cls, rejects)
    else:
        request, skip = _from_protobuf(signal, body, request_cls), set()
    builder = _Columns(now_ns)
    layout = _LAYOUTS[signal]
    convert = _CONVERTERS[signal]
    position = 0
    for i, resource_group in enumerate(getattr(request, layout.resources)):
        resource = _Resource(resource_group.resource)
        for j, scope_group in enumerate(getattr(resource_group, layout.scopes)):
            scope = _Scope(scope_group.scope, resource)
            for k, record in enumerate(getattr(scope_group, layout.records)):
                position += 1
                if (i, j, k) in skip:
                    continue
                path = (
                    f"{layout.resources_json}[{i}].{layout.scopes_json}[{j}]"
                    f".{layout.records_json}[{k}]"
                )
                try:
                    convert(builder, record, resource, scope, path, position, rejects)
                except RecursionError:
                    rejects.add(position, record, f"{path}: values nested too deeply", 1)
    return Decoded(builder.build(), rejects.table(), rejects.count)


def export_response(signal: Signal, rejected: int, message: str, *, is_json: bool) -> bytes:
    """Return the ``Export<Signal>ServiceResponse`` body, with partial success when needed."""
    from google.protobuf import json_format

    _, response_cls = _classes(signal)
    response = response_cls()
    if rejected or message:
        partial = response.partial_success
        setattr(partial, _LAYOUTS[signal].rejected_field, rejected)
        partial.error_message = message
    if is_json:
        return str(json_format.MessageToJson(response, indent=None)).encode()
    data: bytes = response.SerializeToString()
    return data


def record_word(signal: Signal) -> str:
    """Return what OTLP partial success counts for `signal` (spans, log records...)."""
    return _LAYOUTS[signal].record_word


def request_name(signal: Signal) -> str:
    """Return the protobuf message name of a `signal` request."""
    request_cls, _ = _classes(signal)
    return str(request_cls.DESCRIPTOR.name)


# -- reading the body --------------------------------------------------------------------


def _from_protobuf(signal: Signal, body: bytes, request_cls: Any) -> Any:
    from google.protobuf.message import DecodeError

    request = request_cls()
    try:
        request.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as err:
        where = _wire_problem(body, request_cls.DESCRIPTOR)
        detail = f"{where[1]} at byte {where[0]}" if where else f"the decoder said: {err}"
        raise IngestError(
            f"the body is not a valid OTLP {request_cls.DESCRIPTOR.name} in binary "
            f"protobuf: {detail}.\n"
            f"Expected an {request_cls.DESCRIPTOR.full_name} encoded as binary protobuf "
            "(Content-Type: application/x-protobuf).\n"
            "Fix: send what an OpenTelemetry OTLP/HTTP exporter sends, or set "
            "Content-Type: application/json for OTLP JSON"
        ) from None
    return request


def _from_json(
    signal: Signal, body: bytes, request_cls: Any, rejects: _Rejects
) -> tuple[Any, set[tuple[int, int, int]]]:
    """Parse OTLP JSON record by record, so one bad record rejects only itself.

    Returns the request and the (resource, scope, record) positions holding a placeholder
    for a rejected record (skipped by the converter, which keeps positions aligned).
    """
    from google.protobuf import json_format

    layout = _LAYOUTS[signal]
    name = request_cls.DESCRIPTOR.name
    fix = f"Fix: send {{{json.dumps(layout.resources_json)}: [...]}} as the OTLP examples do"
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as err:
        raise IngestError(
            f"the body is not valid JSON: {err.msg} at byte {err.pos} (line {err.lineno}, "
            f"column {err.colno}).\nExpected an OTLP JSON {name} object.\n{fix}"
        ) from None
    except (UnicodeDecodeError, ValueError) as err:
        raise IngestError(
            f"the body is not JSON text: {err}.\nExpected UTF-8 OTLP JSON ({name}).\n{fix}"
        ) from None
    if not isinstance(doc, dict):
        raise IngestError(
            f"the JSON body is a {type(doc).__name__}, not an object.\n"
            f"Expected an OTLP JSON {name} object.\n{fix}"
        )
    if layout.resources_json not in doc and layout.resources in doc:
        raise IngestError(
            f"the JSON body uses the protobuf field name {layout.resources!r}.\n"
            "Expected lowerCamelCase keys as OTLP JSON requires "
            f"({layout.resources_json!r}, {layout.scopes_json!r}, ...).\n"
            f"Fix: rename {layout.resources!r} to {layout.resources_json!r}"
        )
    groups = _json_list(doc, layout.resources_json, layout.resources_json, fix)
    request = request_cls()
    skip: set[tuple[int, int, int]] = set()
    position = 0
    record_cls = _record_class(request, layout)
    for i, group in enumerate(groups):
        path = f"{layout.resources_json}[{i}]"
        if not isinstance(group, dict):
            raise IngestError(
                f"{path} is a {type(group).__name__}, not an object.\n"
                f"Expected {{'resource': {{...}}, {layout.scopes_json!r}: [...]}}.\n{fix}"
            )
        rgroup = getattr(request, layout.resources).add()
        resource_error = _parse_part(json_format, group, "resource", rgroup.resource)
        scopes = _json_list(group, layout.scopes_json, f"{path}.{layout.scopes_json}", fix)
        for j, scope_doc in enumerate(scopes):
            spath = f"{path}.{layout.scopes_json}[{j}]"
            if not isinstance(scope_doc, dict):
                raise IngestError(
                    f"{spath} is a {type(scope_doc).__name__}, not an object.\n"
                    f"Expected {{'scope': {{...}}, {layout.records_json!r}: [...]}}.\n{fix}"
                )
            sgroup = getattr(rgroup, layout.scopes).add()
            scope_error = _parse_part(json_format, scope_doc, "scope", sgroup.scope)
            rpath_all = f"{spath}.{layout.records_json}"
            records = _json_list(scope_doc, layout.records_json, rpath_all, fix)
            container = getattr(sgroup, layout.records)
            for k, record_doc in enumerate(records):
                position += 1
                rpath = f"{spath}.{layout.records_json}[{k}]"
                record = record_cls()
                error = resource_error or scope_error
                if error is None:
                    error = _parse_record(json_format, record_doc, record)
                if error is not None:
                    skip.add((i, j, k))
                    container.add()
                    raw = json.dumps(record_doc, ensure_ascii=False, default=str)
                    count = _json_points(record_doc) if signal == "metrics" else 1
                    rejects.add_raw(position, raw, f"{rpath}: {error}", count)
                else:
                    container.append(record)
    return request, skip


def _record_class(request: Any, layout: _Layout) -> Any:
    rgroup_desc = request.DESCRIPTOR.fields_by_name[layout.resources].message_type
    sgroup_desc = rgroup_desc.fields_by_name[layout.scopes].message_type
    record_desc = sgroup_desc.fields_by_name[layout.records].message_type
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(record_desc)


def _json_list(doc: dict[str, Any], key: str, path: str, fix: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise IngestError(
            f"{path} is a {type(value).__name__}, not an array.\n"
            f"Expected {key!r} to be a JSON array.\n{fix}"
        )
    return value


def _parse_part(json_format: Any, doc: dict[str, Any], key: str, target: Any) -> str | None:
    part = doc.get(key)
    if part is None:
        return None
    try:
        json_format.ParseDict(part, target, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError) as err:
        return f"its {key} is not valid OTLP JSON ({err})"
    return None


def _parse_record(json_format: Any, doc: object, target: Any) -> str | None:
    if not isinstance(doc, dict):
        return f"a {type(doc).__name__}, not an object"
    try:
        json_format.ParseDict(_hex_ids_to_base64(doc, 0), target, ignore_unknown_fields=True)
    except RecursionError:
        return "values nested too deeply"
    except (json_format.ParseError, ValueError, TypeError, AttributeError) as err:
        return f"not valid OTLP JSON ({err})"
    return None


def _hex_ids_to_base64(value: Any, depth: int) -> Any:
    """Return `value` with OTLP JSON hex ids rewritten to the base64 proto3 JSON expects."""
    import base64

    if depth > _MAX_DEPTH:
        raise RecursionError
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in _ID_KEYS and isinstance(item, str):
                try:
                    out[key] = base64.b64encode(bytes.fromhex(item)).decode()
                except ValueError:
                    out[key] = _BAD_HEX
            else:
                out[key] = _hex_ids_to_base64(item, depth + 1)
        return out
    if isinstance(value, list):
        return [_hex_ids_to_base64(item, depth + 1) for item in value]
    return value


def _json_points(doc: object) -> int:
    """Return how many data points a JSON metric holds (at least 1: the metric itself)."""
    if not isinstance(doc, dict):
        return 1
    for kind in ("gauge", "sum", "histogram", "exponentialHistogram", "summary"):
        data = doc.get(kind)
        if isinstance(data, dict) and isinstance(data.get("dataPoints"), list):
            return max(1, len(data["dataPoints"]))
    return 1


def _wire_problem(data: bytes, descriptor: Any) -> tuple[int, str] | None:
    """Return (byte offset, problem) of the first protobuf wire-format error in `data`.

    Walks the wire format with the message descriptors, so it finds truncated fields,
    lengths past their message, bad wire types and invalid UTF-8 in strings at any depth;
    None when the walk finds nothing (the decoder's own message is used then).
    """
    from google.protobuf.descriptor import FieldDescriptor

    def varint(pos: int, end: int) -> tuple[int | None, int]:
        result = shift = 0
        while pos < end and shift < 70:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result, pos
            shift += 7
        return None, pos

    def walk(desc: Any, start: int, end: int, depth: int) -> tuple[int, str] | None:
        if depth > _MAX_DEPTH:
            return start, f"messages nested deeper than {_MAX_DEPTH} levels"
        pos = start
        while pos < end:
            key_at = pos
            key, pos = varint(pos, end)
            if key is None:
                return key_at, f"a field key of {desc.name} runs past the end of its message"
            number, wire = key >> 3, key & 7
            if number == 0:
                return key_at, f"field number 0 in {desc.name} (numbers start at 1)"
            fdesc = desc.fields_by_number.get(number)
            label = f"{desc.name}.{fdesc.name}" if fdesc is not None else f"field {number}"
            if wire == 0:
                value, pos = varint(pos, end)
                if value is None:
                    return key_at, f"the varint of {label} runs past the end of its message"
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
                if pos > end:
                    return key_at, f"the fixed-size value of {label} runs past its message"
            elif wire == 2:
                length, body_at = varint(pos, end)
                if length is None or body_at + length > end:
                    left = end - body_at
                    return key_at, f"{label} declares {length} bytes but {left} remain"
                if fdesc is not None and fdesc.type == FieldDescriptor.TYPE_MESSAGE:
                    found = walk(fdesc.message_type, body_at, body_at + length, depth + 1)
                    if found:
                        return found
                elif fdesc is not None and fdesc.type == FieldDescriptor.TYPE_STRING:
                    try:
                        data[body_at : body_at + length].decode("utf-8")
                    except UnicodeDecodeError as err:
                        return body_at + err.start, f"{label} is not valid UTF-8"
                pos = body_at + length
            else:
                return key_at, f"wire type {wire} of {label} is not one protobuf uses here"
        return None

    return walk(descriptor, 0, len(data), 0)


# -- building columns --------------------------------------------------------------------


class _Rejects:
    """Rejected records in three lists, plus what partial success counts."""

    def __init__(self) -> None:
        self.line_no: list[int] = []
        self.raw: list[str] = []
        self.reason: list[str] = []
        self.count = 0

    def add(self, position: int, record: Any, reason: str, count: int) -> None:
        from google.protobuf import text_format

        try:
            raw = text_format.MessageToString(record, as_one_line=True)
        except Exception:  # the raw text is a courtesy; the reason is what matters
            raw = f"<{type(record).__name__}>"
        self.add_raw(position, raw, reason, count)

    def add_raw(self, position: int, raw: str, reason: str, count: int) -> None:
        self.line_no.append(position)
        self.raw.append(raw[:_MAX_RAW_CHARS])
        self.reason.append(reason)
        self.count += count

    def table(self) -> pa.Table:
        """Return the rejected records in request order (line_no, raw, reason)."""
        order = sorted(range(len(self.line_no)), key=self.line_no.__getitem__)
        return pa.table(
            [
                pa.array([self.line_no[i] for i in order], pa.int64()),
                pa.array([self.raw[i] for i in order], pa.string()),
                pa.array([self.reason[i] for i in order], pa.string()),
            ],
            schema=REJECTED_SCHEMA,
        )


@dataclass
class _Columns:
    """Per-column lists of the events being built (one append per column, no dict per row)."""

    now_ns: int
    kind: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    duration_ns: list[int | None] = field(default_factory=list)
    severity: list[int] = field(default_factory=list)
    service: list[str] = field(default_factory=list)
    host: list[str | None] = field(default_factory=list)
    pid: list[int | None] = field(default_factory=list)
    trace_id: list[bytes | None] = field(default_factory=list)
    span_id: list[bytes | None] = field(default_factory=list)
    parent_span_id: list[bytes | None] = field(default_factory=list)
    entity: list[str | None] = field(default_factory=list)
    message: list[str | None] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)
    attrs: list[str] = field(default_factory=list)

    def add(
        self,
        kind: str,
        resource: _Resource,
        *,
        ts: int,
        duration_ns: int | None = None,
        severity: int = 0,
        trace_id: bytes | None = None,
        span_id: bytes | None = None,
        parent_span_id: bytes | None = None,
        entity: str | None = None,
        message: str | None = None,
        value: float | None = None,
        attrs: str,
    ) -> None:
        self.kind.append(kind)
        self.ts.append(ts)
        self.duration_ns.append(duration_ns)
        self.severity.append(severity)
        self.service.append(resource.service)
        self.host.append(resource.host)
        self.pid.append(resource.pid)
        self.trace_id.append(trace_id)
        self.span_id.append(span_id)
        self.parent_span_id.append(parent_span_id)
        self.entity.append(entity)
        self.message.append(message)
        self.value.append(value)
        self.attrs.append(attrs)

    def build(self) -> pa.RecordBatch:
        n = len(self.ts)
        if n == 0:
            return empty_batch()
        return batch_from_columns(
            n,
            ts=pa.array(self.ts, pa.int64()),
            duration_ns=pa.array(self.duration_ns, pa.int64()),
            kind=pa.array(self.kind, pa.string()),
            source_type="otel",
            severity=pa.array(self.severity, pa.int8()),
            service=pa.array(self.service, pa.string()),
            host=pa.array(self.host, pa.string()),
            pid=pa.array(self.pid, pa.int32()),
            trace_id=pa.array(self.trace_id, pa.binary(16)),
            span_id=pa.array(self.span_id, pa.binary(8)),
            parent_span_id=pa.array(self.parent_span_id, pa.binary(8)),
            entity=pa.array(self.entity, pa.string()),
            message=pa.array(self.message, pa.string()),
            value=pa.array(self.value, pa.float64()),
            attrs=pa.array(self.attrs, pa.string()),
            seq=0,
        )


class _Resource:
    """A resource's attributes, read once for all of its records."""

    __slots__ = ("attributes", "host", "json", "pid", "service")

    def __init__(self, resource: Any) -> None:
        self.attributes = _attributes(resource.attributes)
        service = self.attributes.get("service.name")
        self.service = service if isinstance(service, str) and service else UNKNOWN_SERVICE
        host = self.attributes.get("host.name")
        self.host = host if isinstance(host, str) and host else None
        pid = self.attributes.get("process.pid")
        is_pid = isinstance(pid, int) and not isinstance(pid, bool) and 0 <= pid < 1 << 31
        self.pid = pid if is_pid else None
        self.json = _dumps(self.attributes)


class _Scope:
    """A scope and its resource as the JSON tail every record's attrs ends with."""

    __slots__ = ("name", "tail")

    def __init__(self, scope: Any, resource: _Resource) -> None:
        self.name: str = scope.name
        # Dumped once per scope, not once per record: most of an attrs object is this tail.
        self.tail = f'"otel.resource":{resource.json},"otel.scope":{_dumps(_scope_dict(scope))}}}'

    def attrs(self, row: dict[str, Any]) -> str:
        """Return `row` plus ``otel.resource`` and ``otel.scope`` as one JSON object."""
        if not row:
            return "{" + self.tail
        return _dumps(row)[:-1] + "," + self.tail


def _scope_dict(scope: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": scope.name}
    if scope.version:
        out["version"] = scope.version
    if len(scope.attributes):
        out["attributes"] = _attributes(scope.attributes)
    return out


def _any(value: Any) -> Any:
    """Return an OTLP AnyValue as a JSON-ready Python value (bytes as hex, NaN as text)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)
    if which == "bool_value":
        return value.bool_value
    if which == "array_value":
        return [_any(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return bytes(value.bytes_value).hex()
    return None


def _attributes(key_values: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _any(kv.value) for kv in key_values}


def _dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _finite(number: float) -> float | str:
    return number if math.isfinite(number) else str(number)


def _id(raw: bytes, size: int, name: str, *, required: bool) -> bytes | str | None:
    """Return the id, None when absent (or all zero), or a reason (str) when invalid."""
    if not raw:
        return f"{name} is missing (a span needs one)" if required else None
    if len(raw) != size:
        return f"{name} has {len(raw)} bytes, expected {size} ({2 * size} hex digits in OTLP JSON)"
    if not any(raw):
        return f"{name} is all zeros (an invalid id)" if required else None
    return bytes(raw)


def _time(ns: int, name: str) -> str | None:
    if ns > _INT64_MAX:
        return f"{name}={ns} is past 2262-04-11 (Lumin times are int64 nanoseconds)"
    return None


_Converter = Callable[[_Columns, Any, _Resource, _Scope, str, int, _Rejects], None]


def _span(
    cols: _Columns,
    span: Any,
    resource: _Resource,
    scope: _Scope,
    path: str,
    position: int,
    rejects: _Rejects,
) -> None:
    trace_id = _id(span.trace_id, 16, "traceId", required=True)
    span_id = _id(span.span_id, 8, "spanId", required=True)
    parent = _id(span.parent_span_id, 8, "parentSpanId", required=False)
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    problem = next((p for p in (trace_id, span_id, parent) if isinstance(p, str)), None)
    problem = problem or _time(start, "startTimeUnixNano") or _time(end, "endTimeUnixNano")
    if problem is None and start == 0:
        problem = "startTimeUnixNano is 0 (unset); a span needs its start time"
    if problem is None and end and end < start:
        problem = f"endTimeUnixNano={end} is before startTimeUnixNano={start}"
    if problem is not None:
        rejects.add(position, span, f"{path}: {problem}", 1)
        return
    row = _attributes(span.attributes)
    kind = span.kind
    row["otel.span_kind"] = _SPAN_KINDS[kind] if 0 <= kind < len(_SPAN_KINDS) else str(kind)
    code = span.status.code
    if code:
        row["otel.status_code"] = _STATUS_CODES[code] if 0 <= code < 3 else str(code)
    if span.trace_state:
        row["otel.trace_state"] = span.trace_state
    if len(span.events):
        row["otel.events"] = [
            {
                "name": e.name,
                "time_unix_nano": e.time_unix_nano,
                "attributes": _attributes(e.attributes),
            }
            for e in span.events
        ]
    if len(span.links):
        row["otel.links"] = [
            {
                "trace_id": bytes(link.trace_id).hex(),
                "span_id": bytes(link.span_id).hex(),
                "attributes": _attributes(link.attributes),
            }
            for link in span.links
        ]
    cols.add(
        "span",
        resource,
        ts=start,
        duration_ns=end - start if end else None,
        severity=SEVERITY_ERROR if code == 2 else 0,
        trace_id=trace_id,  # type: ignore[arg-type]  # a str was rejected above
        span_id=span_id,  # type: ignore[arg-type]
        parent_span_id=parent,  # type: ignore[arg-type]
        entity=span.name,
        message=span.status.message or None,
        attrs=scope.attrs(row),
    )


def _log(
    cols: _Columns,
    record: Any,
    resource: _Resource,
    scope: _Scope,
    path: str,
    position: int,
    rejects: _Rejects,
) -> None:
    trace_id = _id(record.trace_id, 16, "traceId", required=False)
    span_id = _id(record.span_id, 8, "spanId", required=False)
    ts = record.time_unix_nano or record.observed_time_unix_nano or cols.now_ns
    severity = record.severity_number
    problem = next((p for p in (trace_id, span_id) if isinstance(p, str)), None)
    problem = problem or _time(ts, "timeUnixNano")
    if problem is None and not 0 <= severity <= 24:
        problem = f"severityNumber={severity} is outside 0..24 (OTel severity numbers)"
    if problem is not None:
        rejects.add(position, record, f"{path}: {problem}", 1)
        return
    row = _attributes(record.attributes)
    if record.severity_text:
        row["otel.severity_text"] = record.severity_text
    if getattr(record, "event_name", ""):
        row["otel.event_name"] = record.event_name
    message: str | None = None
    if record.HasField("body"):
        body = _any(record.body)
        message = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    cols.add(
        "log",
        resource,
        ts=ts,
        severity=severity,
        trace_id=trace_id,  # type: ignore[arg-type]  # a str was rejected above
        span_id=span_id,  # type: ignore[arg-type]
        entity=scope.name or None,
        message=message,
        attrs=scope.attrs(row),
    )


def _metric(
    cols: _Columns,
    metric: Any,
    resource: _Resource,
    scope: _Scope,
    path: str,
    position: int,
    rejects: _Rejects,
) -> None:
    kind = metric.WhichOneof("data")
    if kind is None:
        return  # a metric without data carries no data points: nothing to store or reject
    data = getattr(metric, kind)
    base: dict[str, Any] = {"otel.metric_type": kind}
    if metric.unit:
        base["otel.unit"] = metric.unit
    if metric.description:
        base["otel.description"] = metric.description
    if kind in ("sum", "histogram", "exponential_histogram"):
        t = data.aggregation_temporality
        base["otel.temporality"] = _TEMPORALITY[t] if 0 <= t < 3 else str(t)
    if kind == "sum":
        base["otel.is_monotonic"] = data.is_monotonic
    for index, point in enumerate(data.data_points):
        where = f"{path}.{_camel(kind)}.dataPoints[{index}]"
        problem = _time(point.time_unix_nano, "timeUnixNano") or _time(
            point.start_time_unix_nano, "startTimeUnixNano"
        )
        if problem is None and point.time_unix_nano == 0:
            problem = "timeUnixNano is 0 (unset); a data point needs its time"
        value: float | None = None
        stats: dict[str, Any] = {}
        if problem is None:
            if kind in ("gauge", "sum"):
                which = point.WhichOneof("value")
                if which is None:
                    problem = "the data point has no value (asDouble or asInt)"
                else:
                    value = float(getattr(point, which))
            else:
                stats, value = _statistics(kind, point)
        if problem is not None:
            rejects.add(position, point, f"{where}: {problem} (metric {metric.name!r})", 1)
            continue
        row = _attributes(point.attributes)
        row.update(base)
        row.update(stats)
        if point.start_time_unix_nano:
            row["otel.start_time_unix_nano"] = point.start_time_unix_nano
        if value is not None and not math.isfinite(value):
            row["otel.value"] = str(value)
        cols.add(
            "metric",
            resource,
            ts=point.time_unix_nano,
            entity=metric.name,
            value=value,
            attrs=scope.attrs(row),
        )


def _statistics(kind: str, point: Any) -> tuple[dict[str, Any], float | None]:
    """Return the attrs statistics of a histogram-like point and its value (the sum)."""
    has_sum = kind == "summary" or point.HasField("sum")
    total = float(point.sum) if has_sum else None
    stats: dict[str, Any] = {"count": point.count}
    if total is not None:
        stats["sum"] = _finite(total)
    if kind == "histogram":
        stats["bucket_counts"] = list(point.bucket_counts)
        stats["explicit_bounds"] = [_finite(b) for b in point.explicit_bounds]
    elif kind == "exponential_histogram":
        stats["scale"] = point.scale
        stats["zero_count"] = point.zero_count
    else:
        stats["quantile_values"] = [
            {"quantile": _finite(q.quantile), "value": _finite(q.value)}
            for q in point.quantile_values
        ]
    for bound in ("min", "max"):
        if kind != "summary" and point.HasField(bound):
            stats[bound] = _finite(getattr(point, bound))
    return stats, total


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_CONVERTERS: Final[dict[str, _Converter]] = {"traces": _span, "logs": _log, "metrics": _metric}


def reasons_summary(reasons: Sequence[str], total: int, word: str) -> str:
    """Return the partial-success error message: how many were rejected, and the first why."""
    shown = "; ".join(reasons[:3])
    more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
    return f"{total} {word} rejected: {shown}{more}"
