"""The startup self-check on the uvicorn and websockets internals flowapp's protocols build on."""

from __future__ import annotations

import logging
import sys

import pytest

from flowapp import BargeIn, FlowApp, Speak
from flowapp.server import create_server, uvicorn_config
from flowapp.settings import ServerSettings
from flowapp.transports import internals
from flowapp.transports.connections import GuardedHttpProtocol
from flowapp.transports.direct import DirectWebSocketProtocol
from tests.conftest import StartServer
from tests.live.calls import CUSTOM
from tests.live.carrier import Carrier

MOVED = (internals.WS_MODULE, "WebSocketsSansIOProtocol", ("send_receive_event_to_app", "renamed_in_a_new_release"))


def test_the_installed_versions_have_everything_flowapp_builds_on() -> None:
    assert internals.missing_internals() == []
    config = uvicorn_config(create_server(FlowApp()), ServerSettings())
    assert config.ws is DirectWebSocketProtocol
    assert isinstance(config.http, type) and issubclass(config.http, GuardedHttpProtocol)


def test_a_moved_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "REQUIRED", (MOVED,))
    assert internals.missing_internals() == [f"{internals.WS_MODULE}.WebSocketsSansIOProtocol.renamed_in_a_new_release"]


def test_a_moved_module_is_named_and_its_subclass_still_defines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, internals.HTTP_MODULE, None)
    assert f"{internals.HTTP_MODULE}.HttpToolsProtocol" in internals.missing_internals()
    stand_in = internals.base_class(internals.HTTP_MODULE, "HttpToolsProtocol")
    assert type("Sub", (stand_in,), {})  # the module that subclasses it still imports


async def test_moved_internals_fall_back_to_plain_asgi_with_a_warning(
    live_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(internals, "REQUIRED", (MOVED,))
    app = FlowApp()

    @app.on_session_start
    def greet() -> Speak:
        return Speak(text="Hello.", barge_in=BargeIn.none())

    with caplog.at_level(logging.WARNING, logger="flowapp.server"):
        config = uvicorn_config(create_server(app), ServerSettings())
        server = live_server(app, ServerSettings(vad_detector="webrtc", recognizer=None))
    assert config.ws == "auto" and config.http == "auto", "uvicorn's stock protocols"
    warning = next(r.getMessage() for r in caplog.records if "stock protocols" in r.getMessage())
    assert "renamed_in_a_new_release" in warning
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        await carrier.silence(0.3)
        await carrier.wait_for("media", count=5)
        await carrier.stop()
