"""How SIP messages travel: a UDP peer address, or a TCP connection framed by Content-Length.

A TCP connection is the kind of resource a scanner holds open: its source is checked against the
allow-list on connect, its buffer is bounded, and it is closed when it sends nothing for `IDLE_SECONDS`
while it carries no call.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Protocol, cast

from flowapp.transports.sip.message import MAX_MESSAGE_BYTES

logger = logging.getLogger("flowapp.sip")

IDLE_SECONDS = 60.0
MAX_TCP_CONNECTIONS = 1000
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,6})[ \t]*$", re.IGNORECASE | re.MULTILINE)


class Link(Protocol):
    """Where a dialog's messages go, and how they got there."""

    peer: tuple[str, int]
    name: str
    """`UDP` or `TCP`, as in a Via header."""
    reliable: bool

    def send(self, data: bytes) -> None: ...


class UdpLink:
    name = "UDP"
    reliable = False

    def __init__(self, transport: Callable[[], asyncio.DatagramTransport | None], peer: tuple[str, int]) -> None:
        self._transport = transport
        self.peer = peer

    def send(self, data: bytes) -> None:
        transport = self._transport()
        if transport is not None and not transport.is_closing():
            transport.sendto(data, self.peer)


class TcpLink(asyncio.Protocol):
    """One TCP connection: messages cut out of the stream by Content-Length, then handed to `on_message`."""

    name = "TCP"
    reliable = True
    open_links = 0

    def __init__(
        self,
        allowed: Callable[[str], bool],
        on_message: Callable[[bytes, Link], None],
        busy: Callable[[TcpLink], bool],
    ) -> None:
        self.peer = ("", 0)
        self._allowed = allowed
        self._on_message = on_message
        self._busy = busy
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        if not self._allowed(self.peer[0]) or TcpLink.open_links >= MAX_TCP_CONNECTIONS:
            self._transport.abort()
            return
        TcpLink.open_links += 1
        self._counted = True
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            TcpLink.open_links -= 1
            self._counted = False
        if self._idle is not None:
            self._idle.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._arm_idle()
        while self._buffer and self._transport is not None and not self._transport.is_closing():
            stripped = self._buffer.lstrip(b"\r\n")
            if len(stripped) != len(self._buffer):
                self._buffer = stripped
                continue
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self._buffer) > MAX_MESSAGE_BYTES:
                    self._drop("headers over the size limit")
                return
            length = _CONTENT_LENGTH.search(self._buffer[:head_end])
            if length is None:
                self._drop("a message without Content-Length on a stream")
                return
            end = head_end + 4 + int(length.group(1))
            if end > MAX_MESSAGE_BYTES:
                self._drop("message over the size limit")
                return
            if len(self._buffer) < end:
                return
            message, self._buffer = self._buffer[:end], self._buffer[end:]
            self._on_message(message, self)

    def send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _drop(self, why: str) -> None:
        logger.warning("closing SIP over TCP from %s: %s", self.peer[0], why)
        if self._transport is not None:
            self._transport.abort()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._idle_check)

    def _idle_check(self) -> None:
        if self._busy(self):
            self._arm_idle()
        elif self._transport is not None:
            self._transport.close()
