"""The observatory's one HTTP server: uvicorn serving `create_app` in a ``lumin-serve`` thread.

`start_server` binds the socket itself (127.0.0.1 by default; port 0 picks a free port, so
the port is known before the thread starts), starts uvicorn on it and returns once uvicorn
accepts connections. `Server.stop` asks uvicorn to exit, joins the thread and closes the
socket; it is idempotent. uvicorn runs with ``log_config=None`` (it must not reconfigure the
process's logging, which the observatory's log collector watches), no lifespan and no signal
handlers (it is not the main thread).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import TYPE_CHECKING, Final

from lumin_nb.errors import LuminError
from lumin_nb.server.app import Ingestor, create_app
from lumin_nb.server.auth import new_token
from lumin_nb.server.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_RATE_LIMIT_PER_S

if TYPE_CHECKING:
    import pyarrow as pa
    import uvicorn
    from starlette.applications import Starlette

    from lumin_nb._observatory import Observatory

_START_TIMEOUT_S: Final = 10.0
_STOP_TIMEOUT_S: Final = 10.0


class Server:
    """A running HTTP server of an observatory.

    Attributes
    ----------
    url
        ``http://host:port`` (OTLP exporters take ``url + "/v1/traces"``).
    token
        The bearer token every route but ``/health`` requires.
    host, port
        Where it listens.
    app
        The starlette app (for ``httpx.ASGITransport`` in tests).
    """

    def __init__(
        self,
        app: Starlette,
        ingestor: Ingestor,
        token: str,
        sock: socket.socket,
        server: uvicorn.Server,
        thread: threading.Thread,
    ) -> None:
        self.app = app
        self.token = token
        host, port = sock.getsockname()[:2]
        self.host: str = host
        self.port: int = port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        self._ingestor = ingestor
        self._sock = sock
        self._server = server
        self._thread = thread
        self._lock = threading.Lock()
        self.is_running = True

    def stop(self) -> None:
        """Stop serving, join the thread and free the port (idempotent)."""
        with self._lock:
            if not self.is_running:
                return
            self.is_running = False
            self._server.should_exit = True
            self._thread.join(_STOP_TIMEOUT_S)
            if self._thread.is_alive():  # a stuck request: stop waiting for it
                self._server.force_exit = True
                self._thread.join(_STOP_TIMEOUT_S)
            self._sock.close()

    def rejected(self) -> pa.Table:
        """Return the records this server rejected (line_no, raw, reason), oldest first."""
        return self._ingestor.rejected()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<lumin Server {self.url} {state}>"


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a name such as "localhost": resolved by bind
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise LuminError(
            f"the HTTP server cannot listen on {host}:{port}: {err.strerror or err}.\n"
            "Expected a free port on a local address.\n"
            "Fix: lm.serve(port=0) picks a free port"
        ) from err
    sock.listen(128)
    sock.setblocking(False)
    return sock


def start_server(
    observatory: Observatory,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_limit_per_s: float | None = DEFAULT_RATE_LIMIT_PER_S,
) -> Server:
    """Start the HTTP server of `observatory` in a background thread and return it.

    Parameters
    ----------
    observatory
        A running (writable) observatory; what the server accepts goes to its store.
    host, port
        Where to listen; port 0 picks a free port (read it from `Server.port`).
    token
        The bearer token (default: a new random one).
    max_body_bytes
        The largest request body, compressed or not (413 above it).
    rate_limit_per_s
        Requests per second per client address (429 above it); None turns it off.

    Raises
    ------
    LuminError
        When the observatory is read-only or stopped, or the port cannot be bound.

    Examples
    --------
    >>> srv = start_server(lm.start())  # doctest: +SKIP
    >>> srv.url, srv.token  # doctest: +SKIP
    """
    import uvicorn

    if observatory.read_only or not observatory.is_running:
        raise LuminError(
            "the HTTP server needs a running observatory that can write "
            f"(this one is {'read-only' if observatory.read_only else 'stopped'}).\n"
            "Fix: lm.start() first, then lm.serve()"
        )
    if max_body_bytes <= 0:
        raise LuminError(
            f"max_body_bytes={max_body_bytes!r}: expected a positive number of bytes.\n"
            "Fix: lm.serve(max_body_bytes=16 << 20)"
        )
    token = token or new_token()
    ingestor = Ingestor(observatory)
    app = create_app(
        observatory,
        token=token,
        max_body_bytes=max_body_bytes,
        rate_limit_per_s=rate_limit_per_s,
        ingestor=ingestor,
    )
    sock = _bind(host, port)
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as err:  # reported to start_server's caller, not lost
            failure.append(err)

    thread = threading.Thread(target=run, name="lumin-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    ready = threading.Event()
    while not server.started:
        if failure or not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(_STOP_TIMEOUT_S)
            sock.close()
            why = repr(failure[0]) if failure else "it did not start in time"
            raise LuminError(f"the HTTP server failed to start: {why}.\nFix: lm.serve(port=0)")
        ready.wait(0.005)
    return Server(app, ingestor, token, sock, server, thread)
