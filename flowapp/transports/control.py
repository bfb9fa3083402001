"""The control REST API under `/v1`: see the live calls, stop their playback, push actions into them.

It works on `app.calls`, whatever transport carries a call, so it knows nothing about transports.
Guarded by a bearer token; without one it is off unless explicitly opened with `insecure_control`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from flowapp.audio.errors import AudioFormatError
from flowapp.engine.playback import QueueFull
from flowapp.engine.render import check_renderable
from flowapp.protocol.actions import Action, foreign, parse_action
from flowapp.session import LiveCall, NotConnected
from flowapp.transports.auth import bearer_ok, unauthorized
from flowapp.transports.body import BodyTooLarge, MalformedJson, decode_json, read_limited_body
from flowapp.transports.context import flow_app, server_settings
from flowapp.transports.errors import error_response, field_errors

DISABLED_DETAIL = (
    "the control API is off: set FLOWAPP_CONTROL_TOKEN (or pass --control-token) to enable it with bearer auth, "
    "or pass --insecure-control (FLOWAPP_INSECURE_CONTROL=1) to enable it without auth on a trusted network"
)


class ControlGate:
    """Checks every `/v1` request before any route sees it: 503 when the API is off, 401 without the token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        settings = server_settings(request)
        response: Response | None = None
        if not settings.control_enabled:
            response = error_response(503, "control_api_disabled", DISABLED_DETAIL)
        elif not bearer_ok(request.headers.get("authorization"), settings):
            response = unauthorized("missing or wrong 'Authorization: Bearer <control token>' header", bearer=True)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)


def _live_call(request: Request) -> LiveCall | Response:
    session_id = request.path_params["session_id"]
    call = flow_app(request).calls.get(session_id)
    if call is None:
        return error_response(404, "session_not_found", f"no live call with session id {session_id!r}")
    return call


def _parse_actions(data: Any) -> list[Action] | Response:
    """One action or a non-empty array; an error's `loc` starts with the item's index when it is an array.

    Audio that rendering would refuse (unreadable, or past a bound of flowapp.audio.limits) is refused here.
    """
    if data == [] or data is None:
        return error_response(422, "invalid_actions", [{"loc": [], "msg": "expected an action or a non-empty array"}])
    items = data if isinstance(data, list) else [data]
    actions: list[Action] = []
    for index, item in enumerate(items):
        prefix: list[Any] = [index] if isinstance(data, list) else []
        try:
            parsed = [parse_action(item)]
        except (ValidationError, TypeError, ValueError) as exc:
            errors = [{**error, "loc": prefix + error["loc"]} for error in field_errors(exc)]
            return error_response(422, "invalid_actions", errors)
        for action in parsed:
            try:
                check_renderable(action)
            except AudioFormatError as exc:
                loc = [*prefix, action.type, "audio"]
                return error_response(422, "invalid_actions", [{"loc": loc, "msg": str(exc)}])
        actions += parsed
    return actions


async def list_sessions(request: Request) -> Response:
    return JSONResponse({"sessions": [call.describe() for call in flow_app(request).calls]})


async def barge_in(request: Request) -> Response:
    call = _live_call(request)
    if isinstance(call, Response):
        return call
    try:
        barged_in = await call.barge_in()
    except NotConnected as exc:
        return error_response(409, "session_not_connected", str(exc))
    return JSONResponse({"session_id": call.info.id, "barged_in": barged_in})


async def push_actions(request: Request) -> Response:
    call = _live_call(request)
    if isinstance(call, Response):
        return call
    try:
        data = decode_json(await read_limited_body(request, server_settings(request).max_body_bytes))
    except BodyTooLarge as exc:
        return error_response(413, "payload_too_large", str(exc))
    except MalformedJson as exc:
        return error_response(400, "malformed_json", str(exc))
    actions = _parse_actions(data)
    if isinstance(actions, Response):
        return actions
    if foreign(actions, call.info.id):
        msg = f"names another call; leave it out or send {call.info.id!r}"
        errors = [
            {"loc": ([index] if isinstance(data, list) else []) + ["session_id"], "msg": msg}
            for index, action in enumerate(actions)
            if action.session_id not in (None, call.info.id)
        ]
        return error_response(422, "foreign_session", errors)
    app = flow_app(request)
    try:
        await call.push(app.finish(actions, call.info.id))
    except NotConnected as exc:
        return error_response(409, "session_not_connected", str(exc))
    except QueueFull as exc:
        return error_response(429, "queue_full", str(exc))
    return JSONResponse({"accepted": len(actions)}, status_code=202)


routes = [
    Mount(
        "/v1",
        routes=[
            Route("/sessions", list_sessions, methods=["GET"]),
            Route("/sessions/{session_id}/barge-in", barge_in, methods=["POST"]),
            Route("/sessions/{session_id}/actions", push_actions, methods=["POST"]),
        ],
        middleware=[Middleware(ControlGate)],
    )
]
