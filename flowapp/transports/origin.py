"""Requests from web pages are refused unless their origin is allowed: a page must not be able to act on calls.

Platforms and carriers send no `Origin` header. Browsers send one with every WebSocket handshake and every
cross-origin POST, and `Sec-Fetch-Site: cross-site` with requests a page on another site makes; a plain
`text/plain` form POST needs no CORS preflight, so without this check any page the developer visits could
post events to a local server that has no token. Reading endpoints (GET, HEAD, OPTIONS) stay open.
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from flowapp.settings import ServerSettings
from flowapp.transports.errors import error_response

logger = logging.getLogger("flowapp.origin")

POLICY_VIOLATION = 1008
_READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})


def browser_refusal(headers: Headers, settings: ServerSettings) -> str | None:
    """Why a request is refused as a browser's, or None. An allowed `Origin` passes even when cross-site."""
    origin = headers.get("origin")
    if origin is not None:
        if origin.rstrip("/").lower() in {o.rstrip("/").lower() for o in settings.allowed_origins}:
            return None
        return f"Origin {origin[:200]!r} is not allowed (FLOWAPP_ALLOWED_ORIGINS)"
    if headers.get("sec-fetch-site", "").lower() == "cross-site":
        return "cross-site browser requests are not allowed"
    return None


class BrowserGuard:
    """Checks every WebSocket handshake and every request that can act before any route sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        checked = scope["type"] == "websocket" or (scope["type"] == "http" and scope["method"] not in _READ_ONLY)
        refusal = browser_refusal(Headers(scope=scope), scope["app"].state.settings) if checked else None
        if refusal is None:
            await self.app(scope, receive, send)
            return
        logger.warning("refused %s %s: %s", scope["type"], scope["path"], refusal)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": ""})
            return
        await error_response(403, "origin_not_allowed", refusal)(scope, receive, send)
