"""Remote apps over the event WebSocket: one connection per call, events out, actions in at any time.

This is the sipgate-style WebSocket transport seen from the platform's side: flowapp opens a connection
to the app for each call, sends every event as a JSON text frame, and runs whatever actions the app sends
back, whenever it sends them (a reply, or a `barge_in` the app decides on by itself). Replies are not tied
to events on this transport, so `respond` returns no actions: they reach the call through the live-call
registry, as the control API's pushed actions do. A connection that cannot be made or breaks gets the
fallback for the event at hand and is tried again on the next one; the call's audio never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import websockets
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection

from flowapp.app import HandlerResult, to_actions
from flowapp.logs import call_logger
from flowapp.protocol.actions import Action, foreign, parse_actions, with_session
from flowapp.protocol.events import NO_REPLY_EVENTS, Event
from flowapp.session import NotConnected, SessionRegistry
from flowapp.transports.auth import API_TOKEN_HEADER

logger = logging.getLogger("flowapp.remote_ws")

CLOSE_GRACE_SECONDS = 1.0
"""After `session_end`, how long the app may still send before the connection is closed."""


@dataclass
class _Link:
    connection: ClientConnection
    reader: asyncio.Task[None]


class RemoteWebSocketApp:
    """A `Responder` backed by an app at a `ws://` or `wss://` URL."""

    def __init__(
        self,
        url: str,
        calls: SessionRegistry,
        *,
        api_token: str | None = None,
        timeout: float = 1.0,
        fallback: HandlerResult = None,
        max_message_bytes: int = 256 * 1024,
    ) -> None:
        self.url = url
        self.calls = calls
        self.api_token = api_token
        self.timeout = timeout
        self.fallback = fallback
        self.max_message_bytes = max_message_bytes
        self._links: dict[str, _Link] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def respond(self, event: Event) -> list[Action]:
        session_id = event.session.id
        log = call_logger(logger, session_id, event=event.type, app_url=self.url)
        body = json.dumps(event.model_dump(mode="json", exclude_none=True), separators=(",", ":"))
        try:
            async with asyncio.timeout(self.timeout):
                link = await self._link(session_id, log)
                await link.connection.send(body)
        except (TimeoutError, OSError, websockets.WebSocketException) as exc:
            log.warning("remote app unreachable over WebSocket (%r); using the fallback", exc)
            await self._drop(session_id)
            return [] if event.type in NO_REPLY_EVENTS else with_session(to_actions(self.fallback), session_id)
        if event.type == "session_end":
            task = asyncio.create_task(self._close_later(session_id))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return []

    async def aclose(self) -> None:
        for session_id in list(self._links):
            await self._drop(session_id)

    async def _link(self, session_id: str, log: logging.LoggerAdapter[Any]) -> _Link:
        link = self._links.get(session_id)
        if link is not None and not link.reader.done():
            return link
        headers = {API_TOKEN_HEADER: self.api_token} if self.api_token is not None else None
        connection = await websockets.connect(self.url, additional_headers=headers, max_size=self.max_message_bytes)
        reader = asyncio.create_task(self._read(session_id, connection, log), name=f"remote-ws-{session_id}")
        link = self._links[session_id] = _Link(connection, reader)
        log.info("connected to the remote app")
        return link

    async def _read(self, session_id: str, connection: ClientConnection, log: logging.LoggerAdapter[Any]) -> None:
        """Actions as the app sends them, into the live call."""
        try:
            async for message in connection:
                if isinstance(message, bytes):
                    log.warning("remote app sent a binary frame; ignored")
                    continue
                try:
                    data = json.loads(message)
                    if isinstance(data, dict) and data.get("type") == "error":
                        log.warning("remote app reported an error: %s", data.get("error"))
                        continue
                    actions = parse_actions(data)
                except (ValueError, TypeError, ValidationError) as exc:
                    log.warning("remote app sent an invalid message (%s); ignored", exc)
                    continue
                if strays := foreign(actions, session_id):
                    log.warning("remote app named another session in %d action(s); dropped them", len(strays))
                    actions = [a for a in actions if a.session_id in (None, session_id)]
                actions = with_session(actions, session_id)
                call = self.calls.get(session_id)
                try:
                    if call is None:
                        raise NotConnected(session_id)
                    await call.push(actions)
                except NotConnected:
                    log.info("actions for a call that is no longer live dropped: %s", [a.type for a in actions])
        except websockets.ConnectionClosed as exc:
            log.info("remote app connection closed (%s)", exc)

    async def _close_later(self, session_id: str) -> None:
        await asyncio.sleep(CLOSE_GRACE_SECONDS)
        await self._drop(session_id)

    async def _drop(self, session_id: str) -> None:
        link = self._links.pop(session_id, None)
        if link is None:
            return
        await link.connection.close()
        link.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link.reader
