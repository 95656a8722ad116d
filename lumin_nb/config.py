"""Profiles and run-time configuration of an observatory.

A profile is a named set of defaults (`dev`, `staging`, `prod_safe`, `prod_deep_dive`);
`ConfigManager.update` changes keys at run time after checking every key and value, and tells
its listeners (the store records each change as a `ConfigChanged` domain event).
Environment variables, each read once when an observatory starts:

- ``LUMIN_HOME``: the store folder (default ``./.lumin``).
- ``LUMIN_PROFILE``: the profile `lm.start()` and `%load_ext lumin` use (default ``dev``).

Read by the agent inside a monitored process (`lm.run` and `lumin run` set them):

- ``LUMIN_ENDPOINT``: the observatory's data endpoint (``tcp://127.0.0.1:PORT``); when set,
  the auto-start hook starts an agent.
- ``LUMIN_CONTROL_ENDPOINT``: the observatory's control endpoint (acks, config changes).
- ``LUMIN_TOKEN``: the shared secret the observatory checks on every batch.
- ``LUMIN_SERVICE``: the service name of the process's events (default: the script's name).
- ``LUMIN_WATCH``: comma-separated watch patterns for the call tracer (``"shop.*,app.db:query"``).
- ``LUMIN_PARENT_PRODUCER``: the producer of the monitored process that started this one.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from lumin_nb.errors import ConfigError, closest

Profile = Literal["dev", "staging", "prod_safe", "prod_deep_dive"]
PROFILES: Final[tuple[str, ...]] = get_args(Profile)

ENV_HOME: Final = "LUMIN_HOME"
ENV_PROFILE: Final = "LUMIN_PROFILE"
DEFAULT_HOME: Final = ".lumin"
ENV_ENDPOINT: Final = "LUMIN_ENDPOINT"
ENV_CONTROL: Final = "LUMIN_CONTROL_ENDPOINT"
ENV_TOKEN: Final = "LUMIN_TOKEN"
ENV_SERVICE: Final = "LUMIN_SERVICE"
ENV_WATCH: Final = "LUMIN_WATCH"
ENV_PARENT: Final = "LUMIN_PARENT_PRODUCER"

_DAY_S: Final = 86_400
THREAD_EVENTS: Final = ("start_end", "end")


@dataclass(frozen=True)
class Config:
    """Every setting of an observatory; see `PROFILE_DEFAULTS` for what each profile sets."""

    profile: Profile = "dev"
    #: trace calls of code matched by `lm.watch` and inside `lm.trace()` blocks
    collect_calls: bool = True
    #: record exceptions raised, handled and unhandled in traced code
    collect_exceptions: bool = True
    #: start/end events of threads, asyncio tasks and subprocesses
    collect_tasks: bool = True
    #: "start_end" (an event when a thread starts and one when it ends) or "end" (only the
    #: end event, stamped at the start with the lifetime)
    thread_events: str = "start_end"
    #: a logging handler on the root logger
    collect_logs: bool = True
    #: the lowest `logging` level kept (10 debug, 20 info, 30 warning)
    log_level: int = 10
    #: RSS, CPU, GC, threads and loop lag
    collect_runtime_metrics: bool = True
    #: seconds between runtime metric samples
    metrics_interval_s: float = 1.0
    #: fraction of traced calls kept (1.0 keeps all; errors are always kept)
    call_sample_rate: float = 1.0
    #: calls held by the native tracer's ring buffer before drops are counted
    call_buffer_records: int = 1 << 20
    #: events each other source may hold between flushes before drops are counted
    buffer_max_events: int = 200_000
    #: the writer makes events durable at least this often (seconds)
    flush_interval_s: float = 0.5
    #: a hot segment is sealed when it reaches this size
    segment_max_bytes: int = 64 << 20
    #: events older than this are compacted into Parquet, then deleted past twice the age
    retention_age_s: float = 7 * _DAY_S
    #: the store is trimmed (oldest first) above this size
    retention_max_bytes: int = 10 << 30
    #: hide emails, card numbers, tokens and secrets in messages and attrs
    redact: bool = False
    #: the CPU share Lumin may use before a collector is turned off
    overhead_budget: float = 0.10
    #: the service name of this process's events
    service: str = "kernel"
    #: listen for agents of monitored processes (`lm.run`, `lumin run`) on 127.0.0.1
    accept_agents: bool = True
    #: seconds over which a collector's CPU share is judged against overhead_budget
    breaker_window_s: float = 10.0
    #: seconds a tripped collector stays off before a retry (doubles per repeated trip, max 16x)
    breaker_cooldown_s: float = 60.0
    #: events per second each source may add (token bucket; errors always pass)
    rate_limit_events_per_s: float = 1_000_000.0
    #: bytes Lumin's buffers may hold before new batches are refused
    memory_max_bytes: int = 1 << 30

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict."""
        return dataclasses.asdict(self)


