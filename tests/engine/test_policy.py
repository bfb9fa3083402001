"""The barge-in and pause policy alone: decisions from constructed moments, times given explicitly."""

from __future__ import annotations

import pytest

from flowapp.engine.bargein import CallerActivity
from flowapp.engine.interruption import Candidate
from flowapp.engine.policy import (
    Confirm,
    Hold,
    Interrupt,
    Pause,
    Resume,
    on_key_press,
    wants_words,
    weighs_words,
    while_held,
    while_playing,
)
from flowapp.engine.turns import InterruptionOptions
from flowapp.protocol.actions import BargeIn

VAD = InterruptionOptions()
RESUMING = InterruptionOptions(resume_false_interruption=True)
ADAPTIVE = InterruptionOptions(mode="adaptive")
OFF = InterruptionOptions(enabled=False)

SPEAKING = CallerActivity(speaking=True, characters=0)
QUIET = CallerActivity(speaking=False, characters=0)


def heard(text: str = "", *, speaking: bool = False, speech_ms: int = 0, silent_ms: int = 0, **more: int) -> Candidate:
    """The caller as the judgement sees it; `voiced_ms` defaults to the speech time (real speech has pitch)."""
    return Candidate(
        text=text,
        final=False,
        speaking=speaking,
        speech_ms=speech_ms,
        silent_ms=silent_ms,
        paused_ms=more.get("paused_ms", 0),
        played_ms=more.get("played_ms", 2000),
        strategy="immediate",
        transcribing=bool(more.get("transcribing", 0)),
        voiced_ms=more.get("voiced_ms", speech_ms),
    )


# While the item plays -----------------------------------------------------------------------------


def test_speech_inside_the_protection_period_does_not_interrupt_and_does_at_its_end() -> None:
    barge_in = BargeIn.immediate(allow_after_ms=1000)
    assert while_playing(barge_in, 980, SPEAKING, VAD) is None
    assert while_playing(barge_in, 1000, SPEAKING, VAD) == Interrupt("vad")


def test_minimum_characters_counts_the_callers_words() -> None:
    barge_in = BargeIn.min_characters(5)
    assert while_playing(barge_in, 500, CallerActivity(speaking=True, characters=4), VAD) is None
    assert while_playing(barge_in, 500, CallerActivity(speaking=True, characters=5), VAD) == Interrupt("transcript")


def test_minimum_characters_waits_for_its_protection_period_too() -> None:
    barge_in = BargeIn.min_characters(3, allow_after_ms=2000)
    caller = CallerActivity(speaking=False, characters=12)
    assert while_playing(barge_in, 1980, caller, VAD) is None
    assert while_playing(barge_in, 2000, caller, VAD) == Interrupt("transcript")


@pytest.mark.parametrize("barge_in", [BargeIn.none(), BargeIn.manual()])
def test_none_and_manual_items_ignore_the_caller(barge_in: BargeIn) -> None:
    loud = CallerActivity(speaking=True, characters=40)
    assert while_playing(barge_in, 5000, loud, VAD) is None
    assert while_playing(barge_in, 5000, loud, ADAPTIVE, heard("stop", speaking=True, speech_ms=400)) is None


def test_nothing_interrupts_when_interruptions_are_off() -> None:
    assert while_playing(BargeIn.immediate(), 5000, CallerActivity(speaking=True, characters=9), OFF) is None


def test_resume_false_interruption_pauses_on_voice_but_stops_on_words() -> None:
    assert while_playing(BargeIn.immediate(), 500, SPEAKING, RESUMING) == Pause("vad")
    words = CallerActivity(speaking=False, characters=4)
    assert while_playing(BargeIn.immediate(), 500, words, RESUMING) == Interrupt("transcript")


def test_adaptive_pauses_on_wordless_speech() -> None:
    caller = heard(speaking=True, speech_ms=60)
    assert while_playing(BargeIn.immediate(), 500, SPEAKING, ADAPTIVE, caller) == Pause("vad")


def test_adaptive_lets_a_backchannel_past_a_minimum_characters_item() -> None:
    caller = CallerActivity(speaking=False, characters=6)
    said = heard("uh-huh", speech_ms=300, silent_ms=100)
    assert while_playing(BargeIn.min_characters(3), 500, caller, VAD) == Interrupt("transcript")
    assert while_playing(BargeIn.min_characters(3), 500, caller, ADAPTIVE, said) is None


def test_adaptive_stops_at_once_on_an_interruption_phrase_below_minimum_characters() -> None:
    caller = CallerActivity(speaking=True, characters=2)
    said = heard("no", speaking=True, speech_ms=200)
    assert while_playing(BargeIn.min_characters(3), 500, caller, VAD) is None
    assert while_playing(BargeIn.min_characters(3), 500, caller, ADAPTIVE, said) == Interrupt("transcript")


