"""since=/until= parsing: offsets, ISO text, clock times, datetimes, and clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, strategies as st

from lumin_nb._time import parse_duration_ns, parse_time
from lumin_nb.errors import TimeParseError

NOW = 1_764_072_000_000_000_000  # 2025-11-25T12:00:00Z


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from([("s", 10**9), ("m", 60 * 10**9), ("h", 3600 * 10**9), ("ms", 10**6)]),
)
def test_relative_offsets(amount: int, unit: tuple[str, int]) -> None:
    suffix, scale = unit
    assert parse_time(f"-{amount}{suffix}", now_ns=NOW) == NOW - amount * scale
    assert parse_time(f"+{amount}{suffix}", now_ns=NOW) == NOW + amount * scale


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_iso_text_and_datetimes_agree(dt: datetime) -> None:
    aware = dt.replace(tzinfo=UTC)
    assert parse_time(aware.isoformat()) == parse_time(aware)
    assert parse_time(aware.isoformat().replace("+00:00", "Z")) == parse_time(aware)
    assert parse_time(aware) == int(aware.timestamp()) * 10**9 + aware.microsecond * 1000


def test_clock_time_is_today_local() -> None:
    got = parse_time("10:03", now_ns=NOW)
    assert got is not None
    local = datetime.fromtimestamp(got / 1e9).astimezone()
    assert (local.hour, local.minute, local.second) == (10, 3, 0)


@pytest.mark.parametrize("bad", ["-5 mins", "yesterday", "", "12:99", True, [1]])
def test_bad_time_text_names_the_value_and_the_fix(bad: object) -> None:
    with pytest.raises(TimeParseError) as info:
        parse_time(bad, name="since")  # type: ignore[arg-type]
    assert repr(bad) in str(info.value) and "Fix: lm.events(since='-5m')" in str(info.value)


def test_durations() -> None:
    assert parse_duration_ns("500ms") == 500 * 10**6
    assert parse_duration_ns(timedelta(minutes=2)) == 120 * 10**9
    with pytest.raises(TimeParseError, match="Fix: ttl='60s'"):
        parse_duration_ns("soon")
