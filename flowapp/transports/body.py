"""Request bodies read with a hard size limit, and decoded as JSON with a useful error."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.requests import Request

from flowapp.transports.context import server_settings


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class BodyTimeout(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"request body not received within {seconds:g} s")


class MalformedJson(Exception):
    pass


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
"""A `\\uD800`-`\\uDFFF` escape: paired ones are fine, a lone one decodes to a string no reply can encode."""


async def read_limited_body(request: Request, limit: int) -> bytes:
    """Refuse an over-limit Content-Length at once, and count while streaming: chunked bodies have no length.

    The whole body must arrive within the server's body timeout: a truncated chunked body or a Content-Length
    larger than what is sent would otherwise hold the request (and its connection) forever.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    seconds = server_settings(request).body_timeout_seconds
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(seconds) from None
    return b"".join(chunks)


def decode_json(body: bytes) -> Any:
    """Parse JSON; the error names the position so the sender can find the mistake."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJson(f"body is not UTF-8: invalid byte at position {exc.start}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedJson(f"{exc.msg}: line {exc.lineno} column {exc.colno} (char {exc.pos})") from None
    except RecursionError:
        raise MalformedJson("JSON nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(data)
    return data


def _refuse_lone_surrogates(data: Any) -> None:
    """JSON allows `\\ud800` alone, Unicode does not: such a string would fail later, in a reply or a log."""
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                code = ord(item[exc.start])
                raise MalformedJson(f"string holds a lone surrogate \\u{code:04x}: not valid Unicode") from None
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
