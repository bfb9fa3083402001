"""`GET /openapi.json`: the OpenAPI 3.1 description of the HTTP endpoints, schemas taken from the pydantic models.

Generated from the same models that validate the traffic, so the document cannot drift from the code.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowapp import __version__
from flowapp.protocol.actions import Action
from flowapp.protocol.events import EVENT_TYPES, Event

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


_CROSS_FIELD = {
    "Speak": {
        "description": "exactly one of `text` or `ssml`",
        "oneOf": [
            {"required": ["text"], "properties": {"text": {"type": "string"}}},
            {"required": ["ssml"], "properties": {"ssml": {"type": "string"}}},
        ],
    },
    "MixAudio": {
        "description": "`audio` (base64 WAV) or `stop: true`",
        "anyOf": [
            {"required": ["audio"], "properties": {"audio": {"type": "string", "minLength": 1}}},
            {"required": ["stop"], "properties": {"stop": {"const": True}}},
        ],
    },
}
"""What the models' own validators check across fields, which pydantic's generated schema cannot say."""


def _union_members(schema: dict[str, Any]) -> list[str]:
    return [member["$ref"].rsplit("/", 1)[1] for member in schema.get("oneOf", []) if "$ref" in member]


def _as_parsed(schemas: dict[str, Any], union: str) -> None:
    """Each member of a discriminated union as the parser takes it: `type` is required (it picks the model,
    so its default never applies on the wire), and unknown fields are ignored, not refused (a newer peer may
    send fields this version lacks)."""
    for name in _union_members(schemas[union]):
        member = schemas[name]
        member["required"] = sorted({*member.get("required", []), "type"})
        member.pop("additionalProperties", None)
        member.update(_CROSS_FIELD.get(name, {}))


_LENIENT_NESTED = ("BargeIn", "VadConfig", "TtsConfig")
"""Objects inside an action whose unknown fields the parser drops, like the action's own."""
_LEGACY_EVENT_TYPES = ("user_barge_in",)
"""Older spellings the parser upgrades (`user_barge_in` is a `user_speak` with `barged_in`)."""


def _other_event() -> dict[str, Any]:
    known = sorted({*EVENT_TYPES, *_LEGACY_EVENT_TYPES})
    return {
        "description": "an event type this version does not know: answered with 204 and ignored",
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string", "not": {"enum": known}}},
    }


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    adapters: dict[str, TypeAdapter[Any]] = {"Event": TypeAdapter(Event), "Action": TypeAdapter(Action)}
    for name, adapter in adapters.items():
        schema = adapter.json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    for union in adapters:
        _as_parsed(schemas, union)
    for name in _LENIENT_NESTED:
        schemas[name].pop("additionalProperties", None)
    schemas["OtherEvent"] = _other_event()
    schemas["Reply"] = {
        "description": "one action, or a non-empty array of actions run in order",
        "oneOf": [_ref("Action"), {"type": "array", "items": _ref("Action"), "minItems": 1}],
    }
    schemas["Error"] = {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "a short machine-readable code"},
            "detail": {"description": "why: a message, or a list of {loc, msg} field errors"},
        },
    }
    return schemas


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_CONTROL_ERRORS = {
    "401": _error("missing or wrong bearer token"),
    "404": _error("no live call with this session id"),
    "503": _error(
        "the control API is disabled (no control token configured); with several instances also "
        "`redis_unavailable` (Redis cannot be reached) or `instance_unreachable` (the call's instance did not answer)"
    ),
}
_SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}


@cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flowapp",
            "version": __version__,
            "description": "A voice app speaking the sipgate AI Flow event/action protocol. "
            "The same events and actions also travel as JSON text frames over the WebSocket `/ws`.",
        },
        "paths": {
            "/webhook": {
                "post": {
                    "summary": "Answer one call event with the app's actions",
                    "security": [{"apiKey": []}, {"signature": []}, {}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"anyOf": [_ref("Event"), _ref("OtherEvent")]}}},
                    },
                    "responses": {
                        "200": _json(_ref("Reply"), "one action, or an array executed in order"),
                        "204": {"description": "no action (also for unknown event types)"},
                        "400": _error("the body is not valid JSON (or holds a lone surrogate)"),
                        "401": _error("missing or wrong X-API-TOKEN or x-sipgate-signature"),
                        "403": _error("a browser's request from an origin that is not allowed"),
                        "408": _error("the body did not arrive within the body timeout"),
                        "409": _error(
                            "the session is live on a WebSocket or media stream, which alone sends its events"
                        ),
                        "413": _error("the body exceeds the size limit"),
                        "415": _error("the content type is not JSON"),
                        "422": _error("the JSON is not a valid event; detail lists the fields"),
                        "503": _error(
                            "the shared session store (Redis) cannot be reached: the event was not handled; "
                            "send it again after `Retry-After` seconds"
                        ),
                    },
                }
            },
            "/v1/sessions": {
                "get": {
                    "summary": "List the live calls",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {"sessions": {"type": "array", "items": {"type": "object"}}},
                            },
                            "the live calls; of every instance, each with its `instance`, when instances share a Redis",
                        ),
                        "401": _CONTROL_ERRORS["401"],
                        "503": _CONTROL_ERRORS["503"],
                    },
                }
            },
            "/v1/sessions/{session_id}/barge-in": {
                "post": {
                    "summary": "Stop the call's current playback now",
                    "security": [{"bearer": []}],
                    "parameters": [_SESSION_ID],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {"session_id": {"type": "string"}, "barged_in": {"type": "boolean"}},
                            },
                            "whether playback was stopped",
                        ),
                        "403": _error("a browser's request from an origin that is not allowed"),
                        "409": _error("the call's connection is gone"),
                        **_CONTROL_ERRORS,
                    },
                }
            },
            "/v1/sessions/{session_id}/actions": {
                "post": {
                    "summary": "Push actions into the call, as if the app had replied with them",
                    "security": [{"bearer": []}],
                    "parameters": [_SESSION_ID],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Reply")}}},
                    "responses": {
                        "202": _json(
                            {"type": "object", "properties": {"accepted": {"type": "integer"}}}, "actions handed over"
                        ),
                        "400": _error("the body is not valid JSON (or holds a lone surrogate)"),
                        "408": _error("the body did not arrive within the body timeout"),
                        "409": _error("the call's connection is gone"),
                        "413": _error("the body exceeds the size limit"),
                        "403": _error("a browser's request from an origin that is not allowed"),
                        "422": _error("not valid actions, or one names another session; detail lists the fields"),
                        "429": _error("the call already holds as much audio to play as it may"),
                        **_CONTROL_ERRORS,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": {"200": _json({"type": "object"}, '{"status": "ok"}')},
                }
            },
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-TOKEN"},
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-sipgate-signature",
                    "description": "sha256=<hex HMAC-SHA256 of the raw body, keyed with the webhook secret>",
                },
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document())


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
