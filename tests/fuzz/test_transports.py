"""Hypothesis against a real server: arbitrary webhook bodies, event WebSocket frames and media-stream frames
never get a 5xx or a 1011 close, never put a traceback in the server log, and leave memory bounded.

Counts are bounded and examples derandomized so the suite stays quick and repeatable; raise `max_examples`
locally to search further.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from flowapp import FlowApp
from flowapp.protocol.events import EVENT_TYPES
from flowapp.settings import ServerSettings
from tests.conftest import LiveServer, StartServer
from tests.transports.helpers import SESSION

INTERNAL_ERROR = 1011
RSS_GROWTH_LIMIT_MB = 200
"""Generous: the bound is there to catch a leak per message, not to measure the server."""

FUZZ = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))

strings = st.text(max_size=20) | st.sampled_from(["\ud800", "x\udfff", "\udc00\ud800"])
"""Lone surrogates included: JSON can escape them, Unicode cannot encode them."""
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
sessions = st.one_of(st.just(SESSION), st.builds(lambda v: {**SESSION, "id": v}, strings), json_values)
event_bodies = st.fixed_dictionaries(
    {"type": st.sampled_from([*EVENT_TYPES, "user_barge_in", "future_event"]), "session": sessions},
    optional={
        name: json_values
        for name in ("text", "barged_in", "digit", "duration_ms", "interrupted", "played_ms", "reason", "language")
    },
)
junk_bodies = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
)
LONE_SURROGATE_SESSION = {"type": "session_start", "session": {"id": "\ud800"}}
"""The first finding of this fuzzer (a 500 while rendering the reply), kept as an explicit example."""
payloads = st.one_of(
    st.binary(max_size=400).map(lambda data: base64.b64encode(data).decode()),
    st.text(max_size=40),
    json_values,
)
media_frames = st.one_of(
    st.fixed_dictionaries(
        {"event": st.sampled_from(["media", "mark", "dtmf", "transcript", "connected", "future"]) | json_values},
        optional={
            "media": st.fixed_dictionaries(
                {"payload": payloads}, optional={"track": st.sampled_from(["inbound", "outbound"]) | json_values}
            )
            | json_values,
            "mark": st.fixed_dictionaries({"name": json_values}) | json_values,
            "dtmf": st.fixed_dictionaries({"digit": st.text(max_size=2) | json_values}) | json_values,
            "transcript": st.fixed_dictionaries({"text": json_values, "final": json_values}) | json_values,
            "streamSid": json_values,
        },
    ).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=100),
)


def make_app() -> FlowApp:
    app = FlowApp()

    @app.on_session_start
    def greet() -> str:
        return "Welcome!"

    @app.on_user_speak
    def echo(event: Any) -> str:
        return f"You said {event.text}"

    @app.on_dtmf
    def digit(event: Any) -> str:
        return f"Pressed {event.digit}"

    return app


def serve(live_server: StartServer) -> LiveServer:
    return live_server(make_app(), ServerSettings(recognizer=None, vad_detector="webrtc"))


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def still_open_or_closed_cleanly(ws: ClientConnection) -> None:
    """A ping answered, or a close with a code other than 'internal error'."""
    try:
        assert ws.ping().wait(5), "no pong"
    except ConnectionClosed:
        assert ws.close_code != INTERNAL_ERROR, ws.close_reason


def test_webhook_bodies(live_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    server = serve(live_server)
    before = rss_mb()
    with httpx.Client(base_url=server.base_url, timeout=10) as http:

        def post(body: bytes) -> None:
            response = http.post("/webhook", content=body, headers={"content-type": "application/json"})
            assert response.status_code < 500, (body, response.text)
            if response.status_code >= 400:
                assert set(response.json()) == {"error", "detail"}

        @settings(FUZZ, max_examples=250)
        @given(body=event_bodies)
        @example(body=LONE_SURROGATE_SESSION)
        def events_answer_without_a_server_error(body: dict[str, Any]) -> None:
            post(json.dumps(body).encode())

        @settings(FUZZ, max_examples=150)
        @given(body=junk_bodies)
        def junk_answers_without_a_server_error(body: bytes) -> None:
            post(body)

        events_answer_without_a_server_error()
        junk_answers_without_a_server_error()
    assert tracebacks(caplog) == []
    assert rss_mb() - before < RSS_GROWTH_LIMIT_MB


def test_event_websocket_frames(live_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    server = serve(live_server)
    before = rss_mb()

    @settings(FUZZ, max_examples=100)
    @given(frames=st.lists(event_bodies.map(json.dumps) | st.text(max_size=100) | st.binary(max_size=50), max_size=6))
    def never_closes_with_an_internal_error(frames: list[str | bytes]) -> None:
        with connect(server.ws_url + "/ws", max_queue=None) as ws:
            for frame in frames:
                try:
                    ws.send(frame)
                except ConnectionClosed:
                    break
            still_open_or_closed_cleanly(ws)

    never_closes_with_an_internal_error()
    assert tracebacks(caplog) == []
    assert rss_mb() - before < RSS_GROWTH_LIMIT_MB


def start_message() -> str:
    sid = "MZ" + uuid.uuid4().hex
    start = {
        "streamSid": sid,
        "callSid": "CA" + uuid.uuid4().hex,
        "tracks": ["inbound"],
        "customParameters": {"from": "+4915100000001", "to": "4921100000002", "direction": "inbound"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": start})


def test_media_stream_frames(live_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    server = serve(live_server)
    before = rss_mb()

    @settings(FUZZ, max_examples=80)
    @given(started=st.booleans(), frames=st.lists(media_frames, max_size=8))
    def never_closes_with_an_internal_error(started: bool, frames: list[str]) -> None:
        with connect(server.ws_url + "/media", max_queue=None) as ws:
            for frame in [start_message(), *frames] if started else frames:
                try:
                    ws.send(frame)
                except ConnectionClosed:
                    break
            still_open_or_closed_cleanly(ws)

    never_closes_with_an_internal_error()
    assert tracebacks(caplog) == []
    assert rss_mb() - before < RSS_GROWTH_LIMIT_MB
