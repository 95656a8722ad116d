"""Syslog lines, RFC 5424 and RFC 3164 (BSD), to events with two RE2 passes over all lines.

- RFC 5424: ``<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]``,
  ``-`` for absent fields; the structured data is kept as text in attrs
  (``structured_data``), a leading BOM is dropped from MSG.
- RFC 3164: ``<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG``; PRI is optional because many
  files (and Loghub's OpenSSH sample) store lines without it. The year is the current one,
  or the previous one for a date more than a day ahead.

PRI gives severity (``emerg`` 24, ``alert`` 23, ``crit`` 22, ``err`` 17, ``warning`` 13,
``notice`` 10, ``info`` 9, ``debug`` 5, as OpenTelemetry's syslog mapping) and the facility
(attrs ``facility``). APP-NAME / TAG is the service, HOSTNAME the host, PROCID the pid.
Invariant: lines that are neither form are rejected with the byte where they stop fitting.
"""

from __future__ import annotations

import re
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lumin_nb.ingest.fields import (
    ParseResult,
    concat_batches,
    concat_rejected,
    empty_batch,
    events_from_fields,
    parse_timestamps,
    rejected_table,
    split_lines,
)

RFC5424: Final = (
    r"^<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) (?P<timestamp>\S+) (?P<host>\S+) "
    r"(?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<message>.*))?$"
)
RFC3164: Final = (
    r"^(?:<(?P<pri>\d{1,3})>)?(?P<timestamp>[A-Z][a-z]{2} [ 0-9]?\d \d{2}:\d{2}:\d{2}) "
    r"(?P<host>\S+) (?:(?P<app>[^:\[\s]+)(?:\[(?P<pid>[^\]]*)\])?: ?)?(?P<message>.*)$"
)
FACILITIES: Final = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip
_SEVERITY: Final = pa.array([24, 23, 22, 17, 13, 10, 9, 5], pa.int8())

# Steps of RFC 5424 for naming where a bad line stops fitting (rejected lines only).
_STEPS: Final = (
    (re.compile(r"<"), "expected '<' opening PRI"),
    (re.compile(r"\d{1,3}"), "expected PRI digits"),
    (re.compile(r">"), "expected '>' closing PRI"),
    (re.compile(r"(?:[1-9]\d{0,2} |[A-Z][a-z]{2} )"), "expected VERSION or a BSD date"),
)


def parse_syslog(
    data: bytes, *, service: str | None = None, host: str | None = None
) -> ParseResult:
    """Return the events of the RFC 5424 / RFC 3164 syslog lines of `data` and its rejects."""
    lines, line_no, bad_utf8 = split_lines(data)
    if len(lines) == 0:
        return ParseResult(empty_batch(), bad_utf8)
    batches = []
    new = pc.extract_regex(lines, RFC5424)
    is_new = new.is_valid()
    rest = pc.invert(is_new)
    old = pc.extract_regex(lines.filter(rest), RFC3164)
    is_old = np.zeros(len(lines), dtype=bool)
    is_old[np.flatnonzero(rest.to_numpy(zero_copy_only=False))] = old.is_valid().to_numpy(
        zero_copy_only=False
    )
    pri_bad: list[np.ndarray] = []
    if pc.any(is_new).as_py():
        parts = new.filter(is_new)
        batch, bad = _events(parts, rfc5424=True, service=service, host=host)
        batches.append(batch)
        pri_bad.append(np.flatnonzero(is_new.to_numpy(zero_copy_only=False))[bad])
    if is_old.any():
        parts = old.filter(old.is_valid())
        batch, bad = _events(parts, rfc5424=False, service=service, host=host)
        batches.append(batch)
        pri_bad.append(np.flatnonzero(is_old)[bad])
    unmatched = ~(is_new.to_numpy(zero_copy_only=False) | is_old)
    rejected = [bad_utf8, _reject(lines, line_no, np.flatnonzero(unmatched), None)]
    for idx in pri_bad:
        rejected.append(_reject(lines, line_no, idx, "PRI above 191 (facility 23, severity 7)"))
    return ParseResult(concat_batches(batches), concat_rejected(rejected))


def _events(
    parts: pa.StructArray, *, rfc5424: bool, service: str | None, host: str | None
) -> tuple[pa.RecordBatch, np.ndarray]:
    """Return the events of matched lines and a mask of the ones whose PRI is too large."""
    names = [parts.type.field(i).name for i in range(parts.type.num_fields)]
    cols = {n: parts.field(n) for n in names}
    nil = "-" if rfc5424 else ""
    for n in names:
        if n == "message":  # MSG has no NILVALUE: a "-" message is the text "-"
            continue
        cols[n] = pc.if_else(pc.equal(cols[n], nil), pa.scalar(None, pa.string()), cols[n])
    pri = cols.pop("pri").cast(pa.int32())
    bad = pc.fill_null(pc.greater(pri, 191), False)
    bad_np = bad.to_numpy(zero_copy_only=False)
    good = pc.invert(bad)
    pri = pri.filter(good)
    cols = {n: c.filter(good) for n, c in cols.items()}
    severity = pc.take(_SEVERITY, pc.bit_wise_and(pri, 7))
    facility = pc.take(pa.array(FACILITIES), pc.shift_right(pri, 3))
    ts = parse_timestamps(cols.pop("timestamp"))
    fields: dict[str, pa.Array] = {}
    if rfc5424:
        cols.pop("version")
        message = cols["message"]
        cols["message"] = pc.utf8_ltrim(message, characters="\ufeff")
        procid = cols.pop("procid")
        is_pid = pc.fill_null(pc.match_substring_regex(procid, r"^\d{1,9}$"), False)
        cols["pid"] = pc.if_else(is_pid, procid, pa.scalar(None, pa.string()))
        cols["procid"] = pc.if_else(is_pid, pa.scalar(None, pa.string()), procid)
        cols["structured_data"] = cols.pop("sd")
    fields.update(cols)
    fields["facility"] = facility
    batch = events_from_fields(
        pa.table(fields), service=service, host=host, severity=severity, ts=ts
    )
    return batch, bad_np


def _reject(lines: pa.Array, line_no: pa.Array, idx: np.ndarray, why: str | None) -> pa.Table:
    if len(idx) == 0:
        return rejected_table()
    texts = pc.take(lines, pa.array(idx)).to_pylist()
    numbers = pc.take(line_no, pa.array(idx)).to_pylist()
    reasons = []
    for no, text in zip(numbers, texts, strict=True):
        if why is not None:
            reasons.append(f"line {no}: {why}")
            continue
        pos = 0
        problem = "fields do not follow RFC 5424 or RFC 3164"
        for step, expected in _STEPS:
            if pos == 0 and step.pattern == "<" and not text.startswith("<"):
                # PRI is optional in BSD syslog: go straight to the date check
                m = _STEPS[3][0].match(text, pos)
                if not m:
                    problem = "expected '<PRI>' or a BSD date 'Mmm dd hh:mm:ss'"
                    break
                pos = m.end()
                problem = "expected 'hh:mm:ss HOSTNAME' after the date"
                break
            m = step.match(text, pos)
            if not m:
                problem = expected
                break
            pos = m.end()
        byte = len(text[:pos].encode())
        reasons.append(f"line {no}: not syslog at byte {byte}: {problem}")
    return rejected_table(numbers, texts, reasons)
