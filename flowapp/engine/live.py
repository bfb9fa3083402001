"""Driving call engines in real time: the assistant plays on one shared 20 ms clock, the caller is heard
the moment their audio arrives.

A timer task per call costs a task switch per call every 20 ms; with hundreds of calls on one core that
overhead alone eats the budget. One ticker plays all calls back to back on the same 20 ms grid instead,
catching up a few ticks when the event loop was late, and skipping ticks (the carrier hears a short gap)
rather than sending a burst after a long stall.

Per call, `LiveDriver` is the glue between a carrier stream and the engine:
- the caller's frames are heard as they arrive (`CallEngine.hear`), so a barge-in is decided, and queued
  audio dropped, without waiting for the next tick; a frame still missing well after its time is heard as silence
  so call time goes on, and a stream far ahead of the playout waits in a small jitter buffer (closed when
  it keeps running faster than real time);
- the frame each tick plays (`CallEngine.play`) is sent at once, so the carrier never holds more than a
  frame or two that a barge-in would have to take back;
- the outlet says how much of the sent audio the caller has not heard yet, for `played_ms`.
Everything on these paths is synchronous: the transport's `Outlet` must send without awaiting.
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

from flowapp import metrics
from flowapp.audio.frames import FRAME_MS
from flowapp.audio.g711 import ulaw_decode, ulaw_encode
from flowapp.audio.vad import SILERO_BATCH
from flowapp.engine.call import CallEngine, EngineConfig, Record
from flowapp.engine.pump import EventPump
from flowapp.engine.render import Renderer
from flowapp.logs import call_logger
from flowapp.protocol.actions import Action
from flowapp.protocol.events import SessionInfo
from flowapp.recording.tap import CallRecording
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
ALIGN_MARGIN_SECONDS = 0.010
"""A call's playout tick comes this long after its carrier's frames arrive: its frames are heard by then."""
LISTEN_AHEAD_FRAMES = 4
"""Frames are heard on arrival while call time is less than this far ahead of the playout clock (a burst
after a stall is heard at once); further ahead they wait in the jitter buffer for the ticks to catch up."""
LISTEN_BEHIND_FRAMES = 2
"""A caller frame this far behind the playout clock is taken for missing and heard as silence, so call time
(timers, endpointing) goes on while a carrier sends nothing. The frame, if it comes after all, is heard
too: call time then runs a frame ahead of the playout, which costs nothing."""
TRIM_WINDOW_TICKS = 50
"""Jitter buffer: when for this long (1 s) a frame was always left waiting after a tick, one is dropped."""
FLOOD_LIMIT_FRAMES = 250
"""Inbound audio may run this far (5 s) ahead of the call clock before the stream is closed as a flood."""
_SILENCING = frozenset({"barge_in", "assistant_speech_paused"})


class Tickable(Protocol):
    def tick(self) -> None: ...

    def listen(self) -> None:
        """Hear the caller's frames that have arrived."""
        ...

    def abort(self, reason: str) -> None:
        """The tick raised: end the call without touching the ticker again."""
        ...


class Ticker:
    """Ticks every registered call once per 20 ms of wall time; runs only while a call is registered.

    The 20 ms are cut into `SLOTS` phase slots, and each call is ticked in the slot a little after its
    carrier's frames arrive (`ALIGN_MARGIN_SECONDS`): its latest frame has been heard when it plays the
    next one, and each wake-up ticks only a share of the calls, so the last call's frame of a busy tick
    goes out sooner.
    """

    _by_loop: WeakKeyDictionary[asyncio.AbstractEventLoop, Ticker] = WeakKeyDictionary()

    def __init__(self) -> None:
        self._slots: list[dict[int, Tickable]] = [{} for _ in range(SLOTS)]
        self._slot_of: dict[int, int] = {}
        self._origin = 0.0
        self._task: asyncio.Task[None] | None = None
        self._to_hear: list[Tickable] = []
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
        """Tick `call` in the first slot `ALIGN_MARGIN_SECONDS` after now: called when its audio arrives."""
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

    def hear_soon(self, call: Tickable) -> None:
        """Hear `call`'s new frames in this turn of the event loop, together with every other call's.

        Frames arrive one socket read at a time; hearing them in one batch right after the reads, rather
        than inside each read, keeps the audio work in one tight loop as the ticks do, at no latency.
        """
        if not self._to_hear:
            asyncio.get_running_loop().call_soon(self._hear_all)
        self._to_hear.append(call)

    def _hear_all(self) -> None:
        calls, self._to_hear = self._to_hear, []
        self._run_calls(calls, listening=True)

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
        self._run_calls(list(calls.values()), listening=False)

    def _run_calls(self, calls: list[Tickable], *, listening: bool) -> None:
        """Every call's frames in one batch, so the cascades' Silero windows are scored together."""
        SILERO_BATCH.run(calls, _listen if listening else _tick, self._failed)

    def _failed(self, call: Tickable, exc: Exception) -> None:
        logger.error("a live call failed; it is ended, the others go on", exc_info=exc)
        self.remove(call)
        try:
            call.abort("internal_error")
        except Exception:
            logger.exception("ending the failed call raised too")


