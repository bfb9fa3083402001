"""Handler isolation: what running the app's handlers on their own thread costs, and what it buys.

    python -m benchmarks.handler_isolation
    python -m benchmarks.handler_isolation --calls 10 --block 3 --dispatches 5000

Reported, for handlers in the event loop (`handler_isolation="none"`) and on their own thread ("thread"):
- the cost of one handler call: `FlowApp.respond` on a trivial async handler, one call after another, in
  this process (mean and p99 per call);
- the gap the other calls hear: a real server (`flowapp serve` in a subprocess) with `--calls` calls
  speaking; one call's DTMF handler then runs a busy loop of `--block` seconds. The figure is the longest
  wait between two outbound frames on each of the other calls, from the key press to a second after the
  busy loop ended (20 ms means no gap at all).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from flowapp import BargeIn, FlowApp, Speak
from flowapp.app import Isolation
from flowapp.protocol.events import parse_event
from tests.live.calls import CUSTOM, LONG_TEXT
from tests.live.carrier import Carrier

ROOT = Path(__file__).resolve().parent.parent
BLOCK_ENV = "FLOWAPP_BENCH_BLOCK_SECONDS"
MODES: tuple[Isolation, ...] = ("none", "thread")


def _app(isolation: Isolation) -> FlowApp:
    """Speaks all the time; a key press runs a busy loop (the blocking async handler of the finding)."""
    app = FlowApp(handler_isolation=isolation, handler_timeout=1.0)

    @app.on_session_start
    async def greet() -> Speak:
        return Speak(text=LONG_TEXT * 3, barge_in=BargeIn.none())

    @app.on_dtmf
    async def busy() -> None:
        until = time.monotonic() + float(os.environ.get(BLOCK_ENV, "1"))
        while time.monotonic() < until:
            pass

    return app


none_app = _app("none")
thread_app = _app("thread")


# Cost per handler call ------------------------------------------------------------------------------------------


async def dispatch_cost(isolation: Isolation, dispatches: int) -> tuple[float, float]:
    """Mean and p99 microseconds per `respond` on a handler that returns at once."""
    app = FlowApp(handler_isolation=isolation)

    @app.on_user_speak
    async def echo() -> str:
        return "ok"

    event = parse_event({"type": "user_speak", "session": {"id": "bench"}, "text": "hi"})
    for _ in range(200):
        await app.respond(event)
    times = []
    for _ in range(dispatches):
        started = time.perf_counter()
        await app.respond(event)
        times.append(time.perf_counter() - started)
    times.sort()
    return statistics.fmean(times) * 1e6, times[int(len(times) * 0.99)] * 1e6


# The gap other calls hear ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(isolation: Isolation, port: int, block: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWAPP_RECOGNIZER": "none", BLOCK_ENV: str(block)}
    command = [sys.executable, "-m", "flowapp", "serve", f"benchmarks.handler_isolation:{isolation}_app"]
    proc = subprocess.Popen([*command, "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def longest_gap(carrier: Carrier, start: float, end: float) -> float:
    times = [start, *(r.at for r in carrier.events("media") if start <= r.at <= end), end]
    return max(b - a for a, b in itertools.pairwise(times))


async def gaps_with_a_blocking_handler(isolation: Isolation, calls: int, block: float) -> list[float]:
    port = free_port()
    proc = start_server(isolation, port, block)
    try:
        url = f"ws://127.0.0.1:{port}"
        connections = [Carrier.connect(url, CUSTOM) for _ in range(calls)]
        carriers = [await c.__aenter__() for c in connections]
        try:
            for carrier in carriers:
                await carrier.wait_for("media", count=50, timeout=20)
            pressed = time.monotonic()
            await carriers[0].dtmf("1")
            await asyncio.sleep(block + 1.0)
            return [longest_gap(c, pressed, pressed + block + 1.0) for c in carriers[1:]]
        finally:
            for connection in connections:
                await connection.__aexit__(None, None, None)
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=10, help="calls on the server (one of them blocks)")
    parser.add_argument("--block", type=float, default=3.0, help="seconds the handler's busy loop runs")
    parser.add_argument("--dispatches", type=int, default=3000, help="handler calls timed per mode")
    args = parser.parse_args(argv)
    if args.calls < 2 or args.block <= 0 or args.dispatches < 100:
        parser.error("need --calls >= 2, --block > 0 and --dispatches >= 100")
    print(f"{'isolation':<10} {'per call mean':>14} {'p99':>9}   {'other calls: longest gap (ms) max / median':>44}")
    for isolation in MODES:
        mean, p99 = asyncio.run(dispatch_cost(isolation, args.dispatches))
        gaps = asyncio.run(gaps_with_a_blocking_handler(isolation, args.calls, args.block))
        worst, median = max(gaps) * 1000, statistics.median(gaps) * 1000
        print(f"{isolation:<10} {mean:>11.0f} us {p99:>6.0f} us   {worst:>35.0f} / {median:.0f}")
    print(f"({args.calls - 1} other calls; the blocking handler busy-loops {args.block:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
