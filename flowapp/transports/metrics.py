"""`GET /metrics`: the process's metrics in Prometheus text format, for whoever holds the control token.

The figures say how many calls a server carries and how its callers behave, so they get the control
API's gate: the bearer control token, or nothing with `insecure_control` on a trusted network; off (503)
when the control API is off.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flowapp.metrics import REGISTRY
from flowapp.transports.auth import bearer_ok, unauthorized
from flowapp.transports.context import server_settings
from flowapp.transports.control import DISABLED_DETAIL
from flowapp.transports.errors import error_response


async def metrics(request: Request) -> Response:
    settings = server_settings(request)
    if not settings.control_enabled:
        return error_response(
            503, "control_api_disabled", "/metrics is served with the control API; " + DISABLED_DETAIL
        )
    if not bearer_ok(request.headers.get("authorization"), settings):
        return unauthorized("missing or wrong 'Authorization: Bearer <control token>' header", bearer=True)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics, methods=["GET"])]
