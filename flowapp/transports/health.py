"""`GET /healthz`: a cheap liveness answer for load balancers and the CLI's readiness checks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


routes = [Route("/healthz", healthz, methods=["GET"])]
