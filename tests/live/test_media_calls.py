"""Live calls end to end: a real carrier client streams real speech at real-time pace to a real uvicorn.

Assertions are on ordering and generous bounds, never on tight timings: the machine may be loaded.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flowapp import BargeIn, Hangup, Speak
from flowapp.engine import playout, pump
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.live.calls import BOTH_MEDIA_PATHS, CUSTOM, LONG_TEXT, RecordingApp, caller_speech, wait_until
from tests.live.carrier import Carrier

pytestmark = pytest.mark.slow  # every call streams real audio in real time

CONTROL = ServerSettings(insecure_control=True)


def greeting(strategy: BargeIn, text: str = LONG_TEXT) -> Speak:
    return Speak(text=text, barge_in=strategy)


@BOTH_MEDIA_PATHS
async def test_greeting_is_streamed_and_stop_ends_the_call_once(live_server: StartServer, ws: object) -> None:
    rec = RecordingApp({"session_start": greeting(BargeIn.none(), "Hello, and welcome.")})
    server = live_server(rec.app, CONTROL, ws=ws)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        streaming = asyncio.create_task(carrier.silence(4))
        await carrier.wait_for("media", count=25)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            sessions = (await http.get("/v1/sessions")).json()["sessions"]
        assert [s["transport"] for s in sessions] == ["media"]
        assert sessions[0]["from_phone_number"] == "+4915100000001"
        assert sessions[0]["to_phone_number"] == "+4921100000002"
        assert sessions[0]["direction"] == "inbound"
        await wait_until(lambda: rec.of("assistant_speech_ended"))
        await carrier.stop()
        streaming.cancel()
        await carrier.closed()
    await wait_until(lambda: rec.of("session_end"))
    await asyncio.sleep(0.3)
    ended = rec.of("session_end")
    assert len(ended) == 1 and ended[0].reason == "stream_stopped"
    assert [e.type for e in rec.events][:2] == ["session_start", "assistant_speak"]
    assert rec.of("assistant_speech_ended")[0].interrupted is False
    assert rec.events[0].session.from_phone_number == "+4915100000001"
    assert len(carrier.events("media")) == rec.of("assistant_speak")[0].duration_ms // 20
    assert carrier.echoed_marks, "marks are sent while speaking, and echoed by the carrier"
    assert len(rec.app.calls) == 0


@BOTH_MEDIA_PATHS
async def test_immediate_barge_in_on_real_speech_sends_clear(live_server: StartServer, ws: object) -> None:
    rec = RecordingApp({"session_start": greeting(BargeIn.immediate())})
    server = live_server(rec.app, ws=ws)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        await carrier.wait_for("media", count=40)
        await carrier.stream(caller_speech("please-try-again", tail_ms=1200))
        clear = await carrier.wait_for("clear")
        await wait_until(lambda: rec.of("user_speak"))
        await carrier.silence(0.3)
        await carrier.stop()
    at_clear = carrier.index_of("clear")
    assert all(r.event != "media" for r in carrier.received[at_clear:]), "no media for the item after clear"
    ended = rec.of("assistant_speech_ended")[0]
    assert ended.interrupted is True
    frames_sent = len(carrier.events("media"))
    assert 0 < ended.played_ms <= frames_sent * 20
    assert ended.heard_text and LONG_TEXT.startswith(ended.heard_text)
    assert rec.of("user_speak")[0].barged_in is True
    assert clear.at > carrier.events("media")[-1].at


async def test_none_item_is_not_interrupted(live_server: StartServer) -> None:
    rec = RecordingApp({"session_start": greeting(BargeIn.none(), "One moment please, I am checking that for you.")})
    server = live_server(rec.app)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        await carrier.wait_for("media", count=5)
        await carrier.stream(caller_speech("please-try-again"))
        await wait_until(lambda: rec.of("assistant_speech_ended"))
        await carrier.stop()
    assert not carrier.events("clear")
    assert rec.of("assistant_speech_ended")[0].interrupted is False
    assert len(carrier.events("media")) == rec.of("assistant_speak")[0].duration_ms // 20
    assert rec.of("user_speech_started"), "the caller was heard, just not allowed to interrupt"


async def test_protected_item_is_interrupted_only_after_allow_after_ms(live_server: StartServer) -> None:
    rec = RecordingApp({"session_start": greeting(BargeIn.immediate(allow_after_ms=1500))})
    server = live_server(rec.app)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        await carrier.wait_for("media", count=3)
        await carrier.stream(caller_speech("cannot-complete-as-dialed", "please-try-again", tail_ms=800))
        await carrier.wait_for("clear")
        await wait_until(lambda: rec.of("assistant_speech_ended"))
        await carrier.stop()
    at_clear = carrier.index_of("clear")
    media_before_clear = sum(1 for r in carrier.received[:at_clear] if r.event == "media")
    # The barge-in falls in the step that completes 1500 ms of the item; that step's frame is never sent.
    assert media_before_clear >= 1500 // 20 - 1, "nothing may interrupt the first 1500 ms of the item"
    assert all(r.event != "media" for r in carrier.received[at_clear:])
    ended = rec.of("assistant_speech_ended")[0]
    assert ended.interrupted is True and 1400 <= ended.played_ms <= media_before_clear * 20


async def test_manual_barge_in_and_pushed_speak_over_rest(live_server: StartServer) -> None:
    rec = RecordingApp({"session_start": greeting(BargeIn.manual())})
    server = live_server(rec.app, CONTROL)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier, httpx.AsyncClient(base_url=server.base_url) as http:
        streaming = asyncio.create_task(carrier.silence(6))
        await carrier.wait_for("media", count=25)
        session_id = (await http.get("/v1/sessions")).json()["sessions"][0]["session_id"]
        answer = await http.post(f"/v1/sessions/{session_id}/barge-in")
        assert answer.status_code == 200 and answer.json()["barged_in"] is True
        await carrier.wait_for("clear")
        await wait_until(lambda: rec.of("assistant_speech_ended"))
        media_at_clear = len(carrier.events("media"))
        await asyncio.sleep(0.3)
        assert len(carrier.events("media")) == media_at_clear, "the barged-in item sends nothing more"
        again = await http.post(f"/v1/sessions/{session_id}/barge-in")
        assert again.json()["barged_in"] is False
        pushed = await http.post(f"/v1/sessions/{session_id}/actions", json={"type": "speak", "text": "Pushed."})
        assert pushed.status_code == 202
        await carrier.wait_for("media", count=media_at_clear + 10)
        assert (await http.post("/v1/sessions/no-such-call/barge-in")).status_code == 404
        await carrier.stop()
        streaming.cancel()
    ended = rec.of("assistant_speech_ended")[0]
    assert ended.interrupted is True and ended.played_ms > 0
    assert [e.text for e in rec.of("assistant_speak")] == [LONG_TEXT, "Pushed."]


async def test_dtmf_reaches_the_app_and_its_reply_is_played(live_server: StartServer) -> None:
    rec = RecordingApp({"dtmf_received": Speak(text="You pressed a key.")})
    server = live_server(rec.app)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        streaming = asyncio.create_task(carrier.silence(4))
        await carrier.dtmf("5")
        await carrier.dtmf("#")
        await carrier.wait_for("media", count=10)
        await wait_until(lambda: len(rec.of("dtmf_received")) == 2)
        await carrier.stop()
        streaming.cancel()
    assert [e.digit for e in rec.of("dtmf_received")] == ["5", "#"]
    assert rec.of("assistant_speak")[0].text == "You pressed a key."


async def test_a_key_press_stops_an_immediate_menu_and_the_answer_plays_next(live_server: StartServer) -> None:
    rec = RecordingApp(
        {"session_start": greeting(BargeIn.immediate()), "dtmf_received": Speak(text="You chose billing.")}
    )
    server = live_server(rec.app)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        streaming = asyncio.create_task(carrier.silence(6))
        await carrier.wait_for("media", count=25)
        await carrier.dtmf("2")
        await carrier.wait_for("clear")
        await wait_until(lambda: len(rec.of("assistant_speak")) == 2)
        await carrier.stop()
        streaming.cancel()
    menu = rec.of("assistant_speech_ended")[0]
    assert menu.interrupted is True and menu.played_ms < 4000
    assert [e.text for e in rec.of("assistant_speak")] == [LONG_TEXT, "You chose billing."]


@BOTH_MEDIA_PATHS
async def test_dropped_socket_ends_the_call_once(live_server: StartServer, ws: object) -> None:
    rec = RecordingApp({"session_start": greeting(BargeIn.immediate())})
    server = live_server(rec.app, ws=ws)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        await carrier.wait_for("media", count=5)
        carrier.ws.transport.abort()
    await wait_until(lambda: rec.of("session_end"))
    await asyncio.sleep(0.3)
    assert [e.reason for e in rec.of("session_end")] == ["connection_lost"]
    assert rec.of("assistant_speech_ended")[0].interrupted is True
    assert len(rec.app.calls) == 0


@BOTH_MEDIA_PATHS
async def test_app_hangup_closes_the_stream(live_server: StartServer, ws: object) -> None:
    rec = RecordingApp({"session_start": [Speak(text="Goodbye.", barge_in=BargeIn.none()), Hangup()]})
    server = live_server(rec.app, ws=ws)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        streaming = asyncio.create_task(carrier.silence(4))
        await carrier.closed()
        streaming.cancel()
    assert carrier.close_code == 1000 and carrier.close_reason == "hangup"
    assert carrier.events("media")
    await wait_until(lambda: rec.of("session_end"))  # the app hears of the end after the stream has closed
    await asyncio.sleep(0.3)
    assert [e.reason for e in rec.of("session_end")] == ["hangup"]


async def test_the_callers_words_reach_the_app_by_the_local_recognizer(live_server: StartServer) -> None:
    from benchmarks.wer import normalize

    rec = RecordingApp({"session_start": greeting(BargeIn.none(), "Hello.")})
    server = live_server(rec.app, ServerSettings(recognizer="local"))
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        await wait_until(lambda: rec.of("assistant_speech_ended"))
        await carrier.stream(caller_speech("conf-getpin", lead_ms=300, tail_ms=1500))
        await wait_until(lambda: rec.of("user_speak"), timeout=10.0)
        await carrier.stop()
    said = rec.of("user_speak")
    assert [normalize(e.text) for e in said] == [normalize("Please enter the conference PIN number.")]
    assert said[0].barged_in is None


async def test_pushes_beyond_the_calls_queued_audio_bound_get_429(
    live_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pump, "MAX_QUEUED_SECONDS", 25)  # LONG_TEXT speaks for about 10 s
    monkeypatch.setattr(playout, "MAX_QUEUED_SECONDS", 25)
    rec = RecordingApp({"session_start": greeting(BargeIn.none(), "Hello.")})
    server = live_server(rec.app, CONTROL)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier, httpx.AsyncClient(base_url=server.base_url) as http:
        streaming = asyncio.create_task(carrier.silence(8))
        await carrier.wait_for("media", count=5)
        session_id = (await http.get("/v1/sessions")).json()["sessions"][0]["session_id"]
        url = f"/v1/sessions/{session_id}/actions"
        answers = [await http.post(url, json={"type": "speak", "text": LONG_TEXT}) for _ in range(3)]
        short = await http.post(url, json={"type": "speak", "text": "Still here."})
        await carrier.stop()
        streaming.cancel()
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[2].json()["error"] == "queue_full" and "25 s" in answers[2].json()["detail"]
    assert short.status_code == 202  # what fits is still accepted
