"""Input that is valid JSON but not valid Unicode, and a client that hangs up mid-body, on a real server."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from flowapp import FlowApp
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.transports.helpers import SESSION_ID, event

LONE_SURROGATE = b'{"type":"session_start","session":{"id":"\\ud800"}}'
"""The escape `\\ud800` written literally, as a client's JSON encoder would send a broken string."""


def make_app() -> FlowApp:
    app = FlowApp()

    @app.on_session_start
    def greet() -> str:
        return "Welcome!"

    return app


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def receive(ws: Any) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=3))


def test_webhook_refuses_a_lone_surrogate_with_400(live_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    server = live_server(make_app())
    response = httpx.post(
        server.base_url + "/webhook", content=LONE_SURROGATE, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert "lone surrogate \\ud800" in response.json()["detail"]
    paired = LONE_SURROGATE.replace(b"\\ud800", b"\\ud83d\\ude00")
    assert (
        httpx.post(server.base_url + "/webhook", content=json.dumps(event("session_start")).encode()).status_code == 200
    )
    refused = httpx.post(server.base_url + "/webhook", content=paired)  # well-formed, but ids are printable ASCII
    assert refused.status_code == 422 and "session id" in refused.text
    assert tracebacks(caplog) == []


async def test_ws_and_control_refuse_a_lone_surrogate(
    live_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = live_server(make_app(), ServerSettings(control_token="ctl-token"))
    async with connect(server.ws_url + "/ws") as ws, httpx.AsyncClient(base_url=server.base_url) as http:
        await ws.send(LONE_SURROGATE.decode())
        refused = await receive(ws)
        assert refused["error"] == "malformed_json" and "lone surrogate" in refused["detail"]
        await ws.send(json.dumps(event("session_start")))
        await receive(ws)
        pushed = await http.post(
            f"/v1/sessions/{SESSION_ID}/actions",
            headers={"Authorization": "Bearer ctl-token"},
            content=b'{"type":"speak","text":"\\udfff"}',
        )
        assert pushed.status_code == 400
        assert "lone surrogate \\udfff" in pushed.json()["detail"]
    assert tracebacks(caplog) == []


def test_a_client_closing_mid_body_logs_no_traceback(
    live_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flowapp")
    server = live_server(make_app())
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        sock.sendall(b'{"type":')
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while "before its body ended" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "before its body ended" in caplog.text
    assert tracebacks(caplog) == []
    assert httpx.get(server.base_url + "/healthz").status_code == 200
