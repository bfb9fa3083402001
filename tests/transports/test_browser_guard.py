"""Browsers' cross-site requests are refused by default; platforms and carriers (no Origin) are not affected."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from flowapp import FlowApp
from flowapp.settings import ServerSettings, SettingsError
from tests.conftest import StartServer
from tests.transports.helpers import event

EVIL = {"Origin": "https://evil.example"}


def make_app() -> tuple[FlowApp, list[str]]:
    app = FlowApp()
    seen: list[str] = []

    @app.on_session_start
    def greet() -> str:
        seen.append("session_start")
        return "Welcome!"

    return app, seen


def test_cross_site_posts_are_refused_without_a_token(live_server: StartServer) -> None:
    app, seen = make_app()
    url = live_server(app, ServerSettings(insecure_control=True)).base_url + "/webhook"
    body = json.dumps(event("session_start"))
    form_post = httpx.post(url, content=body, headers={"content-type": "text/plain", **EVIL})
    assert form_post.status_code == 403
    assert form_post.json()["error"] == "origin_not_allowed"
    assert "https://evil.example" in form_post.json()["detail"]
    no_origin = httpx.post(url, content=body, headers={"content-type": "text/plain", "Sec-Fetch-Site": "cross-site"})
    assert no_origin.status_code == 403
    control = httpx.post(url.replace("/webhook", "/v1/sessions/x/barge-in"), headers=EVIL)
    assert control.status_code == 403
    assert seen == []

    plain_text = httpx.post(url, content=body, headers={"content-type": "text/plain"})
    assert plain_text.status_code == 415
    assert plain_text.json()["error"] == "unsupported_media_type"
    assert httpx.post(url, content=body, headers={"content-type": "application/json; charset=utf-8"}).status_code == 200
    assert httpx.post(url, content=body).status_code == 200, "a platform that sends no content type is served"
    assert httpx.get(url.replace("/webhook", "/healthz"), headers=EVIL).status_code == 200
    assert seen == ["session_start", "session_start"]


async def test_websockets_from_pages_are_refused(live_server: StartServer) -> None:
    app, _ = make_app()
    server = live_server(app, ServerSettings(allowed_origins=("https://console.example",)))
    for path in ("/ws", "/media"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.ws_url + path, additional_headers=EVIL):
                pass
        assert refused.value.response.status_code == 403
    async with connect(server.ws_url + "/ws", additional_headers={"Origin": "https://Console.example/"}) as ws:
        await ws.send(json.dumps(event("session_start")))
        assert json.loads(await ws.recv())["text"] == "Welcome!"
    async with connect(server.ws_url + "/ws", origin=None) as ws:
        await ws.send(json.dumps(event("session_start", session_id="carrier-call")))
        assert json.loads(await ws.recv())["text"] == "Welcome!"


def test_allowed_origins_come_from_the_environment() -> None:
    env = {"FLOWAPP_ALLOWED_ORIGINS": "https://a.example, https://B.example/"}
    assert ServerSettings.from_env(env).allowed_origins == ("https://a.example", "https://b.example")
    assert ServerSettings.from_env({}).allowed_origins == ()
    with pytest.raises(SettingsError, match=r"FLOWAPP_ALLOWED_ORIGINS: 'a\.example' is not an origin"):
        ServerSettings.from_env({"FLOWAPP_ALLOWED_ORIGINS": "a.example"})
