"""Carrying the engine's events to whatever answers them, and their replies back, in order.

A simulation awaits every reply before the next frame (call time stands still while the app thinks, so
every run has the same timeline). A live call never waits: events go to a background worker and replies
are applied whenever they arrive, so a slow app cannot stall the audio.
"""

from __future__ import annotations

import asyncio
import logging

from flowapp.engine.call import CallEngine
from flowapp.engine.render import Renderer
from flowapp.logs import call_logger
from flowapp.protocol.actions import Action
from flowapp.protocol.events import CALLER_TURN_EVENTS, NO_REPLY_EVENTS, Event
from flowapp.responder import Responder

logger = logging.getLogger("flowapp.engine.pump")


class EventPump:
    def __init__(self, engine: CallEngine, responder: Responder, renderer: Renderer) -> None:
        self.engine = engine
        self.responder = responder
        self.renderer = renderer
        self.log = call_logger(logger, engine.session.id)
        self._queue: asyncio.Queue[tuple[Event, int] | None] = asyncio.Queue()
        self._turns = 0
        """Caller turns seen so far: each event is answered as part of the newest one (see `CallEngine.apply`)."""
        self._worker: asyncio.Task[None] | None = None

    # Simulation: synchronous with call time ------------------------------------------------------

    async def drain(self) -> None:
        """Answer every pending event before call time moves on."""
        while self.engine.outbox:
            for event in self.engine.take_events():
                await self._answer(event, self._turn_of(event), offload=False)

    # Live: in the background ---------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=f"pump-{self.engine.session.id}")

    def kick(self) -> None:
        """Hand pending events to the worker; returns at once."""
        for event in self.engine.take_events():
            self._queue.put_nowait((event, self._turn_of(event)))

    async def close(self, timeout: float = 5.0) -> None:
        """Let the worker answer what is queued (session_end included), then stop it."""
        if self._worker is None:
            return
        self.kick()
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._worker), timeout)
        except TimeoutError:
            self.log.warning("event worker did not finish within %.1f s; cancelled", timeout)
            self._worker.cancel()

    async def push(self, actions: list[Action]) -> None:
        """Actions that arrive without an event (control API, app push): rendered off the loop, then applied."""
        rendered = await asyncio.to_thread(self.renderer.render_all, actions)
        self.engine.apply(rendered)

    async def _run(self) -> None:
        while True:
            queued = await self._queue.get()
            if queued is None:
                return
            event, turn = queued
            try:
                await self._answer(event, turn, offload=True)
            except Exception:
                self.log.exception("answering %s failed; the call goes on", event.type)

    def _turn_of(self, event: Event) -> int:
        if event.type in CALLER_TURN_EVENTS:
            self._turns += 1
        return self._turns

    async def _answer(self, event: Event, turn: int, *, offload: bool) -> None:
        actions = await self.responder.respond(event)
        if not actions:
            return
        if event.type in NO_REPLY_EVENTS:
            self.log.info("reply to %s ignored", event.type)
            return
        if offload:
            rendered = await asyncio.to_thread(self.renderer.render_all, actions)
        else:
            rendered = self.renderer.render_all(actions)
        self.engine.apply(rendered, turn=turn)
