"""Turn-handling options through the engine on the simulated clock: pause, confirm, resume, backchannels,
endpointing, turn limits, turn detection modes, echo."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from scipy.signal import butter, lfilter

from flowapp.audio.g711 import ulaw_decode, ulaw_encode
from flowapp.audio.tts import EspeakTts
from flowapp.engine.call import EngineConfig
from flowapp.engine.interruption import Candidate, classify_words
from flowapp.engine.turns import InterruptionOptions, TurnHandling
from flowapp.protocol.actions import BargeIn, CommitUserTurn, ConfigureTurnHandling, Speak
from flowapp.simulation.run import SimulatedCall
from flowapp.stt import ScriptedRecognizer, Transcript
from tests.engine.harness import ScriptedApp, events, one, place, say, speech, true_onset_ms
from tests.media import espeak

LONG = (
    "Thanks for calling. I can help you with billing, support, or sales. Our opening hours are Monday to Friday "
    "from eight in the morning to six in the evening, and on Saturdays from nine to one."
)


def cough(ms: int = 160, seed: int = 1) -> np.ndarray:
    """A cough-like burst: loud broadband noise with a fast attack and decay.

    The default (cascade) detector does not take it for speech at all; tests that need the pause path use
    `hm()`, or the cheap webrtc detector, which does fire on it.
    """
    rng = np.random.default_rng(seed)
    n = ms * 8
    envelope = np.exp(-np.linspace(0, 5, n)) * np.minimum(1, np.linspace(0, 8, n))
    return (rng.normal(0, 9000, n) * envelope).astype(np.int16)


def hm(ms: int = 250) -> np.ndarray:
    """A short voiced "hm": speech to any detector, too short to confirm an interruption."""
    voice = espeak("hm")
    start = int(true_onset_ms(voice) * 8)
    return voice[start : start + ms * 8]


def run(
    options: dict[str, Any],
    caller: np.ndarray | None = None,
    *,
    barge_in: BargeIn | None = None,
    text: str = LONG,
    transcripts: list[tuple[int, str, bool]] | None = None,
    duration_ms: int = 12000,
    app: ScriptedApp | None = None,
    setup: Any = None,
    detector: str | None = None,
) -> tuple[list[dict[str, Any]], SimulatedCall]:
    app = app or ScriptedApp({"session_start": say(Speak(text=text, barge_in=barge_in or BargeIn.immediate()))})
    recognizer = None
    if transcripts is not None:
        recognizer = ScriptedRecognizer([Transcript(t, final, at) for at, t, final in transcripts])
    config = EngineConfig(start_unix_ms=0, turn_handling=TurnHandling.model_validate(options))
    if detector is not None:
        config.detector = detector
    call = SimulatedCall(app, config=config, recognizer=recognizer)
    if setup is not None:
        setup(call)
    timeline = asyncio.run(call.run(caller if caller is not None else np.zeros(0, np.int16), duration_ms))
    return timeline, call


RESUMING = {"interruption": {"resume_false_interruption": True, "false_interruption_timeout": 0.6}}


# pause, then decide -------------------------------------------------------------------------------------------


def test_a_short_sound_pauses_playback_which_resumes_where_it_stopped() -> None:
    timeline, _ = run(RESUMING, place(12000, (1500, hm())))
    paused = one(timeline, "assistant_speech_paused")
    resumed = one(timeline, "assistant_speech_resumed")
    ended = one(timeline, "assistant_speech_ended")
    duration = one(timeline, "assistant_speak")["duration_ms"]
    assert 1500 <= paused["t_ms"] <= 1600
    assert resumed["played_ms"] == paused["played_ms"]  # nothing skipped, nothing repeated
    assert resumed["t_ms"] - paused["t_ms"] == resumed["paused_ms"] >= 600
    assert ended["interrupted"] is False
    assert ended["played_ms"] == duration
    assert ended["t_ms"] == duration + resumed["paused_ms"]
    assert events(timeline, "barge_in") == []
    assert events(timeline, "user_speak") == []


def test_real_speech_turns_the_pause_into_a_barge_in_dated_when_audio_stopped() -> None:
    clip = speech("conf-onlyperson")
    timeline, _ = run(RESUMING, place(12000, (1500, clip)))
    paused = one(timeline, "assistant_speech_paused")
    barge = one(timeline, "barge_in")
    ended = one(timeline, "assistant_speech_ended")
    assert 1500 + true_onset_ms(clip) <= paused["t_ms"] <= 1500 + true_onset_ms(clip) + 100
    assert barge["t_ms"] == paused["t_ms"]
    assert barge["played_ms"] == paused["played_ms"] == ended["played_ms"]
    assert ended["t_ms"] >= 1500 + true_onset_ms(clip) + 500 - 20  # confirmed after min_duration of speech
    assert one(timeline, "user_speak")["barged_in"] is True
    assert events(timeline, "assistant_speech_resumed") == []


def test_min_words_needs_a_transcript_to_confirm() -> None:
    options = {"interruption": {**RESUMING["interruption"], "min_words": 2}}
    clip = speech("conf-onlyperson")
    no_words, _ = run(options, place(12000, (1500, clip)), transcripts=[])
    assert events(no_words, "barge_in") == []
    assert one(no_words, "assistant_speech_resumed")
    with_words, _ = run(options, place(12000, (1500, clip)), transcripts=[(2300, "I am the", False)])
    assert one(with_words, "barge_in")


def test_without_resume_a_false_interruption_stops_for_good_as_the_protocol_says() -> None:
    timeline, _ = run({}, place(12000, (1500, hm())))
    assert one(timeline, "barge_in")["trigger"] == "vad"
    assert events(timeline, "assistant_speech_paused") == []


# adaptive -----------------------------------------------------------------------------------------------------

ADAPTIVE = {"interruption": {"mode": "adaptive"}}


def test_adaptive_backchannel_does_not_interrupt_and_is_reported() -> None:
    uh_huh = espeak("uh huh")
    timeline, _ = run(ADAPTIVE, place(12000, (2000, uh_huh)), transcripts=[(2400, "uh-huh", False)])
    assert events(timeline, "barge_in") == []
    assert one(timeline, "user_backchannel")["text"] == "uh-huh"
    resumed = events(timeline, "assistant_speech_resumed")
    assert resumed and all(r["paused_ms"] < 1000 for r in resumed)  # "uh" and "huh" may pause once each
    assert one(timeline, "assistant_speech_ended")["interrupted"] is False
    assert events(timeline, "user_speak") == []


def test_adaptive_short_wait_interrupts() -> None:
    wait = espeak("wait")
    timeline, _ = run(ADAPTIVE, place(12000, (2000, wait)), transcripts=[(2350, "wait", False)])
    barge = one(timeline, "barge_in")
    assert barge["t_ms"] == one(timeline, "assistant_speech_paused")["t_ms"]
    assert barge["t_ms"] <= 2000 + true_onset_ms(wait) + 100


def test_the_default_detector_ignores_a_cough() -> None:
    timeline, _ = run({}, place(12000, (2000, cough())))
    assert events(timeline, "barge_in") == []
    assert events(timeline, "user_speech_started") == []


def test_adaptive_cough_resumes_quickly() -> None:
    timeline, _ = run(ADAPTIVE, place(12000, (2000, cough())), transcripts=[], detector="webrtc")
    assert events(timeline, "barge_in") == []
    assert one(timeline, "assistant_speech_resumed")["paused_ms"] <= 600


@pytest.mark.parametrize(("voice", "rate", "pitch"), [("en-gb", 217, 67), ("en-us+m3", 169, 30), ("en-029", 193, 67)])
def test_adaptive_without_a_recognizer_takes_a_fast_stop_for_a_barge_in(voice: str, rate: int, pitch: int) -> None:
    stop = espeak("stop", voice, pitch, rate)
    timeline, _ = run(ADAPTIVE, place(12000, (2000, stop)))
    barge = one(timeline, "barge_in")
    assert barge["t_ms"] <= 2000 + true_onset_ms(stop) + 100
    assert events(timeline, "assistant_speech_resumed") == []


def test_adaptive_long_speech_without_words_is_a_barge_in() -> None:
    timeline, _ = run(ADAPTIVE, place(12000, (2000, speech("conf-onlyperson"))))
    assert one(timeline, "barge_in")


def test_adaptive_filters_backchannels_from_minimum_characters_but_lets_short_interruptions_through() -> None:
    okay, _ = run(
        ADAPTIVE,
        place(12000, (2000, espeak("okay"))),
        barge_in=BargeIn.min_characters(3),
        transcripts=[(2500, "okay", False)],
    )
    assert events(okay, "barge_in") == []
    assert one(okay, "user_backchannel")["text"] == "okay"
    no, _ = run(
        ADAPTIVE,
        place(12000, (2000, espeak("no"))),
        barge_in=BargeIn.min_characters(3),
        transcripts=[(2400, "no", False)],
    )
    assert one(no, "barge_in")["t_ms"] == 2400


def test_german_phrases_follow_the_language_option() -> None:
    options = {"interruption": {"mode": "adaptive", "language": "de-DE"}}
    timeline, _ = run(options, place(12000, (2000, espeak("genau", voice="de"))), transcripts=[(2400, "genau", False)])
    assert one(timeline, "user_backchannel")["text"] == "genau"


def test_an_english_only_recognizers_words_count_on_a_german_call() -> None:
    german = InterruptionOptions(mode="adaptive", language="de")
    assert classify_words("Yeah.", german) == "other"
    assert classify_words("Yeah.", german, words_language="en") == "backchannel"
    assert classify_words("Stop!", german, words_language="en") == "interruption"
    assert classify_words("genau", german, words_language="en") == "backchannel"


@pytest.mark.parametrize("heard", ["Mm-hm.", "Mmm.", "M-M...", "Mhmm", "Hmm, mm."])
def test_a_hum_is_a_backchannel_however_the_recognizer_spells_it(heard: str) -> None:
    assert classify_words(heard, InterruptionOptions(mode="adaptive")) == "backchannel"


@pytest.mark.parametrize("heard", ["M.", "Mom.", "Mm, wait"])
def test_a_spelled_letter_or_a_word_with_an_m_is_no_hum(heard: str) -> None:
    assert classify_words(heard, InterruptionOptions(mode="adaptive")) != "backchannel"


def test_custom_phrase_lists_replace_the_defaults() -> None:
    options = {"interruption": {"mode": "adaptive", "backchannel_phrases": {"en": ["roger"]}}}
    timeline, _ = run(options, place(12000, (2000, espeak("roger"))), transcripts=[(2400, "roger", False)])
    assert one(timeline, "user_backchannel")["text"] == "roger"


def test_an_interruption_hook_overrules_the_built_in_judgement() -> None:
    seen: list[Candidate] = []

    def never(candidate: Candidate) -> str | None:
        seen.append(candidate)
        return "resume" if not candidate.speaking else "wait"

    app = ScriptedApp({"session_start": say(Speak(text=LONG, barge_in=BargeIn.immediate()))})
    app.interruption_hook = never  # type: ignore[attr-defined]
    timeline, _ = run(RESUMING, place(12000, (1500, speech("conf-onlyperson"))), app=app)
    assert events(timeline, "barge_in") == []
    assert seen and seen[0].strategy == "immediate"


def test_interruption_disabled_turns_every_item_manual() -> None:
    timeline, _ = run({"interruption": {"enabled": False}}, place(12000, (1500, speech("conf-onlyperson"))))
    assert events(timeline, "barge_in") == []


def test_speech_inside_an_uninterruptible_item_is_discarded_when_asked() -> None:
    options = {"interruption": {"discard_audio_if_uninterruptible": True}}
    caller = place(12000, (1000, speech("auth-thankyou")))
    timeline, _ = run(options, caller, barge_in=BargeIn.none(), transcripts=[(1600, "thank you", True)])
    assert one(timeline, "user_speech_discarded")["text"] == "thank you"
    assert events(timeline, "user_speak") == []
    kept, _ = run({}, caller, barge_in=BargeIn.none(), transcripts=[(1600, "thank you", True)])
    assert one(kept, "user_speak")["text"] == "thank you"


# endpointing and turn detection -------------------------------------------------------------------------------


def bursts(gaps_ms: list[int]) -> tuple[np.ndarray, list[int]]:
    clip = speech("auth-thankyou")
    t = 500
    clips, starts = [], []
    for gap in [0, *gaps_ms]:
        t += gap
        clips.append((t, clip))
        starts.append(t)
        t += len(clip) // 8
    return place(t + 4000, *clips), starts


def test_dynamic_endpointing_learns_a_slow_callers_pauses() -> None:
    caller, _ = bursts([1200, 900, 900])
    quiet_app = ScriptedApp()
    fixed, _ = run({}, caller, app=quiet_app, duration_ms=12000)
    dynamic, _ = run(
        {"endpointing": {"mode": "dynamic", "min_delay": 0.5, "max_delay": 3.0}},
        caller,
        app=ScriptedApp(),
        duration_ms=12000,
    )
    assert len(events(fixed, "user_speak")) == 4
    assert len(events(dynamic, "user_speak")) == 2


def test_stt_turn_detection_ends_the_turn_on_the_final_transcript() -> None:
    clip = speech("auth-thankyou")
    caller = place(8000, (500, clip))
    end_of_voice = 500 + len(clip) // 8
    stt, _ = run(
        {"turn_detection": "stt"},
        caller,
        app=ScriptedApp(),
        transcripts=[(end_of_voice, "thank you", True)],
        duration_ms=8000,
    )
    vad, _ = run({}, caller, app=ScriptedApp(), transcripts=[(end_of_voice, "thank you", True)], duration_ms=8000)
    assert one(stt, "user_speak")["t_ms"] < one(vad, "user_speak")["t_ms"]


def test_manual_turn_detection_waits_for_the_app_to_commit() -> None:
    caller = place(8000, (500, speech("auth-thankyou")))
    timeline, _ = run(
        {"turn_detection": "manual"},
        caller,
        app=ScriptedApp(),
        transcripts=[(1500, "thank you", True)],
        duration_ms=8000,
        setup=lambda call: call.push_at(5000, [CommitUserTurn()]),
    )
    assert one(timeline, "user_speak")["t_ms"] == 5000


@pytest.mark.parametrize(
    ("limit", "expected"), [({"max_words": 3}, "max_words"), ({"max_duration": 1.0}, "max_duration")]
)
def test_user_turn_limit_raises_one_event_per_turn(limit: dict[str, Any], expected: str) -> None:
    caller = place(10000, (500, speech("pbx-invalid")))
    timeline, _ = run(
        {"user_turn_limit": limit},
        caller,
        app=ScriptedApp(),
        transcripts=[(1200, "I am", False), (1800, "I am sorry that", False), (2500, "I am sorry that is", False)],
        duration_ms=10000,
    )
    event = one(timeline, "user_turn_limit")
    assert event["limit"] == expected
    assert event["t_ms"] in ((1800,) if expected == "max_words" else range(1500, 1600))


def test_configure_turn_handling_action_changes_a_live_call() -> None:
    app = ScriptedApp(
        {
            "session_start": say(
                ConfigureTurnHandling(turn_handling=RESUMING),
                Speak(text=LONG, barge_in=BargeIn.immediate()),
            )
        }
    )
    timeline, _ = run({}, place(12000, (1500, hm())), app=app)
    assert one(timeline, "assistant_speech_resumed")


def test_invalid_turn_handling_action_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    app = ScriptedApp(
        {
            "session_start": say(
                ConfigureTurnHandling(turn_handling={"interruption": {"mode": "psychic"}}), Speak(text="Hi.")
            )
        }
    )
    timeline, _ = run({}, app=app, duration_ms=3000)
    assert "configure_turn_handling rejected" in caplog.text
    assert one(timeline, "assistant_speech_ended")["interrupted"] is False


# echo ---------------------------------------------------------------------------------------------------------


def line_echo(delay_ms: int, loss_db: float) -> np.ndarray:
    """The assistant's own voice as a phone line returns it: band-limited, delayed, attenuated, G.711."""
    bot = EspeakTts().synthesize(LONG).astype(np.float64)
    b, a = butter(2, [300 / 4000, 3400 / 4000], btype="band")
    echo = np.concatenate([np.zeros(delay_ms * 8), lfilter(b, a, bot) * 10 ** (-loss_db / 20)])
    return ulaw_decode(ulaw_encode(np.clip(echo, -32768, 32767).astype(np.int16)))


