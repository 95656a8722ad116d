"""Source: `logging` records become `log` events (OpenTelemetry severity numbers).

A handler on the root logger appends each record's fields to an EventBuilder; the message is
formatted once, `exc_info` is kept as a formatted traceback in attrs. The handler never raises
into the program: a record it cannot convert is counted and skipped.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Final

from lumin_nb import context
from lumin_nb.event import EventBuilder

_STANDARD_ATTRS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def otel_severity(levelno: int) -> int:
    """Return the OpenTelemetry severity number of a `logging` level (DEBUG 5 ... CRITICAL 21)."""
    if levelno >= logging.CRITICAL:
        return 21
    if levelno >= logging.ERROR:
        return 17
    if levelno >= logging.WARNING:
        return 13
    if levelno >= logging.INFO:
        return 9
    if levelno >= logging.DEBUG:
        return 5
    return 1


class LogCollector(logging.Handler):
    """A logging handler feeding log events to Lumin; `install()` puts it on the root logger."""

    def __init__(self, builder: EventBuilder, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.builder = builder
        self.failed = 0
        self._root_level: int | None = None

    def install(self) -> None:
        """Attach to the root logger, lowering its level to ours if needed (restored later)."""
        root = logging.getLogger()
        if self not in root.handlers:
            root.addHandler(self)
        if root.level > self.level or root.level == logging.NOTSET:
            self._root_level = root.level
            root.setLevel(self.level)

    def uninstall(self) -> None:
        """Detach from the root logger and restore its level."""
        root = logging.getLogger()
        root.removeHandler(self)
        if self._root_level is not None:
            root.setLevel(self._root_level)
            self._root_level = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("lumin_nb"):
            return  # Lumin's own logs would feed back into themselves
        try:
            attrs: dict[str, object] = {
                "logger": record.name,
                "level": record.levelname,
                "code.filepath": record.pathname,
                "code.lineno": record.lineno,
                "code.function": record.funcName,
            }
            extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
            for key, value in extra.items():
                attrs[key] = value if isinstance(value, str | int | float | bool) else repr(value)
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                attrs["exception.type"] = type(exc).__qualname__
                attrs["exception.message"] = str(exc)
                attrs["exception.stacktrace"] = "".join(traceback.format_exception(exc))
            ctx = context.current()  # the W3C trace this record was logged in, if any
            self.builder.append(
                "log",
                ts=int(record.created * 1e9),
                trace_id=ctx.trace_id if ctx is not None else None,
                span_id=ctx.span_id if ctx is not None else None,
                source_type="internal_log",
                severity=otel_severity(record.levelno),
                tid=record.thread,
                task=getattr(record, "taskName", None),
                entity=record.name,
                message=record.getMessage(),
                attrs=json.dumps(attrs, default=repr),
            )
        except Exception:
            self.failed += 1