def test_adaptive_ignores_the_caller_inside_the_protection_period() -> None:
    barge_in = BargeIn.min_characters(10, allow_after_ms=1000)
    caller = CallerActivity(speaking=True, characters=4)
    said = heard("stop", speaking=True, speech_ms=200)
    assert not weighs_words(barge_in, 999, ADAPTIVE)
    assert while_playing(barge_in, 999, caller, ADAPTIVE, said) is None
    assert weighs_words(barge_in, 1000, ADAPTIVE)
    assert while_playing(barge_in, 1000, caller, ADAPTIVE, said) == Interrupt("transcript")


def test_adaptive_pauses_an_immediate_item_on_voice_even_when_the_words_already_say_stop() -> None:
    said = heard("stop", speaking=True, speech_ms=200)
    assert while_playing(BargeIn.immediate(), 500, SPEAKING, ADAPTIVE, said) == Pause("vad")


def test_adaptive_needs_the_callers_words_once_it_weighs_them() -> None:
    with pytest.raises(ValueError, match="heard"):
        while_playing(BargeIn.immediate(), 500, SPEAKING, ADAPTIVE)


# While the item is held ---------------------------------------------------------------------------

HOLD = Hold(at_ms=3000, trigger="vad", baseline_chars=0)


def test_adaptive_resumes_on_a_backchannel_once_the_caller_stops() -> None:
    assert while_held(HOLD, heard("yeah", speaking=True, speech_ms=300, paused_ms=200), ADAPTIVE) is None
    said = heard("yeah", speech_ms=400, silent_ms=100, paused_ms=500)
    assert while_held(HOLD, said, ADAPTIVE) == Resume(backchannel=True, text="yeah")


def test_adaptive_confirms_on_sustained_speech_as_of_the_pause() -> None:
    said = heard("I need to change my booking", speaking=True, speech_ms=800, paused_ms=700)
    assert while_held(HOLD, said, ADAPTIVE) == Confirm("vad", at_ms=3000)


def test_adaptive_confirms_voiced_sound_without_a_recognizer_and_resumes_after_a_cough() -> None:
    voice = heard(speech_ms=400, voiced_ms=200, silent_ms=400, paused_ms=800)
    cough = heard(speech_ms=200, voiced_ms=0, silent_ms=400, paused_ms=600)
    assert while_held(HOLD, voice, ADAPTIVE) == Confirm("vad", at_ms=3000)
    assert while_held(HOLD, cough, ADAPTIVE) == Resume(backchannel=False, text="")


def test_a_long_backchannel_is_a_turn_of_its_own() -> None:
    said = heard("yeah yeah okay right", speaking=True, speech_ms=1300, paused_ms=1300)
    assert while_held(HOLD, said, ADAPTIVE) == Confirm("vad", at_ms=3000)


def test_vad_mode_confirms_after_min_duration_and_resumes_after_the_false_interruption_timeout() -> None:
    assert while_held(HOLD, heard(speaking=True, speech_ms=480, paused_ms=480), RESUMING) is None
    assert while_held(HOLD, heard(speaking=True, speech_ms=500, paused_ms=500), RESUMING) == Confirm("vad", 3000)
    short = heard(speech_ms=200, silent_ms=1980, paused_ms=2200)
    assert while_held(HOLD, short, RESUMING) is None
    over = heard(speech_ms=200, silent_ms=2000, paused_ms=2220)
    assert while_held(HOLD, over, RESUMING) == Resume(backchannel=False, text="")


def test_the_apps_verdict_overrules_the_judgement() -> None:
    said = heard("I need to change my booking", speaking=True, speech_ms=800, paused_ms=700)
    assert while_held(HOLD, said, ADAPTIVE, overrule="resume") == Resume(backchannel=False, text=said.text)
    assert while_held(HOLD, heard(speech_ms=200, paused_ms=100), ADAPTIVE, overrule="interrupt") == Confirm("vad", 3000)
    assert while_held(HOLD, said, ADAPTIVE, overrule="wait") is None


# Key presses and words ----------------------------------------------------------------------------


def test_a_key_press_interrupts_what_the_voice_may_from_the_same_moment() -> None:
    barge_in = BargeIn.min_characters(3, allow_after_ms=1000)
    assert on_key_press(barge_in, 999, VAD) is None
    assert on_key_press(barge_in, 1000, VAD) == Interrupt("dtmf")
    assert on_key_press(BargeIn.none(), 5000, VAD) is None
    assert on_key_press(barge_in, 5000, InterruptionOptions(dtmf=False)) is None
    assert on_key_press(barge_in, 5000, OFF) is None


def test_words_are_wanted_when_a_decision_hangs_on_them() -> None:
    assert wants_words(BargeIn.immediate(), 0, VAD, held=True)
    assert not wants_words(BargeIn.immediate(), 5000, VAD, held=False)
    assert not wants_words(BargeIn.min_characters(3, allow_after_ms=1000), 999, VAD, held=False)
    assert wants_words(BargeIn.min_characters(3, allow_after_ms=1000), 1000, VAD, held=False)
    assert wants_words(BargeIn.immediate(), 0, ADAPTIVE, held=False)
    assert not wants_words(BargeIn.none(), 5000, ADAPTIVE, held=False)
    assert not wants_words(BargeIn.immediate(), 0, OFF, held=True)
