"""The event schema and its builders: round trips, validation, ids."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, strategies as st

from lumin_nb import event
from lumin_nb.errors import SchemaError


def test_schema_carries_its_version() -> None:
    assert event.EVENT_SCHEMA.metadata[b"lumin.schema_version"] == event.SCHEMA_VERSION.encode()
    assert event.COLUMNS[0] == "event_id" and event.COLUMNS[-1] == "seq"


def test_event_ids_are_uuid7_and_time_ordered() -> None:
    ts = np.arange(1_700_000_000_000_000_000, 1_700_000_000_000_000_000 + 5_000_000, 1000)
    ids = event.new_event_ids(ts).to_pylist()
    assert all(i[6] >> 4 == 7 and i[8] >> 6 == 0b10 for i in ids)  # version 7, RFC variant
    ms_prefix = [i[:6] for i in ids]
    assert ms_prefix == sorted(ms_prefix)
    assert len(set(ids)) == len(ids)


@given(
    messages=st.lists(st.one_of(st.none(), st.text()), min_size=1, max_size=30),
    value=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    tid=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    entity=st.text(min_size=1),
)
@example(messages=["\x00", "é" * 1000], value=math.nan, tid=2**63 - 1, entity="m:f")
def test_builder_keeps_arbitrary_values(
    messages: list[str | None], value: float | None, tid: int, entity: str
) -> None:
    b = event.EventBuilder()
    for m in messages:
        b.append("log", message=m, value=value, tid=tid, entity=entity, severity=9)
    batch = event.with_producer(b.build(), "test", 1)  # type: ignore[arg-type]
    event.validate(batch)
    assert batch.column("message").to_pylist() == messages
    assert batch.column("tid").to_pylist() == [tid] * len(messages)
    got = batch.column("value").to_pylist()
    if value is None or not math.isnan(value):
        assert got == [value] * len(messages)
    else:
        assert all(math.isnan(v) for v in got)
    assert batch.column("seq").to_pylist() == list(range(1, len(messages) + 1))


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_huge_ints_are_refused_with_the_column_named(number: int) -> None:
    if -(2**63) <= number < 2**63:
        assert event.batch_from_columns(1, kind="metric", tid=number, producer="p").num_rows == 1
    else:
        with pytest.raises((SchemaError, OverflowError, pa.ArrowInvalid)):
            event.batch_from_columns(1, kind="metric", tid=number, producer="p")


def test_validate_reports_every_bad_column() -> None:
    good = event.batch_from_columns(2, kind="log", producer="p", seq=[1, 2])
    bad = (
        pa.Table.from_batches([good])
        .drop_columns(["ts"])
        .set_column(2, "kind", pa.array(["log", "nonsense"]).dictionary_encode())
        .append_column("extra", pa.array([1, 2]))
    )
    with pytest.raises(SchemaError) as info:
        event.validate(bad)
    text = str(info.value)
    assert "ts: missing" in text
    assert "kind: unknown value(s) ['nonsense']" in text
    assert "extra: not an event column" in text
    assert "Fix:" in text


def test_unknown_builder_column_lists_the_columns() -> None:
    with pytest.raises(SchemaError, match="event columns are: event_id, ts"):
        event.batch_from_columns(1, kindd="log")
