"""/openapi.json and /healthz over a real server."""

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


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in refs(item)]
    return []


def test_openapi_document_describes_the_endpoints(live_server: StartServer) -> None:
    document = httpx.get(live_server(FlowApp()).base_url + "/openapi.json").json()

    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) >= {
        "/webhook",
        "/v1/sessions",
        "/v1/sessions/{session_id}/barge-in",
        "/v1/sessions/{session_id}/actions",
        "/healthz",
    }
    webhook = document["paths"]["/webhook"]["post"]
    assert set(webhook["responses"]) == {"200", "204", "400", "401", "403", "408", "409", "413", "415", "422", "503"}
    schemas = document["components"]["schemas"]
    assert {"Event", "Action", "UserSpeak", "Speak", "BargeIn", "SessionInfo"} <= set(schemas)
    assert schemas["BargeIn"]["properties"]["minimum_characters"]["maximum"] == 100
    assert schemas["SessionInfo"]["properties"]["id"]["maxLength"] == 128
    assert schemas["Event"]["discriminator"]["propertyName"] == "type"
    for ref in refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert document["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-TOKEN"


def test_healthz(live_server: StartServer) -> None:
    response = httpx.get(live_server(FlowApp()).base_url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_document_and_server_agree_on_empty_and_null_action_arrays(live_server: StartServer) -> None:
    server = live_server(FlowApp(), ServerSettings(control_token="t"))
    reply = httpx.get(server.base_url + "/openapi.json").json()["components"]["schemas"]["Reply"]
    assert {"type": "array", "items": {"$ref": "#/components/schemas/Action"}, "minItems": 1} in reply["oneOf"]
    async with connect(server.ws_url + "/ws") as ws, httpx.AsyncClient(base_url=server.base_url) as http:
        await ws.send(json.dumps(event("session_start")))
        await asyncio.sleep(0.3)
        for body in ([], [None], [{"type": "hangup"}, None]):
            pushed = await http.post(
                f"/v1/sessions/{SESSION_ID}/actions", headers={"Authorization": "Bearer t"}, json=body
            )
            assert pushed.status_code == 422, body
