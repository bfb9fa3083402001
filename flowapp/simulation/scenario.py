"""The scenario file of `flowapp simulate`: one call, described in JSON, paths relative to the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from flowapp.audio.errors import AudioFormatError
from flowapp.audio.wav import decode_wav
from flowapp.engine.turns import TurnHandling
from flowapp.protocol.actions import BargeIn, TtsConfig
from flowapp.protocol.numbers import NotBool, WireModel
from flowapp.stt import check_recognizer


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the problem."""


class _Spec(WireModel):
    model_config = ConfigDict(extra="forbid")


class AssistantSpec(_Spec):
    text: str | None = None
    ssml: str | None = None
    audio: str | None = None
    barge_in: BargeIn | None = None
    tts: TtsConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> AssistantSpec:
        if sum(x is not None for x in (self.text, self.ssml, self.audio)) != 1:
            raise ValueError("assistant needs exactly one of 'text', 'ssml' or 'audio'")
        return self


class CallerSpec(_Spec):
    audio: str
    offset_ms: Annotated[int, Field(ge=0), NotBool] = 0


class TranscriptSpec(_Spec):
    at_ms: Annotated[int, Field(ge=0), NotBool]
    text: str
    final: bool = False


class DtmfSpec(_Spec):
    at_ms: Annotated[int, Field(ge=0), NotBool]
    digit: Annotated[str, Field(pattern=r"^[0-9*#]$")]


class Scenario(_Spec):
    app: str | None = None
    assistant: AssistantSpec | None = None
    caller: CallerSpec | None = None
    transcripts: list[TranscriptSpec] | None = None
    recognizer: str | None = None
    barge_in_requests_ms: list[Annotated[int, Field(ge=0), NotBool]] = Field(default_factory=list)
    dtmf: list[DtmfSpec] = Field(default_factory=list)
    duration_ms: Annotated[int, Field(gt=0, le=3_600_000), NotBool] = 10_000
    end_of_turn_silence_ms: Annotated[int, Field(ge=150, le=2000), NotBool] | None = None
    turn_handling: TurnHandling | None = None

    @field_validator("recognizer")
    @classmethod
    def _known_recognizer(cls, name: str | None) -> str | None:
        return check_recognizer(name)

    @model_validator(mode="after")
    def _something_to_run(self) -> Scenario:
        if self.app is None and self.assistant is None:
            raise ValueError("a scenario needs 'app' (module:attr) or 'assistant' (what the engine plays at t=0)")
        if self.app is not None and self.assistant is not None:
            raise ValueError("'assistant' is only for scenarios without 'app': the app decides what is said")
        return self


def load_scenario(path: str | Path) -> tuple[Scenario, Path]:
    """Parse and check a scenario file; returns it with the folder its relative paths start from."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"scenario file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ScenarioError(f"{path}: {problems}") from None
    base = path.resolve().parent
    for rel in _audio_paths(scenario):
        if not (base / rel).is_file():
            raise ScenarioError(f"{path}: audio file not found: {rel} (paths are relative to the scenario file)")
        try:
            decode_wav((base / rel).read_bytes())
        except AudioFormatError as exc:
            raise ScenarioError(f"{path}: audio file {rel} cannot be played: {exc}") from None
    return scenario, base


def _audio_paths(scenario: Scenario) -> list[str]:
    paths = []
    if scenario.assistant is not None and scenario.assistant.audio:
        paths.append(scenario.assistant.audio)
    if scenario.caller is not None:
        paths.append(scenario.caller.audio)
    return paths
