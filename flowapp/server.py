"""`create_server`: one Starlette app carrying every transport of a `FlowApp`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from flowapp.app import FlowApp
from flowapp.cluster import Cluster, new_instance_id
from flowapp.engine.render import Renderer
from flowapp.journal import INSTANCE_LOST, LiveCallJournal
from flowapp.logs import redact_server_logs
from flowapp.metrics import CallCounter, watch_event_loop
from flowapp.protocol.events import SessionEnd, SessionInfo
from flowapp.redis_store import RedisSessionStore
from flowapp.responder import Responder
from flowapp.session import InMemorySessionStore
from flowapp.settings import ServerSettings, redact_url
from flowapp.transports import control, events_ws, health, media, metrics, openapi, phone, webhook
from flowapp.transports.body import BodyTimeout
from flowapp.transports.connections import GuardedHttpProtocol
from flowapp.transports.control import DISABLED_DETAIL
from flowapp.transports.direct import DirectWebSocketProtocol
from flowapp.transports.errors import error_response
from flowapp.transports.internals import missing_internals
from flowapp.transports.origin import BrowserGuard
from flowapp.transports.remote import responder_for
from flowapp.transports.sip.agent import SipAgent
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
        *metrics.routes,
        *phone.routes,
    ]
    server = Starlette(
        routes=routes,
        lifespan=_lifespan,
        middleware=[Middleware(BrowserGuard)],
        exception_handlers={ClientDisconnect: _client_gone, BodyTimeout: _body_too_slow},
    )
    server.state.flowapp = app
    server.state.settings = settings
    server.state.responder = responder_for(app, settings)
    return server


async def _client_gone(request: Request, exc: Exception) -> Response:
    """A caller that hangs up mid-body is routine on the internet, not a server error with a traceback."""
    logger.info("%s %s: the client closed the connection before its body ended", request.method, request.url.path)
    return Response(status_code=400)


async def _body_too_slow(request: Request, exc: Exception) -> Response:
    logger.info("%s %s: %s", request.method, request.url.path, exc)
    return error_response(408, "request_timeout", str(exc), headers={"connection": "close"})


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
    cluster = await _join_cluster(server, settings)
    journal = _open_journal(settings)
    recovery: asyncio.Task[int] | None = None
    if journal is not None:
        server.state.flowapp.calls.watch(journal)
        deliver = _lost_call_delivery(server)
        if cluster is not None:
            deliver = cluster.once(deliver)
        recovery = asyncio.create_task(_recover(journal, deliver), name="flowapp-recovery")
    await media.prepare(settings)
    calls = CallCounter()
    server.state.flowapp.calls.watch(calls)
    loop_watch = asyncio.create_task(watch_event_loop(), name="flowapp-loop-lag")
    sip_agent = await _start_sip(server)
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
    loop_watch.cancel()
    server.state.flowapp.calls.unwatch(calls)
    if sip_agent is not None:
        await sip_agent.stop()
    if journal is not None and recovery is not None:
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(recovery, RECOVERY_GRACE_SECONDS)
        server.state.flowapp.calls.unwatch(journal)
        await journal.close()
    if cluster is not None:
        await _leave_cluster(server, cluster)
    close = getattr(server.state.responder, "aclose", None)
    if close is not None:
        await close()


REDIS_TIMEOUT_SECONDS = 0.5
"""Longest wait for one Redis reply: past it the event gets 503 (webhook) and the control request 503."""


async def _join_cluster(server: Starlette, settings: ServerSettings) -> Cluster | None:
    """With a Redis URL: webhook calls' session state in Redis, and this instance a member of the cluster."""
    server.state.cluster = None
    if settings.redis_url is None:
        return None
    app: FlowApp = server.state.flowapp
    label = f"Redis at {redact_url(settings.redis_url)}"
    client = Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=2,
    )
    if isinstance(app.store, InMemorySessionStore):
        app.store = RedisSessionStore(
            client,
            local=app.store,
            is_live=app.calls.__contains__,
            idle_seconds=app.store.idle_seconds,
            lock_seconds=app.handler_timeout + 2.0,
            label=label,
        )
    else:
        logger.info("the app brings its own session store: webhook calls' state stays there, not in Redis")
    cluster = Cluster(
        client,
        app.calls,
        instance=new_instance_id(settings.port),
        execute=control.executor(app),
        deliver=_lost_call_delivery(server),
        label=label,
    )
    await cluster.start()
    server.state.cluster = cluster
    logger.info("instance %s shares sessions and live calls through %s", cluster.instance, label)
    return cluster


