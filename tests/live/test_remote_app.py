"""Remote apps: the engine drives a webhook app over HTTP, as the platform would."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from flowapp import BargeIn, FlowApp, Speak
from flowapp.protocol.events import DtmfReceived, SessionInfo, SessionStart
from flowapp.settings import ServerSettings
from flowapp.transports.auth import sign
from flowapp.transports.remote import RemoteApp, responder_for
from tests.conftest import StartServer
from tests.live.calls import CUSTOM, RecordingApp
from tests.live.carrier import Carrier

SESSION = SessionInfo(id="6a1c5f8e-2b3d-4e5f-8a9b-0c1d2e3f4a5b")


@pytest.mark.slow
async def test_a_media_call_driven_by_a_webhook_app_on_another_server(live_server: StartServer) -> None:
    remote = RecordingApp(
        {
            "session_start": Speak(text="Hello from far away.", barge_in=BargeIn.none()),
            "dtmf_received": Speak(text="Key noted."),
        }
    )
    app_server = live_server(remote.app, ServerSettings(webhook_secret="shared-key"))
    local = FlowApp(fallback="One moment please.")
    settings = ServerSettings(
        app_url=app_server.base_url + "/webhook", app_webhook_secret="shared-key", app_timeout_seconds=2.0
    )
    server = live_server(local, settings)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        streaming = asyncio.create_task(carrier.silence(5))
        await carrier.wait_for("media", count=10)
        await carrier.dtmf("3")
        while not [e for e in remote.of("assistant_speak") if e.text == "Key noted."]:
            await asyncio.sleep(0.05)
        await carrier.stop()
        streaming.cancel()
    for _ in range(100):
        if remote.of("session_end"):
            break
        await asyncio.sleep(0.05)
    assert [e.type for e in remote.events][:2] == ["session_start", "assistant_speak"]
    assert [e.digit for e in remote.of("dtmf_received")] == ["3"]
    assert [e.reason for e in remote.of("session_end")] == ["stream_stopped"]
    assert remote.events[0].session.from_phone_number == "+4915100000001"


@pytest.mark.slow
async def test_a_slow_remote_app_gets_the_fallback_and_the_audio_goes_on(live_server: StartServer) -> None:
    remote = RecordingApp(handler_timeout=5.0)

    @remote.app.on_dtmf
    async def slow() -> str:
        await asyncio.sleep(1.5)
        return "Too late."

    app_server = live_server(remote.app)
    local = FlowApp(fallback="One moment please.")
    server = live_server(local, ServerSettings(app_url=app_server.base_url + "/webhook", app_timeout_seconds=0.3))
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        streaming = asyncio.create_task(carrier.silence(4))
        await carrier.dtmf("1")
        # The remote app says nothing in time: the only audio of this call is the fallback.
        await carrier.wait_for("media", count=30)
        await carrier.stop()
        streaming.cancel()
    assert not carrier.events("clear")


def _recording_transport(answers: list[httpx.Response | Exception]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle), seen


@pytest.mark.parametrize(
    ("answers", "attempts"),
    [
        ([httpx.ConnectError("refused"), httpx.Response(200, json={"type": "speak", "text": "hi"})], 2),
        ([httpx.Response(500)], 1),
        ([httpx.ReadTimeout("slow")], 1),
        ([httpx.Response(200, text="not json")], 1),
        ([httpx.Response(200, json={"type": "speak"})], 1),
        ([httpx.Response(200, json={"type": "speak", "text": "word " * 20_000})], 1),
        ([httpx.Response(200, content=b'{"type": "speak", "text": "x", "user_input_timeout_seconds": 1e999}')], 1),
        ([httpx.Response(200, json={"type": "speak", "text": "x", "barge_in": {"allow_after_ms": True}})], 1),
        ([httpx.ConnectError("refused"), httpx.ConnectError("refused")], 2),
    ],
)
async def test_retries_only_connection_failures(answers: list[httpx.Response | Exception], attempts: int) -> None:
    transport, seen = _recording_transport(answers)
    succeeds = attempts == 2 and len(answers) == 2 and isinstance(answers[1], httpx.Response)
    async with httpx.AsyncClient(transport=transport) as client:
        app = RemoteApp("http://app.test/webhook", client=client, fallback="fallback")
        actions = await app.respond(SessionStart(session=SESSION))
    assert len(seen) == attempts
    assert [a.to_wire()["text"] for a in actions] == ["hi" if succeeds else "fallback"]
    assert all(a.session_id == SESSION.id for a in actions)


async def test_events_are_signed_and_carry_the_token() -> None:
    transport, seen = _recording_transport([httpx.Response(204)])
    async with httpx.AsyncClient(transport=transport) as client:
        app = RemoteApp("http://app.test/webhook", client=client, api_token="tok", webhook_secret="key")
        assert await app.respond(DtmfReceived(session=SESSION, digit="9")) == []
    request = seen[0]
    assert request.headers["x-api-token"] == "tok"
    assert request.headers["x-sipgate-signature"] == sign(request.content, "key")
    assert json.loads(request.content)["digit"] == "9"


async def test_reply_actions_naming_another_call_are_dropped() -> None:
    reply = [{"type": "speak", "text": "mine"}, {"type": "hangup", "session_id": "another-call"}]
    transport, _ = _recording_transport([httpx.Response(200, json=reply)])
    async with httpx.AsyncClient(transport=transport) as client:
        actions = await RemoteApp("http://app.test/webhook", client=client).respond(SessionStart(session=SESSION))
    assert [(a.type, a.session_id) for a in actions] == [("speak", SESSION.id)]


async def test_the_deadline_covers_a_hanging_app() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as client:
        app = RemoteApp("http://app.test/webhook", client=client, timeout=0.2, fallback="fallback")
        started = asyncio.get_running_loop().time()
        actions = await app.respond(SessionStart(session=SESSION))
    assert asyncio.get_running_loop().time() - started < 2
    assert [a.to_wire()["text"] for a in actions] == ["fallback"]


async def test_serve_takes_the_app_url_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowapp.cli import _settings_from, build_parser

    monkeypatch.setenv("FLOWAPP_APP_URL", "http://env.example/webhook")
    monkeypatch.setenv("FLOWAPP_APP_TIMEOUT", "0.5")
    from_env = _settings_from(build_parser().parse_args(["serve"]))
    assert from_env.app_url == "http://env.example/webhook" and from_env.app_timeout_seconds == 0.5
    from_flag = _settings_from(build_parser().parse_args(["serve", "--app-url", "http://flag.example/hook"]))
    assert from_flag.app_url == "http://flag.example/hook"
    responder = responder_for(FlowApp(), from_flag)
    assert isinstance(responder, RemoteApp) and responder.url == "http://flag.example/hook"
    await responder.aclose()
