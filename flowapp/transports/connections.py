"""HTTP connections that cannot be held open for free: a header deadline, a connection cap, no dangling bodies.

uvicorn waits forever for a request's headers and accepts connections until the process runs out of file
descriptors, so a few thousand half-open sockets starve the calls in progress. This protocol closes a
connection whose headers do not arrive in time, refuses new connections beyond the cap (before they cost
more than a socket), and drops a connection whose response is sent while its body is still unread (a body
whose sender stalls would otherwise keep it open). The body-read deadline itself is the app's
(`read_limited_body`), which answers 408 with the usual JSON error.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import TYPE_CHECKING, Any

from flowapp.settings import ServerSettings
from flowapp.transports.internals import HTTP_MODULE, base_class

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
else:  # private to uvicorn: see flowapp.transports.internals
    HttpToolsProtocol = base_class(HTTP_MODULE, "HttpToolsProtocol")

logger = logging.getLogger("flowapp.connections")

FD_RESERVE = 128
"""File descriptors kept free beyond the connection cap: models, logs, the recognizer and outgoing requests."""


def _plain_response(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n" + message
    )


_HEADERS_TOO_SLOW = _plain_response(b"408 Request Timeout", b"request headers not received in time")
_CROWDED = _plain_response(b"503 Service Unavailable", b"too many connections; retry later")


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guards above; `bind` gives it a server's settings."""

    header_timeout: float = 10.0
    max_connections: int = 1000
    _last_refusal_log = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    @classmethod
    def bind(cls, settings: ServerSettings) -> type[GuardedHttpProtocol]:
        cap = connection_cap(settings.max_connections)
        return type(cls.__name__, (cls,), {"header_timeout": settings.header_timeout_seconds, "max_connections": cap})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        crowded = len(self.connections) >= self.max_connections
        super().connection_made(transport)
        if crowded:
            self._log_refusal()
            transport.write(_CROWDED)
            transport.close()
            return
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:
            self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            self.server_state.total_requests += 1
            self.transport.close()
            return
        super().on_response_complete()

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            logger.debug("closed a connection whose request headers took over %.0f s", self.header_timeout)
            self.transport.write(_HEADERS_TOO_SLOW)
            self.transport.close()

    def _log_refusal(self) -> None:
        """Once a second at most: a flood of connections must not become a flood of log lines."""
        now = time.monotonic()
        if now - GuardedHttpProtocol._last_refusal_log >= 1.0:
            GuardedHttpProtocol._last_refusal_log = now
            logger.warning("refusing new connections: %d are open, the cap", self.max_connections)


def connection_cap(configured: int) -> int:
    """The configured cap, lowered to fit the process's file-descriptor limit with room to spare."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - FD_RESERVE >= configured:
        return configured
    fitted = max(1, soft - FD_RESERVE)
    logger.warning("connection cap lowered from %d to %d to fit the open-file limit %d", configured, fitted, soft)
    return fitted
