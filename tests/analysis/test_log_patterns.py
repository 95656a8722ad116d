"""log_patterns / mine_templates: accuracy on Loghub, round trips from known templates, frames."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import numpy as np
import polars as pl
import pytest
from hypothesis import given, strategies as st

from lumin_nb.analysis import log_patterns, mine_templates
from lumin_nb.errors import UnknownColumnError


def _load_loghub() -> ModuleType:
    """benchmarks/loghub.py: the samples and GA, shared with bench_log_patterns.py."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "loghub.py"
    spec = importlib.util.spec_from_file_location("loghub", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


loghub = _load_loghub()

# Grouping accuracy this implementation reaches (measured), so a regression fails; drain3's
# GA on the same lines in brackets.
GA_FLOOR = {
    "Apache": 1.0,  # (1.000)
    "BGL": 0.98,  # (0.969)
    "HDFS": 0.99,  # (0.998)
    "Hadoop": 0.97,  # (0.954)
    "HealthApp": 0.99,  # (0.576)
    "OpenSSH": 0.92,  # (0.718)
    "Spark": 0.92,  # (0.922)
    "Zookeeper": 0.98,  # (0.967)
}


@pytest.mark.parametrize("system", sorted(GA_FLOOR))
def test_grouping_accuracy_on_loghub_stays_above_its_floor(system: str) -> None:
    assert loghub.LOGHUB.is_dir(), (
        f"Loghub samples missing at {loghub.LOGHUB}: shared/ must lie beside the repo"
    )
    frame = loghub.load_system(system)
    ids, templates = mine_templates(frame["Content"])
    assert len(ids) == frame.height
    assert ids.max() < len(templates)
    assert loghub.grouping_accuracy(ids, frame["EventId"].to_list()) >= GA_FLOOR[system]


TEMPLATES = [
    "user {} logged in from {}",
    "connection to {} closed after {} ms",
    "cache miss for key {}",
    "worker {} started task {} in queue {}",
    "shutting down",
]
_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=8)
_param = st.one_of(
    st.integers(0, 10**9).map(str),
    st.integers(0, 2**32 - 1).map(lambda n: f"0x{n:08x}"),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.floats(0, 1e4, allow_nan=False).map(lambda f: f"{f:.3f}"),
    st.uuids().map(str),
    st.integers(1, 10**6).map(lambda n: f"{n}ms"),
    _word.map(lambda w: f"/var/{w}/{w}.log"),
)


@given(
    st.lists(
        st.tuples(st.integers(0, len(TEMPLATES) - 1), st.lists(_param, min_size=3, max_size=3)),
        min_size=1,
        max_size=60,
    )
)
def test_lines_from_known_templates_group_back_into_those_templates(
    rows: list[tuple[int, list[str]]],
) -> None:
    lines = [TEMPLATES[k].format(*params) for k, params in rows]
    ids, templates = mine_templates(lines)
    truth = [k for k, _ in rows]
    pairs = set(zip(ids.tolist(), truth, strict=True))
    # Same template <=> same group, both ways, and each group's template is its template.
    assert len({tid for tid, _ in pairs}) == len(pairs) == len(set(truth))
    for tid, k in pairs:
        assert templates[tid] == TEMPLATES[k].replace("{}", "<*>")


def test_mining_is_deterministic() -> None:
    lines = [f"job {i % 7} took {i * 13} ms on node n{i % 3}" for i in range(500)]
    lines += [f"user u{i % 5} logged out" for i in range(100)]
    first = mine_templates(lines)
    again = mine_templates(list(lines))
    assert first[1] == again[1]
    assert np.array_equal(first[0], again[0])


def test_numbers_glued_to_letters_are_kept_and_others_masked() -> None:
    _, templates = mine_templates(["Failed password for root port 22 ssh2 blk_-42 id=0x1f"])
    assert templates == ["Failed password for root port <*> ssh2 blk_<*> id=<*>"]


def test_empty_input_gives_an_empty_frame_with_the_columns() -> None:
    for empty in ([], pl.Series("message", [], dtype=pl.String)):
        ids, templates = mine_templates(empty)
        assert len(ids) == 0 and templates == []
        out = log_patterns(empty)
        assert out.height == 0
        assert out.schema == log_patterns(["a b"]).schema


def _events() -> pl.DataFrame:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ts = [t0.replace(second=s) for s in range(6)]
    return pl.DataFrame(
        {
            "ts": pl.Series(ts, dtype=pl.Datetime("ns", "UTC")),
            "kind": pl.Series(["log"] * 5 + ["span"], dtype=pl.Categorical),
            "service": pl.Series(
                ["orders", "payments", "orders", "orders", "orders", "orders"],
                dtype=pl.Categorical,
            ),
            "entity": ["app.db"] * 3 + ["app.http"] * 3,
            "message": [
                "query took 12 ms",
                "query took 30 ms",
                "query took 7 ms",
                "GET /orders/17 200",
                None,
                "span done",
            ],
        }
    )


def test_frame_columns_types_and_order() -> None:
    out = log_patterns(_events())
    assert out.schema == pl.Schema(
        {
            "template_id": pl.Int64,
            "template": pl.String,
            "count": pl.Int64,
            "first_seen": pl.Datetime("ns", "UTC"),
            "last_seen": pl.Datetime("ns", "UTC"),
            "example": pl.String,
            "params": pl.List(pl.String),
            "services": pl.List(pl.String),
        }
    )
    top = out.row(0, named=True)
    assert top["template"] == "query took <*> ms"
    assert top["count"] == 3
    assert top["example"] == "query took 12 ms"
    assert top["params"] == ["12"]
    assert top["services"] == ["orders", "payments"]
    assert top["first_seen"] == datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert top["last_seen"] == datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
    assert out["count"].to_list() == sorted(out["count"].to_list(), reverse=True)
    assert "span done" not in out["template"].to_list()  # kind="log" by default


def test_filters_by_time_service_and_entity() -> None:
    events = _events()
    assert log_patterns(events, service="payments")["count"].to_list() == [1]
    assert log_patterns(events, entity="app.h*")["template"].to_list() == ["GET <*> <*>"]
    since = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert log_patterns(events, since=since, until="2026-01-01T00:00:03Z")["count"].sum() == 2
    assert log_patterns(events, kind=None)["count"].sum() == 5


def test_unknown_service_or_column_names_the_close_match() -> None:
    with pytest.raises(UnknownColumnError, match="Did you mean 'orders'"):
        log_patterns(_events(), service="order")
    with pytest.raises(UnknownColumnError, match="Did you mean 'message'"):
        log_patterns(_events(), column="mesage")
