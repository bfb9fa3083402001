"""`POST /webhook`: the platform posts one event, the app answers with its actions.

Every failure has a JSON answer with its own status; nothing a caller sends produces a 500,
and a failure inside the app becomes the app's fallback reply. A shared session store that cannot be
reached answers 503 with `Retry-After`: the event was not handled, and the platform can send it again.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowapp.app import FlowApp
from flowapp.logs import call_logger
from flowapp.protocol.events import Event, UnknownEventType, parse_event
from flowapp.protocol.ids import is_valid_id
from flowapp.session import StoreUnavailable
from flowapp.transports.auth import API_TOKEN_HEADER, SIGNATURE_HEADER, api_token_ok, signature_ok, unauthorized
from flowapp.transports.body import BodyTooLarge, MalformedJson, decode_json, read_limited_body
from flowapp.transports.context import flow_app, server_settings
from flowapp.transports.errors import error_response, field_errors
from flowapp.transports.replies import reply_body

logger = logging.getLogger("flowapp.webhook")


async def webhook(request: Request) -> Response:
    settings = server_settings(request)
    if not api_token_ok(request.headers.get(API_TOKEN_HEADER), settings):
        return unauthorized(f"missing or wrong {API_TOKEN_HEADER} header")
    content_type = request.headers.get("content-type")
    if content_type is not None and not _is_json(content_type):
        detail = f"send the event as application/json, not {content_type[:100]!r}"
        return error_response(415, "unsupported_media_type", detail)
    try:
        body = await read_limited_body(request, settings.max_body_bytes)
    except BodyTooLarge as exc:
        return error_response(413, "payload_too_large", str(exc))
    if not signature_ok(body, request.headers.get(SIGNATURE_HEADER), settings):
        return unauthorized(f"missing or wrong {SIGNATURE_HEADER} header (sha256=<hex HMAC-SHA256 of the body>)")
    try:
        data = decode_json(body)
    except MalformedJson as exc:
        return error_response(400, "malformed_json", str(exc))
    try:
        event = parse_event(data)
    except UnknownEventType as exc:
        event_type = str(exc.event_type)[:64]
        logger.info("ignored event of unknown type %r", event_type, extra={"session_id": _session_id(data)})
        return Response(status_code=204)
    except (ValidationError, TypeError, ValueError) as exc:
        return error_response(422, "invalid_event", field_errors(exc))
    app = flow_app(request)
    if event.session.id in app.calls:
        detail = f"session {event.session.id!r} is live on a WebSocket or media stream: only that connection may send"

        return error_response(409, "session_taken", detail)
    return await _answer(app, event)


async def _answer(app: FlowApp, event: Event) -> Response:
    try:
        body = reply_body(await app.respond(event))
    except StoreUnavailable as exc:
        call_logger(logger, event.session.id, event=event.type).error("event not handled: %s", exc)
        return error_response(503, "session_store_unavailable", f"{exc}; send the event again", {"retry-after": "1"})
    except Exception:
        call_logger(logger, event.session.id, event=event.type).exception("reply failed; answered with the fallback")
        try:
            body = reply_body(app.fallback_actions(event.session.id))
        except Exception:
            logger.exception("fallback failed; answered with no action")
            body = None
    return Response(status_code=204) if body is None else JSONResponse(body)


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def _session_id(data: Any) -> str | None:
    session = data.get("session") if isinstance(data, dict) else None
    value = session.get("id") if isinstance(session, dict) else None
    return value if is_valid_id(value) else None


routes = [Route("/webhook", webhook, methods=["POST"])]
