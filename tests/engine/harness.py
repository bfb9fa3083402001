"""Building blocks for engine tests: scripted apps, caller audio at known moments, timeline queries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from flowapp.audio.frames import Pcm
from flowapp.engine.call import Record
from flowapp.protocol.actions import Action
from flowapp.protocol.events import Event
from flowapp.simulation.run import SimulatedCall
from flowapp.stt import ScriptedRecognizer, Transcript
from tests.media import asterisk_prompt

Replies = dict[str, Callable[[Event], list[Action]]]


class ScriptedApp:
    """Answers events from a table; remembers every event it saw, in order."""

    def __init__(self, replies: Replies | None = None) -> None:
        self.replies = replies or {}
        self.events: list[Event] = []

    async def respond(self, event: Event) -> list[Action]:
        self.events.append(event)
        reply = self.replies.get(event.type)
        return reply(event) if reply else []


def say(*actions: Action) -> Callable[[Event], list[Action]]:
    return lambda event: list(actions)


def true_onset_ms(pcm: Pcm) -> float:
    """First sample above 10% of the clip's peak envelope, in ms: where a person hears speech begin."""
    envelope = np.abs(pcm.astype(np.float64))
    threshold = 0.1 * np.percentile(envelope, 99.5)
    return float(np.argmax(envelope > threshold)) / 8.0


def place(duration_ms: int, *clips: tuple[int, Pcm]) -> Pcm:
    """Caller audio: silence with each clip starting at its offset."""
    out = np.zeros(duration_ms * 8, dtype=np.int32)
    for offset_ms, clip in clips:
        start = offset_ms * 8
        end = min(len(out), start + len(clip))
        out[start:end] += clip[: end - start]
    return np.clip(out, -32768, 32767).astype(np.int16)


def speech(name: str = "conf-onlyperson") -> Pcm:
    return asterisk_prompt(name)


def run_call(
    app: ScriptedApp,
    caller: Pcm | None = None,
    *,
    duration_ms: int = 8000,
    transcripts: list[tuple[int, str, bool]] | None = None,
    setup: Callable[[SimulatedCall], Any] | None = None,
) -> list[Record]:
    recognizer = ScriptedRecognizer([Transcript(text, final, at) for at, text, final in transcripts or []])
    call = SimulatedCall(app, recognizer=recognizer if transcripts is not None else None)
    if setup is not None:
        setup(call)
    audio = caller if caller is not None else np.zeros(0, dtype=np.int16)
    return asyncio.run(call.run(audio, duration_ms))


def events(timeline: list[Record], name: str) -> list[Record]:
    return [r for r in timeline if r["event"] == name]


def one(timeline: list[Record], name: str) -> Record:
    found = events(timeline, name)
    assert len(found) == 1, f"expected one {name!r}, got {found}"
    return found[0]


def order(timeline: list[Record]) -> list[str]:
    return [r["event"] for r in timeline]
