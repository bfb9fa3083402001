"""Direct WebSocket delivery for the media hot path: messages in by callback, frames out by one write.

Plain ASGI hands every WebSocket message through a queue and a task switch, and every send through a
coroutine and the framework's wrappers. For a media stream that is 50 messages a second each way per call,
and with hundreds of calls on one core that overhead costs more than the calls' audio processing.

`DirectWebSocketProtocol` is uvicorn's sans-I/O WebSocket protocol (websockets does the handshake, the
parsing, pings and the closing handshake) offering one more ASGI extension, `flowapp.direct`. After
`websocket.accept`, an app may take the connection's `DirectChannel` and hand it a `DirectReceiver`: from
then on its messages are delivered synchronously as they are parsed, and `DirectChannel.text` writes a
frame straight to the transport. Under any other server (or Starlette's TestClient) the extension is
absent and the app stays on plain ASGI.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.frames import Frame
from websockets.http11 import Request

logger = logging.getLogger("flowapp.direct")

EXTENSION = "flowapp.direct"
WRITE_BUFFER_LIMIT = 256 * 1024
"""Bytes queued for a peer that does not read; past this the peer is given up (about 5 s of media)."""
INVALID_DATA = 1007
INTERNAL_ERROR = 1011


class DirectReceiver(Protocol):
    def on_text(self, text: str) -> None:
        """One whole text message. Must not raise (an exception closes the connection with 1011)."""
        ...

    def on_binary(self, data: bytes) -> None: ...

    def on_closed(self) -> None:
        """The connection is gone or closing: called once, whoever closed it."""
        ...


def open_direct(scope: Mapping[str, Any]) -> DirectChannel | None:
    """The connection's direct channel, when the server offers one (call it after `websocket.accept`)."""
    extension = scope.get("extensions", {}).get(EXTENSION)
    return extension["channel"]() if isinstance(extension, dict) else None


class DirectChannel:
    """The outbound side of an attached connection. Never blocks: it writes or gives up."""

    def __init__(self, protocol: DirectWebSocketProtocol) -> None:
        self._protocol = protocol

    @property
    def open(self) -> bool:
        protocol = self._protocol
        return not (protocol.close_sent or protocol.disconnected or protocol.transport.is_closing())

    def receive_with(self, receiver: DirectReceiver) -> None:
        """Take over delivery: messages already queued for ASGI are handed over first, in order."""
        self._protocol.attach(receiver)

    def pause_reading(self) -> None:
        """Backpressure: the peer's messages wait in the socket (those already read still come)."""
        protocol = self._protocol
        if not protocol.read_paused and not protocol.transport.is_closing():
            protocol.read_paused = True
            protocol.transport.pause_reading()

    def resume_reading(self) -> None:
        protocol = self._protocol
        if protocol.read_paused and not protocol.transport.is_closing():
            protocol.read_paused = False
            protocol.transport.resume_reading()

    def text(self, data: str) -> bool:
        """Send one text frame; False when it cannot go (closed, or the peer stopped reading)."""
        protocol = self._protocol
        if protocol.close_sent or protocol.disconnected:
            return False
        transport = protocol.transport
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            return False
        payload = data.encode()
        transport.write(_text_header(len(payload)) + payload)
        return True

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the peer's answer (or a timeout) then closes the transport."""
        protocol = self._protocol
        if protocol.close_sent or protocol.disconnected or protocol.transport.is_closing():
            return
        try:
            protocol.conn.send_close(code, reason[:120])
        except InvalidState:
            return
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))
        protocol.close_sent = True
        if protocol.read_paused:
            protocol.read_paused = False
            protocol.transport.resume_reading()
        protocol.close_timer = protocol.loop.call_later(protocol.close_timeout, protocol.transport.close)
        protocol.notify_closed()


def _text_header(length: int) -> bytes:
    """A final, unmasked text frame's header (servers never mask)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O protocol with the `flowapp.direct` extension; plain ASGI until a receiver attaches."""

    _receiver: DirectReceiver | None = None
    _closed_notified = False

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.handshake_initiated and not self.close_sent:
            self.scope["extensions"][EXTENSION] = {"channel": lambda: DirectChannel(self)}

    def attach(self, receiver: DirectReceiver) -> None:
        self._receiver = receiver
        while not self.queue.empty():
            message = self.queue.get_nowait()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                self._deliver(text if text is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                self.notify_closed()
        if self.read_paused and not self.close_sent:
            self.read_paused = False
            self.transport.resume_reading()

    def send_receive_event_to_app(self) -> None:
        receiver = self._receiver
        if receiver is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self._fail(INVALID_DATA, "invalid UTF-8 in a text message")
                return
            self._deliver(text)
        else:
            self._deliver(data)

    def _deliver(self, message: str | bytes) -> None:
        receiver = self._receiver
        assert receiver is not None
        try:
            if isinstance(message, str):
                receiver.on_text(message)
            else:
                receiver.on_binary(message)
        except Exception:
            logger.exception("a direct WebSocket receiver raised; closing the connection")
            self._fail(INTERNAL_ERROR, "internal error")

    def _fail(self, code: int, reason: str) -> None:
        DirectChannel(self).close(code, reason)

    def handle_close(self, event: Frame) -> None:
        super().handle_close(event)
        self.notify_closed()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.notify_closed()

    def notify_closed(self) -> None:
        if self._receiver is None or self._closed_notified:
            return
        self._closed_notified = True
        try:
            self._receiver.on_closed()
        except Exception:
            logger.exception("a direct WebSocket receiver raised on close")