def _listen(call: Tickable) -> None:
    call.listen()


def _tick(call: Tickable) -> None:
    call.tick()


class Outlet(Protocol):
    """The carrier side of a call, whatever carries it (see `flowapp.transports.twilio`, `flowapp.transports.sip`).

    Synchronous: the ticker must never wait on one call's socket.
    """

    def send(self, ulaw: bytes | None, *, boundary: bool) -> None:
        """This tick's 20 ms of mu-law, or None when nothing plays; `boundary`: the frame ended a playback item."""
        ...

    def drop_queued(self) -> None:
        """A barge-in: what was sent but has not reached the caller's ear must not reach it."""
        ...

    def unheard_ms(self) -> int:
        """Sent, but not yet played to the caller (so lost to `drop_queued`)."""
        ...

    def close(self, reason: str) -> None:
        """The engine ended the call (hangup, transfer) or it failed: end the stream."""
        ...


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
        return self.frames.popleft() if self.frames else None

    def after_tick(self) -> None:
        """A backlog that never drains (call time ran ahead, then more came) is standing latency: trimmed."""
        depth = len(self.frames)
        if depth < self._min_depth:
            self._min_depth = depth
        self._window += 1
        if self._window >= TRIM_WINDOW_TICKS:
            if self._min_depth >= 1:
                self.frames.popleft()
                self.trimmed += 1
            self._window = 0
            self._min_depth = self.capacity


