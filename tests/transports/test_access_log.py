"""Secrets in query strings never reach the server's logs, on a real server with its access log on."""

from __future__ import annotations

import logging

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from flowapp import FlowApp
from flowapp.settings import ServerSettings
from tests.conftest import StartServer

TOKEN = "s3cret-token-value"


async def test_query_tokens_are_redacted_from_access_and_websocket_logs(
    live_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = live_server(FlowApp(), ServerSettings(api_token=TOKEN))
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get(f"/healthz?token={TOKEN}&verbose=1")).status_code == 200
        await http.get(f"/openapi.json?api_key={TOKEN}")
    async with connect(f"{server.ws_url}/media?token={TOKEN}"):
        pass
    with pytest.raises(InvalidStatus):
        async with connect(f"{server.ws_url}/ws?token=wrong-{TOKEN}"):
            pass

    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/healthz?token=[redacted]&verbose=1" in line for line in access)
    assert any("/openapi.json?api_key=[redacted]" in line for line in access)
    websocket = [r.getMessage() for r in caplog.records if r.name == "uvicorn.error" and "WebSocket" in r.getMessage()]
    assert any("/media?token=[redacted]" in line for line in websocket)
    server_lines = [r.getMessage() for r in caplog.records if r.name.startswith(("uvicorn", "flowapp"))]
    assert not [line for line in server_lines if TOKEN in line]  # the test's own client (httpx) may log it
