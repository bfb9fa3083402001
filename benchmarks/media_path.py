"""The media server's per-frame path, in CPU time: N calls in one process, driven frame by frame.

    python -m benchmarks.media_path --calls 300 --seconds 20
    python -m benchmarks.media_path --calls 300 --vad cascade,webrtc --profile 25

`benchmarks.live_calls` measures the whole server on a real core, in wall time, and on a shared host its
figures move with the neighbours. This one runs the same code on the same audio (the same carriers'
programs and the same bot) without sockets or a clock: every 20 ms round, each call's `media` message goes
through the direct WebSocket protocol's frame parser, `MediaConnection`, the jitter buffer and the engine's
hearing; then the shared ticker plays every call's next frame out through the outlet and the direct channel,
to a transport that drops the bytes. Between rounds the calls' events are answered (in the loop, TTS from
the warm cache) before the next round starts, so every run makes the same decisions and takes the same
path. Time is the main thread's CPU time per stage, so other processes on the host barely move it.

Reported per detector, in us of CPU per call per 20 ms frame: `receive` (WebSocket frame to the jitter
buffer), `hear` (jitter buffer to the engine's decision), `play` (the ticker to the bytes written), and
their sum, next to the budget for 300 calls a core (66 us), and how many Silero windows the shared ticker
scored per inference. `--profile N` also prints the N functions
with the most CPU of their own (cProfile: its overhead inflates small Python functions).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
from websockets.protocol import State

from benchmarks.live_app import LINES, app
from benchmarks.live_calls import PROGRAM_VARIANTS, Program, media_frames, program
from flowapp.audio.frames import FRAME_SAMPLES
from flowapp.audio.vad import SILERO_BATCH
from flowapp.engine.live import SLOTS, LiveDriver, Ticker
from flowapp.engine.render import Renderer
from flowapp.protocol.actions import Speak
from flowapp.protocol.events import SessionInfo
from flowapp.settings import ServerSettings
from flowapp.transports.direct import DirectChannel, DirectWebSocketProtocol
from flowapp.transports.media import DirectSender, MediaConnection, engine_config
from flowapp.transports.twilio import CarrierOutlet

BUDGET_US = 20_000 / 300
"""CPU per call per 20 ms frame at 300 calls on one core, everything included."""
RAMP_ROUNDS = 150
"""The callers' programs start spread over 3 s of rounds."""


class Clock:
    """Call time for the whole run: 20 ms a round, whatever the CPU takes."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NullTransport:
    """Takes the bytes as a socket would and keeps nothing but their count."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class FakeWebSocket:
    """What `MediaConnection` asks of its websocket on the media path (nothing: the direct channel carries it)."""

    scope: dict[str, Any] = {}


@dataclass
class Call:
    protocol: DirectWebSocketProtocol
    connection: MediaConnection
    frames: list[bytes]
    transport: NullTransport = field(default_factory=NullTransport)


def direct_protocol(transport: NullTransport) -> DirectWebSocketProtocol:
    """The direct protocol's fast path without uvicorn around it: an open connection whose receiver is set."""
    protocol = object.__new__(DirectWebSocketProtocol)
    protocol.__dict__.update(
        _upgraded=True,
        close_sent=False,
        disconnected=False,
        read_paused=False,
        transport=transport,
        conn=SimpleNamespace(max_message_size=None, state=State.OPEN, expect_continuation_frame=False),
    )
    return protocol


