"""JSON logs: NDJSON (JSON lines), JSON arrays, and the shapes Vector and Fluent Bit send.

- Vector ``http`` sink, ``encoding.codec = "json"``: a JSON array of events per request; with
  ``framing.method = "newline_delimited"``: NDJSON. Events carry ``message``, ``timestamp``
  (RFC 3339 text), ``host``, ``source_type`` and any fields the pipeline added.
- Fluent Bit ``http`` output, ``format json``: a JSON array of records; ``format json_lines``:
  NDJSON. The record time is under ``json_date_key`` (default ``date``) as ``double`` epoch
  seconds (default), ``epoch`` seconds, ``epoch_ms``, ``iso8601`` or ``java_sql_timestamp``
  text; the line itself is usually under ``log``.

The happy path reads the whole body with ``pyarrow.json`` (or polars for arrays) in native
code. Only when that fails does the body get split: halves are retried until the failing
lines are isolated, and only those are read line by line to name the problem and its byte
offset. Bad lines never sink the good ones.
"""

from __future__ import annotations

import io
import json
from typing import Any, Final

import polars as pl
import pyarrow as pa
import pyarrow.json as pajson

from lumin_nb.ingest.fields import (
    ParseResult,
    concat_batches,
    empty_batch,
    events_from_fields,
    rejected_table,
)

_SMALL: Final = 8  # chunks of at most this many lines are read line by line
_PARSE: Final = pajson.ParseOptions(newlines_in_values=False)


def parse_ndjson(
    data: bytes, *, service: str | None = None, host: str | None = None
) -> ParseResult:
    """Return the events of NDJSON `data` (one JSON object per line) and its rejected lines.

    Empty lines are skipped. Each rejected line names what was wrong and where, e.g.
    ``line 3: invalid JSON at byte 17 of the line (byte 230 of the body): Expecting ','``.
    """
    reader = _Reader(service=service, host=host)
    try:
        table = _read(data)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        reader.fallback(data.split(b"\n"), first_line=1)
    else:
        reader.tables.append(table)
    return reader.result()


def parse_json(data: bytes, *, service: str | None = None, host: str | None = None) -> ParseResult:
    """Return the events of a JSON body: an array of objects (Vector ``json`` codec, Fluent
    Bit ``format json``), one object, or NDJSON (Vector newline_delimited framing, Fluent Bit
    ``json_lines``). In arrays, ``line_no`` of a rejected record is its 1-based index.
    """
    head = data.lstrip()[:1]
    if head != b"[":
        return parse_ndjson(data, service=service, host=host)
    reader = _Reader(service=service, host=host)
    try:
        frame = pl.read_json(io.BytesIO(data), infer_schema_length=None)
        table = frame.to_arrow()
    except Exception:  # polars raises several error types for bad or mixed JSON
        _parse_array_slowly(data, reader)
    else:
        if table.num_columns == 0 and table.num_rows:
            _parse_array_slowly(data, reader)
        else:
            reader.tables.append(table)
    return reader.result()


def _parse_array_slowly(data: bytes, reader: _Reader) -> None:
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        reader.reject(1, data, f"line 1: invalid UTF-8 at byte {err.start}: {err.reason}")
        return
    except json.JSONDecodeError as err:
        text = data.decode("utf-8", "replace")
        byte = len(text[: err.pos].encode())
        reader.reject(
            err.lineno,
            data,
            f"line {err.lineno}: invalid JSON at byte {byte} of the body "
            f"(column {err.colno}): {err.msg}",
        )
        return
    if not isinstance(value, list):
        reader.reject(1, data, f"line 1: expected a JSON array of objects, got {_kind(value)}")
        return
    lines = [json.dumps(v, ensure_ascii=False).encode() for v in value]
    reader.fallback(lines, first_line=1, unit="record")


def _read(data: bytes) -> pa.Table:
    opts = pajson.ReadOptions(block_size=1 << 20, use_threads=len(data) > (1 << 20))
    try:
        return pajson.read_json(io.BytesIO(data), read_options=opts, parse_options=_PARSE)
    except pa.ArrowInvalid as err:
        if "straddling" not in str(err) or len(data) < (1 << 20):
            raise
    # a line longer than a block: read the body as one block
    opts = pajson.ReadOptions(block_size=len(data) + 1, use_threads=False)
    return pajson.read_json(io.BytesIO(data), read_options=opts, parse_options=_PARSE)


class _Reader:
    """Collects tables of good lines and rejected lines while a body is split."""

    def __init__(self, *, service: str | None, host: str | None) -> None:
        self.service = service
        self.host = host
        self.tables: list[pa.Table] = []
        self.rows: list[dict[str, Any]] = []
        self.bad_no: list[int] = []
        self.bad_raw: list[str] = []
        self.bad_reason: list[str] = []

    def reject(self, line_no: int, raw: bytes, reason: str) -> None:
        self.bad_no.append(line_no)
        self.bad_raw.append(raw.decode("utf-8", "replace"))
        self.bad_reason.append(reason)

    def fallback(self, lines: list[bytes], *, first_line: int, unit: str = "line") -> None:
        """Split `lines` until the failing ones are isolated; read those one at a time."""
        offsets = [0] * (len(lines) + 1)
        for i, line in enumerate(lines):
            offsets[i + 1] = offsets[i] + len(line) + 1
        stack = [(0, len(lines))]
        while stack:
            lo, hi = stack.pop()
            if hi - lo > _SMALL:
                chunk = b"\n".join(lines[lo:hi])
                try:
                    self.tables.append(_read(chunk))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    mid = (lo + hi) // 2
                    stack.extend([(mid, hi), (lo, mid)])
                continue
            for i in range(lo, hi):
                self._one(lines[i], first_line + i, offsets[i], unit)

    def _one(self, line: bytes, line_no: int, body_offset: int, unit: str) -> None:
        if not line.strip():
            return
        where = f"{unit} {line_no}"
        try:
            value = json.loads(line.decode("utf-8"))  # decode first: loads() guesses UTF-16
        except UnicodeDecodeError as err:
            self.reject(
                line_no,
                line,
                f"{where}: invalid UTF-8 at byte {err.start} of the line "
                f"(byte {body_offset + err.start} of the body)",
            )
            return
        except json.JSONDecodeError as err:
            byte = len(line.decode("utf-8", "replace")[: err.pos].encode())
            self.reject(
                line_no,
                line,
                f"{where}: invalid JSON at byte {byte} of the line "
                f"(byte {body_offset + byte} of the body): {err.msg}",
            )
            return
        if not isinstance(value, dict):
            self.reject(line_no, line, f"{where}: expected a JSON object, got {_kind(value)}")
            return
        try:
            self.tables.append(_read(line))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            # Valid JSON that Arrow cannot type (huge ints, odd nesting): keep it as text.
            self.rows.append(
                {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
            )

    def result(self) -> ParseResult:
        batches = [
            events_from_fields(t, service=self.service, host=self.host)
            for t in self.tables
            if t.num_rows
        ]
        if self.rows:
            batches.append(
                events_from_fields(
                    pa.Table.from_pylist(self.rows), service=self.service, host=self.host
                )
            )
        batch = concat_batches(batches) if batches else empty_batch()
        return ParseResult(batch, rejected_table(self.bad_no, self.bad_raw, self.bad_reason))


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
