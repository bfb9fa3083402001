"""`GET /metrics` on a real server: gated by the control token, and its counters move with a live call."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flowapp import BargeIn, Speak
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.live.calls import CUSTOM, LONG_TEXT, RecordingApp, caller_speech, wait_until
from tests.live.carrier import Carrier

TOKEN = "metrics-reader-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_need_the_control_token(live_server: StartServer) -> None:
    server = live_server(RecordingApp().app, ServerSettings(control_token=TOKEN))
    closed = live_server(RecordingApp().app, ServerSettings())
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.base_url + "/metrics")).status_code == 401
        wrong = await http.get(server.base_url + "/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]
        off = await http.get(closed.base_url + "/metrics", headers=AUTH)
        assert off.status_code == 503 and "control" in off.json()["detail"]
        answer = await http.get(server.base_url + "/metrics", headers=AUTH)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert {"flowapp_calls", "flowapp_live_calls", "flowapp_barge_ins", "flowapp_event_loop_lag_seconds"} <= names
    assert all(name.startswith("flowapp_") for name in names)


@pytest.mark.slow
async def test_counters_move_after_a_barge_in(live_server: StartServer) -> None:
    rec = RecordingApp({"session_start": Speak(text=LONG_TEXT, barge_in=BargeIn.immediate())})
    server = live_server(rec.app, ServerSettings(control_token=TOKEN, recognizer=None))
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http:
        before = _samples((await http.get("/metrics")).text)
        live_before = _value(before, "flowapp_live_calls", transport="media")
        async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
            await carrier.wait_for("media", count=20)
            during = _samples((await http.get("/metrics")).text)
            await carrier.stream(caller_speech("please-try-again", tail_ms=800))
            await carrier.wait_for("clear")
            await carrier.stop()
        await wait_until(lambda: rec.of("session_end"))
        for _ in range(100):
            after = _samples((await http.get("/metrics")).text)
            if _value(after, "flowapp_live_calls", transport="media") == live_before:
                break
    assert _value(after, "flowapp_live_calls", transport="media") == live_before, "the call is over"
    assert _value(during, "flowapp_live_calls", transport="media") == live_before + 1
    assert (
        _value(after, "flowapp_calls_total", transport="media")
        == _value(before, "flowapp_calls_total", transport="media") + 1
    )
    moved = _value(after, "flowapp_barge_ins_total", strategy="immediate", trigger="vad") - _value(
        before, "flowapp_barge_ins_total", strategy="immediate", trigger="vad"
    )
    assert moved == 1
    assert _value(after, "flowapp_app_answer_seconds_count", kind="handler") > _value(
        before, "flowapp_app_answer_seconds_count", kind="handler"
    )
    assert _value(after, "flowapp_input_cpu_seconds_total", stage="vad") > _value(
        before, "flowapp_input_cpu_seconds_total", stage="vad"
    )


@pytest.mark.slow
async def test_the_recognizers_decodes_and_their_cpu_are_counted(live_server: StartServer) -> None:
    rec = RecordingApp({"session_start": Speak(text="Hello.", barge_in=BargeIn.none())})
    server = live_server(rec.app, ServerSettings(control_token=TOKEN))
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http:
        before = _samples((await http.get("/metrics")).text)
        async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
            await carrier.stream(caller_speech("please-try-again", lead_ms=1500, tail_ms=1200))
            await wait_until(lambda: rec.of("user_speak"), timeout=10)
            await carrier.stop()
        after = _samples((await http.get("/metrics")).text)
    done = "flowapp_recognizer_decodes_total"
    assert _value(after, done, result="done") > _value(before, done, result="done")
    cpu = "flowapp_recognizer_decode_cpu_seconds_total"
    assert _value(after, cpu) > _value(before, cpu)