async def open_calls(n: int, seconds: float, vad: str, clock: Clock, ticker: Ticker) -> list[Call]:
    settings = ServerSettings(vad_detector=vad, recognizer=None)
    renderer = Renderer()
    for line in LINES:
        renderer.render(Speak(text=line))
    frames = {v: media_frames(program(v, seconds)) for v in range(PROGRAM_VARIANTS)}
    silence = media_frames(Program(np.zeros(FRAME_SAMPLES, dtype=np.int16), []))[0]
    calls = []
    for i in range(n):
        transport = NullTransport()
        protocol = direct_protocol(transport)
        connection = MediaConnection(cast(Any, FakeWebSocket()), settings, app, app)
        connection.sender = DirectSender(DirectChannel(protocol), connection._broken)
        protocol._receiver = connection
        outlet = CarrierOutlet(connection.sender, f"MZ{i:06d}", clock=clock)
        driver = LiveDriver(
            SessionInfo(id=str(uuid.uuid4()), from_phone_number="+4915100000000"),
            app,
            renderer,
            outlet,
            config=engine_config(settings, app),
            jitter_frames=settings.media_jitter_frames,
            ticker=ticker,
            clock=clock,
        )
        connection.driver, connection.outlet = driver, outlet
        driver.start()
        # Each caller starts talking at its own phase, as over the live benchmark's ramp (the programs repeat
        # every `PROGRAM_VARIANTS` calls, and calls in lockstep would batch their Silero windows unrealistically).
        lead = [silence] * (i * RAMP_ROUNDS // n)
        calls.append(Call(protocol, connection, lead + frames[i % PROGRAM_VARIANTS], transport))
        if len(calls) % 50 == 0:
            await settle(calls)  # as calls arrive over a ramp: their greetings are answered as they start
    return calls


async def settle(calls: list[Call]) -> None:
    """Every call's events answered and their replies applied: the next round starts from the same state."""
    while True:
        await asyncio.sleep(0)
        if all(c.connection.driver is not None and _idle(c) for c in calls):
            return


def _idle(call: Call) -> bool:
    driver = call.connection.driver
    assert driver is not None
    pump = driver.pump
    return pump._queue.empty() and pump._current is None and not driver.engine.outbox


class NoRun(Ticker):
    """The real ticker's slots and batching, without its timer task: the benchmark calls its rounds."""

    def add(self, call: Any) -> None:
        self.align(call)


async def run(n: int, seconds: float, vad: str, profiler: cProfile.Profile | None) -> dict[str, float]:
    clock = Clock()
    ticker = NoRun()
    ticker._origin = asyncio.get_running_loop().time()
    calls = await open_calls(n, seconds, vad, clock, ticker)
    await settle(calls)
    rounds = min(len(c.frames) for c in calls)
    spent = {"receive": 0.0, "hear": 0.0, "play": 0.0}
    inferences, windows = SILERO_BATCH.inferences, SILERO_BATCH.windows
    cpu = time.thread_time
    for k in range(rounds):
        clock.now += 0.02
        if profiler is not None:
            profiler.enable()
        t0 = cpu()
        for call in calls:
            call.protocol.data_received(call.frames[k])
        t1 = cpu()
        ticker._hear_all()
        t2 = cpu()
        for slot in range(SLOTS):
            ticker._tick_slot(ticker._slots[slot])
        t3 = cpu()
        if profiler is not None:
            profiler.disable()
        spent["receive"] += t1 - t0
        spent["hear"] += t2 - t1
        spent["play"] += t3 - t2
        await settle(calls)
    frames = rounds * n
    sent = sum(c.transport.written for c in calls)
    barge_ins = sum(c.connection.driver.barge_ins for c in calls if c.connection.driver is not None)
    for call in calls:
        if call.connection.driver is not None:
            await call.connection.driver.stop("benchmark over")
    figures = {name: value * 1e6 / frames for name, value in spent.items()}
    figures["total"] = sum(figures.values())
    figures["out_kib_per_call_s"] = sent / n / (rounds * 0.02) / 1024
    figures["barge_ins"] = barge_ins
    batched = SILERO_BATCH.inferences - inferences
    figures["windows_per_inference"] = (SILERO_BATCH.windows - windows) / batched if batched else float("nan")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20.0, help="call time driven")
    parser.add_argument("--vad", default="cascade,webrtc", help="detectors, comma-separated")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the N costliest functions")
    args = parser.parse_args(argv)
    print(f"{args.calls} calls, {args.seconds:.0f} s each; us of CPU per call per 20 ms frame (budget {BUDGET_US:.0f})")
    print(
        f"{'detector':>10} {'receive':>8} {'hear':>8} {'play':>8} {'total':>8} {'out KiB/s':>10} {'barge-ins':>10}"
        f" {'Silero windows/inference':>25}"
    )
    for vad in (v.strip() for v in args.vad.split(",") if v.strip()):
        profiler = cProfile.Profile() if args.profile else None
        f = asyncio.run(run(args.calls, args.seconds, vad, profiler))
        print(
            f"{vad:>10} {f['receive']:8.1f} {f['hear']:8.1f} {f['play']:8.1f} {f['total']:8.1f}"
            f" {f['out_kib_per_call_s']:10.1f} {f['barge_ins']:10.0f} {f['windows_per_inference']:25.2f}"
        )
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
