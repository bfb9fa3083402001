"""Handlers that are slow, block, crash or return garbage, against live calls on a real loopback server.

The figure that matters is the outbound audio of the other calls: frames arriving at the carrier with no
gap over 100 ms while one call's handler misbehaves.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest

from flowapp import BargeIn, FlowApp, Speak
from flowapp.protocol.events import DtmfReceived, Event, SessionEnd
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.live.calls import CUSTOM, LONG_TEXT
from tests.live.carrier import Carrier

QUIET = ServerSettings(recognizer=None)
SLOW_CALL = {**CUSTOM, "to": "4921100000009"}
GAP_LIMIT = 0.1


def max_gap(carrier: Carrier, start: float, end: float) -> float:
    """The longest time in [start, end] without a media frame arriving."""
    times = [r.at for r in carrier.events("media") if start <= r.at <= end]
    edges = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(edges))


@asynccontextmanager
async def calls(url: str, *customs: dict[str, str]) -> AsyncIterator[list[Carrier]]:
    async with AsyncExitStack() as stack:
        carriers = [await stack.enter_async_context(Carrier.connect(url, custom)) for custom in customs]
        yield carriers
        for carrier in carriers:
            await carrier.stop()


def speaking_app(**options: object) -> FlowApp:
    """Greets with a long line, never interruptible, so a call has audio going out all the time."""
    app = FlowApp(**options)  # type: ignore[arg-type]

    @app.on_session_start
    async def greet() -> Speak:
        return Speak(text=LONG_TEXT, barge_in=BargeIn.none())

    return app


async def test_sync_handlers_sleeping_do_not_starve_rendering_or_call_set_up(live_server: StartServer) -> None:
    """Six calls' sync session_start sleep: two calls already speaking keep getting their next lines
    rendered without a gap, and a new call is set up and greeted at once."""
    release = threading.Event()
    lines = itertools.count()
    slow_calls: list[str] = []
    app = FlowApp()

    @app.on_session_start
    def start(event: Event) -> Speak | None:
        if (event.session.to_phone_number or "").endswith(SLOW_CALL["to"]):
            slow_calls.append(event.session.id)
            release.wait(30)
            return None
        return Speak(text="Hello, this is the first line.", barge_in=BargeIn.none())

    @app.on_assistant_speak
    async def next_line() -> Speak:
        return Speak(text=f"And this is line number {next(lines)}.", barge_in=BargeIn.none())

    server = live_server(app, QUIET)
    try:
        async with calls(server.ws_url, CUSTOM, CUSTOM) as running:
            for carrier in running:
                await carrier.wait_for("media", count=10)
            async with calls(server.ws_url, *[SLOW_CALL] * 6):
                began = time.monotonic()
                await asyncio.sleep(1.0)
                async with calls(server.ws_url, CUSTOM) as (new,):
                    asked = time.monotonic()
                    await asyncio.sleep(began + 5.0 - time.monotonic())
                    gaps = [max_gap(c, began, began + 5.0) for c in running]
                    first = new.events("media")[0].at if new.events("media") else None
    finally:
        release.set()
    assert len(slow_calls) == 6
    assert max(gaps) < GAP_LIMIT, f"gaps on the running calls: {gaps}"
    assert first is not None and first - asked < 1.5, f"the new call's first media came {first and first - asked} s"


async def test_handler_bounds_answer_with_the_fallback_at_once(
    live_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Past max_handlers_per_call, an event of that call gets the fallback without waiting its deadline."""
    release = threading.Event()
    app = FlowApp(fallback="One moment.", handler_timeout=0.2, max_handlers_per_call=2)
    answered: list[str] = []

    @app.on_dtmf
    def key(event: DtmfReceived) -> str:
        answered.append(event.digit)
        release.wait(10)
        return "late"

    server = live_server(app, QUIET)
    try:
        async with calls(server.ws_url, CUSTOM) as (carrier,):
            for digit in "123":
                await carrier.dtmf(digit)
            await asyncio.sleep(1.0)
    finally:
        release.set()
    assert answered == ["1", "2"]
    assert "handlers of this call still running (max_handlers_per_call); dtmf_received answered" in caplog.text


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_handler_raising_exit_does_not_stop_the_server(
    live_server: StartServer, caplog: pytest.LogCaptureFixture, raised: type[BaseException], kind: str
) -> None:
    app = FlowApp(fallback="Sorry.")

    def boom() -> None:
        raise raised("from a handler")

    async def async_boom() -> None:
        boom()

    app.on_dtmf(boom if kind == "sync" else async_boom)
    server = live_server(app, QUIET)
    async with calls(server.ws_url, CUSTOM) as (carrier,):
        await carrier.dtmf("5")
        await carrier.wait_for("media", count=20)
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.get("/healthz")).status_code == 200
    async with calls(server.ws_url, CUSTOM) as (carrier,):
        await carrier.dtmf("5")
        await carrier.wait_for("media", count=20)
    assert f"raised {raised.__name__}(from a handler)" in caplog.text


