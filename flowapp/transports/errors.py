"""One JSON shape for every error a transport answers: `{"error": <code>, "detail": <why>}`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse


def error_response(
    status_code: int, error: str, detail: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status_code, headers=headers)


def field_errors(exc: Exception) -> list[dict[str, Any]]:
    """Validation problems as `[{"loc": [...], "msg": ...}]`, so a caller can see which field is wrong."""
    if isinstance(exc, ValidationError):
        return [{"loc": list(err["loc"]), "msg": err["msg"]} for err in exc.errors(include_url=False)]
    return [{"loc": [], "msg": str(exc)}]
