"""Fixtures for the HTTP server tests: a real observatory in a temp store and its server."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import lumin_nb as lm
from lumin_nb._observatory import Observatory
from lumin_nb.server import Server, start_server
from lumin_nb.testing import wait_until as _wait_until


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """`wait_until(pred, timeout_s=5, what=...)`: fails saying what never happened."""
    return _wait_until


@pytest.fixture
def obs(tmp_path: pathlib.Path) -> Iterator[Observatory]:
    """A running observatory on a temp store (no call tracing or runtime metrics)."""
    observatory = lm.start(
        store=tmp_path / "s",
        flush_interval_s=0.1,
        collect_calls=False,
        collect_runtime_metrics=False,
    )
    try:
        yield observatory
    finally:
        lm.stop()


@pytest.fixture
def make_server(obs: Observatory) -> Iterator[Callable[..., Server]]:
    """A factory of real servers on 127.0.0.1 port 0 (rate limit off unless given)."""
    started: list[Server] = []

    def make(**kwargs: Any) -> Server:
        kwargs.setdefault("rate_limit_per_s", None)
        srv = start_server(obs, **kwargs)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    """A real server with default limits except the rate limit (off)."""
    return make_server()


@pytest.fixture
def stored(obs: Observatory) -> Callable[..., Any]:
    """`stored(**filters)`: the stored events matching `filters` as a polars frame."""
    from lumin_nb.store.query import events_frame

    def frame(**filters: Any) -> Any:
        return events_frame(obs.store, **filters)

    return frame
