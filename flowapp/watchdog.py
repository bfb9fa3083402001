"""Noticing a blocked event loop, and naming the code that blocked it.

An async handler that blocks (a busy loop, a sync HTTP call, `time.sleep`) stops the loop, and with it the
audio of every call on it; a handler deadline cannot help, since the deadline runs on that same loop. A
thread outside the loop sees the loop's heartbeat stop, looks at what the loop thread is executing, and
logs the handler found on its stack (see `FlowApp(handler_isolation="thread")` for the way out).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType

logger = logging.getLogger("flowapp.watchdog")

STALL_SECONDS = 0.25
"""Default: a loop that has not run its heartbeat for this long is reported as blocked."""

Names = Callable[[], dict[CodeType, str]]
"""The code objects of the app's handlers, each with the name to report."""


class LoopWatchdog:
    """Watches one event loop from a daemon thread: warns once per stall, and again when it ends."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        loop_thread: int,
        *,
        stall_seconds: float = STALL_SECONDS,
        names: Names = dict,
        label: str = "event loop",
        impact: str = "every call on it is stalled (audio, timers, events)",
    ) -> None:
        self.loop = loop
        self.loop_thread = loop_thread
        self.stall_seconds = stall_seconds
        self.names = names
        self.label = label
        self.impact = impact
        self.stalls = 0
        self.interval = min(0.05, stall_seconds / 4)
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Called on the watched loop."""
        self._heartbeat()
        self._thread = threading.Thread(target=self._watch, name=f"flowapp-watchdog-{self.label}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Safe from any thread: the heartbeat stops at its next beat."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1)

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()
        if not self._stop.is_set():
            self.loop.call_later(self.interval, self._heartbeat)

    def _watch(self) -> None:
        blocker: str | None = None
        started = 0.0
        while not self._stop.wait(self.interval / 2):
            beat = self._beat
            late = time.monotonic() - beat - self.interval
            if blocker is None and late > self.stall_seconds:
                started = beat + self.interval
                blocker = self.blocker()
                self.stalls += 1
                logger.warning(
                    "%s blocked for %.2f s so far by %s: %s",
                    self.label,
                    late,
                    blocker,
                    self.impact,
                    extra={"blocker": blocker},
                )
            elif blocker is not None and beat > started:
                logger.warning(
                    "%s was blocked for %.2f s by %s", self.label, beat - started, blocker, extra={"blocker": blocker}
                )
                blocker = None

    def blocker(self) -> str:
        """The handler on the loop thread's stack, else the innermost frame it is executing."""
        frame = sys._current_frames().get(self.loop_thread)
        if frame is None:
            return "unknown code"
        names = self.names()
        innermost = frame
        current: FrameType | None = frame
        while current is not None:
            name = names.get(current.f_code)
            if name is not None:
                return f"{name} (at {_where(innermost)})"
            current = current.f_back
        return f"code outside any handler (at {_where(innermost)})"


def _where(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
