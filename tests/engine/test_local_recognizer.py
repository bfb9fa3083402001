"""The engine with the local pocketsphinx recognizer: partials from real speech drive `minimum_characters`."""

from __future__ import annotations

import asyncio

from flowapp.protocol.actions import BargeIn, Speak
from flowapp.simulation.run import SimulatedCall
from flowapp.stt import make_recognizer
from tests.engine.harness import ScriptedApp, one, place, say, speech, true_onset_ms
from tests.engine.test_barge_in import LONG


def test_minimum_characters_barges_in_on_locally_recognized_partials() -> None:
    clip = speech("pbx-invalid")
    app = ScriptedApp({"session_start": say(Speak(text=LONG, barge_in=BargeIn.min_characters(5)))})
    call = SimulatedCall(app, recognizer=make_recognizer("pocketsphinx"))
    timeline = asyncio.run(call.run(place(12000, (1000, clip)), 12000))
    onset = 1000 + true_onset_ms(clip)
    barge = one(timeline, "barge_in")
    assert barge["trigger"] == "transcript"
    assert onset < barge["t_ms"] < onset + 2500
    user = one(timeline, "user_speak")
    assert user["barged_in"] is True
    assert len(user["text"].split()) >= 3