PROFILE_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "dev": {},
    "staging": {
        "log_level": 20,
        "memory_max_bytes": 512 << 20,
        "metrics_interval_s": 5.0,
        "call_sample_rate": 0.5,
        "retention_age_s": 3 * _DAY_S,
        "overhead_budget": 0.05,
    },
    "prod_safe": {
        "log_level": 30,
        "collect_exceptions": True,
        "metrics_interval_s": 15.0,
        "call_sample_rate": 0.05,
        "call_buffer_records": 1 << 16,
        "buffer_max_events": 50_000,
        "retention_age_s": 1 * _DAY_S,
        "retention_max_bytes": 1 << 30,
        "redact": True,
        "overhead_budget": 0.03,
        "rate_limit_events_per_s": 20_000.0,
        "memory_max_bytes": 128 << 20,
        "flush_interval_s": 1.0,
        "thread_events": "end",
    },
    "prod_deep_dive": {
        "log_level": 10,
        "metrics_interval_s": 1.0,
        "call_sample_rate": 1.0,
        "buffer_max_events": 100_000,
        "retention_age_s": 1 * _DAY_S,
        "retention_max_bytes": 2 << 30,
        "redact": True,
        "overhead_budget": 0.10,
        "flush_interval_s": 1.0,
        "thread_events": "end",
    },
}

_FIELDS: Final = {f.name: f for f in dataclasses.fields(Config)}
_TYPES: Final[dict[str, type | tuple[type, ...]]] = {
    "bool": bool,
    "int": int,
    "float": (int, float),
    "str": str,
    "Profile": str,
}


def profile_config(profile: str, **changes: Any) -> Config:
    """Return the Config of `profile` with `changes` applied (all checked)."""
    if profile not in PROFILES:
        raise ConfigError(
            f"profile={profile!r} is not a Lumin profile.{closest(profile, PROFILES)}\n"
            f"Expected one of: {', '.join(PROFILES)}.\nFix: lm.start(profile='dev')"
        )
    base = Config(profile=profile, **PROFILE_DEFAULTS[profile])  # type: ignore[arg-type]
    return _apply(base, changes)


def _apply(config: Config, changes: dict[str, Any]) -> Config:
    bad: list[str] = []
    for key, value in changes.items():
        if key not in _FIELDS or key == "profile":
            valid = [k for k in _FIELDS if k != "profile"]
            bad.append(
                f"{key!r} is not a configuration key.{closest(key, valid)} "
                f"Valid keys: {', '.join(sorted(valid))}."
            )
            continue
        problem = _check_value(key, value)
        if problem:
            bad.append(problem)
    if bad:
        raise ConfigError("\n".join(bad) + "\nFix: lm.configure(flush_interval_s=0.5)")
    return dataclasses.replace(config, **changes)


def _check_value(key: str, value: Any) -> str | None:
    type_name = str(_FIELDS[key].type)
    expected = _TYPES[type_name]
    if isinstance(value, bool) and type_name != "bool":
        return f"{key}={value!r}: expected {type_name}, got bool"
    if not isinstance(value, expected):
        return f"{key}={value!r}: expected {type_name}, got {type(value).__name__}"
    if key == "thread_events" and value not in THREAD_EVENTS:
        return f"{key}={value!r}: expected one of {', '.join(map(repr, THREAD_EVENTS))}"
    if type_name not in ("int", "float"):
        return None
    number = float(value)  # type: ignore[arg-type]  # int or float, checked above
    if key.endswith("_rate") or key == "overhead_budget":
        if not 0.0 <= number <= 1.0:
            return f"{key}={value!r}: expected a fraction between 0.0 and 1.0"
    elif key == "flush_interval_s":
        if not 0.01 <= number <= 1.0:
            return f"{key}={value!r}: expected 0.01 to 1.0 seconds (durability needs <= 1 s)"
    elif number <= 0:
        return f"{key}={value!r}: expected a positive number"
    return None


@dataclass
class ConfigManager:
    """Holds the live Config and tells listeners of each checked change."""

    config: Config
    _listeners: list[Callable[[Config, dict[str, Any]], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, listener: Callable[[Config, dict[str, Any]], None]) -> None:
        """Call `listener(new_config, changes)` after every change."""
        self._listeners.append(listener)

    def update(self, **changes: Any) -> Config:
        """Apply `changes` (every key and value checked first) and return the new Config."""
        with self._lock:
            new = _apply(self.config, changes)
            self.config = new
        for listener in self._listeners:
            listener(new, changes)
        return new