@pytest.mark.parametrize(("delay_ms", "loss_db"), [(20, 6.0), (120, 12.0), (200, 6.0)])
def test_echo_of_the_assistant_does_not_trip_immediate(delay_ms: int, loss_db: float) -> None:
    caller = place(12000, (0, line_echo(delay_ms, loss_db)))
    guarded, _ = run({}, caller)
    assert events(guarded, "barge_in") == []
    unguarded, _ = run({"echo_guard": {"enabled": False}}, caller)
    assert one(unguarded, "barge_in")["t_ms"] < 1000


@pytest.mark.parametrize(("loss_db", "within_ms"), [(20.0, 100), (12.0, 120), (6.0, 250)])
def test_caller_speaking_over_the_echo_still_barges_in(loss_db: float, within_ms: int) -> None:
    # The louder the echo, the more of the caller's voice it can explain: a 6 dB line costs latency.
    clip = speech("conf-onlyperson")
    caller = place(12000, (0, line_echo(120, loss_db)), (3000, clip))
    timeline, _ = run({}, caller)
    onset = 3000 + true_onset_ms(clip)
    assert onset <= one(timeline, "barge_in")["t_ms"] <= onset + within_ms


@pytest.mark.parametrize(
    ("text", "kind"),
    [("Um, mm-hmm.", "backchannel"), ("uh, yeah", "backchannel"), ("Um.", "other"), ("um, I need help", "other")],
)
def test_hesitations_do_not_turn_a_backchannel_into_a_turn(text: str, kind: str) -> None:
    assert classify_words(text, InterruptionOptions(mode="adaptive")) == kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [("Uh-uh.", "backchannel"), ("Uh uh.", "backchannel"), ("uh uh uh", "backchannel"), ("Uh.", "other")],
)
def test_an_uh_huh_whose_h_the_line_lost_is_a_backchannel(text: str, kind: str) -> None:
    # At 8 kHz the breathy /h/ of "uh-huh" is close to the line noise: recognizers write "Uh-uh".
    assert classify_words(text, InterruptionOptions(mode="adaptive")) == kind