class LiveDriver:
    """One live call: its engine and event pump, heard as the carrier's frames come, played by the shared ticker."""

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
        recording: CallRecording | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """An in-process app's `interruption_hook` (see `FlowApp.judge_interruptions`) reaches the engine;
        `clock` (seconds) paces the flood check."""
        config = config or EngineConfig()
        if not config.start_unix_ms:
            config.start_unix_ms = int(time.time() * 1000)
        self.recording = recording
        responder = metrics.timed(responder)
        if recording is not None:
            responder = recording.responder(responder)
        self.outlet = outlet
        self.inbound = InboundAudio(jitter_frames)
        self.engine = CallEngine(
            session,
            config,
            recognizer=recognizer,
            on_record=self._on_record,
            unheard_ms=outlet.unheard_ms,
            interruption_hook=getattr(responder, "interruption_hook", None),
            tap=recording,
        )
        self.pump = EventPump(self.engine, responder, renderer)
        self.log = call_logger(logger, session.id, transport="live")
        self.steps = 0
        """Ticks so far: frames of the assistant played, the clock call time is kept near."""
        self.barge_ins = 0
        self.silent_frames = 0
        """Caller frames heard as silence because they were missing at their time."""
        self._heard = 0
        self._ticker = ticker
        self._on_end = on_end
        self._closed = False
        self._counted = False
        self._reported_drops = 0
        self._clock = clock
        self._started_at = clock()
        """The flood check counts inbound frames against the wall clock: an overloaded server skipping ticks
        must not mistake a carrier streaming in real time for a flood."""
        self._starved = True
        """A frame was missing at its time: the next one to arrive re-aligns the call's tick slot."""

    # Lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Raise `session_start` and join the ticker: from now on the call advances with the wall clock."""
        if self._ticker is None:
            self._ticker = Ticker.shared()
        self._started_at = self._clock()
        self.engine.start()
        self.pump.start()
        self.pump.kick()
        self._ticker.add(self)

    async def stop(self, reason: str) -> None:
        """The stream is over from the carrier's side: `session_end` (once), then the pump is drained."""
        self._leave_ticker()
        self.engine.end(reason)
        await self.pump.close()
        self._finished()

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
        """Hear inbound audio now; False when the stream runs so far ahead of real time that it must be closed.

        After a frame went missing, the next arrival moves the call to the tick slot just after it.
        """
        self.inbound.add(ulaw)
        if self._starved and self._ticker is not None:
            self._starved = False
            self._ticker.align(self)
        if self.inbound.dropped - self._reported_drops >= 50:
            self.log.warning("inbound audio faster than real time: %d frames dropped so far", self.inbound.dropped)
            self._reported_drops = self.inbound.dropped
        if self._ticker is not None:
            self._ticker.hear_soon(self)
        else:
            self.listen()
        elapsed_frames = (self._clock() - self._started_at) / TICK_SECONDS
        return self.inbound.received <= elapsed_frames + FLOOD_LIMIT_FRAMES

    def dtmf(self, digit: str) -> None:
        self.engine.dtmf(digit)
        self.pump.kick()

    def transcript(self, text: str, final: bool) -> None:
        """A transcript from the media side. The carrier's words take over from the call's own recognizer on
        first use: two recognizers' words for one turn would only contradict each other."""
        if not isinstance(self.engine.recognizer, ScriptedRecognizer):
            if self.engine.recognizer is not None:
                logger.info("the carrier sends transcripts; the call's own recognizer stops")
            self.engine.recognizer = ScriptedRecognizer()
        self.engine.push_transcript(Transcript(text=text, final=final, t_ms=self.engine.now_ms))

    # Control ---------------------------------------------------------------------------------------

    def barge_in(self) -> bool:
        """Stop the current playback now (control API); what the carrier holds is dropped before this returns."""
        stopped = self.engine.barge_in_now("manual")
        self.pump.kick()
        return stopped

    async def push(self, actions: list[Action]) -> None:
        await self.pump.push(actions)
        self.pump.kick()

    # Hearing and playing ---------------------------------------------------------------------------

    def listen(self) -> None:
        """Hear every waiting frame while call time is not too far ahead of the playout."""
        engine = self.engine
        waiting = self.inbound.frames
        while waiting and self._heard < self.steps + LISTEN_AHEAD_FRAMES:
            self._heard += 1
            engine.hear(ulaw_decode(waiting.popleft()))
        if engine.outbox:
            self.pump.kick()

    def tick(self) -> None:
        """The playout clock: the assistant's next frame goes out; a caller frame long overdue is heard as silence."""
        engine = self.engine
        audible = engine.audible
        out = engine.play()
        self.steps += 1
        if not engine.ended:
            self.outlet.send(ulaw_encode(out) if audible else None, boundary=engine.current is None)
        self.listen()
        while self._heard < self.steps - LISTEN_BEHIND_FRAMES and not engine.ended:
            self._heard += 1
            self.silent_frames += 1
            self._starved = True
            engine.hear(None)
        self.inbound.after_tick()
        if engine.outbox:
            self.pump.kick()
        if engine.ended:
            self._leave_ticker()
            self._close(engine.end_reason or "ended")

    def _on_record(self, record: Record) -> None:
        """A barge-in, or a pause while the engine judges one: the caller must stop hearing the item now."""
        metrics.engine_record(record)
        kind = record.get("event")
        if kind not in _SILENCING:
            return
        if kind == "barge_in":
            self.barge_ins += 1
        self.outlet.drop_queued()

    def _finished(self) -> None:
        """Once: the call's recording is closed and its input-stage time counted."""
        if self._counted:
            return
        self._counted = True
        if self.recording is not None:
            self.recording.close()
        stage = self.engine.input
        metrics.input_cpu(stage.vad_seconds, stage.recognizer_seconds)

    def _leave_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.remove(self)

    def _close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._finished()
        self.outlet.close(reason)
        if self._on_end is not None:
            self._on_end(reason)
