"""logfmt, syslog and grok/regex parsing: round trips, arbitrary bytes, and Loghub samples."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

from lumin_nb.event import problems
from lumin_nb.ingest import IngestError, parse, parse_grok, parse_logfmt, parse_regex, parse_syslog

#: ../shared/data beside the checkout (CI lays it there too)
LOGHUB = Path(__file__).resolve().parents[3] / "shared" / "data" / "loghub"
_value = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)
_key = st.from_regex(r"[a-z][a-z0-9_.]{0,10}", fullmatch=True).filter(
    lambda k: k not in {"ts", "time", "timestamp", "date", "level", "severity", "levelname",
                        "loglevel", "lvl", "message", "msg", "log", "service", "app", "host",
                        "hostname", "pid", "application", "severity_text", "short_message",
                        "service.name", "trace.id", "span.id"}
)  # fmt: skip


def _ok(batch: pa.RecordBatch) -> None:
    assert [p for p in problems(batch) if not p.startswith("producer")] == []


def _logfmt_value(v: str) -> str:
    if v and all(c not in v for c in ' ="\\') and not v.isspace():
        return v
    return json.dumps(v, ensure_ascii=False)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["info", "warn", "error"]),
            _value,
            st.dictionaries(_key, _value, max_size=4),
        ),
        min_size=1,
        max_size=15,
    )
)
def test_logfmt_round_trip(records: list[tuple[str, str, dict[str, str]]]) -> None:
    lines = []
    for level, msg, extra in records:
        pairs = [f"level={level}", f"msg={_logfmt_value(msg)}"]
        pairs += [f"{k}={_logfmt_value(v)}" for k, v in extra.items()]
        lines.append(" ".join(pairs))
    result = parse_logfmt("\n".join(lines).encode())
    assert result.rejected.num_rows == 0, result.rejected.to_pylist()
    b = result.batch
    _ok(b)
    assert b.column("message").to_pylist() == [m for _, m, _ in records]
    assert b.column("severity").to_pylist() == [
        {"info": 9, "warn": 13, "error": 17}[lv] for lv, _, _ in records
    ]
    for i, (_, _, extra) in enumerate(records):
        attrs = b.column("attrs")[i].as_py()
        assert (json.loads(attrs) if attrs else {}) == extra


def test_logfmt_bad_lines_name_the_byte() -> None:
    result = parse_logfmt(b'level=info msg="ok"\nmsg="unterminated\njust words\n')
    assert result.batch.column("message").to_pylist() == ["ok"]
    reasons = result.rejected.column("reason").to_pylist()
    assert reasons == [
        "line 2: not logfmt at byte 4: unterminated quoted value",
        "line 3: no key=value pairs",
    ]


_HOST = st.from_regex(r"[a-z][a-z0-9.-]{0,15}", fullmatch=True)
_APP = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 191),
            st.integers(946_684_800, 4_000_000_000),
            _HOST,
            _APP,
            st.integers(1, 99999),
            st.text(
                st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")),
                max_size=40,
            ),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_rfc5424_round_trip(records: list[tuple[int, int, str, str, int, str]]) -> None:
    from datetime import UTC, datetime

    lines = []
    for pri, ts, host, app, pid, msg in records:
        iso = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lines.append(f"<{pri}>1 {iso} {host} {app} {pid} - - {msg}")
    result = parse_syslog("\n".join(lines).encode())
    assert result.rejected.num_rows == 0, result.rejected.to_pylist()
    b = result.batch
    _ok(b)
    sev = [24, 23, 22, 17, 13, 10, 9, 5]
    assert b.column("ts").cast(pa.int64()).to_pylist() == [r[1] * 10**9 for r in records]
    assert b.column("host").to_pylist() == [r[2] for r in records]
    assert b.column("service").to_pylist() == [r[3] for r in records]
    assert b.column("pid").to_pylist() == [r[4] for r in records]
    assert b.column("severity").to_pylist() == [sev[r[0] % 8] for r in records]
    assert [m or None for m in b.column("message").to_pylist()] == [r[5] or None for r in records]


def test_rfc5424_and_rfc3164_examples() -> None:
    # The examples of RFC 5424 section 6.5 and RFC 3164 section 5.4.
    data = (
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        "\ufeff'su root' failed for lonvick on /dev/pts/8\n"
        "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - "
        "%% It's time to make the do-nuts.\n"
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 "
        'iut="3" eventSource="Application" eventID="1011"] An application event log entry...\n'
        "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8\n"
        "not syslog at all\n"
    ).encode()
    result = parse_syslog(data)
    b = result.batch
    assert b.num_rows == 4
    assert b.column("message")[0].as_py() == "'su root' failed for lonvick on /dev/pts/8"
    assert b.column("severity").to_pylist() == [22, 10, 10, 22]
    assert b.column("ts")[1].as_py().isoformat() == "2003-08-24T12:14:15.000003+00:00"
    attrs = json.loads(b.column("attrs")[2].as_py())
    assert attrs["msgid"] == "ID47" and attrs["facility"] == "local4"
    assert 'eventID="1011"' in attrs["structured_data"]
    assert result.rejected.to_pylist() == [
        {
            "line_no": 5,
            "raw": "not syslog at all",
            "reason": "line 5: not syslog at byte 0: "
            "expected '<PRI>' or a BSD date 'Mmm dd hh:mm:ss'",
        }
    ]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_only_reject(data: bytes) -> None:
    for fmt, pattern in (
        ("logfmt", None),
        ("syslog", None),
        ("grok", "SYSLOGLINE"),
        ("regex", r"(?P<message>\w+)"),
    ):
        result = parse(data, fmt, pattern)
        _ok(result.batch)
        assert set(result.rejected.column_names) == {"line_no", "raw", "reason"}


@pytest.mark.parametrize(
    ("system", "pattern", "level_col"),
    [
        ("Apache", "HTTPD_ERRORLOG", True),
        ("OpenSSH", "SYSLOGLINE", False),
        ("HDFS", "HDFS", True),
        ("Hadoop", "LOG4J", True),
        ("Spark", "SPARK", True),
        ("Zookeeper", "ZOOKEEPER", True),
    ],
)
def test_named_patterns_parse_loghub_samples(system: str, pattern: str, level_col: bool) -> None:
    path = LOGHUB / system / f"{system}_2k.log"
    assert path.exists(), f"the Loghub sample {path} is missing: shared/ must lie beside the repo"
    data = path.read_bytes()
    result = parse_grok(data, pattern=pattern)
    total = result.batch.num_rows + result.rejected.num_rows
    assert result.batch.num_rows >= 0.99 * total, result.rejected.to_pylist()[:3]
    b = result.batch
    _ok(b)
    assert b.column("message").null_count == 0
    assert b.column("ts").cast(pa.int64()).to_numpy().min() > 0
    if level_col:
        assert (b.column("severity").to_numpy() > 0).mean() > 0.99


def test_openssh_syslog_without_pri_parses_with_the_syslog_format() -> None:
    data = (LOGHUB / "OpenSSH" / "OpenSSH_2k.log").read_bytes()
    result = parse_syslog(data)
    assert result.rejected.num_rows == 0
    assert set(result.batch.column("service").to_pylist()) == {"sshd"}


def test_combined_apache_and_nginx_access_lines() -> None:
    line = (
        b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
        b'"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"\n'
    )
    for pattern in ("COMBINEDAPACHELOG", "NGINXACCESS"):
        b = parse_grok(line, pattern=pattern).batch
        assert b.num_rows == 1
        assert b.column("ts")[0].as_py().isoformat() == "2000-10-10T20:55:36+00:00"
        attrs = json.loads(b.column("attrs")[0].as_py())
        assert attrs.get("response", attrs.get("status")) == "200"
    common = parse_grok(line.split(b' "http')[0] + b"\n", pattern="COMMONAPACHELOG").batch
    assert json.loads(common.column("attrs")[0].as_py())["bytes"] == "2326"


def test_python_logging_pattern() -> None:
    line = b"2024-03-01 12:00:00,123 WARNING shop.orders: stock low for sku=42\n"
    b = parse_grok(line, pattern="PYTHON_LOGGING").batch
    assert b.column("severity").to_pylist() == [13]
    assert b.column("message").to_pylist() == ["stock low for sku=42"]
    assert b.column("ts")[0].as_py().isoformat() == "2024-03-01T12:00:00.123000+00:00"


def test_custom_grok_and_regex_with_unmatched_lines_rejected() -> None:
    data = b"GET /a 200\nnope\nPOST /b 500\n"
    g = parse_grok(data, pattern="%{WORD:method} %{URIPATH:path} %{INT:status:int}")
    assert g.batch.num_rows == 2 and g.rejected.column("line_no").to_pylist() == [2]
    assert g.batch.column("message").to_pylist() == ["GET /a 200", "POST /b 500"]
    r = parse_regex(data, pattern=r"^(?<method>[A-Z]+) (?P<message>\S+) (\d+)$")
    assert r.batch.column("message").to_pylist() == ["/a", "/b"]


def test_bad_patterns_raise_ingest_errors() -> None:
    with pytest.raises(IngestError, match="Did you mean 'COMBINEDAPACHELOG'"):
        parse_grok(b"x", pattern="%{COMBINEDAPACHELOGG}")
    with pytest.raises(IngestError, match="RE2"):
        parse_regex(b"x", pattern=r"(?<=a)b(?P<x>c)")
    with pytest.raises(IngestError, match="needs a pattern"):
        parse(b"x", "grok")
