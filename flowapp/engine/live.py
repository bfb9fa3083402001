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
import math
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
SLOTS = 4
SLOT_SECONDS = TICK_SECONDS / SLOTS
ALIGN_MARGIN_SECONDS = 0.001
"""Arrival jitter allowed for between a carrier's frame and the step that consumes it."""
TRIM_WINDOW_TICKS = 50
"""Jitter buffer: when for this long (1 s) a frame more than needed always waited, one is dropped."""
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
    """Steps every registered call once per 20 ms of wall time; runs only while a call is registered.

    The 20 ms are cut into `SLOTS` phase slots, and each call is stepped in the slot just after its
    carrier's frames arrive: a frame waits a few ms for its step instead of up to 20 on average 10, which
    is barge-in latency, and each wake-up steps only a share of the calls, so the last call's frame of a
    busy tick goes out sooner.
    """

    _by_loop: WeakKeyDictionary[asyncio.AbstractEventLoop, Ticker] = WeakKeyDictionary()

    def __init__(self) -> None:
        self._slots: list[dict[int, Tickable]] = [{} for _ in range(SLOTS)]
        self._slot_of: dict[int, int] = {}
        self._origin = 0.0
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
        if self._task is None or self._task.done():
            self._origin = asyncio.get_running_loop().time()
            self._task = asyncio.create_task(self._run(), name="flowapp-live-ticker")
        self.align(call)

    def align(self, call: Tickable) -> None:
        """Step `call` in the first slot after now: called when its audio arrives, so it is fresh at its step."""
        elapsed = asyncio.get_running_loop().time() - self._origin + ALIGN_MARGIN_SECONDS
        slot = math.ceil(elapsed / SLOT_SECONDS) % SLOTS
        key = id(call)
        previous = self._slot_of.get(key)
        if previous == slot:
            return
        if previous is not None:
            del self._slots[previous][key]
        self._slots[slot][key] = call
        self._slot_of[key] = slot

    def remove(self, call: Tickable) -> None:
        slot = self._slot_of.pop(id(call), None)
        if slot is not None:
            del self._slots[slot][id(call)]

    def __len__(self) -> int:
        return len(self._slot_of)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        index = 1
        while self._slot_of:
            delay = self._origin + index * SLOT_SECONDS - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due = int((loop.time() - self._origin) / SLOT_SECONDS) - index + 1
            limit = MAX_CATCH_UP_TICKS * SLOTS
            if due > limit:
                skipped = due - limit
                self.skipped_ticks += skipped // SLOTS
                index += skipped
                due = limit
                logger.warning(
                    "event loop stalled: skipped %d ms of ticks on %d calls", skipped * SLOT_SECONDS * 1000, len(self)
                )
            if due > SLOTS:
                self.late_ticks += 1
            for _ in range(max(1, due)):
                self._tick_slot(self._slots[index % SLOTS])
                index += 1

    def _tick_slot(self, calls: dict[int, Tickable]) -> None:
        for call in list(calls.values()):
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
        self.trimmed = 0
        self._partial = b""
        self._min_depth = capacity
        self._window = 0

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
        """The frame for this step. A backlog that never drains (after a burst) is standing latency: trimmed."""
        frames = self.frames
        depth = len(frames)
        if depth < self._min_depth:
            self._min_depth = depth
        self._window += 1
        if self._window >= TRIM_WINDOW_TICKS:
            if self._min_depth >= 2:
                frames.popleft()
                self.trimmed += 1
            self._window = 0
            self._min_depth = self.capacity
        return frames.popleft() if frames else None


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
        """An in-process app's `interruption_hook` (see `FlowApp.judge_interruptions`) reaches the engine."""
        config = config or EngineConfig()
        if not config.start_unix_ms:
            config.start_unix_ms = int(time.time() * 1000)
        self.outlet = outlet
        self.playout = Playout()
        self.inbound = InboundAudio(jitter_frames)
        self.engine = CallEngine(
            session,
            config,
            recognizer=recognizer,
            on_record=self._on_record,
            unheard_ms=self._unheard_ms,
            interruption_hook=getattr(responder, "interruption_hook", None),
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
        self._started_at = time.monotonic()
        """The flood check counts inbound frames against the wall clock: an overloaded server skipping ticks
        must not mistake a carrier streaming in real time for a flood."""
        self._starved = True
        """No frame was waiting at the last step: the next one to arrive re-aligns the call's tick slot."""

    # Lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Raise `session_start` and join the ticker: from now on the call advances with the wall clock."""
        if self._ticker is None:
            self._ticker = Ticker.shared()
        self._started_at = time.monotonic()
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
        """Queue inbound audio; False when the stream runs so far ahead of real time that it must be closed.

        After a step found no frame waiting, the next arrival moves the call to the tick slot just after it.
        """
        self.inbound.add(ulaw)
        if self._starved and self._ticker is not None:
            self._starved = False
            self._ticker.align(self)
        if self.inbound.dropped - self._reported_drops >= 50:
            self.log.warning("inbound audio faster than real time: %d frames dropped so far", self.inbound.dropped)
            self._reported_drops = self.inbound.dropped
        elapsed_frames = (time.monotonic() - self._started_at) / TICK_SECONDS
        return self.inbound.received <= elapsed_frames + FLOOD_LIMIT_FRAMES

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
        if payload is None:
            self._starved = True
            frame = None
        else:
            frame = ulaw_decode(payload)
        audible = engine.audible
        self._stepping = True
        try:
            out = engine.step(frame)
        finally:
            self._stepping = False
        self.steps += 1
        if self._barged:
            self._barged = False
            self._send_clear()
        elif audible:
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
