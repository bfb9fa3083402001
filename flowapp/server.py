"""`create_server`: one Starlette app carrying every transport of a `FlowApp`."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from flowapp.app import FlowApp
from flowapp.settings import ServerSettings
from flowapp.transports import control, events_ws, health, media, openapi, webhook
from flowapp.transports.control import DISABLED_DETAIL
from flowapp.transports.direct import DirectWebSocketProtocol
from flowapp.transports.remote import responder_for
from flowapp.watchdog import LoopWatchdog

logger = logging.getLogger("flowapp.server")


def create_server(
    app: FlowApp, settings: ServerSettings | None = None, *, extra_routes: Sequence[BaseRoute] = ()
) -> Starlette:
    """Serve `app` over the webhook, the event WebSocket, carrier media streams (`/media`) and the control API.

    `settings` defaults to `ServerSettings.from_env()`, so secrets set in the environment always apply.
    `extra_routes` come first, so a deployment can add or override routes without changing this function.
    """
    settings = settings if settings is not None else ServerSettings.from_env()
    routes: list[BaseRoute] = [
        *extra_routes,
        *webhook.routes,
        *events_ws.routes,
        *media.routes,
        *control.routes,
        *openapi.routes,
        *health.routes,
    ]
    server = Starlette(routes=routes, lifespan=_lifespan)
    server.state.flowapp = app
    server.state.settings = settings
    server.state.responder = responder_for(app, settings)
    return server


@asynccontextmanager
async def _lifespan(server: Starlette) -> AsyncIterator[None]:
    settings: ServerSettings = server.state.settings
    webhook_auth = [
        name for name, secret in (("X-API-TOKEN", settings.api_token), ("signature", settings.webhook_secret)) if secret
    ]
    if webhook_auth:
        logger.info("webhook and WebSocket auth: %s", " + ".join(webhook_auth))
    else:
        logger.warning("no API token or webhook secret set: the webhook and WebSocket accept anyone")
    if settings.control_token:
        logger.info("control API enabled at /v1 (bearer token)")
    elif settings.insecure_control:
        logger.warning("control API enabled at /v1 WITHOUT auth (--insecure-control)")
    else:
        logger.info("%s", DISABLED_DETAIL)
    if settings.app_url:
        logger.info("media calls are answered by the remote app at %s", settings.app_url)
    await media.prepare(settings)
    # Everything loaded so far (modules, the app, its models) lives as long as the server: left out of the
    # garbage collector's full passes, which otherwise stall every live call's audio for tens of ms.
    gc.freeze()
    app: FlowApp = server.state.flowapp
    watchdog = LoopWatchdog(
        asyncio.get_running_loop(),
        threading.get_ident(),
        stall_seconds=settings.loop_stall_seconds,
        names=app.handler_names,
    )
    watchdog.start()
    yield
    watchdog.stop()
    close = getattr(server.state.responder, "aclose", None)
    if close is not None:
        await close()


def uvicorn_config(server: Starlette, settings: ServerSettings, **options: Any) -> uvicorn.Config:
    """The uvicorn setup matching the settings.

    uvicorn's own WebSocket size limit is a hard ceiling above the app's; its WebSocket protocol is the one
    that offers media streams the direct channel.
    """
    options.setdefault("host", settings.host)
    options.setdefault("port", settings.port)
    options.setdefault("ws", DirectWebSocketProtocol)
    return uvicorn.Config(server, ws_max_size=2 * settings.max_ws_message_bytes, **options)
