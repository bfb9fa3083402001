"""Remote apps over the event WebSocket: a second real server's `/ws` answers a live media call."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.server import ServerConnection, serve

from flowapp import BargeIn, BargeInNow, FlowApp, Speak
from flowapp.protocol.events import SessionInfo, SessionStart
from flowapp.session import SessionRegistry
from flowapp.settings import ServerSettings
from flowapp.transports.remote import responder_for
from flowapp.transports.remote_ws import RemoteWebSocketApp
from tests.conftest import StartServer
from tests.live.calls import CUSTOM, LONG_TEXT, PushedCall, RecordingApp
from tests.live.carrier import Carrier


async def until(condition: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_media_call_driven_by_an_app_on_the_event_websocket(live_server: StartServer) -> None:
    remote = RecordingApp(
        {
            "session_start": Speak(text="Hello over the socket.", barge_in=BargeIn.none()),
            "dtmf_received": Speak(text="Key noted."),
        }
    )
    app_server = live_server(remote.app, ServerSettings(api_token="app-token"))
    settings = ServerSettings(app_url=app_server.ws_url + "/ws", app_api_token="app-token", app_timeout_seconds=2.0)
    server = live_server(FlowApp(), settings)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        streaming = asyncio.create_task(carrier.silence(6))
        await carrier.wait_for("media", count=10)
        await carrier.dtmf("7")
        await until(lambda: any(e.text == "Key noted." for e in remote.of("assistant_speak")))
        await carrier.stop()
        streaming.cancel()
    await until(lambda: remote.of("session_end"))
    assert [e.type for e in remote.events][:2] == ["session_start", "assistant_speak"]
    assert [e.digit for e in remote.of("dtmf_received")] == ["7"]
    assert [e.reason for e in remote.of("session_end")] == ["stream_stopped"]


@pytest.mark.slow
async def test_the_app_can_interrupt_at_any_time_over_the_socket(live_server: StartServer) -> None:
    remote = RecordingApp({"session_start": Speak(text=LONG_TEXT, barge_in=BargeIn.none())})

    @remote.app.on_assistant_speak
    async def cut_short(event, session):  # type: ignore[no-untyped-def]
        remote.events.append(event)
        if event.text == LONG_TEXT:
            await asyncio.sleep(0.5)
            await session.push(BargeInNow(), Speak(text="Change of plan."))

    app_server = live_server(remote.app)
    server = live_server(FlowApp(), ServerSettings(app_url=app_server.ws_url + "/ws", app_timeout_seconds=2.0))
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        streaming = asyncio.create_task(carrier.silence(6))
        await carrier.wait_for("clear", timeout=5.0)
        await until(lambda: any(e.text == "Change of plan." for e in remote.of("assistant_speak")))
        await carrier.stop()
        streaming.cancel()
    ended = remote.of("assistant_speech_ended")
    assert ended[0].interrupted is True and 300 <= ended[0].played_ms < 3000


async def test_an_unreachable_socket_app_gets_the_fallback() -> None:
    app = FlowApp(fallback="One moment please.")
    responder = responder_for(app, ServerSettings(app_url="ws://127.0.0.1:9/ws", app_timeout_seconds=0.5))
    assert isinstance(responder, RemoteWebSocketApp)
    actions = await responder.respond(SessionStart(session={"id": "s-1"}))
    assert [(a.type, a.session_id) for a in actions] == [("speak", "s-1")]
    await responder.aclose()


async def test_actions_naming_another_call_are_dropped() -> None:
    async def app(connection: ServerConnection) -> None:
        async for _ in connection:
            await connection.send(json.dumps([{"type": "hangup", "session_id": "call-A"}, {"type": "barge_in"}]))

    calls = SessionRegistry()
    call = PushedCall(SessionInfo(id="call-B"))
    calls.add(call)
    async with serve(app, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        responder = RemoteWebSocketApp(f"ws://127.0.0.1:{port}", calls, timeout=2.0)
        assert await responder.respond(SessionStart(session=call.info)) == []
        await until(lambda: call.pushed)
        await responder.aclose()
    assert [(a.type, a.session_id) for a in call.pushed] == [("barge_in", "call-B")]
