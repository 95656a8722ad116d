"""NDJSON and JSON-array parsing, in the shapes Vector and Fluent Bit send."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
from hypothesis import given, strategies as st

from lumin_nb.event import problems
from lumin_nb.ingest import IngestError, parse, parse_json, parse_ndjson

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_key = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda k: k
    not in {"ts", "time", "timestamp", "date", "level", "severity", "levelname", "loglevel",
            "lvl", "message", "msg", "log", "service", "app", "host", "hostname", "pid",
            "trace_id", "span_id", "application", "severity_text", "short_message"}
)  # fmt: skip
_records = st.fixed_dictionaries(
    {
        "ts_ms": st.integers(1_000_000_000_000, 4_000_000_000_000),
        "level": st.sampled_from(["debug", "info", "warn", "error", "fatal"]),
        "msg": _text,
        "extra": st.dictionaries(_key, st.one_of(_text, st.integers(-(2**53), 2**53)), max_size=4),
    }
)
_LEVELS = {"debug": 5, "info": 9, "warn": 13, "error": 17, "fatal": 21}


def _ok(batch: pa.RecordBatch) -> None:
    assert [p for p in problems(batch) if not p.startswith("producer")] == []


@given(st.lists(_records, min_size=1, max_size=20))
def test_ndjson_round_trip_keeps_every_field(records: list[dict]) -> None:
    lines = []
    for r in records:
        iso = datetime.fromtimestamp(r["ts_ms"] / 1000, UTC).isoformat().replace("+00:00", "Z")
        lines.append(json.dumps({"ts": iso, "level": r["level"], "msg": r["msg"], **r["extra"]}))
    result = parse_ndjson("\n".join(lines).encode(), service="svc")
    assert result.rejected.num_rows == 0
    batch = result.batch
    _ok(batch)
    assert batch.num_rows == len(records)
    ts = batch.column("ts").cast(pa.int64()).to_pylist()
    for i, r in enumerate(records):
        assert ts[i] == r["ts_ms"] * 1_000_000
        assert batch.column("severity")[i].as_py() == _LEVELS[r["level"]]
        assert batch.column("message")[i].as_py() == r["msg"]
        assert batch.column("service")[i].as_py() == "svc"
        attrs = batch.column("attrs")[i].as_py()
        assert (json.loads(attrs) if attrs else {}) == r["extra"]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for fmt in ("ndjson", "json"):
        result = parse(data, fmt)
        assert result.batch.num_rows + result.rejected.num_rows >= 0
        _ok(result.batch)


def test_bad_lines_are_rejected_with_line_and_byte_and_good_ones_kept() -> None:
    data = b'{"msg":"a"}\n{"msg":"b",}\n[1,2]\n\n{"msg":"c"}\n\xff\xfe\n'
    result = parse_ndjson(data)
    assert result.batch.column("message").to_pylist() == ["a", "c"]
    rows = result.rejected.to_pylist()
    assert [r["line_no"] for r in rows] == [2, 3, 6]
    assert rows[0]["reason"].startswith("line 2: invalid JSON at byte 10 of the line")
    assert "expected a JSON object, got an array" in rows[1]["reason"]
    assert "invalid UTF-8" in rows[2]["reason"]


def test_vector_http_sink_json_codec_array() -> None:
    # Vector `http` sink with `encoding.codec = "json"` sends one JSON array of events per
    # request (https://vector.dev/docs/reference/sinks/http/ and vectordotdev/vector#1174:
    # "the same as NDJSON, except you delimit with , and then wrap in an array"); log events
    # carry message, timestamp (RFC 3339), host and source_type.
    body = json.dumps(
        [
            {
                "message": "GET /roi/evolve 504",
                "timestamp": "2019-10-12T07:20:50.52Z",
                "host": "Stracke8362",
                "source_type": "demo_logs",
                "level": "error",
            },
            {
                "message": "PUT /value-added/b2b",
                "timestamp": "2019-10-12T07:20:51.000000001Z",
                "host": "Wiza2458",
                "source_type": "demo_logs",
            },
        ]
    ).encode()
    result = parse(body, "json")
    b = result.batch
    assert b.column("message").to_pylist() == ["GET /roi/evolve 504", "PUT /value-added/b2b"]
    assert b.column("host").to_pylist() == ["Stracke8362", "Wiza2458"]
    assert b.column("ts").cast(pa.int64()).to_pylist() == [
        1570864850520000000,
        1570864851000000001,
    ]
    assert b.column("severity").to_pylist() == [17, 0]
    assert json.loads(b.column("attrs")[0].as_py()) == {"source_type": "demo_logs"}


def test_vector_newline_delimited_framing_is_ndjson() -> None:
    # framing.method = "newline_delimited" with the json codec: one event per line.
    body = (
        b'{"message":"a","timestamp":"2019-10-12T07:20:50Z"}\n'
        b'{"message":"b","timestamp":"2019-10-12T07:20:51Z"}\n'
    )
    assert parse(body, "json").batch.column("message").to_pylist() == ["a", "b"]


def test_fluent_bit_http_output_json_and_json_lines() -> None:
    # Fluent Bit `http` output (https://docs.fluentbit.io/manual/pipeline/outputs/http and
    # .../outputs/output_formats): `format json` is an array of records, `json_lines` one
    # record per line; the time is under json_date_key (default "date") as json_date_format
    # double (default), epoch, epoch_ms, iso8601 or java_sql_timestamp.
    array = (
        b'[{"date":1398282091.000,"log":"Core: initialization and 32 bit fixes.",'
        b'"commit":"b327996bfcbc0f1f47e62c862c6f303592dfacea","author":"Eduardo Silva"},'
        b'{"date":1422350608.000,"log":"Initial import."}]'
    )
    b = parse(array, "json").batch
    assert b.column("message").to_pylist()[1] == "Initial import."
    assert b.column("ts").cast(pa.int64()).to_pylist() == [1398282091 * 10**9, 1422350608 * 10**9]
    lines = (
        b'{"date":1398282091,"log":"epoch"}\n'
        b'{"date":1398282091000,"log":"epoch_ms"}\n'
        b'{"date":"2014-04-23T19:41:31.000681Z","log":"iso8601"}\n'
        b'{"date":"2014-04-23 19:41:31.000681","log":"java_sql_timestamp"}\n'
    )
    result = parse(lines, "json_lines")
    assert result.rejected.num_rows == 0
    ts = result.batch.column("ts").cast(pa.int64()).to_pylist()
    assert ts[0] == ts[1] == 1398282091 * 10**9
    assert ts[2] == ts[3] == 1398282091000681000


def test_trace_ids_pid_and_numeric_levels_map_to_columns() -> None:
    line = (
        b'{"msg":"x","trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331",'
        b'"pid":42,"level":50}\n{"msg":"y","trace_id":"nothex","severity":13}\n'
    )
    b = parse_ndjson(line).batch
    assert b.column("trace_id")[0].as_py() == bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    assert b.column("span_id")[0].as_py() == bytes.fromhex("b7ad6b7169203331")
    assert b.column("trace_id")[1].as_py() is None
    assert b.column("pid")[0].as_py() == 42
    assert b.column("severity").to_pylist() == [17, 13]


def test_malformed_array_is_rejected_with_its_offset() -> None:
    result = parse_json(b'[{"a":1},{"a":2')
    assert result.batch.num_rows == 0
    assert "invalid JSON at byte 15" in result.rejected.column("reason")[0].as_py()


def test_unknown_format_lists_the_formats() -> None:
    try:
        parse(b"", "ndjsn")
    except IngestError as err:
        assert isinstance(err, ValueError)
        assert "Did you mean 'ndjson'" in str(err) and "logfmt" in str(err)
    else:
        raise AssertionError("no error")
