"""Round trips through disk and replay deduplication, checked with hypothesis."""

from __future__ import annotations

import itertools
import json
import math
import pathlib
import tempfile

import numpy as np
import pyarrow as pa
from conftest import T0_NS, make_batch
from hypothesis import example, given, settings, strategies as st

from lumin_nb.event import EVENT_SCHEMA, batch_from_columns
from lumin_nb.store import Store
from lumin_nb.store.dedupe import SeqIndex

texts = st.one_of(st.none(), st.text(max_size=20))
floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
big_ints = st.one_of(st.none(), st.integers(0, 2**63 - 1))


@st.composite
def event_rows(draw: st.DrawFn) -> dict[str, list[object]]:
    n = draw(st.integers(1, 30))
    return {
        "message": draw(st.lists(texts, min_size=n, max_size=n)),
        "value": draw(st.lists(floats, min_size=n, max_size=n)),
        "duration_ns": draw(st.lists(big_ints, min_size=n, max_size=n)),
        "entity": draw(st.lists(st.text(min_size=1, max_size=10), min_size=n, max_size=n)),
        "ts": draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n)),
    }


def _rows(table: pa.Table) -> list[dict[str, object]]:
    """Plain rows, dictionaries decoded, NaN made comparable."""
    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        values = col.to_pylist()
        cols[name] = ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in values]
    return [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]


@given(batches=st.lists(event_rows(), min_size=1, max_size=4))
@example(
    batches=[
        {
            "message": [None, "ünïcødé ✓ \x00", ""],
            "value": [float("nan"), None, -math.inf],
            "duration_ns": [2**63 - 1, None, 0],
            "entity": ["a", "🙂", "a"],
            "ts": [0, 2**62, 5],
        }
    ]
)
def test_append_close_reopen_scan_preserves_every_value(
    batches: list[dict[str, list[object]]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        expected = []
        seq = 0
        with Store.open(tmp) as store:
            for cols in batches:
                n = len(cols["ts"])
                batch = batch_from_columns(
                    n,
                    ts=pa.array(cols["ts"], pa.int64()),
                    kind="log",
                    message=pa.array(cols["message"], pa.string()),
                    value=pa.array(cols["value"], pa.float64()),
                    duration_ns=pa.array(cols["duration_ns"], pa.int64()),
                    entity=pa.array(cols["entity"], pa.string()),
                    producer="hyp",
                    seq=np.arange(seq, seq + n),
                )
                seq += n
                assert store.append(batch) == n
                expected.append(batch)
        got = Store.open(tmp, read_only=True).scan()
        assert got.schema.equals(EVENT_SCHEMA)
        assert _rows(got) == _rows(pa.Table.from_batches(expected))


ranges = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 200), st.integers(1, 40)),
    min_size=1,
    max_size=12,
)


@given(ranges=ranges)
@example(ranges=[("a", 10, 5), ("a", 0, 30), ("a", 29, 2), ("a", 5, 1)])
@settings(max_examples=40)
def test_replayed_overlapping_out_of_order_ranges_are_stored_once(
    ranges: list[tuple[str, int, int]],
) -> None:
    model: set[tuple[str, int]] = set()
    with tempfile.TemporaryDirectory() as tmp:
        with Store.open(tmp) as store:
            for producer, start, n in ranges:
                fresh = {(producer, s) for s in range(start, start + n)} - model
                accepted = store.append(make_batch(start, n, producer=producer))
                assert accepted == len(fresh)
                model |= fresh
            assert store.stats()["events_stored"] == len(model)
        # the index is rebuilt on open: a full replay adds nothing
        with Store.open(tmp) as store:
            for producer, start, n in ranges:
                assert store.append(make_batch(start, n, producer=producer)) == 0
            table = store.scan(columns=["producer", "seq"])
        stored = list(zip(*(table.column(c).to_pylist() for c in ("producer", "seq")), strict=True))
        assert len(stored) == len(set(stored))
        assert set(stored) == model


def test_duplicates_inside_one_batch_are_stored_once(tmp_path: pathlib.Path) -> None:
    batch = make_batch(0, 10)
    doubled = pa.Table.from_batches([batch, batch]).combine_chunks().to_batches()[0]
    with Store.open(tmp_path / "s") as store:
        assert store.append(doubled) == 10
        assert store.stats()["rows_deduplicated"] == 10
        assert store.scan().num_rows == 10


@given(st.lists(st.lists(st.integers(-50, 50), max_size=30), max_size=8))
def test_seq_index_matches_a_set_model(batches: list[list[int]]) -> None:
    index, model = SeqIndex(), set[int]()
    for seqs in batches:
        plan = index.check(pa.array(["p"] * len(seqs)), pa.array(seqs, pa.int64()))
        kept = [s for s, k in zip(seqs, plan.keep, strict=True) if k]
        assert len(kept) == len(set(kept))
        assert set(kept) == set(seqs) - model
        index.commit(plan)
        model |= set(seqs)
        assert len(index) == len(model)
        starts_ends = index.intervals("p")
        assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(starts_ends))


def test_journal_records_opens_batches_and_domain_events(tmp_path: pathlib.Path) -> None:
    with Store.open(tmp_path / "s") as store:
        store.append(make_batch(0, 100, producer="agent-7"))
        store.record("DebugSessionStarted", user="ana", probe="pkg:f")
        store.flush()
        history = store.history()
        assert history.column("type").to_pylist() == [
            "StoreOpened",
            "EventBatchRecorded",
            "DebugSessionStarted",
        ]
        batch_event = json.loads(store.history(type="EventBatchRecorded")["data"][0].as_py())
        assert batch_event["producer"] == "agent-7"
        assert (batch_event["seq_first"], batch_event["seq_last"], batch_event["rows"]) == (
            0,
            99,
            100,
        )
        assert batch_event["segment"].endswith(".arrows")
    reopened = Store.open(tmp_path / "s", read_only=True).history()
    assert reopened.column("seq").to_pylist() == [1, 2, 3]
    assert reopened.num_rows == 3
    since = Store.open(tmp_path / "s", read_only=True).history(since_ns=T0_NS * 2)
    assert since.num_rows == 0
