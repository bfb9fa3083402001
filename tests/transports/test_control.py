"""The /v1 control API against a real server, acting on a call connected over the event WebSocket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import connect

from flowapp import FlowApp
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.transports.helpers import SESSION_ID, event

BEARER = {"Authorization": "Bearer ctl-token"}


def make_app() -> FlowApp:
    app = FlowApp()

    @app.on_session_start
    def greet() -> str:
        return "Welcome!"

    return app


async def receive(ws: Any) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=3))


async def test_barge_in_and_actions_reach_the_websocket_platform(live_server: StartServer) -> None:
    server = live_server(make_app(), ServerSettings(control_token="ctl-token"))
    async with connect(server.ws_url + "/ws") as ws, httpx.AsyncClient(base_url=server.base_url) as http:
        await ws.send(json.dumps(event("session_start")))
        await receive(ws)

        sessions = (await http.get("/v1/sessions", headers=BEARER)).json()["sessions"]
        assert [s["session_id"] for s in sessions] == [SESSION_ID]
        assert sessions[0]["transport"] == "websocket"

        barge = await http.post(f"/v1/sessions/{SESSION_ID}/barge-in", headers=BEARER)
        assert barge.status_code == 200
        assert barge.json() == {"session_id": SESSION_ID, "barged_in": True}
        assert await receive(ws) == {"type": "barge_in", "session_id": SESSION_ID}

        pushed = await http.post(
            f"/v1/sessions/{SESSION_ID}/actions",
            headers=BEARER,
            json=[{"type": "barge_in"}, {"type": "speak", "text": "An operator joins.", "future_field": 1}],
        )
        assert pushed.status_code == 202
        assert pushed.json() == {"accepted": 2}
        frame = await receive(ws)
        assert [a["type"] for a in frame] == ["barge_in", "speak"]
        assert frame[1]["text"] == "An operator joins."
        assert frame[1]["session_id"] == SESSION_ID
        assert frame[1]["barge_in"]["strategy"] == "minimum_characters"

        single = await http.post(f"/v1/sessions/{SESSION_ID}/actions", headers=BEARER, json={"type": "hangup"})
        assert single.json() == {"accepted": 1}
        assert await receive(ws) == {"type": "hangup", "session_id": SESSION_ID}


async def test_invalid_actions_are_422_naming_item_and_field(live_server: StartServer) -> None:
    server = live_server(make_app(), ServerSettings(control_token="ctl-token", max_body_bytes=2048))
    async with connect(server.ws_url + "/ws") as ws, httpx.AsyncClient(base_url=server.base_url) as http:
        await ws.send(json.dumps(event("session_start")))
        await receive(ws)
        url = f"/v1/sessions/{SESSION_ID}/actions"

        out_of_range = await http.post(
            url, headers=BEARER, json=[{"type": "hangup"}, {"type": "transfer", "timeout": 4}]
        )
        assert out_of_range.status_code == 422
        locs = [err["loc"] for err in out_of_range.json()["detail"]]
        assert [1, "transfer", "timeout"] in locs
        assert [1, "transfer", "target_phone_number"] in locs

        unknown_type = await http.post(url, headers=BEARER, json={"type": "dance"})
        assert unknown_type.status_code == 422
        assert "dance" in unknown_type.json()["detail"][0]["msg"]
        assert (await http.post(url, headers=BEARER, json=[])).status_code == 422

        malformed = await http.post(url, headers=BEARER, content=b"[{")
        assert malformed.status_code == 400
        too_big = await http.post(url, headers=BEARER, json={"type": "speak", "text": "x" * 3000})
        assert too_big.status_code == 413

        await ws.send(json.dumps(event("user_input_timeout")))
        await ws.send(json.dumps(event("session_start")))
        assert (await receive(ws))["text"] == "Welcome!"


async def test_pushed_action_naming_another_call_is_422(live_server: StartServer) -> None:
    server = live_server(make_app(), ServerSettings(control_token="ctl-token"))
    async with connect(server.ws_url + "/ws") as ws, httpx.AsyncClient(base_url=server.base_url) as http:
        await ws.send(json.dumps(event("session_start")))
        await receive(ws)
        url = f"/v1/sessions/{SESSION_ID}/actions"
        foreign = [{"type": "speak", "text": "ok"}, {"type": "hangup", "session_id": "call-A"}]
        refused = await http.post(url, headers=BEARER, json=foreign)
        assert refused.status_code == 422
        assert refused.json()["error"] == "foreign_session"
        assert [err["loc"] for err in refused.json()["detail"]] == [[1, "session_id"]]
        single = await http.post(url, headers=BEARER, json={"type": "hangup", "session_id": "call-A"})
        assert [err["loc"] for err in single.json()["detail"]] == [["session_id"]]

        named = await http.post(url, headers=BEARER, json={"type": "hangup", "session_id": SESSION_ID})
        assert named.status_code == 202
        assert await receive(ws) == {"type": "hangup", "session_id": SESSION_ID}


def test_unknown_session_is_404(live_server: StartServer) -> None:
    server = live_server(make_app(), ServerSettings(control_token="ctl-token"))
    for path in ("/v1/sessions/nope/barge-in", "/v1/sessions/nope/actions"):
        response = httpx.post(server.base_url + path, headers=BEARER, json={"type": "hangup"})
        assert response.status_code == 404
        assert response.json()["error"] == "session_not_found"


def test_missing_or_wrong_bearer_is_401(live_server: StartServer) -> None:
    server = live_server(make_app(), ServerSettings(control_token="ctl-token"))
    for headers in ({}, {"Authorization": "Bearer ctl-tokem"}, {"Authorization": "Basic ctl-token"}):
        response = httpx.get(server.base_url + "/v1/sessions", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"
    assert httpx.get(server.base_url + "/v1/sessions", headers=BEARER).json() == {"sessions": []}


def test_control_api_is_503_until_enabled(live_server: StartServer) -> None:
    disabled = live_server(make_app(), ServerSettings())
    for method, path in (("GET", "/v1/sessions"), ("POST", f"/v1/sessions/{SESSION_ID}/barge-in")):
        response = httpx.request(method, disabled.base_url + path, headers=BEARER)
        assert response.status_code == 503
        assert "FLOWAPP_CONTROL_TOKEN" in response.json()["detail"]
        assert "--insecure-control" in response.json()["detail"]

    insecure = live_server(make_app(), ServerSettings(insecure_control=True))
    assert httpx.get(insecure.base_url + "/v1/sessions").json() == {"sessions": []}
