"""The engine with the built-in local recognizer in the loop: real speech in, the right words out, and
the assistant's own echo never heard as the caller."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from benchmarks.turn_taking import (
    ADAPTIVE_LOCAL,
    IMMEDIATE_LOCAL,
    MIN_CHARS_LOCAL,
    Clip,
    Configuration,
    EchoPath,
    SetBuilder,
    at_level,
    espeak,
    fade,
    run_clip,
)
from benchmarks.wer import normalize
from flowapp.protocol.actions import BargeIn, Speak
from flowapp.simulation.run import SimulatedCall
from flowapp.stt import make_recognizer
from tests.engine.harness import ScriptedApp, events, one, place, say, speech, true_onset_ms
from tests.engine.test_barge_in import LONG

pytestmark = pytest.mark.slow  # Whisper decodes of real speech


def test_user_speak_carries_the_callers_words() -> None:
    clip = speech("conf-getpin")
    call = SimulatedCall(ScriptedApp(), recognizer=make_recognizer("local"))
    timeline = asyncio.run(call.run(place(6000, (500, clip)), 6000))
    said = events(timeline, "user_speak")
    assert [normalize(e["text"]) for e in said] == [normalize("Please enter the conference PIN number.")]


def test_minimum_characters_barges_in_on_locally_recognized_words() -> None:
    clip = speech("pbx-invalid")
    app = ScriptedApp({"session_start": say(Speak(text=LONG, barge_in=BargeIn.min_characters(5)))})
    call = SimulatedCall(app, recognizer=make_recognizer("local"))
    timeline = asyncio.run(call.run(place(12000, (1000, clip)), 12000))
    onset = 1000 + true_onset_ms(clip)
    barge = one(timeline, "barge_in")
    assert barge["trigger"] == "transcript"
    assert onset < barge["t_ms"] < onset + 1500
    user = one(timeline, "user_speak")
    assert user["barged_in"] is True
    assert "valid extension" in user["text"]


def test_a_german_ja_heard_as_yeah_by_the_english_model_is_a_backchannel() -> None:
    recognizer = make_recognizer("local")
    assert recognizer is not None and recognizer.language == "en"
    builder = SetBuilder(seed=3, quick=False)
    sound = at_level(fade(espeak("ja", "de", 172, 57)[: 950 * 8]), -27.0)
    ja = builder.place("bc:ja", "backchannel", sound, text="ja", snr_db=25.0, language="de")
    outcome = run_clip(0, ja, ADAPTIVE_LOCAL)
    assert outcome.paused_ms is not None
    assert outcome.barge_in_ms is None and outcome.resumed


def echo_only(delay_ms: int, loss_db: float, seconds: int = 7) -> Clip:
    return Clip(
        f"echo:{delay_ms}", "echo", np.zeros(seconds * 8000), 0, seconds * 1000, echo=EchoPath(delay_ms, loss_db)
    )


@pytest.mark.parametrize("config", [MIN_CHARS_LOCAL, IMMEDIATE_LOCAL, ADAPTIVE_LOCAL], ids=lambda c: c.name)
@pytest.mark.parametrize(("delay_ms", "loss_db"), [(20, 6.0), (120, 10.0), (200, 15.0)])
def test_the_assistants_own_echo_is_never_heard_as_the_caller(
    config: Configuration, delay_ms: int, loss_db: float
) -> None:
    outcome = run_clip(0, echo_only(delay_ms, loss_db), config)
    assert outcome.barge_in_ms is None
    assert outcome.paused_ms is None


@pytest.mark.parametrize("config", [MIN_CHARS_LOCAL, ADAPTIVE_LOCAL], ids=lambda c: c.name)
def test_coughs_do_not_interrupt(config: Configuration) -> None:
    builder = SetBuilder(seed=11, quick=False)
    for _ in range(4):
        builder.place("burst:cough", "burst", builder.cough(), noise_db=-55.0)
    for clip in builder.clips:
        assert run_clip(0, clip, config).barge_in_ms is None, clip.name


def test_a_real_barge_in_over_echo_interrupts_with_the_callers_words() -> None:
    builder = SetBuilder(seed=5, quick=False)
    words = speech("please-try-again").astype(np.float64)
    clip = builder.place("double", "double_talk", words, text="please try again", snr_db=20.0, echo=EchoPath(100, 10.0))
    outcome = run_clip(0, clip, ADAPTIVE_LOCAL)
    assert outcome.barge_in_ms is not None and outcome.barge_in_ms >= clip.onset_ms - 60
