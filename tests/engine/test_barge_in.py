"""Every barge-in strategy through the real engine, on real recorded speech, on the simulated clock."""

from __future__ import annotations

import pytest

from flowapp.audio.mixer import add_noise_at_snr, line_noise
from flowapp.engine import playout
from flowapp.protocol.actions import BargeIn, BargeInNow, ClearQueue, Hangup, Speak
from flowapp.simulation.run import SimulatedCall
from tests.engine.harness import ScriptedApp, events, one, order, place, run_call, say, speech, true_onset_ms

LONG = (
    "Thanks for calling. I can help you with billing, support, or sales. Our opening hours are Monday to Friday "
    "from eight in the morning to six in the evening, and on Saturdays from nine to one."
)


def app_saying(barge_in: BargeIn, *more: Speak | Hangup) -> ScriptedApp:
    return ScriptedApp({"session_start": say(Speak(text=LONG, barge_in=barge_in), *more)})


def caller_at(offset_ms: int, name: str = "conf-onlyperson", duration_ms: int = 9000) -> tuple[object, float]:
    clip = speech(name)
    return place(duration_ms, (offset_ms, clip)), offset_ms + true_onset_ms(clip)


# immediate ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("snr_db", [None, 20.0])
def test_immediate_stops_within_100_ms_of_real_speech_onset(snr_db: float | None) -> None:
    caller, onset = caller_at(1500)
    if snr_db is not None:
        caller = add_noise_at_snr(caller, line_noise(9000, -50.0), snr_db)
    timeline = run_call(app_saying(BargeIn.immediate()), caller, duration_ms=9000)
    barge = one(timeline, "barge_in")
    assert barge["trigger"] == "vad"
    assert onset <= barge["t_ms"] <= onset + 100
    ended = one(timeline, "assistant_speech_ended")
    assert ended["interrupted"] is True
    assert ended["played_ms"] == barge["t_ms"]
    assert ended["t_ms"] == barge["t_ms"]


def test_immediate_speech_before_the_protection_period_fires_when_it_ends() -> None:
    caller, onset = caller_at(300)  # 3.2 s of speech: still talking at 1500 ms
    assert onset < 1500
    timeline = run_call(app_saying(BargeIn.immediate(allow_after_ms=1500)), caller)
    barge = one(timeline, "barge_in")
    assert barge["t_ms"] == 1500
    assert barge["played_ms"] == 1500


def test_immediate_speech_after_the_protection_period_fires_at_onset() -> None:
    caller, onset = caller_at(2500)
    timeline = run_call(app_saying(BargeIn.immediate(allow_after_ms=1500)), caller)
    assert onset <= one(timeline, "barge_in")["t_ms"] <= onset + 100


def test_immediate_speech_that_ends_inside_the_protection_period_does_not_interrupt() -> None:
    caller, _ = caller_at(200, "auth-thankyou")  # under a second of speech, over by ~1.2 s
    timeline = run_call(app_saying(BargeIn.immediate(allow_after_ms=2500)), caller, duration_ms=12000)
    assert events(timeline, "barge_in") == []
    assert one(timeline, "assistant_speech_ended")["interrupted"] is False
    user = one(timeline, "user_speak")
    assert "barged_in" not in user


# minimum_characters -------------------------------------------------------------------------------------------

PARTIALS = [(1900, "wait", False), (2300, "wait I have", False), (2700, "wait I have a question", False)]


def test_minimum_characters_fires_when_the_partial_reaches_n_characters() -> None:
    caller, _ = caller_at(1500)
    timeline = run_call(
        app_saying(BargeIn.min_characters(10)),
        caller,
        transcripts=[*PARTIALS, (4800, "wait I have a question about my bill", True)],
    )
    barge = one(timeline, "barge_in")
    assert barge["trigger"] == "transcript"
    assert barge["t_ms"] == 2700  # "waitIhave" is 9 characters; "waitIhaveaquestion" is 18
    user = one(timeline, "user_speak")
    assert user["barged_in"] is True
    assert user["text"] == "wait I have a question about my bill"


def test_minimum_characters_ignores_voice_without_text() -> None:
    caller, _ = caller_at(1500)
    timeline = run_call(app_saying(BargeIn.min_characters(3)), caller, transcripts=[])
    assert events(timeline, "barge_in") == []


