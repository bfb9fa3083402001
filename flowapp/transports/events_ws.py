"""`/ws`: the sipgate-style event WebSocket, one connection per call, JSON text frames both ways.

Events are read as they arrive and answered in order by one worker per connection, so a slow handler
never stops the reading, and a call's replies never overtake each other. While the connection is open the
call is registered in `app.calls`: the app (`session.push`) and the control API can send into it any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from flowapp.app import FlowApp
from flowapp.logs import RepeatLimiter, call_logger
from flowapp.protocol.actions import Action, BargeInNow
from flowapp.protocol.events import Event, SessionInfo, UnknownEventType, parse_event
from flowapp.session import NotConnected, SessionTaken, describe_call
from flowapp.settings import ServerSettings
from flowapp.transports.auth import API_TOKEN_HEADER, api_token_ok
from flowapp.transports.body import MalformedJson, decode_json
from flowapp.transports.context import flow_app, server_settings
from flowapp.transports.errors import field_errors
from flowapp.transports.replies import reply_body

logger = logging.getLogger("flowapp.websocket")

POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
QUEUE_LIMIT = 64
"""Events waiting for the worker; past this, reading pauses (backpressure) instead of buffering without end."""


class Channel:
    """Serialized sends on one WebSocket: replies, pushes and error frames come from different tasks."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.open = True
        self._lock = asyncio.Lock()

    async def send(self, data: Any) -> None:
        if not self.open:
            raise NotConnected("the WebSocket is closed")
        async with self._lock:
            try:
                await self.websocket.send_text(json.dumps(data))
            except Exception as exc:
                self.open = False
                raise NotConnected(f"the WebSocket is closed: {exc!r}") from exc

    async def close(self, code: int, reason: str) -> None:
        if not self.open:
            return
        self.open = False
        async with self._lock:
            try:
                await self.websocket.close(code=code, reason=reason)
            except Exception as exc:
                logger.info("closing the WebSocket failed (peer already gone): %r", exc)


class WebSocketCall:
    """A `LiveCall` carried by an event WebSocket: pushing means sending action frames to the platform."""

    transport = "websocket"

    def __init__(self, info: SessionInfo, channel: Channel) -> None:
        self.info = info
        self.channel = channel
        self.connected_since = datetime.now(UTC)

    async def barge_in(self) -> bool:
        """Forward a `barge_in` action; the platform stops whatever is playing."""
        if not self.channel.open:
            return False
        await self.push([BargeInNow(session_id=self.info.id)])
        return True

    async def push(self, actions: list[Action]) -> None:
        body = reply_body(actions)
        if body is not None:
            await self.channel.send(body)

    def describe(self) -> dict[str, Any]:
        return describe_call(self.info, self.transport, self.connected_since)


class EventConnection:
    """One platform connection: a reader that parses frames, a worker that answers events in order."""

    def __init__(self, app: FlowApp, websocket: WebSocket, settings: ServerSettings) -> None:
        self.app = app
        self.websocket = websocket
        self.settings = settings
        self.channel = Channel(websocket)
        self.call: WebSocketCall | None = None
        self._events: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._limiter = RepeatLimiter()

    async def run(self) -> None:
        worker = asyncio.create_task(self._answer_events())
        try:
            await self._read_frames()
            await self._events.put(None)
            await worker
        finally:
            worker.cancel()
            self.channel.open = False
            self._unregister()
            self._limiter.flush(logger)

    async def _read_frames(self) -> None:
        limit = self.settings.max_ws_message_bytes
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self._send_error("binary_frame", "send events as JSON text frames")
                continue
            raw = text.encode("utf-8")
            if len(raw) > limit:
                logger.warning("closing: a message of %d bytes exceeds the %d byte limit", len(raw), limit)
                await self.channel.close(MESSAGE_TOO_BIG, f"message exceeds {limit} bytes")
                return
            await self._accept_frame(raw)

    async def _accept_frame(self, raw: bytes) -> None:
        try:
            data = decode_json(raw)
        except MalformedJson as exc:
            await self._send_error("malformed_json", str(exc))
            return
        try:
            event = parse_event(data)
        except UnknownEventType as exc:
            self._limiter.log(logger, logging.INFO, "ignored event of unknown type %r", str(exc.event_type)[:64])
            return
        except (ValidationError, TypeError, ValueError) as exc:
            await self._send_error("invalid_event", field_errors(exc))
            return
        await self._events.put(event)

    async def _answer_events(self) -> None:
        while (event := await self._events.get()) is not None:
            if not await self._bind(event):
                continue
            log = call_logger(logger, event.session.id, event=event.type, transport="websocket")
            try:
                actions = await self.app.respond(event)
            except Exception:
                log.exception("reply failed; answered with the fallback")
                actions = self.app.fallback_actions(event.session.id)
            body = reply_body(actions)
            if body is not None:
                try:
                    await self.channel.send(body)
                except NotConnected:
                    self._limiter.log(log, logging.WARNING, "reply not delivered: the WebSocket closed")
            if event.type == "session_end":
                self._unregister()

    async def _send_error(self, error: str, detail: Any) -> None:
        with contextlib.suppress(NotConnected):
            await self.channel.send({"type": "error", "error": error, "detail": detail})

    async def _bind(self, event: Event) -> bool:
        """A connection carries one call at a time, and only a call no other connection owns."""
        info = event.session
        if self.call is not None and self.call.info.id == info.id:
            return True
        if self.call is not None:
            detail = (
                f"this connection carries session {self.call.info.id!r} until its session_end; "
                "open another connection for another call"
            )
            await self._refuse(event, "session_mismatch", detail)
            return False
        call = WebSocketCall(info, self.channel)
        try:
            self.app.calls.add(call, owner=self)
        except SessionTaken as exc:
            await self._refuse(event, "session_taken", str(exc))
            return False
        self.call = call
        self._limiter.log(call_logger(logger, info.id, transport="websocket"), logging.INFO, "call connected")
        return True

    async def _refuse(self, event: Event, error: str, detail: str) -> None:
        log = call_logger(logger, event.session.id, event=event.type, transport="websocket")
        self._limiter.log(log, logging.WARNING, "event refused: %s", error)
        await self._send_error(error, detail)

    def _unregister(self) -> None:
        if self.call is None:
            return
        self.app.calls.remove(self.call.info.id, owner=self)
        log = call_logger(logger, self.call.info.id, transport="websocket")
        self._limiter.log(log, logging.INFO, "call disconnected")
        self.call = None


def websocket_authorized(websocket: WebSocket, settings: ServerSettings) -> bool:
    """The API token, from the header or `?token=` (browsers cannot set headers on a WebSocket).

    A body signature cannot protect a WebSocket, so a server secured only by `webhook_secret` refuses them.
    """
    if settings.api_token is None:
        return settings.webhook_secret is None
    presented = websocket.headers.get(API_TOKEN_HEADER) or websocket.query_params.get("token")
    return api_token_ok(presented, settings)


async def events_websocket(websocket: WebSocket) -> None:
    settings = server_settings(websocket)
    if not websocket_authorized(websocket, settings):
        logger.warning("refused a WebSocket without a valid %s", API_TOKEN_HEADER)
        await websocket.close(code=POLICY_VIOLATION)
        return
    await websocket.accept()
    await EventConnection(flow_app(websocket), websocket, settings).run()


routes = [WebSocketRoute("/ws", events_websocket)]
