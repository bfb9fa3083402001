"""schemathesis against a real server: every answer to a request generated from `/openapi.json` is one the
document promises (status, content type, body schema), never a 5xx, and what it calls valid is accepted."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from websockets.sync.client import connect

from flowapp.audio.wav import encode_wav
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.transports.helpers import SESSION_ID, event, greeting_app

CONTROL_TOKEN = "ctl-token"
EXAMPLES = 25
"""Per operation and generation mode: enough to find a disagreement, few enough for the regular suite. The
examples are derandomized, so the suite is repeatable; raise this locally to search further."""


PLAYABLE = base64.b64encode(encode_wav(np.zeros(160, dtype=np.int16))).decode()


def beyond_the_schema(body: object) -> None:
    """Make a schema-valid body valid in what a JSON schema cannot say: a pushed action names only the call
    it is pushed into, and `audio` holds a playable WAV (the 422s for both have their own tests)."""
    for item in body if isinstance(body, list) else [body]:
        if not isinstance(item, dict):
            continue
        if "session_id" in item:
            item["session_id"] = SESSION_ID
        if item.get("type") in ("audio", "mix_audio") and isinstance(item.get("audio"), str):
            item["audio"] = PLAYABLE


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_the_server_keeps_to_its_openapi_document(live_server: StartServer, mode: GenerationMode) -> None:
    """One call is live over `/ws` so the control API has a session to act on."""
    server = live_server(greeting_app(), ServerSettings(control_token=CONTROL_TOKEN))
    api = schemathesis.openapi.from_url(server.base_url + "/openapi.json")
    with connect(server.ws_url + "/ws", max_queue=None) as platform:
        platform.send(json.dumps(event("session_start")))
        platform.recv(timeout=5)
        for result in api.get_all_operations():
            operation = result.ok()
            if mode is GenerationMode.NEGATIVE and not operation.body:
                continue  # nothing a client sends can be made invalid: no body, and the session id is fixed
            fixed = {"session_id": SESSION_ID} if "{session_id}" in operation.path else None

            @given(case=operation.as_strategy(mode, path_parameters=fixed))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def answers_as_documented(case: Case) -> None:
                if mode is GenerationMode.POSITIVE:
                    beyond_the_schema(case.body)
                case.call_and_validate(headers={"Authorization": f"Bearer {CONTROL_TOKEN}"}, timeout=10)

            answers_as_documented()
