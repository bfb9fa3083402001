"""Actions (app -> platform or engine), strict on the way out.

An action built out of range fails where the developer builds it, naming the field and its range,
instead of being rejected later by the platform in the middle of a call.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from flowapp.protocol.numbers import NotBool, WireModel, non_finite_path

Strategy = Literal["none", "manual", "minimum_characters", "immediate"]

MAX_SPEAK_CHARS = 5000
"""Longest `text` or `ssml` one `speak` may carry: about five minutes of speech, and the per-request limit of
common hosted TTS services, so a prompt that fits them fits here. Longer text is refused, not truncated."""


class _Strict(WireModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BargeIn(_Strict):
    """When the caller may interrupt one speak/audio item."""

    strategy: Strategy = "minimum_characters"
    minimum_characters: Annotated[int, Field(ge=1, le=100), NotBool] = 3
    allow_after_ms: Annotated[int, Field(ge=0, le=10000), NotBool] = 0

    @classmethod
    def none(cls) -> BargeIn:
        return cls(strategy="none")

    @classmethod
    def manual(cls) -> BargeIn:
        return cls(strategy="manual")

    @classmethod
    def immediate(cls, allow_after_ms: int = 0) -> BargeIn:
        return cls(strategy="immediate", allow_after_ms=allow_after_ms)

    @classmethod
    def min_characters(cls, characters: int = 3, allow_after_ms: int = 0) -> BargeIn:
        return cls(strategy="minimum_characters", minimum_characters=characters, allow_after_ms=allow_after_ms)

    def to_wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {"strategy": self.strategy}
        if self.strategy == "minimum_characters":
            data["minimum_characters"] = self.minimum_characters
        if self.allow_after_ms:
            data["allow_after_ms"] = self.allow_after_ms
        return data


class VadConfig(_Strict):
    end_of_turn_silence_ms: Annotated[int, Field(ge=150, le=2000), NotBool] | None = None


class TtsConfig(_Strict):
    provider: str | None = None
    language: str | None = None
    voice: str | None = None


class _Action(_Strict):
    session_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True)
        barge_in = getattr(self, "barge_in", None)
        if isinstance(barge_in, BargeIn):
            data["barge_in"] = barge_in.to_wire()
        return data


class Speak(_Action):
    type: Literal["speak"] = "speak"
    text: Annotated[str, Field(max_length=MAX_SPEAK_CHARS)] | None = None
    ssml: Annotated[str, Field(max_length=MAX_SPEAK_CHARS)] | None = None
    tts: TtsConfig | None = None
    barge_in: BargeIn | None = None
    user_input_timeout_seconds: Annotated[float, Field(gt=0), NotBool] | None = None
    vad: VadConfig | None = None

    @model_validator(mode="after")
    def _exactly_one_of_text_or_ssml(self) -> Self:
        if (self.text is None) == (self.ssml is None):
            raise ValueError("speak needs exactly one of 'text' or 'ssml'")
        return self


class Audio(_Action):
    type: Literal["audio"] = "audio"
    audio: str = Field(description="base64-encoded WAV: PCM, float or G.711, 4-384 kHz, up to 600 s, any channel count")
    barge_in: BargeIn | None = None


class MixAudio(_Action):
    type: Literal["mix_audio"] = "mix_audio"
    audio: str | None = None
    volume: Annotated[float, Field(ge=0.0, le=1.0), NotBool] = 0.5
    stop: bool | None = None

    @model_validator(mode="after")
    def _audio_or_stop(self) -> Self:
        if not self.stop and not self.audio:
            raise ValueError("mix_audio needs 'audio' (base64 WAV) or 'stop': true")
        return self


class Hangup(_Action):
    type: Literal["hangup"] = "hangup"


class Transfer(_Action):
    type: Literal["transfer"] = "transfer"
    target_phone_number: str
    caller_id_name: str | None = None
    caller_id_number: str | None = None
    timeout: Annotated[int, Field(ge=5, le=120), NotBool] | None = None


class BargeInNow(_Action):
    """The `barge_in` action: stop the current playback now (pattern: `[BargeInNow(), Speak(...)]`)."""

    type: Literal["barge_in"] = "barge_in"


class ClearQueue(_Action):
    """Extension: drop every queued item that has not started playing (the current one plays on; pair it with
    `BargeInNow` to stop that too)."""

    type: Literal["clear_queue"] = "clear_queue"


class ConfigureTranscription(_Action):
    type: Literal["configure_transcription"] = "configure_transcription"
    provider: str | None = None
    languages: Annotated[list[str], Field(min_length=1, max_length=4)] | None = None
    custom_vocabulary: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=100)] | None = None
    vad: VadConfig | None = None


class ConfigureTurnHandling(_Action):
    """Extension: change this call's turn-handling options; see flowapp.engine.turns.TurnHandling for the fields."""

    type: Literal["configure_turn_handling"] = "configure_turn_handling"
    turn_handling: dict[str, Any]

    @field_validator("turn_handling")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        path = non_finite_path(value)
        if path is not None:
            raise ValueError(f"turn_handling.{'.'.join(map(str, path))} must be a finite number")
        return value


