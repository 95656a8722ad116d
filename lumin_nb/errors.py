"""Lumin's exception tree: every error a user can meet, each naming the problem and the fix.

::

    LuminError
    ├── ConfigError (ValueError)          unknown profile, unknown key, bad value
    ├── TimeParseError (ValueError)       since=/until= text Lumin cannot read
    ├── SchemaError (ValueError)          a batch that does not fit the event schema
    ├── UnknownColumnError (LookupError)  a filter or column name that does not exist
    ├── UnknownValueError (LookupError)   a value outside a closed set (an event kind)
    ├── QueryError (ValueError)           SQL that DuckDB refused, with the columns listed
    ├── StoreError (OSError)              a store folder that cannot be opened or written
    ├── IngestError (ValueError)          a payload format or pattern Lumin cannot read at all
    ├── WireError (ValueError)            a message that is not a Lumin agent message
    ├── ControlError (RuntimeError)       a control message not delivered or not answered
    ├── TracerBusyError (RuntimeError)    no sys.monitoring tool id free, or a tracer runs
    └── NotRunningError (RuntimeError)    an API call that needs `lm.start()` first

Messages follow the house form: what was wrong (with the value), what was expected, the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LuminError(Exception):
    """Base of every error Lumin raises on purpose."""


class ConfigError(LuminError, ValueError):
    """A profile, configuration key or value that Lumin does not know."""


class TimeParseError(LuminError, ValueError):
    """A `since=`/`until=` value that is not a time Lumin understands."""


class SchemaError(LuminError, ValueError):
    """A batch whose columns do not fit the event schema; lists every bad column."""


class UnknownColumnError(LuminError, LookupError):
    """A column or filter name that the events table does not have."""


class UnknownValueError(LuminError, LookupError):
    """A value outside a closed set, such as an event kind that does not exist."""


class QueryError(LuminError, ValueError):
    """SQL that the query engine refused."""


class StoreError(LuminError, OSError):
    """A store folder that cannot be opened, read or written."""


class IngestError(LuminError, ValueError):
    """An ingestion request Lumin cannot read at all (unknown format, bad pattern)."""


class WireError(LuminError, ValueError):
    """A message that is not a Lumin agent message (bad framing, payload or JSON)."""


class ControlError(LuminError, RuntimeError):
    """A control message that could not be delivered or was not answered in time."""


class TracerBusyError(LuminError, RuntimeError):
    """No `sys.monitoring` tool id is free, or another CallTracer holds the native backend."""


class NotRunningError(LuminError, RuntimeError):
    """An API call that needs a running observatory."""


def closest(name: str, options: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest option, or "" when none is close."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""
