"""The direct channel on a real uvicorn: delivery in order, frames of every length, both ways of closing."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from flowapp.transports import direct
from flowapp.transports.direct import DirectChannel, DirectWebSocketProtocol, open_direct


@dataclass
class Echo:
    """A receiver that echoes text, counts closes, and raises on the text "boom"."""

    channel: DirectChannel | None = None
    texts: list[str] = field(default_factory=list)
    binaries: list[bytes] = field(default_factory=list)
    closed = 0
    flooded = 0
    open_after_flood = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_text(self, text: str) -> None:
        if text == "boom":
            raise RuntimeError("boom")
        self.texts.append(text)
        assert self.channel is not None
        if text.startswith("repeat "):
            _, size = text.split()
            self.channel.text("x" * int(size))
        elif text == "flood":
            sent = 0
            while self.channel.text("y" * 1000) and sent < 200_000:
                sent += 1
            self.open_after_flood = self.channel.open
            self.flooded = sent
        elif text == "close please":
            self.channel.close(4000, "as asked")
        else:
            self.channel.text(text)

    def on_binary(self, data: bytes) -> None:
        self.binaries.append(data)

    def on_closed(self) -> None:
        self.closed += 1
        self.done.set()


@dataclass
class Served:
    url: str
    receivers: list[Echo]
    offered: list[bool]


def serve(ws: object, before_attach: Callable[[], object] | None = None) -> Iterator[Served]:
    receivers: list[Echo] = []
    offered: list[bool] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        if before_attach is not None:
            await asyncio.sleep(0.2)  # let the client's first messages queue up for ASGI
        channel = open_direct(websocket.scope)
        offered.append(channel is not None)
        if channel is None:
            await websocket.close(1000)
            return
        echo = Echo(channel)
        receivers.append(echo)
        channel.receive_with(echo)
        await echo.done.wait()

    config = uvicorn.Config(
        Starlette(routes=[WebSocketRoute("/echo", endpoint)]),
        host="127.0.0.1",
        port=0,
        ws=ws,  # type: ignore[arg-type]
        log_config=None,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(f"ws://127.0.0.1:{port}/echo", receivers, offered)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def served() -> Iterator[Served]:
    yield from serve(DirectWebSocketProtocol)


@pytest.fixture
def served_late() -> Iterator[Served]:
    yield from serve(DirectWebSocketProtocol, before_attach=lambda: None)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_texts_of_every_header_length_come_back_intact(served: Served) -> None:
    async with connect(served.url, max_size=None) as ws:
        for size in (0, 1, 125, 126, 65535, 65536, 200_000):
            await ws.send(f"repeat {size}")
            assert await ws.recv() == "x" * size
        await ws.send("héllo ✓")
        assert await ws.recv() == "héllo ✓"
    assert served.offered == [True]


async def test_messages_sent_before_the_receiver_attaches_arrive_first_and_in_order(served_late: Served) -> None:
    async with connect(served_late.url) as ws:
        for k in range(20):
            await ws.send(f"m{k}")
        await ws.send(b"\x00\x01")
        replies = [await ws.recv() for _ in range(20)]
    assert replies == [f"m{k}" for k in range(20)]
    await wait_until(lambda: bool(served_late.receivers) and served_late.receivers[0].closed == 1)
    assert served_late.receivers[0].binaries == [b"\x00\x01"]


async def test_server_close_sends_code_and_reason_and_reports_closed_once(served: Served) -> None:
    async with connect(served.url) as ws:
        await ws.send("close please")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "as asked")
    await asyncio.sleep(0.2)
    assert served.receivers[0].closed == 1
    assert not served.receivers[0].channel.open  # type: ignore[union-attr]
    assert served.receivers[0].channel.text("late") is False  # type: ignore[union-attr]


async def test_client_close_and_a_dropped_socket_report_closed_once(served: Served) -> None:
    async with connect(served.url) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    async with connect(served.url) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        ws.transport.abort()
    await wait_until(lambda: len(served.receivers) == 2 and all(r.closed for r in served.receivers))
    await asyncio.sleep(0.2)
    assert [r.closed for r in served.receivers] == [1, 1]


async def test_a_receiver_that_raises_closes_its_connection_with_1011(served: Served) -> None:
    async with connect(served.url) as ws:
        await ws.send("boom")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    async with connect(served.url) as ws:
        await ws.send("still serving")
        assert await ws.recv() == "still serving"


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(served: Served) -> None:
    host, port = served.url.removeprefix("ws://").removesuffix("/echo").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /echo HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"\x81\x82\x00\x00\x00\x00\xff\xfe")  # a masked text frame holding invalid UTF-8
    frame = await asyncio.wait_for(reader.read(64), 5)
    assert frame[0] == 0x88 and int.from_bytes(frame[2:4], "big") == 1007
    writer.close()


async def test_a_peer_that_stops_reading_is_given_up_at_the_buffer_limit(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct, "WRITE_BUFFER_LIMIT", 64 * 1024)
    host, port = served.url.removeprefix("ws://").removesuffix("/echo").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /echo HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    sock.recv(4096)
    sock.sendall(b"\x81\x85\x00\x00\x00\x00flood")  # then never read again
    await wait_until(lambda: bool(served.receivers) and served.receivers[0].flooded > 0)
    echo = served.receivers[0]
    assert 0 < echo.flooded < 200_000, "text() says False once the peer's buffer is full"
    assert echo.open_after_flood, "a full buffer is not a closed connection: the caller decides what to do"
    sock.close()


async def test_plain_uvicorn_offers_no_direct_channel() -> None:
    for served in serve("websockets-sansio"):
        async with connect(served.url) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert served.offered == [False]
