"""The one HTTP server of an observatory: OTLP/HTTP and log ingestion, status; token auth.

`start_server(observatory)` returns a running `Server` (``.url``, ``.token``, ``.stop()``);
`create_app` is the starlette app it serves, for in-process tests. See `lumin_nb.server.app` for
the routes and the answers to bad input.
"""

from __future__ import annotations

from lumin_nb.server.app import create_app
from lumin_nb.server.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_RATE_LIMIT_PER_S
from lumin_nb.server.server import Server, start_server

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_RATE_LIMIT_PER_S",
    "Server",
    "create_app",
    "start_server",
]
