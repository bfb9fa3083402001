"""`GET /phone`: a page that calls the server's app from a browser, speaking the `/media` carrier protocol.

The page is one self-contained file: nothing is loaded from elsewhere (its policy forbids it). Its
WebSocket carries the page's `Origin`, which the browser guard refuses unless it is in
`FLOWAPP_ALLOWED_ORIGINS`, and the API token, if the server has one, goes in `?token=`.
"""

from __future__ import annotations

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

_PAGE = files("flowapp.transports").joinpath("phone.html").read_text(encoding="utf-8")
_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


async def phone(request: Request) -> Response:
    return HTMLResponse(_PAGE, headers={"content-security-policy": _POLICY, "cache-control": "no-cache"})


routes = [Route("/phone", phone, methods=["GET"])]
