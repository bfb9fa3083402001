"""Numbers on every transport of a real server: NaN, infinities (`1e999` in JSON) and true/false standing in
for a number are refused where they come in, naming the field, and never turn into a 500 or invalid JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import connect

from flowapp import FlowApp, Speak
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.transports.helpers import SESSION_ID, event

BEARER = {"Authorization": "Bearer ctl-token", "content-type": "application/json"}


def strict_json(text: str | bytes) -> Any:
    """What a JSON parser other than Python's would accept: no NaN or Infinity literals."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def make_app() -> FlowApp:
    app = FlowApp(fallback="One moment.")

    @app.on_session_start
    def greet() -> str:
        return "Welcome!"

    @app.on_dtmf
    def wait_forever() -> Speak:
        return Speak(text="Take your time.", user_input_timeout_seconds=float("inf"))

    return app


def raw_event(event_type: str, fields: str) -> str:
    """An event with fields spliced in as raw JSON text, as a platform might send `1e999`."""
    return json.dumps(event(event_type))[:-1] + ", " + fields + "}"


def test_webhook_refuses_non_finite_and_boolean_numbers(live_server: StartServer) -> None:
    url = live_server(make_app()).base_url + "/webhook"
    reply = httpx.post(url, json=event("dtmf_received", digit="1"))
    assert reply.status_code == 200, "a handler building an infinite timeout answers the fallback"
    assert strict_json(reply.content)["text"] == "One moment."

    for fields in ('"duration_ms": 1e999', '"duration_ms": false', '"duration_ms": NaN'):
        response = httpx.post(url, content=raw_event("assistant_speak", fields))
        assert response.status_code == 422, fields
        assert response.json()["error"] == "invalid_event"
        assert response.json()["detail"][0]["loc"][-1] == "duration_ms"
    played = httpx.post(url, content=raw_event("assistant_speech_ended", '"played_ms": "1500"'))
    assert played.status_code in (200, 204), "a numeric string is still read as the number"


async def test_event_websocket_refuses_them_and_sends_only_valid_json(live_server: StartServer) -> None:
    server = live_server(make_app())
    async with connect(server.ws_url + "/ws") as ws:
        await ws.send(json.dumps(event("dtmf_received", digit="1")))
        frame = strict_json(await asyncio.wait_for(ws.recv(), timeout=3))
        assert frame["text"] == "One moment."

        await ws.send(raw_event("assistant_speak", '"duration_ms": 1e999'))
        error = strict_json(await asyncio.wait_for(ws.recv(), timeout=3))
        assert (error["type"], error["error"]) == ("error", "invalid_event")
        assert error["detail"][0]["loc"][-1] == "duration_ms"
        assert "finite" in error["detail"][0]["msg"]

        await ws.send(raw_event("assistant_speech_ended", '"played_ms": true'))
        error = strict_json(await asyncio.wait_for(ws.recv(), timeout=3))
        assert error["detail"][0]["loc"][-1] == "played_ms"


async def test_control_api_refuses_them_naming_the_field(live_server: StartServer) -> None:
    server = live_server(make_app(), ServerSettings(control_token="ctl-token"))
    async with connect(server.ws_url + "/ws") as ws, httpx.AsyncClient(base_url=server.base_url) as http:
        await ws.send(json.dumps(event("session_start")))
        await ws.recv()
        url = f"/v1/sessions/{SESSION_ID}/actions"
        cases = [
            (
                '{"type": "speak", "text": "x", "user_input_timeout_seconds": 1e999}',
                ["speak", "user_input_timeout_seconds"],
            ),
            ('{"type": "mix_audio", "audio": "x", "volume": NaN}', ["mix_audio", "volume"]),
            ('{"type": "transfer", "target_phone_number": "+49", "timeout": true}', ["transfer", "timeout"]),
            (
                '{"type": "speak", "text": "x", "barge_in": {"allow_after_ms": false}}',
                ["speak", "barge_in", "allow_after_ms"],
            ),
            (
                '{"type": "configure_turn_handling", "turn_handling": {"endpointing": {"min_delay": -1e999}}}',
                ["configure_turn_handling", "turn_handling"],
            ),
        ]
        for body, loc in cases:
            response = await http.post(url, headers=BEARER, content=body)
            assert response.status_code == 422, body
            assert response.json()["detail"][0]["loc"] == loc
        turn_handling = (await http.post(url, headers=BEARER, content=cases[-1][0])).json()["detail"][0]["msg"]
        assert "turn_handling.endpointing.min_delay must be a finite number" in turn_handling
        fine = await http.post(
            url, headers=BEARER, json={"type": "speak", "text": "x", "user_input_timeout_seconds": 4}
        )
        assert fine.status_code == 202
        assert strict_json(await asyncio.wait_for(ws.recv(), timeout=3))["user_input_timeout_seconds"] == 4.0


async def test_a_media_call_whose_handler_builds_an_infinite_timeout_goes_on(live_server: StartServer) -> None:
    from tests.live.calls import CUSTOM
    from tests.live.carrier import Carrier

    app = make_app()

    @app.on_session_start
    def greet_and_wait_forever() -> Speak:
        return Speak(text="Hello.", user_input_timeout_seconds=float("inf"))

    server = live_server(app, ServerSettings(vad_detector="webrtc", recognizer=None))
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        streaming = asyncio.create_task(carrier.silence(5))
        await carrier.wait_for("media", count=10)
        await asyncio.sleep(2.0)  # "Hello." has played: the engine now waits (for ever) for the caller
        greeting = len(carrier.events("media"))
        await carrier.dtmf("1")
        await carrier.wait_for("media", count=greeting + 10)
        assert carrier.close_code is None, "the call is still up and answers the key"
        await carrier.stop()
        streaming.cancel()
