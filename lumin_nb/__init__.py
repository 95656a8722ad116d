"""Lumin: a Jupyter-native observatory for running software.

``%load_ext lumin`` starts an observatory in the kernel; ``import lumin as lm`` gives this
API. Every query returns a polars DataFrame (``lm.options.frame = "pandas"`` switches).
Importing Lumin loads only the standard library: heavy modules load on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from lumin_nb._options import options
from lumin_nb._version import __version__
from lumin_nb.errors import LuminError, NotRunningError as _NotRunningError

if TYPE_CHECKING:
    import os

    from lumin_nb._observatory import Observatory, Status
    from lumin_nb._time import TimeLike
    from lumin_nb.agent import MonitoredProcess
    from lumin_nb.collect.calls import TraceBlock
    from lumin_nb.config import Config
    from lumin_nb.server import Server

__all__ = [
    "LuminError",
    "__version__",
    "anomalies",
    "configure",
    "events",
    "history",
    "log_patterns",
    "open",
    "options",
    "rejected",
    "run",
    "serve",
    "sql",
    "start",
    "status",
    "stop",
    "trace",
    "unwatch",
    "watch",
]

_lock = threading.Lock()
_current: Observatory | None = None


def _running() -> Observatory:
    obs = _current
    if obs is None or not obs.is_running:
        raise _NotRunningError(
            "Lumin is not running in this process.\n"
            "Fix: %load_ext lumin  (in a notebook)  or  lm.start()  (in a script)"
        )
    return obs


def start(
    profile: str | None = None,
    *,
    store: str | os.PathLike[str] | None = None,
    **config: Any,
) -> Observatory:
    """Start the observatory of this process and return it.

    Parameters
    ----------
    profile
        "dev" (default, or ``LUMIN_PROFILE``), "staging", "prod_safe" or "prod_deep_dive".
    store
        The store folder (default ``LUMIN_HOME`` or ``./.lumin``).
    **config
        Settings that override the profile, e.g. ``flush_interval_s=0.2``.

    Examples
    --------
    >>> obs = lm.start(profile="dev", store="/tmp/lumin-demo")  # doctest: +SKIP
    """
    global _current
    from lumin_nb._observatory import Observatory

    with _lock:
        if _current is not None and _current.is_running:
            raise LuminError(
                f"Lumin is already running in this process (store {_current.store.path}).\n"
                "Fix: lm.stop() first, or lm.configure(...) to change settings."
            )
        _current = Observatory.start(profile=profile, store=store, **config)
        return _current


def stop() -> None:
    """Stop the observatory: collectors off, buffered events stored, store closed."""
    global _current
    with _lock:
        obs, _current = _current, None
    if obs is not None:
        obs.stop()


def status() -> Status:
    """Return collectors, events/s, dropped events, the store path and size."""
    return _running().status()


def configure(**changes: Any) -> Config:
    """Change settings at run time (checked; recorded as a ConfigChanged domain event)."""
    return _running().configure(**changes)


def watch(*patterns: str) -> tuple[str, ...]:
    """Trace calls of matching code: ``lm.watch("mypkg.*")``, ``lm.watch("app.db:query")``.

    Returns every pattern now watched. Unwatched code costs nothing.
    """
    return _running().watch(*patterns)


def unwatch(*patterns: str) -> tuple[str, ...]:
    """Stop tracing these patterns (every pattern when none is given)."""
    return _running().unwatch(*patterns)


def trace(
    name: str = "trace", *, include_libraries: bool = False
) -> AbstractContextManager[TraceBlock]:
    """Trace every call inside a ``with`` block (stdlib and Lumin excluded).

    Examples
    --------
    >>> with lm.trace("nightly job"):  # doctest: +SKIP
    ...     run_job()
    """
    return _running().trace(name, include_libraries=include_libraries)


def events(
    *,
    since: TimeLike = None,
    until: TimeLike = None,
    kind: str | Sequence[str] | None = None,
    service: str | Sequence[str] | None = None,
    entity: str | Sequence[str] | None = None,
    min_severity: int | None = None,
    limit: int | None = None,
    columns: Sequence[str] | None = None,
    **filters: Any,
) -> Any:
    """Return events as a DataFrame (polars, or pandas per ``lm.options.frame``), oldest first.

    ``since``/``until`` take a datetime, ISO text or an offset ("-5m"); ``kind``, ``service``
    and ``entity`` take a value or a list (``entity`` accepts ``*`` wildcards); ``columns``
    picks columns. The columns are those of the event schema (see README).

    Examples
    --------
    >>> lm.events(kind="exception", since="-5m")  # doctest: +SKIP
    """
    return _running().events(
        since=since,
        until=until,
        kind=kind,
        service=service,
        entity=entity,
        min_severity=min_severity,
        limit=limit,
        columns=columns,
        **filters,
    )


def log_patterns(
    events: Any = None,
    *,
    since: TimeLike = None,
    until: TimeLike = None,
    service: str | Sequence[str] | None = None,
    entity: str | Sequence[str] | None = None,
) -> Any:
    """Return the log templates, most frequent first: template_id, template (``<*>`` for
    parameters), count, first_seen, last_seen, example, params, services.

    `events` is any events frame, Series or list of lines; by default the stored log events.

    Examples
    --------
    >>> lm.log_patterns(since="-1h", service="orders")  # doctest: +SKIP
    """
    return _running().log_patterns(events, since=since, until=until, service=service, entity=entity)


def anomalies(
    events: Any = None,
    *,
    since: TimeLike = None,
    until: TimeLike = None,
    entity: str | Sequence[str] | None = None,
    every: str | None = None,
) -> Any:
    """Return an online anomaly score for every point of every metric series and event rate:
    series, ts, value, score (0..1), expected, lower, upper, is_anomaly.

    Scores use only the past of each point (no look-ahead). `events` defaults to the store.

    Examples
    --------
    >>> lm.anomalies(since="-1h").filter(pl.col("is_anomaly"))  # doctest: +SKIP
    """
    return _running().anomalies(events, since=since, until=until, entity=entity, every=every)


def sql(text: str) -> Any:
    """Run DuckDB SQL over the view ``events`` (the whole store) and ``history``.

    Examples
    --------
    >>> lm.sql("select entity, count(*) from events group by 1")  # doctest: +SKIP
    """
    return _running().sql(text)


def history(*, type: str | None = None, since: TimeLike = None, until: TimeLike = None) -> Any:
    """Return the domain events: StoreOpened, DebugSessionStarted, ConfigChanged, ..."""
    return _running().history(type=type, since=since, until=until)


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    max_body_bytes: int | None = None,
    rate_limit_per_s: float | None = None,
) -> Server:
    """Start the observatory's HTTP server and return it (``srv.url``, ``srv.token``).

    It takes OTLP/HTTP (``/v1/traces``, ``/v1/logs``, ``/v1/metrics``; protobuf or JSON),
    external logs (``/ingest/logs``: NDJSON, JSON arrays as Vector sends, Fluent Bit
    ``json_lines``, ``?format=logfmt|syslog|regex|grok``), ``/status`` and ``/health``. It binds
    127.0.0.1 and a free port by default; every route but ``/health`` needs
    ``Authorization: Bearer <srv.token>``.

    Examples
    --------
    >>> srv = lm.serve()  # doctest: +SKIP
    >>> OTLPSpanExporter(endpoint=srv.url + "/v1/traces",
    ...                  headers={"Authorization": f"Bearer {srv.token}"})  # doctest: +SKIP
    """
    return _running().serve(
        host=host,
        port=port,
        token=token,
        max_body_bytes=max_body_bytes,
        rate_limit_per_s=rate_limit_per_s,
    )


def run(
    argv: Sequence[str],
    *,
    service: str,
    watch: Sequence[str] = (),
    env: dict[str, str] | None = None,
    **popen: Any,
) -> MonitoredProcess:
    """Start a monitored process: its logs, calls of `watch` patterns, threads, tasks and
    metrics flow into this observatory over ZeroMQ (127.0.0.1, token-checked).

    Returns a handle with ``.pid``, ``.events(**filters)``, ``.stop()``, ``.wait()``.

    Examples
    --------
    >>> p = lm.run(["python", "shop.py"], service="orders", watch=["shop.*"])  # doctest: +SKIP
    >>> p.events(kind="log"); p.stop()  # doctest: +SKIP
    """
    return _running().run(argv, service=service, watch=watch, env=env, **popen)


def rejected() -> Any:
    """Return the records the servers could not read (line_no, raw, reason): a dead letter."""
    return _running().rejected()


def open(path: str | os.PathLike[str]) -> Observatory:
    """Open a store folder read-only (e.g. after a crash): ``lm.open(".lumin").events()``."""
    from lumin_nb._observatory import Observatory

    return Observatory.open(path)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext lumin_nb``: start the observatory and register the magics."""
    from lumin_nb.magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext lumin_nb``: stop the observatory and remove the hooks."""
    from lumin_nb.magics import unload

    unload(ipython)
