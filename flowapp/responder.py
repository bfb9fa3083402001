"""The one interface between the call engine and whatever answers its events.

An in-process `FlowApp`, a remote webhook app or a test script all look the same to the engine: give them
an event, get back the actions to run.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from flowapp.protocol.actions import Action
from flowapp.protocol.events import Event


@runtime_checkable
class Responder(Protocol):
    async def respond(self, event: Event) -> list[Action]:
        """Answer one event. Must not raise: failures become the app's fallback actions."""
        ...