def test_minimum_characters_long_enough_partial_during_protection_fires_when_it_ends() -> None:
    caller, _ = caller_at(800)
    timeline = run_call(
        app_saying(BargeIn.min_characters(5, allow_after_ms=3000)),
        caller,
        transcripts=[(1200, "hello there", False), (4500, "hello there", True)],
    )
    assert one(timeline, "barge_in")["t_ms"] == 3000


def _second_item_at_1420(caller: object, transcripts: list[tuple[int, str, bool]]) -> list[dict[str, object]]:
    """A short `none` item, then a `minimum_characters` 8 item that starts at 1420 ms."""
    first = Speak(text="One moment please.", barge_in=BargeIn.none())
    second = Speak(text=LONG, barge_in=BargeIn.min_characters(8))
    timeline = run_call(ScriptedApp({"session_start": say(first, second)}), caller, transcripts=transcripts)
    assert events(timeline, "assistant_speak")[1]["t_ms"] == 1420
    return timeline


def test_minimum_characters_ignores_speech_that_began_before_the_item() -> None:
    # One unbroken utterance from 740 ms: its partial reaches the engine during the item, but the speech is older.
    caller = place(8000, (600, speech("privacy-unident")))
    timeline = _second_item_at_1420(caller, [(2500, "hello can you hear me", False), (5300, "hello can you", True)])
    assert events(timeline, "barge_in") == []


def test_minimum_characters_counts_speech_that_began_just_after_the_item_started() -> None:
    caller, onset = caller_at(1400, "privacy-unident")
    assert onset > 1420
    timeline = _second_item_at_1420(caller, [(2000, "hello", False), (2500, "hello can you hear me", False)])
    barge = one(timeline, "barge_in")
    assert (barge["trigger"], barge["t_ms"]) == ("transcript", 2500)


def test_minimum_characters_late_words_of_earlier_speech_do_not_count() -> None:
    # "goodbye" was said before the item and transcribed during it; only the words after the new onset count.
    caller = place(8000, (300, speech("vm-goodbye")), (1500, speech("conf-onlyperson")))
    timeline = _second_item_at_1420(
        caller,
        [(1480, "goodbye", False), (2200, "goodbye you are", False), (2600, "goodbye you are currently", False)],
    )
    assert len(events(timeline, "user_speech_started")) == 1  # one turn: the pause was shorter than its end
    barge = one(timeline, "barge_in")
    assert barge["t_ms"] == 2600  # "youare" is 6 characters; "youarecurrently" is 15


# key presses -------------------------------------------------------------------------------------------------

MENU_ANSWER = Speak(text="You chose billing.", barge_in=BargeIn.none())


def key_at(t_ms: int, digit: str = "1") -> object:
    def setup(call: SimulatedCall) -> None:
        call.at(t_ms, lambda engine: engine.dtmf(digit))

    return setup


def menu_call(barge_in: BargeIn, *, dtmf_interrupts: bool = True) -> list[dict[str, object]]:
    app = ScriptedApp({"session_start": say(Speak(text=LONG, barge_in=barge_in)), "dtmf_received": say(MENU_ANSWER)})

    def setup(call: SimulatedCall) -> None:
        if not dtmf_interrupts:
            call.engine.configure_turn_handling({"interruption": {"dtmf": False}})
        call.at(3000, lambda engine: engine.dtmf("1"))

    return run_call(app, duration_ms=13000, setup=setup)


@pytest.mark.parametrize("barge_in", [BargeIn.immediate(), BargeIn.min_characters(3), BargeIn.immediate(2000)])
def test_a_key_press_stops_an_interruptible_menu_and_its_answer_plays_at_once(barge_in: BargeIn) -> None:
    timeline = menu_call(barge_in)
    barge = one(timeline, "barge_in")
    assert (barge["trigger"], barge["t_ms"]) == ("dtmf", 3000)
    ended = events(timeline, "assistant_speech_ended")[0]
    assert (ended["interrupted"], ended["t_ms"]) == (True, 3000)
    assert order(timeline).index("barge_in") < order(timeline).index("dtmf_received")
    answer = events(timeline, "assistant_speak")[1]
    assert (answer["text"], answer["t_ms"]) == ("You chose billing.", 3000)


