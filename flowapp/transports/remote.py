"""Remote apps: the engine drives an app at a webhook URL, in any language, as the sipgate platform would.

Each event is POSTed as JSON (with the `X-API-TOKEN` header or the `x-sipgate-signature` HMAC, as
configured); the reply's actions are run. One shared `httpx.AsyncClient` pools the connections of all calls.
A request that cannot connect is retried (nothing reached the app, so nothing runs twice); a timeout or an
error status is not retried. Whatever goes wrong, the answer comes within the deadline: the fallback.
The engine's event pump awaits this in the background, so a slow app never holds up a call's audio.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
from pydantic import ValidationError

from flowapp.app import FlowApp, HandlerResult, to_actions
from flowapp.logs import call_logger
from flowapp.protocol.actions import Action, foreign, parse_actions, with_session
from flowapp.protocol.events import NO_REPLY_EVENTS, Event
from flowapp.responder import Responder
from flowapp.settings import ServerSettings
from flowapp.transports.auth import API_TOKEN_HEADER, SIGNATURE_HEADER, sign
from flowapp.transports.remote_ws import RemoteWebSocketApp

logger = logging.getLogger("flowapp.remote")


class RemoteApp:
    """A `Responder` backed by a webhook app at `url`."""

    def __init__(
        self,
        url: str,
        *,
        api_token: str | None = None,
        webhook_secret: str | None = None,
        timeout: float = 1.0,
        fallback: HandlerResult = None,
        connect_retries: int = 1,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.api_token = api_token
        self.webhook_secret = webhook_secret
        self.timeout = timeout
        self.fallback = fallback
        self.connect_retries = connect_retries
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), limits=httpx.Limits(max_connections=None, max_keepalive_connections=100)
        )
        self._owns_client = client is None

    async def respond(self, event: Event) -> list[Action]:
        """The app's actions for one event; the fallback when it is late, unreachable or answers nonsense."""
        log = call_logger(logger, event.session.id, event=event.type, app_url=self.url)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._post(self._body(event), log)
        except TimeoutError:
            log.warning("remote app did not answer within %.2f s; using the fallback", self.timeout)
            return self._fallback(event)
        except httpx.HTTPError as exc:
            log.warning("remote app unreachable (%r); using the fallback", exc)
            return self._fallback(event)
        elapsed_ms = (time.monotonic() - started) * 1000
        if response.status_code == 204:
            return []
        if response.status_code != 200:
            log.warning("remote app answered HTTP %d in %.0f ms; using the fallback", response.status_code, elapsed_ms)
            return self._fallback(event)
        try:
            actions = parse_actions(json.loads(response.content) if response.content.strip() else None)
        except (ValueError, TypeError, ValidationError) as exc:
            log.warning("remote app sent an invalid reply (%s); using the fallback", exc)
            return self._fallback(event)
        if event.type in NO_REPLY_EVENTS:
            return []
        if strays := foreign(actions, event.session.id):
            log.warning("remote app named another session in %d action(s); dropped them", len(strays))
            actions = [a for a in actions if a.session_id in (None, event.session.id)]
        return with_session(actions, event.session.id)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _body(self, event: Event) -> bytes:
        return json.dumps(event.model_dump(mode="json", exclude_none=True), separators=(",", ":")).encode("utf-8")

    async def _post(self, body: bytes, log: logging.LoggerAdapter[Any]) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if self.api_token is not None:
            headers[API_TOKEN_HEADER] = self.api_token
        if self.webhook_secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self.webhook_secret)
        attempt = 0
        while True:
            try:
                return await self._client.post(self.url, content=body, headers=headers)
            except httpx.ConnectError as exc:
                if attempt >= self.connect_retries:
                    raise
                attempt += 1
                log.info("cannot connect to the remote app (%r); retrying", exc)

    def _fallback(self, event: Event) -> list[Action]:
        if event.type in NO_REPLY_EVENTS:
            return []
        return with_session(to_actions(self.fallback), event.session.id)


def responder_for(app: FlowApp, settings: ServerSettings) -> Responder:
    """Who answers the events of media calls: the remote app when `app_url` is set (a webhook for http(s)://,
    the event WebSocket for ws(s)://), else the in-process app."""
    if settings.app_url is None:
        return app
    if settings.app_url.startswith(("ws://", "wss://")):
        return RemoteWebSocketApp(
            settings.app_url,
            app.calls,
            api_token=settings.app_api_token,
            timeout=settings.app_timeout_seconds,
            fallback=app.fallback,
        )
    return RemoteApp(
        settings.app_url,
        api_token=settings.app_api_token,
        webhook_secret=settings.app_webhook_secret,
        timeout=settings.app_timeout_seconds,
        fallback=app.fallback,
    )
