"""W3C trace context: `traceparent`/`tracestate` headers and the current context.

The current trace context lives in a `contextvars.ContextVar`, so it follows threads started
with `contextvars.copy_context()` and every asyncio task. Collectors read it to stamp
`trace_id`/`span_id` on the events they emit; HTTP clients inject it into outgoing headers
and servers extract it from incoming ones, so one trace spans processes.
Spec: https://www.w3.org/TR/trace-context/ (version 00).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Final

_TRACEPARENT: Final = re.compile(
    r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$"
)
_TRACESTATE_KEY: Final = re.compile(
    r"^(?:[a-z][_0-9a-z\-\*/]{0,255}|[a-z0-9][_0-9a-z\-\*/]{0,240}@[a-z][_0-9a-z\-\*/]{0,13})$"
)
_TRACESTATE_VALUE: Final = re.compile(
    r"^[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$"
)
_MAX_TRACESTATE_MEMBERS: Final = 32


@dataclass(frozen=True)
class TraceContext:
    """One position in a distributed trace: trace id, the current span, flags and state."""

    trace_id: bytes
    span_id: bytes
    sampled: bool = True
    state: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def new(cls, *, sampled: bool = True) -> TraceContext:
        """Return the root of a new trace (random ids, never all zero)."""
        return cls(_nonzero(16), _nonzero(8), sampled)

    def child(self) -> TraceContext:
        """Return a context for a new span inside this trace."""
        return TraceContext(self.trace_id, _nonzero(8), self.sampled, self.state)

    @property
    def traceparent(self) -> str:
        """The `traceparent` header value: ``00-<trace-id>-<span-id>-<flags>``."""
        flags = "01" if self.sampled else "00"
        return f"00-{self.trace_id.hex()}-{self.span_id.hex()}-{flags}"

    @property
    def tracestate(self) -> str:
        """The `tracestate` header value (empty when there is no state)."""
        return ",".join(f"{k}={v}" for k, v in self.state)


def _nonzero(n: int) -> bytes:
    while True:
        value = os.urandom(n)
        if any(value):
            return value


def parse_traceparent(value: str, tracestate: str | None = None) -> TraceContext | None:
    """Return the context in a `traceparent` header, or None when it is not valid.

    Invalid headers are ignored, as the specification requires (a new trace starts).
    """
    m = _TRACEPARENT.match(value.strip())
    if not m:
        return None
    version, trace_hex, span_hex, flags_hex, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if set(trace_hex) == {"0"} or set(span_hex) == {"0"}:
        return None
    state = parse_tracestate(tracestate) if tracestate else ()
    return TraceContext(
        bytes.fromhex(trace_hex), bytes.fromhex(span_hex), bool(int(flags_hex, 16) & 1), state
    )


def parse_tracestate(value: str) -> tuple[tuple[str, str], ...]:
    """Return the valid members of a `tracestate` header, first occurrence of a key wins."""
    members: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not _TRACESTATE_KEY.match(key) or not _TRACESTATE_VALUE.match(val):
            continue
        if key in seen:
            continue
        seen.add(key)
        members.append((key, val))
    return tuple(members[:_MAX_TRACESTATE_MEMBERS])


_current: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "lumin_trace_context", default=None
)


def current() -> TraceContext | None:
    """Return the trace context of the running code, or None outside any trace."""
    return _current.get()


@contextlib.contextmanager
def use(ctx: TraceContext) -> Iterator[TraceContext]:
    """Make `ctx` the current context inside the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def inject(headers: MutableMapping[str, str], ctx: TraceContext | None = None) -> None:
    """Write `traceparent` (and `tracestate`) of `ctx` or the current context into headers."""
    ctx = ctx or current()
    if ctx is None:
        return
    headers["traceparent"] = ctx.traceparent
    if ctx.state:
        headers["tracestate"] = ctx.tracestate


def extract(headers: Mapping[str, str]) -> TraceContext | None:
    """Read the context from incoming headers (case-insensitive names)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    parent = lowered.get("traceparent")
    if parent is None:
        return None
    return parse_traceparent(parent, lowered.get("tracestate"))