@pytest.mark.parametrize(
    "barge_in", [BargeIn.none(), BargeIn.manual(), BargeIn.immediate(5000), BargeIn.min_characters(3, 4000)]
)
def test_a_key_press_never_stops_a_none_or_manual_item_nor_one_still_protected(barge_in: BargeIn) -> None:
    timeline = menu_call(barge_in)
    assert events(timeline, "barge_in") == []
    assert one(timeline, "dtmf_received")["t_ms"] == 3000
    menu = events(timeline, "assistant_speech_ended")[0]
    assert (menu["interrupted"], menu["played_ms"]) == (False, 10740)
    assert events(timeline, "assistant_speak")[1]["t_ms"] == 10740  # the answer waited for the menu


def test_key_presses_can_be_told_not_to_interrupt() -> None:
    timeline = menu_call(BargeIn.immediate(), dtmf_interrupts=False)
    assert events(timeline, "barge_in") == []
    assert events(timeline, "assistant_speech_ended")[0]["interrupted"] is False


# none and manual ----------------------------------------------------------------------------------------------


def test_none_plays_to_the_end_whatever_the_caller_does() -> None:
    caller, _ = caller_at(500, "privacy-unident")
    timeline = run_call(
        app_saying(BargeIn.none()), caller, duration_ms=15000, transcripts=[(900, "stop stop stop", False)]
    )
    assert events(timeline, "barge_in") == []
    ended = one(timeline, "assistant_speech_ended")
    assert ended["interrupted"] is False
    assert ended["played_ms"] == one(timeline, "assistant_speak")["duration_ms"]


def test_manual_ignores_the_caller_but_obeys_a_barge_in_action() -> None:
    caller, _ = caller_at(500)
    app = app_saying(BargeIn.manual())
    timeline = run_call(app, caller, setup=lambda call: call.push_at(3000, [BargeInNow()]))
    barge = one(timeline, "barge_in")
    assert (barge["t_ms"], barge["trigger"], barge["strategy"]) == (3000, "manual", "manual")
    assert one(timeline, "assistant_speech_ended")["played_ms"] == 3000


def test_manual_barge_in_request_like_the_control_api() -> None:
    timeline = run_call(app_saying(BargeIn.manual()), setup=lambda call: call.barge_in_at(2200))
    assert one(timeline, "barge_in")["t_ms"] == 2200
    assert "user_speak" not in order(timeline)


def test_barge_in_action_then_speak_replaces_what_is_playing() -> None:
    app = app_saying(BargeIn.none())
    timeline = run_call(app, setup=lambda call: call.push_at(1000, [BargeInNow(), Speak(text="Sorry, one update.")]))
    speaks = events(timeline, "assistant_speak")
    assert [s["t_ms"] for s in speaks] == [0, 1000]
    assert events(timeline, "assistant_speech_ended")[0]["interrupted"] is True


# queue, order, control items ----------------------------------------------------------------------------------


def test_barge_in_drops_the_rest_of_the_same_reply() -> None:
    app = app_saying(BargeIn.immediate(), Speak(text="And one more thing."), Hangup())
    caller, _ = caller_at(1200)
    timeline = run_call(app, caller)
    assert len(events(timeline, "assistant_speak")) == 1
    assert "hangup" not in order(timeline)
    assert one(timeline, "session_end")["reason"] == "simulation_end"


def test_event_order_of_an_interrupted_turn() -> None:
    caller, _ = caller_at(1500)
    app = app_saying(BargeIn.immediate())
    timeline = run_call(app, caller, transcripts=[(1800, "wait", False), (4700, "wait I have a question", True)])
    assert order(timeline) == [
        "session_start",
        "assistant_speak",
        "user_speech_started",
        "barge_in",
        "assistant_speech_ended",
        "user_speak",
        "session_end",
    ]
    assert [e.type for e in app.events] == [r for r in order(timeline) if r != "barge_in"]


