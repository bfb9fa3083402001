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
from uvicorn.server import ServerState
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


# The frame splitter, byte by byte: a protocol instance on an in-memory transport --------------------------


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv1: bool = False) -> bytes:
    key = os.urandom(4) if masked else b""
    n = len(payload)
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        head = bytes((first, (0x80 if masked else 0) | n))
    elif n < 65536:
        head = bytes((first, (0x80 if masked else 0) | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, (0x80 if masked else 0) | 127)) + n.to_bytes(8, "big")
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if masked else payload
    return head + key + body


UPGRADE = (
    b"GET /echo HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def open_in_memory(max_size: int = 1 << 20) -> tuple[DirectWebSocketProtocol, MemoryTransport, Echo]:
    echoes: list[Echo] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        channel = open_direct(websocket.scope)
        assert channel is not None
        echo = Echo(channel)
        echoes.append(echo)
        channel.receive_with(echo)
        await echo.done.wait()

    config = uvicorn.Config(
        Starlette(routes=[WebSocketRoute("/echo", endpoint)]), ws_max_size=max_size, log_config=None
    )
    config.load()
    protocol = DirectWebSocketProtocol(config, ServerState(), {})
    transport = MemoryTransport()
    protocol.connection_made(transport)
    return protocol, transport, echoes  # type: ignore[return-value]


async def attached(protocol: DirectWebSocketProtocol, echoes: object) -> Echo:
    found: list[Echo] = echoes  # type: ignore[assignment]
    await wait_until(lambda: bool(found))
    return found[0]


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked server frame in `data` (after the 101 response)."""
    data = data[data.index(b"\r\n\r\n") + 4 :]
    out = []
    while data:
        n, pos = data[1] & 0x7F, 2
        if n == 126:
            n, pos = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, pos = int.from_bytes(data[2:10], "big"), 10
        out.append((data[0] & 0x0F, data[pos : pos + n]))
        data = data[pos + n :]
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 100_000])
async def test_frames_in_any_chunking_arrive_whole_and_in_order(chunk: int) -> None:
    protocol, transport, echoes = await open_in_memory()
    protocol.data_received(UPGRADE + client_frame(0x1, b"pipelined behind the request"))
    echo = await attached(protocol, echoes)
    stream = (
        client_frame(0x9, b"ping!")
        + client_frame(0x1, ("ü" * 100).encode())
        + client_frame(0x1, b"frag", fin=False)
        + client_frame(0x0, b"mented", fin=True)
        + client_frame(0x2, b"\x00\x01")
        + client_frame(0x1, b"x" * 70_000)
        + client_frame(0x1, b"")
        + client_frame(0x1, b"last")
    )
    for k in range(0, len(stream), chunk):
        protocol.data_received(stream[k : k + chunk])
    await wait_until(lambda: len(echo.texts) == 6)
    assert echo.texts == ["pipelined behind the request", "ü" * 100, "fragmented", "x" * 70_000, "", "last"]
    assert echo.binaries == [b"\x00\x01"]
    assert (0xA, b"ping!") in server_frames(bytes(transport.written)), "the ping was answered by websockets"
    protocol.connection_lost(None)


async def test_an_unmasked_client_frame_fails_the_connection_with_1002() -> None:
    protocol, transport, echoes = await open_in_memory()
    protocol.data_received(UPGRADE)
    echo = await attached(protocol, echoes)
    protocol.data_received(client_frame(0x1, b"fine") + client_frame(0x1, b"unmasked", masked=False))
    protocol.data_received(client_frame(0x1, b"never delivered"))
    assert echo.texts == ["fine"]
    close = [payload for opcode, payload in server_frames(bytes(transport.written)) if opcode == 0x8]
    assert close and int.from_bytes(close[0][:2], "big") == 1002
    protocol.connection_lost(None)


async def test_a_frame_over_the_size_limit_fails_the_connection_with_1009() -> None:
    protocol, transport, echoes = await open_in_memory(max_size=1000)
    protocol.data_received(UPGRADE)
    echo = await attached(protocol, echoes)
    protocol.data_received(client_frame(0x1, b"y" * 1001)[:50])
    assert echo.texts == []
    close = [payload for opcode, payload in server_frames(bytes(transport.written)) if opcode == 0x8]
    assert close and int.from_bytes(close[0][:2], "big") == 1009
    protocol.connection_lost(None)


async def test_text_after_the_peer_closes_is_not_delivered() -> None:
    protocol, _, echoes = await open_in_memory()
    protocol.data_received(UPGRADE)
    echo = await attached(protocol, echoes)
    protocol.data_received(client_frame(0x8, (1000).to_bytes(2, "big")) + client_frame(0x1, b"after close"))
    assert echo.texts == [] and echo.closed == 1
    protocol.connection_lost(None)


async def test_plain_text_frames_bypass_the_websockets_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    protocol, _, echoes = await open_in_memory()
    protocol.data_received(UPGRADE)
    echo = await attached(protocol, echoes)
    parsed: list[bytes] = []
    receive_data = protocol.conn.receive_data
    monkeypatch.setattr(protocol.conn, "receive_data", lambda data: (parsed.append(bytes(data)), receive_data(data)))
    texts = [client_frame(0x1, f"media {k}".encode()) for k in range(50)]
    protocol.data_received(b"".join(texts[:25]))
    protocol.data_received(b"".join(texts[25:]) + client_frame(0x9, b"p"))
    assert echo.texts == [f"media {k}" for k in range(50)]
    assert len(parsed) == 1 and parsed[0].startswith(b"\x89"), "only the ping went through websockets"
    protocol.connection_lost(None)


async def test_a_client_offering_permessage_deflate_is_declined_and_keeps_the_fast_path(served: Served) -> None:
    async with connect(served.url) as ws:  # websockets offers permessage-deflate by default
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.protocol.extensions == []
        for k in range(20):
            await ws.send(f"media {k}")
            assert await ws.recv() == f"media {k}"
    assert served.offered == [True]
