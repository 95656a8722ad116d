"""Parses the `since=`/`until=` values every query accepts into UTC nanoseconds.

Accepted: datetimes (naive ones are local time), ISO 8601 text, "now", relative offsets
("-30s", "-5m", "-2h", "-1d", "-500ms") and clock times of today ("10:03", "10:03:15").
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from lumin_nb.errors import TimeParseError

TimeLike = datetime | str | int | float | None

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_OFFSET = re.compile(r"^\s*([+-])\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|min|m|h|d)\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|min|m|h|d)\s*$")
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d+)?))?\s*$")


def _error(name: str, value: object) -> TimeParseError:
    return TimeParseError(
        f"{name}={value!r} is not a time Lumin understands.\n"
        "Expected a datetime, ISO 8601 text ('2025-03-01T12:00:00Z'), a clock time of today "
        "('10:03') or an offset like '-30s', '-5m', '-2h'.\n"
        f"Fix: lm.events({name}='-5m')"
    )


def parse_time(value: TimeLike, *, name: str = "since", now_ns: int | None = None) -> int | None:
    """Return `value` as UTC epoch nanoseconds, or None when it is None.

    Integers are taken as epoch nanoseconds, floats as epoch seconds.
    """
    if value is None:
        return None
    now = time.time_ns() if now_ns is None else now_ns
    if isinstance(value, bool):
        raise _error(name, value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.astimezone()
        return _datetime_ns(dt)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value * 1e9)
    if not isinstance(value, str):
        raise _error(name, value)
    text = value.strip()
    if text.lower() == "now":
        return now
    m = _OFFSET.match(text)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        return now + sign * _scaled(m.group(2), m.group(3))
    m = _CLOCK.match(text)
    if m:
        local_now = datetime.fromtimestamp(now / 1e9).astimezone()
        seconds = float(m.group(3) or 0)
        try:
            dt = local_now.replace(
                hour=int(m.group(1)), minute=int(m.group(2)), second=int(seconds), microsecond=0
            ) + timedelta(seconds=seconds - int(seconds))
        except ValueError:
            raise _error(name, value) from None
        return _datetime_ns(dt)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _error(name, value) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return _datetime_ns(dt)


def parse_duration_ns(value: str | int | float | timedelta, *, name: str = "ttl") -> int:
    """Return a duration ("500ms", "60s", "5m", timedelta, seconds as a number) in ns."""
    if isinstance(value, timedelta):
        return int(value.total_seconds() * 1e9)
    if isinstance(value, bool):
        raise TimeParseError(f"{name}={value!r} is not a duration. Expected '500ms', '60s', '5m'.")
    if isinstance(value, int | float):
        return int(value * 1e9)
    m = _DURATION.match(value)
    if not m:
        raise TimeParseError(
            f"{name}={value!r} is not a duration Lumin understands.\n"
            "Expected a number of seconds or text like '500ms', '60s', '5m', '2h', '7d'.\n"
            f"Fix: {name}='60s'"
        )
    return _scaled(m.group(1), m.group(2))


def _scaled(number: str, unit: str) -> int:
    # integers stay exact; fractions go through Decimal to avoid float rounding of ns
    from decimal import Decimal

    return int(Decimal(number) * _UNITS_NS[unit])


def _datetime_ns(dt: datetime) -> int:
    delta = dt.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
