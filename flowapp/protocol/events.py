"""Call events (platform or engine -> app), tolerant on the way in.

The platform adds fields over time, so unknown fields are ignored, and two legacy forms
(`user_barge_in`, `transcript`) are mapped onto today's `user_speak`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, field_validator

from flowapp.protocol.ids import MAX_ID_LENGTH, is_valid_id
from flowapp.protocol.numbers import Int, WireModel

_E164_DIGITS = re.compile(r"^\+?[0-9]{3,15}$")


def normalize_phone_number(value: str | None) -> str | None:
    """E.164 arrives with or without '+'; hand the app one form. Non-numbers (\"anonymous\") pass as they are."""
    if value is None:
        return None
    compact = value.strip().replace(" ", "")
    if _E164_DIGITS.match(compact):
        return compact if compact.startswith("+") else "+" + compact
    return value


class SessionInfo(WireModel):
    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, Field(json_schema_extra={"minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": "^[!-~]+$"})]
    """1-128 printable ASCII characters (the platform sends UUIDs)."""
    account_id: str | None = None
    phone_number: str | None = None
    direction: Literal["inbound", "outbound"] | None = None
    from_phone_number: str | None = None
    to_phone_number: str | None = None

    @field_validator("id")
    @classmethod
    def _bounded_id(cls, value: str) -> str:
        if not is_valid_id(value):
            raise ValueError(f"a session id is 1-{MAX_ID_LENGTH} printable ASCII characters without spaces")
        return value

    @field_validator("phone_number", "from_phone_number", "to_phone_number", mode="before")
    @classmethod
    def _e164(cls, value: Any) -> Any:
        return normalize_phone_number(value) if isinstance(value, str) else value


class _Event(WireModel):
    model_config = ConfigDict(extra="ignore")

    session: SessionInfo

    @property
    def session_id(self) -> str:
        return self.session.id


class SessionStart(_Event):
    type: Literal["session_start"] = "session_start"


class UserSpeechStarted(_Event):
    type: Literal["user_speech_started"] = "user_speech_started"


class UserSpeak(_Event):
    type: Literal["user_speak"] = "user_speak"
    text: str = ""
    barged_in: bool | None = None


class AssistantSpeak(_Event):
    type: Literal["assistant_speak"] = "assistant_speak"
    text: str | None = None
    ssml: str | None = None
    duration_ms: Int | None = None
    speech_started_at: Int | None = None


class AssistantSpeechEnded(_Event):
    type: Literal["assistant_speech_ended"] = "assistant_speech_ended"
    interrupted: bool | None = None
    played_ms: Int | None = None
    heard_text: str | None = None


class UserInputTimeout(_Event):
    type: Literal["user_input_timeout"] = "user_input_timeout"


class DtmfReceived(_Event):
    type: Literal["dtmf_received"] = "dtmf_received"
    digit: Annotated[str, Field(pattern=r"^[0-9*#]$")]


class SessionEnd(_Event):
    type: Literal["session_end"] = "session_end"
    reason: str | None = None


class AssistantSpeechPaused(_Event):
    """Extension: playback paused on caller activity; it either resumes or is confirmed as a barge-in."""

    type: Literal["assistant_speech_paused"] = "assistant_speech_paused"
    played_ms: Int | None = None


class AssistantSpeechResumed(_Event):
    """Extension: the pause was a false interruption (a cough, a door); playback went on from the pause point."""

    type: Literal["assistant_speech_resumed"] = "assistant_speech_resumed"
    played_ms: Int | None = None
    paused_ms: Int | None = None


class UserBackchannel(_Event):
    """Extension: the caller said "uh-huh" over the assistant; it did not interrupt."""

    type: Literal["user_backchannel"] = "user_backchannel"
    text: str = ""


class UserTurnLimit(_Event):
    """Extension: the caller's turn passed `user_turn_limit`; the app may cut in politely."""

    type: Literal["user_turn_limit"] = "user_turn_limit"
    text: str = ""
    words: Int = 0
    duration_ms: Int = 0
    limit: Literal["max_words", "max_duration"] = "max_words"


Event = Annotated[
    SessionStart
    | UserSpeechStarted
    | UserSpeak
    | AssistantSpeak
    | AssistantSpeechEnded
    | UserInputTimeout
    | DtmfReceived
    | SessionEnd
    | AssistantSpeechPaused
    | AssistantSpeechResumed
    | UserBackchannel
    | UserTurnLimit,
    Field(discriminator="type"),
]

EVENT_TYPES: dict[str, type[_Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        SessionStart,
        UserSpeechStarted,
        UserSpeak,
        AssistantSpeak,
        AssistantSpeechEnded,
        UserInputTimeout,
        DtmfReceived,
        SessionEnd,
        AssistantSpeechPaused,
        AssistantSpeechResumed,
        UserBackchannel,
        UserTurnLimit,
    )
}

_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


NO_REPLY_EVENTS = frozenset({"user_speech_started", "session_end"})
"""Events whose replies the platform does not execute."""

CALLER_TURN_EVENTS = frozenset({"user_speak", "dtmf_received", "user_input_timeout"})
"""Events that give the app a new caller turn to answer: a reply to one supersedes replies to earlier ones."""


class UnknownEventType(ValueError):
    """An event type this version does not know: transports answer 204 rather than an error."""

    def __init__(self, event_type: object) -> None:
        super().__init__(f"unknown event type: {event_type!r}")
        self.event_type = event_type


def _upgrade_legacy(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("type") == "user_barge_in":
        data = {**data, "type": "user_speak", "barged_in": True}
    if data.get("type") == "user_speak" and "text" not in data and "transcript" in data:
        data = {**data, "text": data["transcript"]}
    return data


def parse_event(data: Any) -> Event:
    """Validate one event from the wire. Raises UnknownEventType or pydantic.ValidationError."""
    if not isinstance(data, dict):
        raise TypeError(f"an event must be a JSON object, got {type(data).__name__}")
    data = _upgrade_legacy(data)
    event_type = data.get("type")
    if not isinstance(event_type, str):
        raise ValueError("an event needs a string field 'type'")
    if event_type not in EVENT_TYPES:
        raise UnknownEventType(event_type)
    return _event_adapter.validate_python(data)
