"""The server's life cycle, auth and status routes, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import httpx
import pytest

from lumin_nb._observatory import Observatory
from lumin_nb.errors import LuminError
from lumin_nb.server import Server, start_server


def test_server_listens_on_loopback_free_port_with_random_token(server: Server) -> None:
    assert server.host == "127.0.0.1"
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert len(server.token) >= 40
    assert any(t.name == "lumin-serve" for t in threading.enumerate())


def test_health_needs_no_token(server: Server) -> None:
    r = httpx.get(f"{server.url}/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_status_needs_the_token(server: Server, obs: Observatory) -> None:
    missing = httpx.get(f"{server.url}/status")
    assert missing.status_code == 401
    assert "no Authorization header" in missing.json()["error"]
    assert "Bearer" in missing.json()["expected"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.get(f"{server.url}/status", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "not this server's" in wrong.json()["error"]
    ok = httpx.get(f"{server.url}/status", headers={"Authorization": f"Bearer {server.token}"})
    assert ok.status_code == 200
    assert ok.json()["state"] == "running"
    assert ok.json()["producer"] == obs.producer


def test_given_token_is_used(make_server: Callable[..., Server]) -> None:
    srv = make_server(token="s3cret-token")
    r = httpx.get(f"{srv.url}/status", headers={"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 200


def test_unknown_route_answers_json_naming_the_routes(server: Server) -> None:
    r = httpx.post(f"{server.url}/v1/profiles", headers={"Authorization": f"Bearer {server.token}"})
    assert r.status_code == 404
    assert "/v1/traces" in r.json()["expected"]


def test_stop_is_idempotent_joins_the_thread_and_frees_the_port(obs: Observatory) -> None:
    srv = start_server(obs)
    port = srv.port
    srv.stop()
    srv.stop()
    assert not any(t.name == "lumin-serve" for t in threading.enumerate())
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")
    with socket.socket() as sock:  # the port can be bound again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_busy_port_raises_naming_the_fix(server: Server, obs: Observatory) -> None:
    with pytest.raises(LuminError, match="port=0"):
        start_server(obs, port=server.port)


def test_a_stopped_observatory_cannot_serve(obs: Observatory) -> None:
    import lumin_nb as lm

    lm.stop()
    with pytest.raises(LuminError, match=r"lm\.start"):
        start_server(obs)
