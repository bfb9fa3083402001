"""POST /webhook against a real uvicorn server: replies, auth, limits and every error answer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from flowapp import FlowApp, Hangup, Speak
from flowapp.session import InMemorySessionStore
from flowapp.settings import ServerSettings
from flowapp.transports.auth import sign
from tests.conftest import StartServer
from tests.transports.helpers import SESSION_ID, event


def make_app(**options: object) -> tuple[FlowApp, list[str]]:
    app = FlowApp(fallback="Sorry, one moment.", **options)  # type: ignore[arg-type]
    seen: list[str] = []

    @app.on_session_start
    def greet(e: object) -> str:
        seen.append("session_start")
        return "Welcome!"

    @app.on_user_speak
    def answer(e: object) -> list[Speak | Hangup]:
        seen.append("user_speak")
        return [Speak(text="Goodbye."), Hangup()]

    @app.on_dtmf
    def ignore(e: object) -> None:
        seen.append("dtmf")

    return app, seen


def post(url: str, body: object, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + "/webhook", content=content, headers={"content-type": "application/json", **headers})


def test_one_action_is_an_object_several_an_array_none_is_204(live_server: StartServer) -> None:
    app, seen = make_app()
    url = live_server(app).base_url

    one = post(url, event("session_start"))
    assert one.status_code == 200
    assert one.json() == {
        "type": "speak",
        "session_id": SESSION_ID,
        "text": "Welcome!",
        "barge_in": {"strategy": "minimum_characters", "minimum_characters": 3},
    }
    several = post(url, event("user_speak", text="bye"))
    assert [a["type"] for a in several.json()] == ["speak", "hangup"]
    none = post(url, event("dtmf_received", digit="5"))
    assert none.status_code == 204
    assert none.content == b""
    assert seen == ["session_start", "user_speak", "dtmf"]


def test_api_token_is_required_when_configured(live_server: StartServer) -> None:
    app, seen = make_app()
    url = live_server(app, ServerSettings(api_token="s3cret")).base_url

    missing = post(url, event("session_start"))
    wrong = post(url, event("session_start"), **{"X-API-TOKEN": "s3cres"})
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.json()["error"] == "unauthorized"
    assert "X-API-TOKEN" in missing.json()["detail"].upper()
    assert seen == []
    assert post(url, event("session_start"), **{"X-API-TOKEN": "s3cret"}).status_code == 200
    assert seen == ["session_start"]


def test_signature_must_match_the_raw_body(live_server: StartServer) -> None:
    app, seen = make_app()
    url = live_server(app, ServerSettings(webhook_secret="k3y")).base_url
    body = json.dumps(event("session_start")).encode()

    assert post(url, body).status_code == 401
    assert post(url, body, **{"x-sipgate-signature": sign(body, "other")}).status_code == 401
    assert post(url, body + b" ", **{"x-sipgate-signature": sign(body, "k3y")}).status_code == 401
    assert seen == []
    assert post(url, body, **{"x-sipgate-signature": sign(body, "k3y")}).status_code == 200
    assert seen == ["session_start"]


def test_token_and_signature_together_both_must_pass(live_server: StartServer) -> None:
    app, seen = make_app()
    url = live_server(app, ServerSettings(api_token="t", webhook_secret="k")).base_url
    body = json.dumps(event("session_start")).encode()

    assert post(url, body, **{"x-api-token": "t"}).status_code == 401
    assert post(url, body, **{"x-sipgate-signature": sign(body, "k")}).status_code == 401
    assert seen == []
    assert post(url, body, **{"x-api-token": "t", "x-sipgate-signature": sign(body, "k")}).status_code == 200


def test_over_limit_body_is_413_with_or_without_content_length(live_server: StartServer) -> None:
    app, seen = make_app()
    url = live_server(app, ServerSettings(max_body_bytes=1024)).base_url
    big = json.dumps(event("user_speak", text="x" * 3000)).encode()

    honest = post(url, big)
    assert honest.status_code == 413
    assert honest.json()["error"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 500):
            yield big[start : start + 500]

    with httpx.Client() as client:
        request = client.build_request("POST", url + "/webhook", content=chunks())
        assert "content-length" not in request.headers
        chunked = client.send(request)
    assert chunked.status_code == 413
    assert chunked.json()["error"] == "payload_too_large"
    assert seen == []
    assert post(url, event("session_start")).status_code == 200


def test_malformed_json_is_400_naming_the_position(live_server: StartServer) -> None:
    app, _ = make_app()
    response = post(live_server(app).base_url, b'{"type": "session_start",\n "session": }')
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert "line 2 column 13" in response.json()["detail"]


def test_invalid_event_is_422_naming_the_field(live_server: StartServer) -> None:
    app, seen = make_app()
    url = live_server(app).base_url

    bad_digit = post(url, event("dtmf_received", digit="x"))
    assert bad_digit.status_code == 422
    assert bad_digit.json()["error"] == "invalid_event"
    assert any(err["loc"][-1] == "digit" for err in bad_digit.json()["detail"])
    no_session = post(url, {"type": "session_start"})
    assert no_session.status_code == 422
    assert any("session" in err["loc"] for err in no_session.json()["detail"])
    not_an_object = post(url, [1, 2])
    assert not_an_object.status_code == 422
    assert seen == []


def test_unknown_event_type_is_204_and_logged(live_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    app, seen = make_app()
    with caplog.at_level(logging.INFO, logger="flowapp.webhook"):
        response = post(live_server(app).base_url, event("call_recording_ready", url="x"))
    assert response.status_code == 204
    assert seen == []
    assert "call_recording_ready" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="flowapp.webhook"):
        huge = post(live_server(app).base_url, event("y" * 400_000, session_id="z" * 400_000))
    assert huge.status_code == 204
    (line,) = [r for r in caplog.records if r.name == "flowapp.webhook"]
    assert len(line.getMessage()) < 200 and getattr(line, "session_id", None) is None


def test_raising_handler_answers_the_fallback_and_the_server_stays_up(live_server: StartServer) -> None:
    app, _ = make_app()

    @app.on_user_input_timeout
    def broken(e: object) -> str:
        raise RuntimeError("database down")

    url = live_server(app).base_url
    response = post(url, event("user_input_timeout"))
    assert response.status_code == 200
    assert response.json()["text"] == "Sorry, one moment."
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    assert post(url, event("session_start")).json()["text"] == "Welcome!"


def test_slow_handler_answers_the_fallback_within_the_deadline(
    live_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = make_app(handler_timeout=0.2)

    @app.on_user_input_timeout
    async def slow(e: object) -> str:
        await asyncio.sleep(0.6)
        return "Late answer"

    url = live_server(app).base_url
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="flowapp.app"):
        response = post(url, event("user_input_timeout"))
        elapsed = time.monotonic() - started
        assert response.json()["text"] == "Sorry, one moment."
        assert 0.2 <= elapsed < 0.5
        deadline = time.monotonic() + 3
        while "Late answer" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "not delivered" in caplog.text
    assert "Late answer" in caplog.text


def test_deeply_nested_json_is_400_not_500(live_server: StartServer) -> None:
    app, _ = make_app()
    response = post(live_server(app).base_url, b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"


def test_session_ids_are_bounded_and_the_store_is_capped(live_server: StartServer) -> None:
    app, seen = make_app(session_store=InMemorySessionStore(max_sessions=50))
    url = live_server(app).base_url
    for bad_id in ("x" * 500_000, "x" * 129, "", "with space", "caf\u00e9"):
        response = post(url, event("session_start", session_id=bad_id))
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert error["loc"][-2:] == ["session", "id"]
        assert "1-128 printable ASCII" in error["msg"]
    assert post(url, event("session_start", session_id="x" * 128)).status_code == 200
    with httpx.Client(base_url=url, headers={"content-type": "application/json"}) as client:
        for n in range(300):
            response = client.post("/webhook", content=json.dumps(event("dtmf_received", f"id-{n}", digit="1")))
            assert response.status_code == 204
    assert len(app.store) == 50  # type: ignore[arg-type]
    assert seen.count("dtmf") == 300