class CommitUserTurn(_Action):
    """Extension: end the caller's turn now (turn detection `manual`: the app decides when they are done)."""

    type: Literal["commit_user_turn"] = "commit_user_turn"


Action = Annotated[
    Speak
    | Audio
    | MixAudio
    | Hangup
    | Transfer
    | BargeInNow
    | ClearQueue
    | ConfigureTranscription
    | ConfigureTurnHandling
    | CommitUserTurn,
    Field(discriminator="type"),
]

ACTION_TYPES: dict[str, type[_Action]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        Speak,
        Audio,
        MixAudio,
        Hangup,
        Transfer,
        BargeInNow,
        ClearQueue,
        ConfigureTranscription,
        ConfigureTurnHandling,
        CommitUserTurn,
    )
}

_action_adapter: TypeAdapter[Action] = TypeAdapter(Action)


_NESTED: dict[str, type[BaseModel]] = {"barge_in": BargeIn, "vad": VadConfig, "tts": TtsConfig}


def _drop_unknown_fields(cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    cleaned = {k: v for k, v in data.items() if k in cls.model_fields}
    for name, sub_cls in _NESTED.items():
        if isinstance(cleaned.get(name), dict):
            cleaned[name] = {k: v for k, v in cleaned[name].items() if k in sub_cls.model_fields}
    return cleaned


def parse_action(data: Any) -> Action:
    """Validate one action from an app (for example a remote webhook app).

    Ranges are enforced, unknown fields are dropped: a newer app may send fields this version lacks.
    """
    if not isinstance(data, dict):
        raise TypeError(f"an action must be a JSON object, got {type(data).__name__}")
    action_type = data.get("type")
    if action_type not in ACTION_TYPES:
        raise ValueError(f"unknown action type: {action_type!r}")
    return _action_adapter.validate_python(_drop_unknown_fields(ACTION_TYPES[action_type], data))


def with_session(actions: list[Action], session_id: str) -> list[Action]:
    """A sipgate-style app names the session in each action; one that leaves it out means this call."""
    return [a if a.session_id is not None else a.model_copy(update={"session_id": session_id}) for a in actions]


def foreign(actions: list[Action], session_id: str) -> list[Action]:
    """The actions that name another call than the one they were sent into: never run, never re-addressed."""
    return [a for a in actions if a.session_id is not None and a.session_id != session_id]


def parse_actions(data: Any) -> list[Action]:
    """A reply body: one action, an array of actions, or nothing."""
    if data is None:
        return []
    if isinstance(data, list):
        return [parse_action(item) for item in data]
    return [parse_action(data)]


__all__ = [
    "ACTION_TYPES",
    "MAX_SPEAK_CHARS",
    "Action",
    "Audio",
    "BargeIn",
    "BargeInNow",
    "ClearQueue",
    "CommitUserTurn",
    "ConfigureTranscription",
    "ConfigureTurnHandling",
    "Hangup",
    "MixAudio",
    "Speak",
    "Strategy",
    "Transfer",
    "TtsConfig",
    "VadConfig",
    "ValidationError",
    "foreign",
    "parse_action",
    "parse_actions",
    "with_session",
]
