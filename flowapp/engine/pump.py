"""Carrying the engine's events to whatever answers them, and their replies back, in order.

A simulation awaits every reply before the next frame (call time stands still while the app thinks, so
every run has the same timeline). A live call never waits: events go to a background worker and replies
are applied whenever they arrive, so a slow app cannot stall the audio.
"""

from __future__ import annotations

import asyncio
import logging

from flowapp.audio.limits import MAX_QUEUED_SECONDS
from flowapp.engine.call import CallEngine
from flowapp.engine.playback import QueueFull
from flowapp.engine.render import Renderer
from flowapp.logs import call_logger
from flowapp.protocol.actions import Action, Audio, Speak
from flowapp.protocol.events import CALLER_TURN_EVENTS, NO_REPLY_EVENTS, Event
from flowapp.responder import Responder
from flowapp.workers import RENDER

logger = logging.getLogger("flowapp.engine.pump")

CLOSE_SECONDS = 5.0
"""After the call ended, the events queued before `session_end` get this long to be answered."""


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
        self._current: Event | None = None

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

    async def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Answer what is queued within `timeout`, then `session_end` whatever happened to the rest.

        `session_end` is promised exactly once. The events ahead of it may be stuck (a slow handler per
        event, a long synthesis): once `timeout` has passed, the worker is cancelled, the events it had
        not answered yet are dropped (and logged), and `session_end` is answered on its own.
        """
        if self._worker is None:
            return
        self.kick()
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._worker), timeout)
            return
        except TimeoutError:
            pass
        end = self._current if self._current is not None and self._current.type == "session_end" else None
        if end is not None:
            self.log.warning("session_end still being answered after %.1f s; waiting for it", timeout)
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), timeout)
            except TimeoutError:
                self.log.error("session_end not answered within another %.1f s; given up", timeout)
                self._worker.cancel()
            return
        self._worker.cancel()
        stale = [self._current.type] if self._current is not None else []
        while not self._queue.empty():
            queued = self._queue.get_nowait()
            if queued is None:
                continue
            event = queued[0]
            if event.type == "session_end":
                end = event
            else:
                stale.append(event.type)
        self.log.warning(
            "events still unanswered %.1f s after the call ended: dropped %s, then session_end", timeout, stale
        )
        if end is not None:
            try:
                await self.responder.respond(end)
            except Exception:
                self.log.exception("answering session_end failed")

    async def push(self, actions: list[Action]) -> None:
        """Actions that arrive without an event (control API, app push): rendered off the loop, then applied.

        Raises `QueueFull`, and applies none of them, when their audio would take the call past
        `MAX_QUEUED_SECONDS` of audio waiting to play."""
        limit_ms = MAX_QUEUED_SECONDS * 1000
        if any(isinstance(a, Speak | Audio) for a in actions) and self.engine.queued_ms >= limit_ms:
            raise QueueFull(f"the call already holds {MAX_QUEUED_SECONDS} s of audio to play; try again later")
        rendered = await RENDER.run(self.renderer.render_all, actions)
        adding_ms = sum(len(r.pcm) // 8 for r in rendered if r.pcm is not None and isinstance(r.action, Speak | Audio))
        if adding_ms and self.engine.queued_ms + adding_ms > limit_ms:
            raise QueueFull(
                f"{adding_ms / 1000:.0f} s more audio would take the call past {MAX_QUEUED_SECONDS} s waiting to play"
            )
        self.engine.apply(rendered)

    async def _run(self) -> None:
        while True:
            queued = await self._queue.get()
            if queued is None:
                return
            event, turn = queued
            self._current = event
            try:
                await self._answer(event, turn, offload=True)
            except Exception:
                self.log.exception("answering %s failed; the call goes on", event.type)
            self._current = None

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
        if self.engine.ended:
            self.log.info("reply to %s not rendered: the call is over", event.type)
            return
        if offload:
            rendered = await RENDER.run(self.renderer.render_all, actions)
        else:
            rendered = self.renderer.render_all(actions)
        self.engine.apply(rendered, turn=turn)