async def _leave_cluster(server: Starlette, cluster: Cluster) -> None:
    app: FlowApp = server.state.flowapp
    await cluster.stop()
    if isinstance(app.store, RedisSessionStore):
        app.store = app.store.local
    await cluster.client.aclose()


async def _start_sip(server: Starlette) -> SipAgent | None:
    """The SIP endpoint (`sip_port`), answering with the same responder, renderer and engine options as `/media`."""
    settings: ServerSettings = server.state.settings
    if settings.sip_port is None:
        return None
    responder: Responder = server.state.responder
    renderer = getattr(server.state, "media_renderer", None)
    if renderer is None:
        renderer = server.state.media_renderer = Renderer()
    agent = SipAgent(
        settings, server.state.flowapp, responder, renderer, lambda: media.engine_config(settings, responder)
    )
    await agent.start()
    server.state.sip_agent = agent
    return agent


RECOVERY_GRACE_SECONDS = 5.0
"""At shutdown, how long the delivery of lost calls' `session_end` may still run; the rest waits for the next start."""


def _open_journal(settings: ServerSettings) -> LiveCallJournal | None:
    if settings.journal_dir is None:
        logger.info("live-call journal off: calls lost with a killed instance never get session_end")
        return None
    journal = LiveCallJournal(settings.journal_dir, f"{settings.host}-{settings.port}")
    try:
        journal.open()
    except OSError as exc:
        logger.error("live-call journal off: cannot use %s (%r); set FLOWAPP_JOURNAL", settings.journal_dir, exc)
        return None
    return journal


async def _recover(journal: LiveCallJournal, deliver: Callable[[SessionInfo, str], Awaitable[None]]) -> int:
    try:
        delivered = await journal.recover(deliver)
    except OSError as exc:
        logger.error("reading the live-call journal failed (%r): lost calls stay unended", exc)
        return 0
    if delivered:
        logger.warning("%d calls of a killed instance ended with session_end(%s)", delivered, INSTANCE_LOST)
    return delivered


def _lost_call_delivery(server: Starlette) -> Callable[[SessionInfo, str], Awaitable[None]]:
    """A lost call's `session_end` goes where its events went: the in-process app for `/ws` calls, the
    media responder (perhaps a remote app) for media calls."""

    async def deliver(info: SessionInfo, transport: str) -> None:
        responder: Responder = server.state.flowapp if transport == "websocket" else server.state.responder
        await responder.respond(SessionEnd(session=info, reason=INSTANCE_LOST))

    return deliver


def uvicorn_config(server: Starlette, settings: ServerSettings, **options: Any) -> uvicorn.Config:
    """The uvicorn setup matching the settings.

    uvicorn's own WebSocket size limit is a hard ceiling above the app's; its WebSocket protocol is the one
    that offers media streams the direct channel; its HTTP protocol enforces the header timeout and the
    connection cap. Both build on uvicorn internals: if those moved, uvicorn's stock protocols serve instead
    (with a warning). Secrets in query strings (`/media?token=`) are redacted from uvicorn's logs.
    """
    missing = missing_internals()
    if missing:
        logger.warning(
            "uvicorn %s or websockets lacks what flowapp's protocols build on (%s): serving with uvicorn's stock "
            "protocols, so media streams take plain ASGI and there is no header timeout or connection cap",
            uvicorn.__version__,
            ", ".join(missing),
        )
    else:
        options.setdefault("http", GuardedHttpProtocol.bind(settings))
        options.setdefault("ws", DirectWebSocketProtocol)
    options.setdefault("host", settings.host)
    options.setdefault("port", settings.port)
    config = uvicorn.Config(server, ws_max_size=2 * settings.max_ws_message_bytes, **options)
    redact_server_logs()
    return config
