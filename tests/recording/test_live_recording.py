"""A live call on a real server is recorded, and the recording replays to the same decisions."""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import pytest

from flowapp import BargeIn, Speak
from flowapp.recording.replay import ReplayOptions, compare, decisions, replay
from flowapp.recording.store import load_recording, recorder_for
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.live.calls import CUSTOM, LONG_TEXT, RecordingApp, caller_speech, wait_until
from tests.live.carrier import Carrier

pytestmark = pytest.mark.slow  # the call streams real audio in real time


async def test_a_live_call_replays_to_the_same_decisions(live_server: StartServer, tmp_path: Path) -> None:
    rec = RecordingApp(
        {
            "session_start": Speak(text=LONG_TEXT, barge_in=BargeIn.min_characters(3)),
            "user_speak": Speak(text="Let me check that for you.", barge_in=BargeIn.immediate()),
            "dtmf_received": Speak(text="You pressed a key."),
        }
    )
    settings = ServerSettings(record_dir=str(tmp_path), insecure_control=True)
    server = live_server(rec.app, settings)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        await carrier.wait_for("media", count=40)
        await carrier.stream(caller_speech("please-try-again", tail_ms=1500))
        await wait_until(lambda: rec.of("user_speak"), timeout=10)
        await carrier.dtmf("5")
        await carrier.silence(1.0)
        await carrier.stop()
    await wait_until(lambda: rec.of("session_end"))
    assert recorder_for(str(tmp_path), settings.record_keep).flush()

    [folder] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert folder.name == rec.events[0].session.id
    recording = load_recording(folder)
    with wave.open(str(folder / "caller.wav")) as caller:
        assert (caller.getframerate(), caller.getnframes()) == (8000, recording.meta["frames"]["heard"] * 160)
    assert recording.meta["transport"] == "media" and recording.meta["end_reason"] == "stream_stopped"
    kinds = [r["event"] for r in recording.timeline]
    for kind in ("session_start", "vad_start", "vad_end", "transcript", "barge_in", "actions", "session_end"):
        assert kind in kinds, kind
    barge_in = next(r for r in recording.timeline if r["event"] == "barge_in")
    assert barge_in["trigger"] == "transcript" and barge_in["strategy"] == "minimum_characters"

    replayed = await replay(recording)
    assert decisions(replayed.timeline) == decisions(recording.timeline)
    assert compare(recording.timeline, replayed.timeline) == [
        f"same decisions as the recording ({len(decisions(replayed.timeline))} records)"
    ]

    unbarged = await replay(recording, ReplayOptions(turn_handling={"interruption": {"enabled": False}}))
    assert not [r for r in unbarged.timeline if r["event"] == "barge_in" and r["trigger"] != "dtmf"]
    first_end = next(r for r in unbarged.timeline if r["event"] == "assistant_speech_ended")
    call_end = next(r for r in unbarged.timeline if r["event"] == "session_end")
    assert first_end["t_ms"] == call_end["t_ms"], "the greeting now plays on until the caller hangs up"
    assert first_end["played_ms"] > next(r for r in recording.timeline if r["event"] == "barge_in")["played_ms"]
    summary = compare(recording.timeline, unbarged.timeline)
    assert any("gone: transcript" in line for line in summary), summary
    assert json.loads((folder / "call.json").read_text())["dropped_chunks"] == 0
    await asyncio.sleep(0)
