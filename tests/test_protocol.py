"""Every boundary of the wire models: tolerant events in, strict actions out."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from flowapp.engine.turns import TurnHandling
from flowapp.protocol import (
    Audio,
    BargeIn,
    BargeInNow,
    ConfigureTranscription,
    ConfigureTurnHandling,
    Hangup,
    MixAudio,
    Speak,
    Transfer,
    UnknownEventType,
    VadConfig,
    parse_actions,
    parse_event,
)
from flowapp.protocol.actions import MAX_SPEAK_CHARS
from flowapp.protocol.events import (
    AssistantSpeak,
    AssistantSpeechEnded,
    DtmfReceived,
    SessionEnd,
    SessionStart,
    UserInputTimeout,
    UserSpeak,
    UserSpeechStarted,
)
from flowapp.simulation.scenario import DtmfSpec

SESSION = {"id": "s-1", "account_id": "a", "phone_number": "4921100", "from_phone_number": "+49151", "extra": 1}


def wire(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"type": event_type, "session": SESSION, "unknown_future_field": {"x": 1}, **fields}


@pytest.mark.parametrize(
    ("data", "model"),
    [
        (wire("session_start"), SessionStart),
        (wire("user_speech_started"), UserSpeechStarted),
        (wire("user_speak", text="hello", barged_in=True), UserSpeak),
        (wire("assistant_speak", text="hi", duration_ms=1200, speech_started_at=1700000000000), AssistantSpeak),
        (wire("assistant_speech_ended", interrupted=True, played_ms=800, heard_text="hel"), AssistantSpeechEnded),
        (wire("user_input_timeout"), UserInputTimeout),
        (wire("dtmf_received", digit="#"), DtmfReceived),
        (wire("session_end", reason="caller hung up"), SessionEnd),
    ],
)
def test_each_event_parses_ignoring_unknown_fields(data: dict[str, Any], model: type[Any]) -> None:
    parsed = parse_event(data)
    assert type(parsed) is model
    assert parsed.session.id == "s-1"
    assert not hasattr(parsed, "unknown_future_field")


def test_legacy_user_barge_in_becomes_user_speak_barged_in() -> None:
    parsed = parse_event(wire("user_barge_in", text="stop"))
    assert isinstance(parsed, UserSpeak)
    assert (parsed.text, parsed.barged_in) == ("stop", True)


def test_legacy_transcript_becomes_text() -> None:
    parsed = parse_event(wire("user_speak", transcript="billing please"))
    assert isinstance(parsed, UserSpeak)
    assert parsed.text == "billing please"
    both = parse_event(wire("user_speak", transcript="old", text="new"))
    assert isinstance(both, UserSpeak)
    assert both.text == "new"


@pytest.mark.parametrize(
    ("number", "expected"),
    [("4921100000", "+4921100000"), ("+4921100000", "+4921100000"), ("anonymous", "anonymous")],
)
def test_phone_numbers_with_or_without_plus(number: str, expected: str) -> None:
    session = {"id": "s", "phone_number": number, "from_phone_number": number, "to_phone_number": number}
    info = parse_event({"type": "session_start", "session": session}).session
    assert info.phone_number == info.from_phone_number == info.to_phone_number == expected


def test_unknown_and_invalid_events() -> None:
    with pytest.raises(UnknownEventType) as unknown:
        parse_event(wire("call_recording_ready"))
    assert unknown.value.event_type == "call_recording_ready"
    with pytest.raises(ValidationError, match="digit"):
        parse_event(wire("dtmf_received", digit="12"))
    with pytest.raises(ValidationError, match="session"):
        parse_event({"type": "session_start"})
    with pytest.raises(TypeError):
        parse_event(["session_start"])
    with pytest.raises(ValueError, match="type"):
        parse_event({"session": SESSION})


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: BargeIn(minimum_characters=0), "minimum_characters"),
        (lambda: BargeIn(minimum_characters=101), "minimum_characters"),
        (lambda: BargeIn(allow_after_ms=-1), "allow_after_ms"),
        (lambda: BargeIn(allow_after_ms=10001), "allow_after_ms"),
        (lambda: BargeIn(strategy="sometimes"), "strategy"),  # type: ignore[arg-type]
        (lambda: Speak(text="a", ssml="<speak>a</speak>"), "ssml"),
        (lambda: Speak(), "text"),
        (lambda: Speak(text="a", user_input_timeout_seconds=0), "user_input_timeout_seconds"),
        (lambda: VadConfig(end_of_turn_silence_ms=149), "end_of_turn_silence_ms"),
        (lambda: VadConfig(end_of_turn_silence_ms=2001), "end_of_turn_silence_ms"),
        (lambda: Transfer(target_phone_number="+49", timeout=4), "timeout"),
        (lambda: Transfer(target_phone_number="+49", timeout=121), "timeout"),
        (lambda: ConfigureTranscription(languages=[]), "languages"),
        (lambda: ConfigureTranscription(languages=["de", "en", "fr", "es", "it"]), "languages"),
        (lambda: ConfigureTranscription(custom_vocabulary=["w"] * 101), "custom_vocabulary"),
        (lambda: ConfigureTranscription(custom_vocabulary=["x" * 201]), "custom_vocabulary"),
        (lambda: MixAudio(audio="UklGRg==", volume=1.1), "volume"),
        (lambda: MixAudio(), "audio"),
        (lambda: Hangup(reason="none"), "reason"),  # type: ignore[call-arg]
        (lambda: Speak(text="word " * 20_000), "text"),
        (lambda: Speak(ssml="<speak>" + "x" * MAX_SPEAK_CHARS + "</speak>"), "ssml"),
    ],
)
def test_out_of_range_actions_fail_naming_the_field(build: Any, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        build()
    assert field in str(error.value)


def test_out_of_range_assignment_fails_too() -> None:
    barge_in = BargeIn()
    with pytest.raises(ValidationError, match="minimum_characters"):
        barge_in.minimum_characters = 0


def test_boundaries_are_accepted() -> None:
    assert BargeIn(minimum_characters=1).minimum_characters == 1
    assert BargeIn(minimum_characters=100).minimum_characters == 100
    assert BargeIn(allow_after_ms=0).allow_after_ms == 0
    assert BargeIn(allow_after_ms=10000).allow_after_ms == 10000
    assert VadConfig(end_of_turn_silence_ms=150).end_of_turn_silence_ms == 150
    assert VadConfig(end_of_turn_silence_ms=2000).end_of_turn_silence_ms == 2000
    assert Transfer(target_phone_number="+49", timeout=5).timeout == 5
    assert Transfer(target_phone_number="+49", timeout=120).timeout == 120
    assert ConfigureTranscription(languages=["de"]).languages == ["de"]
    assert ConfigureTranscription(languages=["de", "en", "fr", "es"]).languages is not None
    assert ConfigureTranscription(custom_vocabulary=["x" * 200] * 100).custom_vocabulary is not None
    assert MixAudio(audio="UklGRg==", volume=1.0).volume == 1.0
    assert MixAudio(audio="UklGRg==", volume=0.0).volume == 0.0
    assert Speak(ssml="<speak>hi</speak>").ssml == "<speak>hi</speak>"
    assert Speak(text="x" * MAX_SPEAK_CHARS).text is not None


def test_to_wire() -> None:
    speak = Speak(
        session_id="s",
        text="Hi",
        barge_in=BargeIn.min_characters(5, allow_after_ms=300),
        user_input_timeout_seconds=4,
        vad=VadConfig(end_of_turn_silence_ms=500),
    )
    assert speak.to_wire() == {
        "type": "speak",
        "session_id": "s",
        "text": "Hi",
        "barge_in": {"strategy": "minimum_characters", "minimum_characters": 5, "allow_after_ms": 300},
        "user_input_timeout_seconds": 4.0,
        "vad": {"end_of_turn_silence_ms": 500},
    }
    assert Audio(audio="UklGRg==", barge_in=BargeIn.none()).to_wire() == {
        "type": "audio",
        "audio": "UklGRg==",
        "barge_in": {"strategy": "none"},
    }
    assert BargeIn.immediate().to_wire() == {"strategy": "immediate"}
    assert BargeInNow(session_id="s").to_wire() == {"type": "barge_in", "session_id": "s"}
    assert Hangup().to_wire() == {"type": "hangup"}
    assert Transfer(target_phone_number="+4930", timeout=30).to_wire() == {
        "type": "transfer",
        "target_phone_number": "+4930",
        "timeout": 30,
    }
    assert MixAudio(stop=True).to_wire() == {"type": "mix_audio", "volume": 0.5, "stop": True}


def test_parse_actions_drops_unknown_fields_but_enforces_ranges() -> None:
    actions = parse_actions(
        [
            {"type": "speak", "text": "Hi", "new_field": 1, "barge_in": {"strategy": "immediate", "future": 2}},
            {"type": "hangup", "session_id": "s"},
        ]
    )
    assert [a.type for a in actions] == ["speak", "hangup"]
    assert actions[0].to_wire() == {"type": "speak", "text": "Hi", "barge_in": {"strategy": "immediate"}}
    assert parse_actions({"type": "hangup"})[0].type == "hangup"
    assert parse_actions(None) == []
    with pytest.raises(ValidationError, match="minimum_characters"):
        parse_actions({"type": "speak", "text": "x", "barge_in": {"minimum_characters": 0}})
    with pytest.raises(ValidationError, match="timeout"):
        parse_actions([{"type": "transfer", "target_phone_number": "+49", "timeout": 121}])
    with pytest.raises(ValueError, match="unknown action type"):
        parse_actions({"type": "dance"})
    with pytest.raises(TypeError):
        parse_actions(["speak"])


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), True, False])
@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda v: Speak(text="a", user_input_timeout_seconds=v), "user_input_timeout_seconds"),
        (lambda v: MixAudio(audio="UklGRg==", volume=v), "volume"),
        (lambda v: BargeIn(allow_after_ms=v), "allow_after_ms"),
        (lambda v: BargeIn(minimum_characters=v), "minimum_characters"),
        (lambda v: VadConfig(end_of_turn_silence_ms=v), "end_of_turn_silence_ms"),
        (lambda v: Transfer(target_phone_number="+49", timeout=v), "timeout"),
        (lambda v: parse_event(wire("assistant_speak", duration_ms=v)), "duration_ms"),
        (lambda v: parse_event(wire("assistant_speech_ended", played_ms=v)), "played_ms"),
        (lambda v: parse_event(wire("user_turn_limit", words=v)), "words"),
        (lambda v: TurnHandling().updated({"endpointing": {"min_delay": v}}), "min_delay"),
        (lambda v: TurnHandling().updated({"interruption": {"min_duration": v}}), "min_duration"),
        (lambda v: TurnHandling().updated({"user_turn_limit": {"max_words": v}}), "max_words"),
        (lambda v: TurnHandling().updated({"echo_guard": {"correlation": v}}), "correlation"),
        (lambda v: DtmfSpec(at_ms=v, digit="1"), "at_ms"),
    ],
)
def test_numbers_are_finite_and_never_booleans(build: Any, field: str, bad: float) -> None:
    with pytest.raises(ValidationError) as error:
        build(bad)
    assert field in str(error.value)


def test_numeric_strings_and_integral_floats_are_still_numbers() -> None:
    ended = parse_event(wire("assistant_speech_ended", played_ms="1500"))
    assert isinstance(ended, AssistantSpeechEnded) and ended.played_ms == 1500
    assert BargeIn(allow_after_ms=300.0).allow_after_ms == 300  # type: ignore[arg-type]
    assert Speak(text="a", user_input_timeout_seconds=4).user_input_timeout_seconds == 4.0
    assert ConfigureTurnHandling(turn_handling={"endpointing": {"min_delay": 0.4}}).turn_handling
    with pytest.raises(ValidationError, match=r"turn_handling\.a\.1 must be a finite number"):
        ConfigureTurnHandling(turn_handling={"a": [0, float("nan")]})
