"""Connections that never finish are closed, and a crowd of them cannot starve the calls in progress."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest
from websockets.asyncio.client import connect

from flowapp.settings import ServerSettings
from flowapp.transports.connections import FD_RESERVE, connection_cap
from tests.conftest import LiveServer, StartServer
from tests.transports.helpers import event, greeting_app


def port_of(server: LiveServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


@contextmanager
def raw_connection(server: LiveServer, sent: bytes = b"") -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as sock:
        if sent:
            sock.sendall(sent)
        yield sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received, time.monotonic() - started


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Le"],
    ids=["nothing", "partial-headers", "partial-header-line"],
)
def test_headers_that_never_end_are_closed_after_the_header_timeout(live_server: StartServer, sent: bytes) -> None:
    server = live_server(greeting_app(), ServerSettings(header_timeout_seconds=0.5))
    with raw_connection(server, sent) as sock:
        received, seconds = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert 0.3 < seconds < 5


def test_a_kept_alive_connection_gets_the_header_timeout_for_its_next_request(live_server: StartServer) -> None:
    server = live_server(greeting_app(), ServerSettings(header_timeout_seconds=0.5), timeout_keep_alive=30)
    with raw_connection(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost")
        received, seconds = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 ") and seconds < 5


@pytest.mark.parametrize(
    "sent",
    [
        b'Content-Length: 100\r\n\r\n{"type":"s',
        b'Transfer-Encoding: chunked\r\n\r\n10\r\n{"type":"session',
    ],
    ids=["short-content-length", "truncated-chunked"],
)
def test_a_body_that_never_ends_gets_408_and_the_connection_closes(live_server: StartServer, sent: bytes) -> None:
    server = live_server(greeting_app(), ServerSettings(body_timeout_seconds=0.5))
    with raw_connection(
        server, b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + sent
    ) as sock:
        received, seconds = read_until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body) == {"error": "request_timeout", "detail": "request body not received within 0.5 s"}
    assert 0.3 < seconds < 5


def test_a_response_sent_before_the_body_ended_closes_the_connection(live_server: StartServer) -> None:
    server = live_server(greeting_app(), timeout_keep_alive=30)
    with raw_connection(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789") as sock:
        received, seconds = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 200 ") and seconds < 5


async def test_beyond_the_cap_new_connections_are_refused_and_live_calls_go_on(live_server: StartServer) -> None:
    server = live_server(greeting_app(), ServerSettings(max_connections=6, header_timeout_seconds=30))
    async with connect(server.ws_url + "/ws") as ws:
        await ws.send(json.dumps(event("session_start")))
        assert json.loads(await asyncio.wait_for(ws.recv(), 3))["text"] == "Welcome!"
        with ExitStack() as stack:
            idle = [stack.enter_context(raw_connection(server)) for _ in range(5)]
            await asyncio.sleep(0.2)
            with raw_connection(server) as refused:
                received, _ = read_until_closed(refused)
            assert received.startswith(b"HTTP/1.1 503 ")
            async with httpx.AsyncClient() as http:
                with pytest.raises(httpx.HTTPError):
                    (await http.get(server.base_url + "/healthz")).raise_for_status()

            await ws.send(json.dumps(event("user_speak", text="hello")))
            assert json.loads(await asyncio.wait_for(ws.recv(), 3))["text"] == "Heard you."
            assert len(idle) == 5
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient() as http:
            assert (await http.get(server.base_url + "/healthz")).status_code == 200


def test_the_cap_fits_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("resource.getrlimit", lambda _: (1024, 4096))
    assert connection_cap(5000) == 1024 - FD_RESERVE
    assert connection_cap(500) == 500
