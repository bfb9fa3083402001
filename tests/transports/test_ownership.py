"""Session ownership on a real server: a live call belongs to the connection that carries it.

Every client here holds the shared API token, so auth does not separate them: only ownership does.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from flowapp import FlowApp, Session
from flowapp.protocol.events import DtmfReceived, Event
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.live.calls import CUSTOM, RecordingApp
from tests.live.carrier import Carrier
from tests.transports.helpers import SESSION_ID, event

TOKEN = {"x-api-token": "shared"}
SETTINGS = ServerSettings(api_token="shared", control_token="ctl", recognizer=None)
BEARER = {"Authorization": "Bearer ctl"}


class Recorder:
    def __init__(self) -> None:
        self.app = FlowApp()
        self.seen: list[tuple[str, str]] = []

        @self.app.on_session_start
        def greet(e: Event, session: Session) -> str:
            self.seen.append((e.type, e.session.id))
            session["secret"] = "pin 1234"
            return "Welcome!"

        @self.app.on_dtmf
        def leak(e: DtmfReceived, session: Session) -> str:
            self.seen.append((e.type, e.session.id))
            return f"state: {session.get('secret')}"

        @self.app.on_session_end
        def ended(e: Event) -> None:
            self.seen.append((e.type, e.session.id))


async def receive(ws: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=3))


async def no_frame(ws: ClientConnection, seconds: float = 0.3) -> None:
    try:
        frame = await asyncio.wait_for(ws.recv(), timeout=seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected frame {frame!r}")


async def start_call(server_url: str) -> ClientConnection:
    ws = await connect(server_url + "/ws", additional_headers=TOKEN)
    await ws.send(json.dumps(event("session_start")))
    assert (await receive(ws))["text"] == "Welcome!"
    return ws


async def test_webhook_cannot_read_or_end_a_live_websocket_call(live_server: StartServer) -> None:
    rec = Recorder()
    server = live_server(rec.app, SETTINGS)
    owner = await start_call(server.ws_url)
    async with httpx.AsyncClient(base_url=server.base_url, headers=TOKEN) as http:
        for probe in (event("dtmf_received", digit="1"), event("session_end", reason="hangup")):
            response = await http.post("/webhook", json=probe)
            assert response.status_code == 409
            assert response.json()["error"] == "session_taken"
            assert SESSION_ID in response.json()["detail"]
        assert rec.seen == [("session_start", SESSION_ID)]
        assert SESSION_ID in rec.app.calls

        barge = await http.post(f"/v1/sessions/{SESSION_ID}/barge-in", headers=BEARER)
        assert barge.json()["barged_in"] is True
        assert await receive(owner) == {"type": "barge_in", "session_id": SESSION_ID}

        await owner.send(json.dumps(event("session_end", reason="hangup")))
        await owner.close()
        for _ in range(100):
            if SESSION_ID not in rec.app.calls:
                break
            await asyncio.sleep(0.02)
        assert (await http.post("/webhook", json=event("session_start"))).status_code == 200


async def test_second_websocket_cannot_take_over_hide_or_act_on_a_call(live_server: StartServer) -> None:
    rec = Recorder()
    server = live_server(rec.app, SETTINGS)
    owner = await start_call(server.ws_url)
    owned = rec.app.calls.get(SESSION_ID)
    async with connect(server.ws_url + "/ws", additional_headers=TOKEN) as attacker:
        await attacker.send(json.dumps(event("dtmf_received", digit="5")))
        refusal = await receive(attacker)
        assert refusal["type"] == "error" and refusal["error"] == "session_taken"
        await attacker.send(json.dumps(event("session_end")))
        assert (await receive(attacker))["error"] == "session_taken"
    await asyncio.sleep(0.2)
    assert rec.app.calls.get(SESSION_ID) is owned, "the attacker neither replaced nor hid the call"
    assert rec.seen == [("session_start", SESSION_ID)]

    async with httpx.AsyncClient(base_url=server.base_url) as http:
        barge = await http.post(f"/v1/sessions/{SESSION_ID}/barge-in", headers=BEARER)
    assert barge.json() == {"session_id": SESSION_ID, "barged_in": True}
    assert await receive(owner) == {"type": "barge_in", "session_id": SESSION_ID}

    await owner.send(json.dumps(event("dtmf_received", digit="1")))
    assert (await receive(owner))["text"] == "state: pin 1234"
    await owner.close()


async def test_one_connection_carries_one_call_at_a_time(live_server: StartServer) -> None:
    rec = Recorder()
    server = live_server(rec.app, SETTINGS)
    ws = await start_call(server.ws_url)
    await ws.send(json.dumps(event("dtmf_received", session_id="other-call", digit="1")))
    assert (await receive(ws))["error"] == "session_mismatch"
    assert "other-call" not in rec.app.calls
    await ws.send(json.dumps(event("session_end")))
    await no_frame(ws)
    await ws.send(json.dumps(event("session_start", session_id="next-call")))
    assert (await receive(ws))["text"] == "Welcome!"
    assert "next-call" in rec.app.calls and SESSION_ID not in rec.app.calls
    await ws.close()


async def test_second_media_stream_with_the_same_session_id_is_refused(live_server: StartServer) -> None:
    rec = RecordingApp({"session_start": "Hello."})
    server = live_server(rec.app, ServerSettings(insecure_control=True, recognizer=None))
    session_id = str(uuid.uuid4())
    custom = {**CUSTOM, "session_id": session_id}
    async with Carrier.connect(server.ws_url, custom) as owner:
        await owner.wait_for("media", count=5)
        owned = rec.app.calls.get(session_id)
        assert owned is not None and owned.transport == "media"
        async with Carrier.connect(server.ws_url, custom) as intruder:
            await intruder.closed()
        assert intruder.close_code == 1008
        assert intruder.close_reason == "session_id belongs to another live call"
        assert rec.app.calls.get(session_id) is owned

        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post("/webhook", json=event("session_end", session_id=session_id))
            assert response.status_code == 409
            barge = await http.post(f"/v1/sessions/{session_id}/barge-in")
        assert barge.json() == {"session_id": session_id, "barged_in": True}
        await owner.stop()
        await owner.closed()
    for _ in range(100):
        if rec.of("session_end"):
            break
        await asyncio.sleep(0.02)
    assert [(e.type, e.session.id) for e in rec.of("session_end")] == [("session_end", session_id)]
    assert len(rec.of("session_start")) == 1
