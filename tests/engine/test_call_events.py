"""Events, timers and the non-barge-in actions of the engine, on the simulated clock."""

from __future__ import annotations

import asyncio
import base64
import logging

import numpy as np
import pytest

from flowapp.audio.mixer import rms_dbfs
from flowapp.audio.resample import resample
from flowapp.audio.wav import encode_wav
from flowapp.protocol.actions import Audio, BargeIn, MixAudio, Speak, Transfer, TtsConfig, VadConfig
from flowapp.simulation.run import SIMULATED_EPOCH_MS, SimulatedCall
from tests.engine.harness import ScriptedApp, events, one, order, place, run_call, say, speech


def test_session_start_then_assistant_speak_with_duration_and_wall_clock_start() -> None:
    timeline = run_call(ScriptedApp({"session_start": say(Speak(text="Hello there."))}), duration_ms=3000)
    start = one(timeline, "assistant_speak")
    assert order(timeline)[0] == "session_start"
    assert start["speech_started_at"] == SIMULATED_EPOCH_MS
    assert 500 < start["duration_ms"] < 2000
    assert start["duration_ms"] % 20 == 0


def test_user_input_timeout_counts_from_the_end_of_playback() -> None:
    app = ScriptedApp({"session_start": say(Speak(text="Which size?", user_input_timeout_seconds=2))})
    timeline = run_call(app, duration_ms=6000)
    ended = one(timeline, "assistant_speech_ended")
    assert one(timeline, "user_input_timeout")["t_ms"] == ended["t_ms"] + 2000


def test_user_input_timeout_is_cancelled_when_the_caller_speaks() -> None:
    app = ScriptedApp({"session_start": say(Speak(text="Which size?", user_input_timeout_seconds=2))})
    caller = place(6000, (1800, speech("auth-thankyou")))
    timeline = run_call(app, caller, duration_ms=6000)
    assert events(timeline, "user_input_timeout") == []
    assert "user_speak" in order(timeline)


@pytest.mark.parametrize("silence_ms", [300, 1500])
def test_end_of_turn_silence_set_by_a_speak_stays_in_force(silence_ms: int) -> None:
    app = ScriptedApp({"session_start": say(Speak(text="Hi.", vad=VadConfig(end_of_turn_silence_ms=silence_ms)))})
    clip = speech("auth-thankyou")
    caller = place(8000, (2000, clip), (5000, clip))
    timeline = run_call(app, caller, transcripts=[(2500, "thank you", False), (5500, "thank you", False)])
    turns = events(timeline, "user_speak")
    assert len(turns) == 2
    last_voice = 5000 + len(clip) // 8
    assert last_voice + silence_ms - 200 <= turns[1]["t_ms"] <= last_voice + silence_ms + 200


def test_dtmf_keys_arrive_one_event_each_at_their_time() -> None:
    def keys(call: SimulatedCall) -> None:
        for t_ms, digit in ((400, "1"), (600, "#"), (900, "*")):
            call.at(t_ms, lambda engine, d=digit: engine.dtmf(d))

    timeline = run_call(ScriptedApp(), duration_ms=2000, setup=keys)
    assert [(r["t_ms"], r["digit"]) for r in events(timeline, "dtmf_received")] == [(400, "1"), (600, "#"), (900, "*")]


def test_audio_action_plays_any_pcm_wav_resampled() -> None:
    clip = speech("please-try-again")
    wav16k = encode_wav(resample(clip, 8000, 16000), rate=16000)
    action = Audio(audio=base64.b64encode(wav16k).decode(), barge_in=BargeIn.none())
    timeline = run_call(ScriptedApp({"session_start": say(action)}), duration_ms=3000)
    assert abs(one(timeline, "assistant_speak")["duration_ms"] - len(clip) / 8) <= 20


def test_mix_audio_loops_under_silence_until_stopped() -> None:
    tone = (3000 * np.sin(2 * np.pi * 440 * np.arange(800) / 8000)).astype(np.int16)
    mix = MixAudio(audio=base64.b64encode(encode_wav(tone)).decode(), volume=0.5)
    call = SimulatedCall(ScriptedApp({"session_start": say(mix)}))
    call.push_at(1000, [MixAudio(stop=True)])

    asyncio.run(call.run(np.zeros(0, np.int16), 2000))
    before, after = np.concatenate(call.played[:50]), np.concatenate(call.played[50:])
    assert rms_dbfs(before) > -30
    assert not after.any()


def test_unknown_tts_provider_is_logged_and_the_call_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    speak = Speak(text="Hello.", tts=TtsConfig(provider="acme-voices"))
    with caplog.at_level(logging.ERROR):
        timeline = run_call(ScriptedApp({"session_start": say(speak)}), duration_ms=2000)
    assert "acme-voices" in caplog.text
    assert one(timeline, "assistant_speak")["duration_ms"] > 0


def test_remote_tts_provider_falls_back_to_the_local_voice(caplog: pytest.LogCaptureFixture) -> None:
    speak = Speak(text="Hallo.", tts=TtsConfig(provider="azure", language="de-DE", voice="de-DE-KatjaNeural"))
    with caplog.at_level(logging.WARNING):
        timeline = run_call(ScriptedApp({"session_start": say(speak)}), duration_ms=2000)
    assert "not available locally" in caplog.text
    assert one(timeline, "assistant_speak")["duration_ms"] > 0


def test_transfer_takes_effect_after_the_speech_before_it() -> None:
    app = ScriptedApp(
        {"session_start": say(Speak(text="Connecting you."), Transfer(target_phone_number="+4930123456", timeout=30))}
    )
    timeline = run_call(app, duration_ms=5000)
    transfer = one(timeline, "transfer")
    assert transfer["target_phone_number"] == "+4930123456"
    assert transfer["t_ms"] == one(timeline, "assistant_speech_ended")["t_ms"]
    assert one(timeline, "session_end")["reason"] == "transfer"


def test_actions_after_the_call_ended_are_dropped() -> None:
    call = SimulatedCall(ScriptedApp())
    call.at(200, lambda engine: engine.end("caller_hangup"))
    call.push_at(400, [Speak(text="Too late.")])

    timeline = asyncio.run(call.run(np.zeros(0, np.int16), 1000))
    assert order(timeline) == ["session_start", "session_end"]
    assert one(timeline, "session_end")["reason"] == "caller_hangup"


def test_caller_words_without_a_barge_in_become_a_plain_user_speak() -> None:
    caller = place(6000, (500, speech("auth-thankyou")))
    timeline = run_call(ScriptedApp(), caller, duration_ms=6000, transcripts=[(1200, "thank you", True)])
    user = one(timeline, "user_speak")
    assert user["text"] == "thank you"
    assert "barged_in" not in user
