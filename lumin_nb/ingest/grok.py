"""Regex and grok parsing: one RE2 pass (`pyarrow.compute.extract_regex`) over all lines.

Grok expressions use Logstash's syntax, ``%{PATTERN}`` or ``%{PATTERN:field}`` (a third
``:type`` part is accepted and ignored: values stay text and `fields` types them). They compile
to one RE2 expression with named groups; the library below is written for RE2 (no
look-around, no atomic groups) after the names and shapes of logstash-patterns-core's
``grok-patterns`` and ``httpd`` files, plus log formats for systems Lumin meets often:
``COMMONAPACHELOG``, ``COMBINEDAPACHELOG``, ``NGINXACCESS``, ``HTTPD_ERRORLOG``,
``SYSLOGLINE``, ``PYTHON_LOGGING``, ``LOG4J``, ``HDFS``, ``SPARK``, ``ZOOKEEPER``.

Invariant: a line that does not match is rejected with its line number, never dropped; when
the pattern captures no message, the whole line is the message.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from lumin_nb.errors import IngestError, closest
from lumin_nb.ingest.fields import (
    MESSAGE_KEYS,
    ParseResult,
    concat_rejected,
    events_from_fields,
    reject_rows,
    split_lines,
)

PATTERNS: Final[dict[str, str]] = {
    # basics
    "USERNAME": r"[a-zA-Z0-9._-]+",
    "USER": r"%{USERNAME}",
    "EMAILLOCALPART": r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]+",
    "EMAILADDRESS": r"%{EMAILLOCALPART}@%{HOSTNAME}",
    "INT": r"[+-]?\d+",
    "NUMBER": r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)",
    "BASE16NUM": r"[+-]?(?:0x)?[0-9A-Fa-f]+",
    "POSINT": r"\b[1-9]\d*\b",
    "NONNEGINT": r"\b\d+\b",
    "WORD": r"\b\w+\b",
    "NOTSPACE": r"\S+",
    "SPACE": r"\s*",
    "DATA": r".*?",
    "GREEDYDATA": r".*",
    "QUOTEDSTRING": r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'",
    "QS": r"%{QUOTEDSTRING}",
    "UUID": r"[A-Fa-f0-9]{8}-(?:[A-Fa-f0-9]{4}-){3}[A-Fa-f0-9]{12}",
    # networking
    "IPV4": r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)",
    "IPV6": r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{0,4}:){1,7}:?"
    r"(?:[0-9A-Fa-f]{1,4}|%{IPV4})?(?:%\w+)?",
    "IP": r"(?:%{IPV4}|%{IPV6})",
    "HOSTNAME": r"\b[0-9A-Za-z][0-9A-Za-z-]{0,62}(?:\.[0-9A-Za-z][0-9A-Za-z-]{0,62})*\.?",
    "IPORHOST": r"(?:%{IP}|%{HOSTNAME})",
    "HOSTPORT": r"%{IPORHOST}:%{POSINT}",
    "UNIXPATH": r"(?:/[\w%!$@:.,+~-]*)+",
    "PATH": r"%{UNIXPATH}",
    "URIPROTO": r"[A-Za-z][A-Za-z0-9+.-]+",
    "URIHOST": r"%{IPORHOST}(?::%{POSINT})?",
    "URIPATH": r"(?:/[A-Za-z0-9$.+!*'(){},~:;=@#%&_-]*)+",
    "URIPARAM": r"\?[A-Za-z0-9$.+!*'|(){},~@#%&/=:;_?\[\]<>-]*",
    "URIPATHPARAM": r"%{URIPATH}(?:%{URIPARAM})?",
    "URI": r"%{URIPROTO}://(?:%{USER}(?::[^@]*)?@)?(?:%{URIHOST})?(?:%{URIPATHPARAM})?",
    # dates and times
    "MONTH": r"\b(?:[Jj]an(?:uary)?|[Ff]eb(?:ruary)?|[Mm]ar(?:ch)?|[Aa]pr(?:il)?|[Mm]ay|"
    r"[Jj]une?|[Jj]uly?|[Aa]ug(?:ust)?|[Ss]ep(?:t(?:ember)?)?|[Oo]ct(?:ober)?|"
    r"[Nn]ov(?:ember)?|[Dd]ec(?:ember)?)\b",
    "MONTHNUM": r"(?:0?[1-9]|1[0-2])",
    "MONTHNUM2": r"(?:0[1-9]|1[0-2])",
    "MONTHDAY": r"(?:0[1-9]|[12]\d|3[01]|[1-9])",
    "DAY": r"(?:Mon(?:day)?|Tue(?:sday)?|Wed(?:nesday)?|Thu(?:rsday)?|Fri(?:day)?|"
    r"Sat(?:urday)?|Sun(?:day)?)",
    "YEAR": r"\d\d(?:\d\d)?",
    "HOUR": r"(?:2[0-3]|[01]?\d)",
    "MINUTE": r"[0-5]\d",
    "SECOND": r"(?:[0-5]?\d|60)(?:[:.,]\d+)?",
    "TIME": r"%{HOUR}:%{MINUTE}(?::%{SECOND})",
    "ISO8601_TIMEZONE": r"(?:Z|[+-]%{HOUR}(?::?%{MINUTE}))",
    "TIMESTAMP_ISO8601": r"%{YEAR}-%{MONTHNUM}-%{MONTHDAY}[T ]%{HOUR}:?%{MINUTE}"
    r"(?::?%{SECOND})?%{ISO8601_TIMEZONE}?",
    "SYSLOGTIMESTAMP": r"%{MONTH} +%{MONTHDAY} %{TIME}",
    "HTTPDATE": r"%{MONTHDAY}/%{MONTH}/%{YEAR}:%{TIME} %{INT}",
    "HTTPDERROR_DATE": r"%{DAY} %{MONTH} %{MONTHDAY} %{TIME} %{YEAR}",
    "LOGLEVEL": r"(?i:alert|trace|debug|notice|info(?:rmation)?|warn(?:ing)?|err(?:or)?|"
    r"crit(?:ical)?|fatal|severe|emerg(?:ency)?)",
    "JAVACLASS": r"(?:[a-zA-Z$_][a-zA-Z$_0-9]*\.)*[a-zA-Z$_][a-zA-Z$_0-9]*",
    # syslog pieces
    "PROG": r"[\x21-\x5a\x5c\x5e-\x7e]+",
    "SYSLOGPROG": r"%{PROG:program}(?:\[%{POSINT:pid}\])?",
    "SYSLOGHOST": r"%{IPORHOST}",
    "SYSLOGFACILITY": r"<%{NONNEGINT:facility}.%{NONNEGINT:priority}>",
    "SYSLOGBASE": r"%{SYSLOGTIMESTAMP:timestamp} (?:%{SYSLOGFACILITY} )?"
    r"%{SYSLOGHOST:logsource} %{SYSLOGPROG}:",
    "HTTPDUSER": r"(?:%{EMAILADDRESS}|%{USER})",
    # log formats (anchored at the line start)
    "COMMONAPACHELOG": r"^%{IPORHOST:clientip} %{HTTPDUSER:ident} %{HTTPDUSER:auth} "
    r"\[%{HTTPDATE:timestamp}\] \"(?:%{WORD:verb} %{NOTSPACE:request}"
    r"(?: HTTP/%{NUMBER:httpversion})?|%{DATA:rawrequest})\" "
    r"(?:%{NUMBER:response}|-) (?:%{NUMBER:bytes}|-)",
    "COMBINEDAPACHELOG": r"%{COMMONAPACHELOG} %{QS:referrer} %{QS:agent}",
    # nginx's default "combined" log_format (same layout as Apache's combined log)
    "NGINXACCESS": r"^%{IPORHOST:remote_addr} - (?:-|%{HTTPDUSER:remote_user}) "
    r"\[%{HTTPDATE:timestamp}\] \"(?:%{WORD:method} %{NOTSPACE:request}"
    r"(?: HTTP/%{NUMBER:httpversion})?|%{DATA:rawrequest})\" %{INT:status} "
    r"%{INT:body_bytes_sent} \"%{DATA:http_referer}\" \"%{DATA:http_user_agent}\""
    r"(?: \"%{DATA:http_x_forwarded_for}\")?",
    "HTTPD_ERRORLOG": r"^\[%{HTTPDERROR_DATE:timestamp}\] \[(?:%{WORD:module}:)?"
    r"%{LOGLEVEL:loglevel}\] (?:\[pid %{POSINT:pid}(?::tid %{NUMBER:tid})?\] )?"
    r"(?:\[client %{IPORHOST:clientip}(?::%{POSINT:clientport})?\] )?%{GREEDYDATA:message}",
    "SYSLOGLINE": r"^%{SYSLOGTIMESTAMP:timestamp} (?:%{SYSLOGFACILITY} )?%{SYSLOGHOST:host} "
    r"%{PROG:app}(?:\[%{POSINT:pid}\])?: ?%{GREEDYDATA:message}",
    # logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    "PYTHON_LOGGING": r"^%{TIMESTAMP_ISO8601:timestamp} %{LOGLEVEL:levelname} "
    r"%{NOTSPACE:logger}: %{GREEDYDATA:message}",
    # log4j "%d %p [%t] %c: %m" (Hadoop)
    "LOG4J": r"^%{TIMESTAMP_ISO8601:timestamp} %{LOGLEVEL:level} \[%{DATA:thread}\] "
    r"%{JAVACLASS:logger}: %{GREEDYDATA:message}",
    "HDFS": r"^(?P<timestamp>\d{6} \d{6}) %{INT:thread} %{LOGLEVEL:level} "
    r"%{NOTSPACE:logger}: %{GREEDYDATA:message}",
    "SPARK": r"^(?P<timestamp>\d{2}/\d{2}/\d{2} %{TIME}) %{LOGLEVEL:level} "
    r"%{NOTSPACE:logger}: %{GREEDYDATA:message}",
    "ZOOKEEPER": r"^%{TIMESTAMP_ISO8601:timestamp} - %{LOGLEVEL:level} +\[%{DATA:thread}\] "
    r"- %{GREEDYDATA:message}",
}

_NAME_RE: Final = re.compile(r"^[A-Z0-9_]+$")
_MAX_DEPTH: Final = 32


@lru_cache(maxsize=256)
def compile_grok(pattern: str, *, grok: bool = True) -> tuple[str, tuple[str, ...]]:
    """Return (RE2 regex, field names) for a grok expression, a library name or a regex.

    Capture groups are renamed ``f0``, ``f1``... (RE2 group names cannot hold the dots and
    brackets grok field names may have); the tuple gives the field of each. Unnamed groups
    become non-capturing. Raises IngestError naming an unknown pattern or a regex RE2 refuses.
    """
    if grok and _NAME_RE.match(pattern) and pattern in PATTERNS:
        pattern = "%{" + pattern + "}"
    fields: list[str] = []
    regex = _expand(pattern, fields, 0, grok)
    try:
        pc.extract_regex(
            pa.array([""], pa.string()), regex
        ) if fields else pc.match_substring_regex(pa.array([""], pa.string()), regex)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise IngestError(
            f"pattern={pattern!r} is not a regular expression RE2 accepts: {err}.\n"
            "Expected RE2 syntax (no look-around or backreferences) with named groups "
            "(?P<name>...) or grok %{PATTERN:name}.\n"
            'Fix: parse(data, format="grok", pattern="%{IPORHOST:client} %{GREEDYDATA:message}")'
        ) from None
    return regex, tuple(fields)


def _expand(p: str, fields: list[str], depth: int, grok: bool) -> str:
    if depth > _MAX_DEPTH:
        raise IngestError(
            f"grok pattern nesting deeper than {_MAX_DEPTH} (a pattern that refers to itself?)."
        )
    out: list[str] = []
    i = 0
    while i < len(p):
        c = p[i]
        if c == "\\":
            out.append(p[i : i + 2])
            i += 2
        elif c == "[":
            j = _class_end(p, i)
            out.append(p[i:j])
            i = j
        elif grok and p.startswith("%{", i):
            j = p.find("}", i)
            if j < 0:
                raise IngestError(f"unclosed %{{ at character {i} of grok pattern {p!r}.")
            name, _, rest = p[i + 2 : j].partition(":")
            field = rest.split(":")[0]
            if name not in PATTERNS:
                raise IngestError(
                    f"%{{{name}}} is not a grok pattern Lumin knows.{closest(name, PATTERNS)}\n"
                    f"Known patterns: {', '.join(sorted(PATTERNS))}.\n"
                    "Fix: spell it out as a regex with a named group, (?P<field>...)."
                )
            if field:
                fields.append(field)
                out.append(f"(?P<f{len(fields) - 1}>")
                out.append(_expand(PATTERNS[name], fields, depth + 1, grok))
                out.append(")")
            else:
                out.append("(?:" + _expand(PATTERNS[name], fields, depth + 1, grok) + ")")
            i = j + 1
        elif c == "(":
            named = re.match(r"\(\?P?<([A-Za-z_][A-Za-z0-9_.@\[\]-]*)>", p[i:])
            if named:
                fields.append(named.group(1))
                out.append(f"(?P<f{len(fields) - 1}>")
                i += named.end()
            elif p.startswith("(?", i):
                out.append("(")
                i += 1
            else:
                out.append("(?:")
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _class_end(p: str, i: int) -> int:
    """Return the index after the character class that starts at p[i] == '['."""
    j = i + 1
    if j < len(p) and p[j] == "^":
        j += 1
    if j < len(p) and p[j] == "]":
        j += 1
    while j < len(p):
        if p[j] == "\\":
            j += 2
            continue
        if p.startswith("[:", j):
            end = p.find(":]", j + 2)
            if end > 0:
                j = end + 2
                continue
        if p[j] == "]":
            return j + 1
        j += 1
    return len(p)


def parse_grok(
    data: bytes,
    *,
    pattern: str,
    service: str | None = None,
    host: str | None = None,
) -> ParseResult:
    """Return the events of the lines of `data` matched by a grok `pattern`.

    `pattern` is a library name (``"COMBINEDAPACHELOG"``) or an expression
    (``"%{IP:client} %{WORD:method} %{GREEDYDATA:message}"``). Lines that do not match are
    rejected with their number.
    """
    return _parse(data, pattern, grok=True, service=service, host=host)


def parse_regex(
    data: bytes,
    *,
    pattern: str,
    service: str | None = None,
    host: str | None = None,
) -> ParseResult:
    """Return the events of the lines of `data` matched by an RE2 `pattern` with named groups.

    ``(?P<name>...)`` and ``(?<name>...)`` both name a field; ``ts``, ``level``, ``message``
    and the other keys of `lumin_nb.ingest.fields` become event columns.
    """
    return _parse(data, pattern, grok=False, service=service, host=host)


def _parse(
    data: bytes, pattern: str, *, grok: bool, service: str | None, host: str | None
) -> ParseResult:
    regex, fields = compile_grok(pattern, grok=grok)
    lines, line_no, bad_utf8 = split_lines(data)
    label = pattern if len(pattern) <= 60 else pattern[:57] + "..."
    if fields:
        parts = pc.extract_regex(lines, regex)
        matched = parts.is_valid()
    else:
        parts = None
        matched = pc.match_substring_regex(lines, regex)
    rejected = reject_rows(
        lines, line_no, pc.invert(matched), f"does not match the pattern {label!r}"
    )
    good = lines.filter(matched)
    columns: dict[str, pa.Array] = {}
    if parts is not None:
        parts = parts.filter(matched)
        for k, name in enumerate(fields):
            col = parts.field(f"f{k}")
            col = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
            columns[name] = pc.coalesce(columns[name], col) if name in columns else col
    if not any(k in columns for k in MESSAGE_KEYS):
        columns["message"] = good
    batch = events_from_fields(pa.table(columns), service=service, host=host)
    return ParseResult(batch, concat_rejected([bad_utf8, rejected]))
