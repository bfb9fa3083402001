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
from typing import TYPE_CHECKING, Any, Protocol

from websockets.exceptions import InvalidState
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import State

from flowapp.transports.internals import WS_MODULE, base_class

if TYPE_CHECKING:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
else:  # private to uvicorn: see flowapp.transports.internals
    WebSocketsSansIOProtocol = base_class(WS_MODULE, "WebSocketsSansIOProtocol")

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

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
    """uvicorn's sans-I/O protocol with the `flowapp.direct` extension; plain ASGI until a receiver attaches.

    Incoming bytes are cut into whole frames here before websockets sees them. For an attached receiver,
    a complete, final, masked, uncompressed text frame (every media message) is unmasked (with websockets'
    C helper) and delivered at once: websockets' general parser costs more per message than the rest of
    the receive path together. Every other frame (control frames, fragments, compressed or binary
    frames, anything malformed) goes to websockets whole, so its parser always starts at a frame boundary
    and keeps deciding everything the protocol requires.
    """

    _receiver: DirectReceiver | None = None
    _closed_notified = False
    _upgraded = False
    """The upgrade request has gone to websockets whole: from here on the bytes are frames."""
    _request_tail = b""
    _pending = b""
    """The start of a frame whose end has not arrived yet."""
    _bypass = False
    """A frame websockets will fail the connection on was handed over: everything after it goes there too."""

    def data_received(self, data: bytes) -> None:
        if self._bypass:
            super().data_received(data)
            return
        if not self._upgraded:
            data = self._pass_request(data)
        if data:
            self._split_frames(self._pending + data if self._pending else data)

    def _pass_request(self, data: bytes) -> bytes:
        """Hand websockets the HTTP upgrade request, and return what follows it (frames sent right behind)."""
        seen = self._request_tail + data
        end = seen.find(b"\r\n\r\n")
        if end < 0:
            self._request_tail = seen[-3:]
            super().data_received(data)
            return b""
        cut = end + 4 - len(self._request_tail)
        self._upgraded = True
        self._request_tail = b""
        super().data_received(data[:cut])
        return data[cut:]

    def _split_frames(self, data: bytes) -> None:
        pos, size = 0, len(data)
        slow_from: int | None = None
        limit = self.conn.max_message_size
        fast = self._fast_path_open()
        while size - pos >= 2:
            first, second = data[pos], data[pos + 1]
            length, head = second & 0x7F, pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = data[pos + 2] << 8 | data[pos + 3], pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
            if not second & 0x80 or (limit is not None and length > limit):
                self._bypass = True  # unmasked or too big: websockets closes with 1002 or 1009
                slow_from = pos if slow_from is None else slow_from
                pos = size
                break
            end = head + 4 + length
            if end > size:
                break
            if fast and first == 0x81 and slow_from is not None:
                super().data_received(data[slow_from:pos])  # frames before this one go first, in order
                slow_from = None
                fast = self._fast_path_open()
            if fast and first == 0x81:
                self._deliver_text(apply_mask(data[head + 4 : end], data[head : head + 4]))
                fast = not self.close_sent  # the receiver may have closed; nothing else changed
            elif slow_from is None:
                slow_from = pos
            pos = end
        if slow_from is not None:
            super().data_received(data[slow_from:pos])
        self._pending = data[pos:] if pos < size else b""

    def _fast_path_open(self) -> bool:
        conn = self.conn
        return (
            self._receiver is not None
            and not self.close_sent
            and conn.state is State.OPEN
            and not conn.expect_continuation_frame
        )

    def _deliver_text(self, payload: bytes) -> None:
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            self._fail(INVALID_DATA, "invalid UTF-8 in a text message")
            return
        self._deliver(text)

    def handle_connect(self, event: Request) -> None:
        # No permessage-deflate, whatever the client offers: compressed frames cannot take the fast path, and
        # carriers' messages (a few hundred bytes of base64 audio or JSON) gain little from it.
        self.conn.available_extensions = []
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
            self._deliver_text(data)
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
