"""Turn-handling options: how interruptions, end of turn and long monologues are handled.

Names and units follow LiveKit Agents' `TurnHandlingOptions` (seconds, words), so settings carry over.
They refine the per-action `barge_in` strategy, they never widen it: the strategy decides whether and from
when an item may be interrupted; these options decide how (stop at once, or pause and confirm), what
counts as a real interruption, and when the caller's turn is over.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from flowapp.protocol.numbers import NotBool, WireModel

Seconds = Annotated[float, Field(ge=0.0, le=60.0), NotBool]

DEFAULT_BACKCHANNELS: dict[str, list[str]] = {
    "en": [
        "uh-huh",
        "uh huh",
        "uh-uh",
        "uh uh",
        "mhm",
        "mm-hmm",
        "mm hmm",
        "hmm",
        "mm",
        "yeah",
        "yes",
        "yep",
        "okay",
        "ok",
        "right",
        "sure",
        "i see",
        "got it",
        "alright",
        "all right",
        "cool",
        "great",
        "exactly",
        "haha",
        "ha ha",
        "hahaha",
        "aha",
    ],
    "de": ["ja", "jaja", "genau", "okay", "ok", "mhm", "aha", "hm", "stimmt", "richtig", "gut", "klar", "alles klar"],
}
DEFAULT_INTERRUPTIONS: dict[str, list[str]] = {
    "en": ["wait", "stop", "no", "hold on", "hang on", "actually", "excuse me", "sorry", "but", "listen", "what"],
    "de": ["warte", "warten sie", "stopp", "halt", "nein", "moment", "eigentlich", "aber", "entschuldigung"],
}


class _Options(WireModel):
    model_config = ConfigDict(extra="forbid")


class InterruptionOptions(_Options):
    enabled: bool = True
    """False: nothing interrupts automatically (every item behaves as `manual`)."""
    mode: Literal["vad", "adaptive"] = "vad"
    """adaptive: tell backchannels and noise from real barge-ins, locally (transcript + audio)."""
    min_duration: Seconds = 0.5
    """Caller speech that confirms a paused interruption."""
    min_words: Annotated[int, Field(ge=0, le=50), NotBool] = 0
    """Words the transcript must hold to confirm (0: duration alone, also without a recognizer)."""
    false_interruption_timeout: Seconds | None = 2.0
    """Quiet after a pause with nothing confirmed: then it was a false interruption (None: never resume)."""
    resume_false_interruption: bool = False
    """Pause first and resume after a false interruption. Off by default, unlike LiveKit: the platform's
    `immediate` stops for good at onset, and an app that did not ask for turn handling gets just that."""
    dtmf: bool = True
    """A key press stops an `immediate` or `minimum_characters` item once its `allow_after_ms` has passed
    (never a `none` or `manual` item); False: keys never interrupt."""
    discard_audio_if_uninterruptible: bool = False
    """Speech that begins and ends during a `none` item is dropped instead of becoming a turn."""
    language: str = "en"
    backchannel_phrases: dict[str, list[str]] | None = None
    """Per language; replaces the built-in list for that language."""
    interruption_phrases: dict[str, list[str]] | None = None
    max_backchannel: Seconds = 1.2
    """Longer than this, even "yeah yeah okay right" is a turn of its own."""

    def phrases(self, kind: Literal["backchannel", "interruption"], words_language: str | None = None) -> set[str]:
        """The call's phrases; with `words_language`, also that language's: a recognizer that writes only English
        turns a German "ja" into "yeah" and "stopp" into "stop", so its English words must count too."""
        custom = self.backchannel_phrases if kind == "backchannel" else self.interruption_phrases
        defaults = DEFAULT_BACKCHANNELS if kind == "backchannel" else DEFAULT_INTERRUPTIONS
        chosen: set[str] = set()
        for language in {self.language, words_language or self.language}:
            lang = language.split("-")[0].lower()
            chosen.update((custom or {}).get(lang, defaults.get(lang, defaults["en"])))
        return {normalize(p) for p in chosen}

    @property
    def pauses_first(self) -> bool:
        return self.mode == "adaptive" or self.resume_false_interruption


class EndpointingOptions(_Options):
    mode: Literal["fixed", "dynamic"] = "fixed"
    min_delay: Annotated[float, Field(ge=0.15, le=2.0), NotBool] = 0.5
    """Silence that ends a turn (fixed), or the lower bound (dynamic). Same as `end_of_turn_silence_ms`."""
    max_delay: Annotated[float, Field(ge=0.15, le=10.0), NotBool] = 3.0
    alpha: Annotated[float, Field(gt=0.0, lt=1.0), NotBool] = 0.9
    """Dynamic: weight of the past in the moving average of this caller's pauses."""

    @model_validator(mode="after")
    def _ordered(self) -> EndpointingOptions:
        if self.max_delay < self.min_delay:
            raise ValueError("endpointing.max_delay must be >= endpointing.min_delay")
        return self


class UserTurnLimit(_Options):
    max_words: Annotated[int, Field(ge=1), NotBool] | None = None
    max_duration: Annotated[float, Field(gt=0.0, le=600.0), NotBool] | None = None


class EchoGuardOptions(_Options):
    enabled: bool = True
    max_delay_ms: Annotated[int, Field(ge=20, le=500), NotBool] = 240
    correlation: Annotated[float, Field(gt=0.0, lt=1.0), NotBool] = 0.6
    """Normalised correlation with the delayed outbound audio above which a frame is taken for echo."""


class TurnHandling(_Options):
    interruption: InterruptionOptions = Field(default_factory=InterruptionOptions)
    endpointing: EndpointingOptions = Field(default_factory=EndpointingOptions)
    turn_detection: Literal["vad", "stt", "manual"] = "vad"
    """vad: silence ends the turn; stt: a final transcript does; manual: the app commits it."""
    user_turn_limit: UserTurnLimit = Field(default_factory=UserTurnLimit)
    echo_guard: EchoGuardOptions = Field(default_factory=EchoGuardOptions)

    def updated(self, changes: dict[str, Any]) -> TurnHandling:
        """These options with `changes` merged in, section by section (a per-call override of app defaults)."""
        merged = self.model_dump()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return TurnHandling.model_validate(merged)


def normalize(text: str) -> str:
    return " ".join("".join(ch if ch.isalnum() or ch in " '-" else " " for ch in text.lower()).split())


def words(text: str) -> list[str]:
    return normalize(text).replace("-", " ").split()
