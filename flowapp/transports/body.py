"""Request bodies read with a hard size limit, and decoded as JSON with a useful error."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class MalformedJson(Exception):
    pass


async def read_limited_body(request: Request, limit: int) -> bytes:
    """Refuse an over-limit Content-Length at once, and count while streaming: chunked bodies have no length."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes) -> Any:
    """Parse JSON; the error names the position so the sender can find the mistake."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJson(f"body is not UTF-8: invalid byte at position {exc.start}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedJson(f"{exc.msg}: line {exc.lineno} column {exc.colno} (char {exc.pos})") from None
    except RecursionError:
        raise MalformedJson("JSON nested too deeply") from None
