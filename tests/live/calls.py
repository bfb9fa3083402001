"""A recording test app and real caller audio for the live media-call tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from flowapp import FlowApp
from flowapp.app import HandlerResult
from flowapp.audio.frames import Pcm
from flowapp.protocol.actions import Action
from flowapp.protocol.events import Event, SessionInfo
from flowapp.transports.direct import DirectWebSocketProtocol
from tests.media import asterisk_prompt

EVENT_TYPES = (
    "session_start",
    "user_speech_started",
    "user_speak",
    "assistant_speak",
    "assistant_speech_ended",
    "user_input_timeout",
    "dtmf_received",
    "session_end",
)

LONG_TEXT = (
    "Welcome to the flowapp test line. This greeting is deliberately long, so that there is plenty of time "
    "for the caller to interrupt it while it is still playing, and for the test to watch what happens."
)

BOTH_MEDIA_PATHS = pytest.mark.parametrize(
    "ws", [DirectWebSocketProtocol, "websockets-sansio"], ids=["direct-channel", "plain-asgi"]
)
"""Runs a media test on flowapp's direct channel and on plain ASGI (uvicorn's own protocol, no extension)."""

CUSTOM = {"from": "+4915100000001", "to": "4921100000002", "direction": "inbound"}


class RecordingApp:
    """Every event the app sees, in order; replies come from a table keyed by event type."""

    def __init__(self, replies: dict[str, HandlerResult] | None = None, **options: Any) -> None:
        self.app = FlowApp(**options)
        self.events: list[Event] = []
        self.replies = dict(replies or {})
        for event_type in EVENT_TYPES:
            self.app.on(event_type)(self._handler(event_type))

    def _handler(self, event_type: str) -> Any:
        async def handle(event: Event) -> HandlerResult:
            self.events.append(event)
            return self.replies.get(event_type)

        return handle

    def of(self, event_type: str) -> list[Any]:
        return [e for e in self.events if e.type == event_type]


class PushedCall:
    """A `LiveCall` that records what is pushed into it."""

    transport = "test"

    def __init__(self, info: SessionInfo) -> None:
        self.info = info
        self.pushed: list[Action] = []

    async def barge_in(self) -> bool:
        return True

    async def push(self, actions: list[Action]) -> None:
        self.pushed.extend(actions)

    def describe(self) -> dict[str, Any]:
        return {"session_id": self.info.id}


def caller_speech(*prompts: str, lead_ms: int = 0, tail_ms: int = 0) -> Pcm:
    """Real 8 kHz speech: Asterisk prompts back to back, with silence before and after."""
    parts = [np.zeros(8 * lead_ms, dtype=np.int16)]
    parts += [asterisk_prompt(p) for p in prompts]
    parts.append(np.zeros(8 * tail_ms, dtype=np.int16))
    return np.concatenate(parts)


async def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Events of a call's end reach the app after the stream has closed: wait for them, then assert."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
