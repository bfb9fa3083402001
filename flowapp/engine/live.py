"""Driving call engines in real time: one shared 20 ms ticker steps every live call of the process.

A timer task per call costs a task switch per call every 20 ms; with hundreds of calls on one core that
overhead alone eats the budget. One ticker steps all calls back to back on the same 20 ms grid instead,
catching up a few ticks when the event loop was late, and skipping ticks (the carrier hears a short gap)
rather than sending a burst after a long stall.

Per call, `LiveDriver` is the glue between a carrier stream and the engine:
- inbound audio waits in a small jitter buffer and is consumed one frame per step; a missing frame is
  silence, and a stream faster than real time loses its oldest frames (and is closed when it keeps it up);
- the frame each step produces is sent at once, so the carrier never holds more than a frame or two that a
  barge-in would have to take back, and a barge-in sends `clear` before anything else;
- marks echoed by the carrier say how much of the sent audio was really played, for `played_ms`.
Everything on the tick path is synchronous: the transport's `Outlet` must send without awaiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol
from weakref import WeakKeyDictionary

from flowapp.audio.frames import FRAME_MS, Pcm
from flowapp.audio.g711 import ulaw_decode, ulaw_encode
from flowapp.engine.call import CallEngine, EngineConfig, Record
from flowapp.engine.pump import EventPump
from flowapp.engine.render import Renderer
from flowapp.logs import call_logger
from flowapp.protocol.actions import Action
from flowapp.protocol.events import SessionInfo
from flowapp.responder import Responder
from flowapp.stt.base import ScriptedRecognizer, StreamingRecognizer, Transcript

logger = logging.getLogger("flowapp.live")

TICK_SECONDS = FRAME_MS / 1000
ULAW_FRAME_BYTES = 160
"""One 20 ms frame of 8 kHz mu-law."""
MAX_CATCH_UP_TICKS = 3
"""A late loop replays at most this many ticks at once; a longer stall is skipped, not sent as a burst."""
MARK_EVERY_FRAMES = 10
"""A mark every 200 ms of sent audio bounds how stale the knowledge of what the caller heard can get."""
FLOOD_LIMIT_FRAMES = 250
"""Inbound audio may run this far (5 s) ahead of the call clock before the stream is closed as a flood."""
MARK_PREFIX = "flowapp-"
_SILENCING = frozenset({"barge_in", "assistant_speech_paused"})


class Tickable(Protocol):
    def tick(self) -> None: ...

    def abort(self, reason: str) -> None:
        """The tick raised: end the call without touching the ticker again."""
        ...


class Ticker:
    """Steps every registered call once per 20 ms of wall time; runs only while a call is registered."""

    _by_loop: WeakKeyDictionary[asyncio.AbstractEventLoop, Ticker] = WeakKeyDictionary()

    def __init__(self) -> None:
        self._calls: dict[int, Tickable] = {}
        self._task: asyncio.Task[None] | None = None
        self.skipped_ticks = 0
        self.late_ticks = 0

    @classmethod
    def shared(cls) -> Ticker:
        """The ticker of the running event loop (each server thread in the tests has its own loop)."""
        loop = asyncio.get_running_loop()
        ticker = cls._by_loop.get(loop)
        if ticker is None:
            ticker = cls._by_loop[loop] = cls()
        return ticker

    def add(self, call: Tickable) -> None:
        self._calls[id(call)] = call
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="flowapp-live-ticker")

    def remove(self, call: Tickable) -> None:
        self._calls.pop(id(call), None)

    def __len__(self) -> int:
        return len(self._calls)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + TICK_SECONDS
        while self._calls:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due = int((loop.time() - next_at) / TICK_SECONDS) + 1
            if due > MAX_CATCH_UP_TICKS:
                skipped = due - MAX_CATCH_UP_TICKS
                self.skipped_ticks += skipped
                next_at += skipped * TICK_SECONDS
                due = MAX_CATCH_UP_TICKS
                logger.warning(
                    "event loop stalled: skipped %d ticks (%d ms) on %d calls",
                    skipped,
                    skipped * FRAME_MS,
                    len(self._calls),
                )
            if due > 1:
                self.late_ticks += due - 1
            for _ in range(due):
                self._tick_all()
                next_at += TICK_SECONDS

    def _tick_all(self) -> None:
        for call in list(self._calls.values()):
            try:
                call.tick()
            except Exception:
                logger.exception("a live call failed in its tick; it is ended, the others go on")
                self.remove(call)
                try:
                    call.abort("internal_error")
                except Exception:
                    logger.exception("ending the failed call raised too")


class Outlet(Protocol):
    """The carrier side of a call. Synchronous: the ticker must never wait on one call's socket."""

    def media(self, ulaw: bytes) -> None: ...

    def mark(self, name: str) -> None: ...

    def clear(self) -> None: ...

    def close(self, reason: str) -> None:
        """The engine ended the call (hangup, transfer) or it failed: end the stream."""
        ...


