"""The control REST API under `/v1`: see the live calls, stop their playback, push actions into them.

It works on `app.calls`, whatever transport carries a call, so it knows nothing about transports. With
instances sharing a Redis (`flowapp.cluster`), a call live on another instance is reached through it.
Guarded by a bearer token; without one it is off unless explicitly opened with `insecure_control`.
"""

from __future__ import annotations

from typing import Any, cast

from pydantic import ValidationError
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from flowapp.app import FlowApp
from flowapp.audio.errors import AudioFormatError
from flowapp.cluster import Cluster, ClusterUnavailable, ControlResult, Execute, InstanceUnreachable
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


def _not_found(session_id: str) -> Response:
    return error_response(404, "session_not_found", f"no live call with session id {session_id!r}")


def _cluster(request: Request) -> Cluster | None:
    return cast(Cluster | None, getattr(request.app.state, "cluster", None))


async def _elsewhere(request: Request, op: str, session_id: str, payload: Any = None) -> Response:
    """A call not live here: run `op` on the instance holding it, when instances share a Redis."""
    cluster = _cluster(request)
    if cluster is None:
        return _not_found(session_id)
    try:
        result = await cluster.forward(op, session_id, payload)
    except ClusterUnavailable as exc:
        return error_response(503, "redis_unavailable", str(exc))
    except InstanceUnreachable as exc:
        return error_response(503, "instance_unreachable", str(exc))
    if result is None:
        return _not_found(session_id)
    return JSONResponse(result[1], status_code=result[0])


def _error(error: str, detail: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail}


async def _barge_in(call: LiveCall) -> ControlResult:
    try:
        barged_in = await call.barge_in()
    except NotConnected as exc:
        return 409, _error("session_not_connected", str(exc))
    return 200, {"session_id": call.info.id, "barged_in": barged_in}


async def _push(app: FlowApp, call: LiveCall, actions: list[Action]) -> ControlResult:
    try:
        await call.push(app.finish(actions, call.info.id))
    except NotConnected as exc:
        return 409, _error("session_not_connected", str(exc))
    except QueueFull as exc:
        return 429, _error("queue_full", str(exc))
    return 202, {"accepted": len(actions)}


def executor(app: FlowApp) -> Execute:
    """Control requests forwarded by another instance, run on this instance's call."""

    async def execute(op: str, call: LiveCall, payload: Any) -> ControlResult:
        if op == "barge_in":
            return await _barge_in(call)
        if op == "actions" and isinstance(payload, list):
            actions = _parse_actions(payload)
            if isinstance(actions, Response):
                return 422, _error("invalid_actions", "the forwarded actions did not parse")
            if foreign(actions, call.info.id):
                return 422, _error("foreign_session", f"names another call than {call.info.id!r}")
            return await _push(app, call, actions)
        return 400, _error("unknown_operation", f"no control operation {op!r}")

    return execute


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
    cluster = _cluster(request)
    if cluster is None:
        return JSONResponse({"sessions": [call.describe() for call in flow_app(request).calls]})
    try:
        return JSONResponse({"sessions": await cluster.sessions()})
    except ClusterUnavailable as exc:
        return error_response(503, "redis_unavailable", str(exc))


async def barge_in(request: Request) -> Response:
    session_id = request.path_params["session_id"]
    call = flow_app(request).calls.get(session_id)
    if call is None:
        return await _elsewhere(request, "barge_in", session_id)
    status, body = await _barge_in(call)
    return JSONResponse(body, status_code=status)


async def push_actions(request: Request) -> Response:
    session_id = request.path_params["session_id"]
    app = flow_app(request)
    call = app.calls.get(session_id)
    if call is None and _cluster(request) is None:
        return _not_found(session_id)
    try:
        data = decode_json(await read_limited_body(request, server_settings(request).max_body_bytes))
    except BodyTooLarge as exc:
        return error_response(413, "payload_too_large", str(exc))
    except MalformedJson as exc:
        return error_response(400, "malformed_json", str(exc))
    actions = _parse_actions(data)
    if isinstance(actions, Response):
        return actions
    if foreign(actions, session_id):
        msg = f"names another call; leave it out or send {session_id!r}"
        errors = [
            {"loc": ([index] if isinstance(data, list) else []) + ["session_id"], "msg": msg}
            for index, action in enumerate(actions)
            if action.session_id not in (None, session_id)
        ]
        return error_response(422, "foreign_session", errors)
    if call is None:
        return await _elsewhere(request, "actions", session_id, [action.to_wire() for action in actions])
    status, body = await _push(app, call, actions)
    return JSONResponse(body, status_code=status)


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
