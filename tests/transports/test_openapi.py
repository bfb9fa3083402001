"""/openapi.json and /healthz over a real server."""

from __future__ import annotations

from typing import Any

import httpx

from flowapp import FlowApp
from tests.conftest import StartServer


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
    assert set(webhook["responses"]) == {"200", "204", "400", "401", "403", "409", "413", "415", "422"}
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