class Playout:
    """What the carrier has played of the audio sent to it, from its mark echoes.

    Marks carry the count of frames sent before them. Between echoes the carrier keeps playing in real
    time, so the estimate advances with the clock, never past what was sent. A carrier that never echoes
    marks is taken to play everything at once (nothing unheard) rather than nothing at all.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.sent = 0
        self.heard = 0
        self._heard_at: float | None = None
        self._cleared_at = 0
        self._last_mark = 0

    def sent_frame(self) -> None:
        self.sent += 1

    def mark_due(self, boundary: bool) -> str | None:
        """A mark name to send now: at an item boundary, or every `MARK_EVERY_FRAMES` sent frames."""
        if self.sent == self._last_mark:
            return None
        if boundary or self.sent - self._last_mark >= MARK_EVERY_FRAMES:
            self._last_mark = self.sent
            return f"{MARK_PREFIX}{self.sent}"
        return None

    def echoed(self, name: str) -> bool:
        """A mark came back; marks flushed by a `clear` (or not ours) say nothing about playout."""
        if not name.startswith(MARK_PREFIX):
            return False
        try:
            frames = int(name[len(MARK_PREFIX) :])
        except ValueError:
            return False
        if frames <= self._cleared_at or frames > self.sent:
            return False
        self.heard = max(self.heard, frames)
        self._heard_at = self.clock()
        return True

    def cleared(self) -> None:
        """After `clear` the carrier holds nothing: earlier marks are flushed, not played."""
        self._cleared_at = self.sent
        self._last_mark = self.sent
        self.heard = self.sent
        self._heard_at = self.clock()

    def unheard_ms(self) -> int:
        if self._heard_at is None:
            return 0
        elapsed_frames = round((self.clock() - self._heard_at) * 1000) // FRAME_MS
        heard = min(self.sent, self.heard + elapsed_frames)
        return (self.sent - heard) * FRAME_MS


class InboundAudio:
    """The jitter buffer: mu-law frames waiting for their step, re-cut to 20 ms whatever size they came in."""

    def __init__(self, capacity: int) -> None:
        self.frames: deque[bytes] = deque()
        self.capacity = max(1, capacity)
        self.received = 0
        self.dropped = 0
        self._partial = b""

    def add(self, payload: bytes) -> None:
        if len(payload) == ULAW_FRAME_BYTES and not self._partial:
            self._append(payload)
            return
        data = self._partial + payload
        whole = len(data) - len(data) % ULAW_FRAME_BYTES
        for offset in range(0, whole, ULAW_FRAME_BYTES):
            self._append(data[offset : offset + ULAW_FRAME_BYTES])
        self._partial = data[whole:]

    def _append(self, frame: bytes) -> None:
        self.received += 1
        if len(self.frames) >= self.capacity:
            self.frames.popleft()
            self.dropped += 1
        self.frames.append(frame)

    def take(self) -> bytes | None:
        return self.frames.popleft() if self.frames else None


class LiveDriver:
    """One live call: its engine and event pump, fed by the carrier and stepped by the shared ticker."""

    def __init__(
        self,
        session: SessionInfo,
        responder: Responder,
        renderer: Renderer,
        outlet: Outlet,
        *,
        config: EngineConfig | None = None,
        recognizer: StreamingRecognizer | None = None,
        jitter_frames: int = 5,
        on_end: Callable[[str], None] | None = None,
        ticker: Ticker | None = None,
    ) -> None:
        config = config or EngineConfig()
        if not config.start_unix_ms:
            config.start_unix_ms = int(time.time() * 1000)
        self.outlet = outlet
        self.playout = Playout()
        self.inbound = InboundAudio(jitter_frames)
        self.engine = CallEngine(
            session, config, recognizer=recognizer, on_record=self._on_record, unheard_ms=self._unheard_ms
        )
        self.pump = EventPump(self.engine, responder, renderer)
        self.log = call_logger(logger, session.id, transport="live")
        self.steps = 0
        self.barge_ins = 0
        self._ticker = ticker
        self._on_end = on_end
        self._stepping = False
        self._barged = False
        self._closed = False
        self._reported_drops = 0

    # Lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Raise `session_start` and join the ticker: from now on the call advances with the wall clock."""
        if self._ticker is None:
            self._ticker = Ticker.shared()
        self.engine.start()
        self.pump.start()
        self.pump.kick()
        self._ticker.add(self)

    async def stop(self, reason: str) -> None:
        """The stream is over from the carrier's side: `session_end` (once), then the pump is drained."""
        self._leave_ticker()
        self.engine.end(reason)
        await self.pump.close()

    def abort(self, reason: str) -> None:
        self._leave_ticker()
        self.engine.end(reason)
        self.pump.kick()
        self._close(reason)

    @property
    def ended(self) -> bool:
        return self.engine.ended

    # Carrier input ---------------------------------------------------------------------------------

    def feed(self, ulaw: bytes) -> bool:
        """Queue inbound audio; False when the stream runs so far ahead of real time that it must be closed."""
        self.inbound.add(ulaw)
        if self.inbound.dropped - self._reported_drops >= 50:
            self.log.warning("inbound audio faster than real time: %d frames dropped so far", self.inbound.dropped)
            self._reported_drops = self.inbound.dropped
        return self.inbound.received - self.steps <= FLOOD_LIMIT_FRAMES

    def dtmf(self, digit: str) -> None:
        self.engine.dtmf(digit)
        self.pump.kick()

    def mark_played(self, name: str) -> None:
        self.playout.echoed(name)

    def transcript(self, text: str, final: bool) -> None:
        """A transcript from the media side; a call without a recognizer gets a scripted one on first use."""
        if self.engine.recognizer is None:
            self.engine.recognizer = ScriptedRecognizer()
        self.engine.push_transcript(Transcript(text=text, final=final, t_ms=self.engine.now_ms))

    # Control ---------------------------------------------------------------------------------------

    def barge_in(self) -> bool:
        """Stop the current playback now (control API); `clear` goes out before this returns."""
        stopped = self.engine.barge_in_now("manual")
        self.pump.kick()
        return stopped

    async def push(self, actions: list[Action]) -> None:
        await self.pump.push(actions)
        self.pump.kick()

    # The 20 ms step --------------------------------------------------------------------------------

    def tick(self) -> None:
        engine = self.engine
        payload = self.inbound.take()
        frame = ulaw_decode(payload) if payload is not None else None
        active = engine.playing or len(engine.queue) > 0
        self._stepping = True
        try:
            out = engine.step(frame)
        finally:
            self._stepping = False
        self.steps += 1
        if self._barged:
            self._barged = False
            self._send_clear()
        elif active or out.any():
            self._send_frame(out, boundary=engine.current is None)
        if engine.outbox:
            self.pump.kick()
        if engine.ended:
            self._leave_ticker()
            self._close(engine.end_reason or "ended")

    def _send_frame(self, out: Pcm, *, boundary: bool) -> None:
        self.outlet.media(ulaw_encode(out))
        self.playout.sent_frame()
        name = self.playout.mark_due(boundary)
        if name is not None:
            self.outlet.mark(name)

    def _send_clear(self) -> None:
        self.outlet.clear()
        self.playout.cleared()

    def _on_record(self, record: Record) -> None:
        """A barge-in, or a pause while the engine judges one: the caller must stop hearing the item now."""
        kind = record.get("event")
        if kind not in _SILENCING:
            return
        if kind == "barge_in":
            self.barge_ins += 1
        if self._stepping:
            self._barged = True
        else:
            self._send_clear()

    def _unheard_ms(self) -> int:
        """Inside a step the frame just produced was not sent yet, and a barge-in means it never will be."""
        return self.playout.unheard_ms() + (FRAME_MS if self._stepping else 0)

    def _leave_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.remove(self)

    def _close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.outlet.close(reason)
        if self._on_end is not None:
            self._on_end(reason)
