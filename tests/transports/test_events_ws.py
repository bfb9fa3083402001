"""The event WebSocket against a real uvicorn server: events in, actions out, pushes, limits, errors."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from flowapp import FlowApp, Session, Speak
from flowapp.protocol.events import UserSpeak
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.transports.helpers import SESSION_ID, event


async def send(ws: ClientConnection, data: dict[str, Any]) -> None:
    await ws.send(json.dumps(data))


async def receive(ws: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=3))


async def wait_until(condition: Any, timeout: float = 3) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def make_app(**options: Any) -> FlowApp:
    app = FlowApp(fallback="One moment.", **options)

    @app.on_session_start
    def greet() -> str:
        return "Welcome!"

    @app.on_user_speak
    async def answer(e: UserSpeak, session: Session) -> str | None:
        if e.text == "push":
            await session.push(Speak(text="pushed first"))
        if e.text == "slow":
            await asyncio.sleep(0.3)
        if e.text == "silent":
            return None
        return f"you said {e.text}"

    return app


async def test_events_in_actions_out_in_order(live_server: StartServer) -> None:
    app = make_app()
    server = live_server(app)
    async with connect(server.ws_url + "/ws") as ws:
        await send(ws, event("session_start"))
        greeting = await receive(ws)
        assert greeting["type"] == "speak"
        assert greeting["text"] == "Welcome!"
        assert greeting["session_id"] == SESSION_ID

        await send(ws, event("user_speak", text="slow"))
        await send(ws, event("user_speak", text="silent"))
        await send(ws, event("user_speak", text="fast"))
        assert (await receive(ws))["text"] == "you said slow"
        assert (await receive(ws))["text"] == "you said fast"


async def test_session_push_reaches_the_platform_before_the_reply(live_server: StartServer) -> None:
    server = live_server(make_app())
    async with connect(server.ws_url + "/ws") as ws:
        await send(ws, event("user_speak", text="push"))
        pushed, reply = await receive(ws), await receive(ws)
    assert pushed["text"] == "pushed first"
    assert pushed["barge_in"] == {"strategy": "minimum_characters", "minimum_characters": 3}
    assert reply["text"] == "you said push"


async def test_late_handler_result_is_pushed_into_the_call(live_server: StartServer) -> None:
    server = live_server(make_app(handler_timeout=0.1))
    async with connect(server.ws_url + "/ws") as ws:
        await send(ws, event("user_speak", text="slow"))
        assert (await receive(ws))["text"] == "One moment."
        assert (await receive(ws))["text"] == "you said slow"


async def test_call_is_registered_while_connected(live_server: StartServer) -> None:
    app = make_app()
    server = live_server(app)
    async with connect(server.ws_url + "/ws") as ws:
        await send(ws, event("session_start"))
        await receive(ws)
        call = app.calls.get(SESSION_ID)
        assert call is not None
        assert call.describe()["transport"] == "websocket"
        assert call.describe()["from_phone_number"] == "+4915100000000"
        await send(ws, event("session_end", reason="hangup"))
        await wait_until(lambda: SESSION_ID not in app.calls)

        await send(ws, event("session_start", session_id="second"))
        await receive(ws)
        assert "second" in app.calls
    await wait_until(lambda: len(app.calls) == 0)


async def test_malformed_invalid_and_binary_frames_get_error_frames(live_server: StartServer) -> None:
    server = live_server(make_app())
    async with connect(server.ws_url + "/ws") as ws:
        await ws.send('{"type": "session_start", ')
        malformed = await receive(ws)
        assert (malformed["type"], malformed["error"]) == ("error", "malformed_json")
        assert "column" in malformed["detail"]

        await send(ws, event("dtmf_received", digit="x"))
        invalid = await receive(ws)
        assert invalid["error"] == "invalid_event"
        assert any(err["loc"][-1] == "digit" for err in invalid["detail"])

        await ws.send(b"\x00\x01")
        assert (await receive(ws))["error"] == "binary_frame"

        await send(ws, event("some_future_event"))
        await send(ws, event("session_start"))
        assert (await receive(ws))["text"] == "Welcome!"


async def test_oversize_message_closes_with_1009(live_server: StartServer) -> None:
    server = live_server(make_app(), ServerSettings(max_ws_message_bytes=1000))
    async with connect(server.ws_url + "/ws") as ws:
        await send(ws, event("user_speak", text="x" * 1200))
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    assert "1000 bytes" in closed.value.rcvd.reason


async def test_api_token_is_checked_before_accepting(live_server: StartServer) -> None:
    server = live_server(make_app(), ServerSettings(api_token="s3cret"))
    for url, headers in ((server.ws_url + "/ws", {}), (server.ws_url + "/ws?token=nope", {"X-API-TOKEN": "no"})):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 403

    async with connect(server.ws_url + "/ws", additional_headers={"X-API-TOKEN": "s3cret"}) as ws:
        await send(ws, event("session_start"))
        assert (await receive(ws))["text"] == "Welcome!"
    async with connect(server.ws_url + "/ws?token=s3cret") as ws:
        await send(ws, event("session_start"))
        assert (await receive(ws))["text"] == "Welcome!"


async def test_signature_only_server_refuses_websockets(live_server: StartServer) -> None:
    server = live_server(make_app(), ServerSettings(webhook_secret="k"))
    with pytest.raises(InvalidStatus):
        async with connect(server.ws_url + "/ws"):
            pass


async def test_one_connection_cannot_flood_the_logs(live_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    server = live_server(app)
    caplog.set_level(logging.INFO, logger="flowapp.websocket")
    async with connect(server.ws_url + "/ws") as ws:
        await send(ws, event("session_start"))
        await receive(ws)
        for n in range(2000):
            await send(ws, event("dtmf_received", session_id=f"id-{n}", digit="1"))
        for _ in range(2000):
            assert (await receive(ws))["error"] == "session_mismatch"
        await send(ws, event("user_speak", text="slow"))
        for _ in range(39):
            await send(ws, event("user_speak", text="fast"))
    await wait_until(lambda: "more lines like 'reply not delivered" in caplog.text, timeout=30)
    lines = [r for r in caplog.records if r.name == "flowapp.websocket"]
    assert len(lines) < 20, [r.getMessage() for r in lines]
    assert "1995 more lines like 'event refused: %s' were not logged" in caplog.text
    assert sum("reply not delivered" in r.getMessage() for r in lines) == 6