@pytest.mark.parametrize("stuck", ["slow-handlers", "huge-text"])
async def test_session_end_reaches_the_app_once_behind_stuck_events(
    live_server: StartServer, caplog: pytest.LogCaptureFixture, stuck: str
) -> None:
    """At `stop`, six DTMF events whose handler waits 2 s (past its 1 s deadline) are still queued, or the
    one reply is a text that takes many seconds to synthesize."""
    app = FlowApp()
    ended: list[SessionEnd] = []

    @app.on_dtmf
    async def key() -> str | None:
        if stuck == "huge-text":
            return LONG_TEXT * 100
        await asyncio.sleep(2)
        return None

    @app.on_session_end
    async def end(event: SessionEnd) -> None:
        ended.append(event)

    server = live_server(app, QUIET)
    async with Carrier.connect(server.ws_url, CUSTOM) as carrier:
        await asyncio.sleep(0.3)
        for digit in "123456" if stuck == "slow-handlers" else "1":
            await carrier.dtmf(digit)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await carrier.stop()
        await carrier.closed(timeout=15)
    deadline = time.monotonic() + 15
    while not ended and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    assert len(ended) == 1 and ended[0].reason == "stream_stopped"
    assert len(app.store) == 0  # type: ignore[arg-type]
    if stuck == "slow-handlers":
        assert "events still unanswered 5.0 s after the call ended: dropped ['dtmf_received'" in caplog.text


async def test_isolated_handlers_blocking_leave_other_calls_audio_alone(live_server: StartServer) -> None:
    app = speaking_app(handler_isolation="thread")

    @app.on_dtmf
    async def busy() -> None:
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            pass

    server = live_server(app, QUIET)
    async with calls(server.ws_url, CUSTOM, CUSTOM) as (blocker, other):
        await other.wait_for("media", count=25)
        began = time.monotonic()
        await blocker.dtmf("1")
        await asyncio.sleep(2.0)
        gap = max_gap(other, began, began + 2.0)
    assert gap < GAP_LIMIT, f"the other call's audio stopped for {gap * 1000:.0f} ms"


async def test_a_blocking_handler_in_the_loop_is_named_by_the_watchdog(
    live_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = speaking_app()

    @app.on_dtmf
    async def busy_dtmf_handler() -> None:
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            pass

    server = live_server(app, QUIET)
    with caplog.at_level(logging.WARNING, logger="flowapp.watchdog"):
        async with calls(server.ws_url, CUSTOM) as (carrier,):
            await carrier.wait_for("media", count=10)
            await carrier.dtmf("1")
            await asyncio.sleep(1.5)
    blocked = [r.getMessage() for r in caplog.records if r.name == "flowapp.watchdog"]
    assert any("event loop blocked" in m and "dtmf_received handler" in m and "busy_dtmf_handler" in m for m in blocked)
    assert any("event loop was blocked for" in m and "busy_dtmf_handler" in m for m in blocked), blocked
