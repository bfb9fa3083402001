"""`create_server` assembly and `ServerSettings` from the environment."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from flowapp import FlowApp
from flowapp.audio.vad import SILERO_POOL, silero_session
from flowapp.server import create_server
from flowapp.settings import ServerSettings, SettingsError
from flowapp.transports.media import SILERO_PREFILL
from tests.conftest import StartServer


def test_extra_routes_are_served_next_to_the_transports(live_server: StartServer) -> None:
    async def media(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"media for {type(request.app.state.flowapp).__name__}")

    server = live_server(FlowApp(), extra_routes=[Route("/media", media)])
    assert httpx.get(server.base_url + "/media").text == "media for FlowApp"
    assert httpx.get(server.base_url + "/healthz").status_code == 200


def test_settings_from_env() -> None:
    settings = ServerSettings.from_env(
        {
            "FLOWAPP_API_TOKEN": "t",
            "FLOWAPP_WEBHOOK_SECRET": "",
            "FLOWAPP_CONTROL_TOKEN": "c",
            "FLOWAPP_INSECURE_CONTROL": "true",
            "FLOWAPP_MAX_BODY_BYTES": "2048",
        }
    )
    assert settings.api_token == "t"
    assert settings.webhook_secret is None
    assert settings.control_token == "c"
    assert settings.insecure_control is True
    assert settings.max_body_bytes == 2048
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert ServerSettings.from_env({}) == ServerSettings()
    assert not ServerSettings().control_enabled
    with pytest.raises(SettingsError, match="FLOWAPP_MAX_BODY_BYTES"):
        ServerSettings.from_env({"FLOWAPP_MAX_BODY_BYTES": "1MB"})


def test_settings_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWAPP_API_TOKEN", "env-token")
    assert create_server(FlowApp()).state.settings.api_token == "env-token"
    assert create_server(FlowApp(), ServerSettings()).state.settings.api_token is None


def test_a_cascade_server_has_silero_ready_before_the_first_call(live_server: StartServer) -> None:
    silero_session.cache_clear()
    live_server(FlowApp(), ServerSettings(vad_detector="cascade"))
    assert silero_session.cache_info().currsize == 1


def test_a_silero_server_has_models_ready_before_the_first_call(
    live_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SILERO_POOL, "idle", [])
    live_server(FlowApp(), ServerSettings(vad_detector="silero"))
    assert len(SILERO_POOL.idle) >= SILERO_PREFILL
