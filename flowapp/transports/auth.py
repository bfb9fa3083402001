"""Constant-time checks of the transport secrets: API token, body signature, control bearer token.

Each check passes when its secret is not configured; when it is, only an exact match passes.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.responses import JSONResponse

from flowapp.settings import ServerSettings
from flowapp.transports.errors import error_response

API_TOKEN_HEADER = "x-api-token"
SIGNATURE_HEADER = "x-sipgate-signature"
_SIGNATURE_PREFIX = "sha256="


def _same(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def sign(body: bytes, secret: str) -> str:
    """The `x-sipgate-signature` value for a body: what a sender computes, and what the server expects."""
    return _SIGNATURE_PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def api_token_ok(presented: str | None, settings: ServerSettings) -> bool:
    return settings.api_token is None or _same(presented, settings.api_token)


def signature_ok(body: bytes, presented: str | None, settings: ServerSettings) -> bool:
    if settings.webhook_secret is None:
        return True
    if presented is None:
        return False
    return _same(presented.strip().lower(), sign(body, settings.webhook_secret))


def bearer_ok(authorization: str | None, settings: ServerSettings) -> bool:
    if settings.control_token is None:
        return settings.insecure_control
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and _same(token.strip(), settings.control_token)


def unauthorized(detail: str, *, bearer: bool = False) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if bearer else None
    return error_response(401, "unauthorized", detail, headers)