def test_items_of_one_reply_play_in_order_and_hangup_waits_for_them() -> None:
    app = ScriptedApp({"session_start": say(Speak(text="First."), Speak(text="Second."), Hangup())})
    timeline = run_call(app)
    speaks = events(timeline, "assistant_speak")
    ended = events(timeline, "assistant_speech_ended")
    assert [s["text"] for s in speaks] == ["First.", "Second."]
    assert speaks[1]["t_ms"] == ended[0]["t_ms"] == speaks[0]["duration_ms"]
    end = one(timeline, "session_end")
    assert end["reason"] == "hangup"
    assert end["t_ms"] == ended[1]["t_ms"]
    assert order(timeline)[-2:] == ["hangup", "session_end"]


def test_same_inputs_give_the_same_timeline() -> None:
    caller, _ = caller_at(1500)
    first = run_call(app_saying(BargeIn.immediate()), caller)
    second = run_call(app_saying(BargeIn.immediate()), caller)
    assert first == second


# stale replies ------------------------------------------------------------------------------------------------

SORRY = Speak(text="Sorry, I did not catch that.", barge_in=BargeIn.none())
FRESH = Speak(text="Your balance is ten euros.", barge_in=BargeIn.none())


def test_a_reply_to_a_newer_turn_drops_the_replies_still_queued_for_older_ones() -> None:
    # Speech during a long `none` item queues a reply behind it; the caller's next turn gets the fresh answer.
    answers = iter([[SORRY], [BargeInNow(), FRESH]])
    app = ScriptedApp(
        {"session_start": say(Speak(text=LONG, barge_in=BargeIn.none())), "user_speak": lambda e: next(answers)}
    )
    caller = place(12000, (1000, speech("auth-thankyou")), (4000, speech("auth-thankyou")))
    timeline = run_call(
        app, caller, duration_ms=12000, transcripts=[(1500, "thank you", True), (4500, "what is my balance", True)]
    )
    said = [r["text"] for r in events(timeline, "assistant_speak")]
    assert said == [LONG, FRESH.text]
    dropped = one(timeline, "items_dropped")
    assert (dropped["reason"], dropped["items"]) == ("newer_turn", 1)


def test_a_reply_that_arrives_after_a_newer_turns_reply_is_stale() -> None:
    def late(call: SimulatedCall) -> None:
        call.engine.apply(call.renderer.render_all([FRESH]), turn=2)
        call.engine.apply(call.renderer.render_all([SORRY]), turn=1)

    timeline = run_call(ScriptedApp(), duration_ms=5000, setup=late)
    assert [r["text"] for r in events(timeline, "assistant_speak")] == [FRESH.text]
    assert one(timeline, "items_dropped")["reason"] == "stale_reply"


def test_replies_to_the_same_turn_queue_in_order() -> None:
    app = ScriptedApp({"session_start": say(FRESH), "assistant_speak": say(SORRY)})
    timeline = run_call(app, duration_ms=9000)
    assert [r["text"] for r in events(timeline, "assistant_speak")][:3] == [FRESH.text, SORRY.text, SORRY.text]
    assert events(timeline, "items_dropped") == []


def test_clear_queue_drops_what_is_queued_and_lets_the_current_item_play_on() -> None:
    app = ScriptedApp({"session_start": say(Speak(text=LONG, barge_in=BargeIn.none()), SORRY)})

    def push(call: SimulatedCall) -> None:
        call.push_at(2000, [ClearQueue(), FRESH])

    timeline = run_call(app, duration_ms=16000, setup=push)
    assert [r["text"] for r in events(timeline, "assistant_speak")] == [LONG, FRESH.text]
    assert events(timeline, "assistant_speech_ended")[0]["interrupted"] is False
    dropped = one(timeline, "items_dropped")
    assert (dropped["t_ms"], dropped["reason"], dropped["items"]) == (2000, "clear_queue", 1)


def test_replies_past_the_calls_queued_audio_bound_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(playout, "MAX_QUEUED_SECONDS", 15)  # LONG speaks for 10.7 s
    app = ScriptedApp({"session_start": say(Speak(text=LONG, barge_in=BargeIn.none()), FRESH, Speak(text=LONG))})
    timeline = run_call(app, duration_ms=20000)
    assert [r["text"] for r in events(timeline, "assistant_speak")] == [LONG, FRESH.text]
    dropped = one(timeline, "items_dropped")
    assert (dropped["reason"], dropped["items"]) == ("queue_full", 1)
