"""Running the app's handlers on their own thread and event loop, away from the audio.

All live calls share one event loop for their audio. An async handler that blocks it (a busy loop, a sync
client library) silences every call at once. With the handlers on a loop of their own, such a handler only
holds up other handlers, whose deadlines (timed on the audio loop) still answer with the fallback. Python
code running on the handler thread still takes turns with the audio loop for the interpreter lock, so a
blocking handler slows the audio loop a little, but no longer stops it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from flowapp.protocol.actions import Action
from flowapp.session import Session
from flowapp.watchdog import LoopWatchdog, Names

T = TypeVar("T")


class HandlerLoop:
    """A daemon thread running an event loop, started on first use; its own watchdog names what blocks it."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = self._start()
            return self._loop

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            watchdog = LoopWatchdog(
                loop,
                threading.get_ident(),
                names=self.names,
                label="handler loop",
                impact="the other handlers wait (the calls' audio goes on)",
            )
            loop.call_soon(watchdog.start)
            loop.call_soon(ready.set)
            loop.run_forever()

        threading.Thread(target=run, name="flowapp-handler-loop", daemon=True).start()
        ready.wait()
        return loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Run `coro` on the handler loop; the result is a future of the calling loop (cancelling it cancels
        the coroutine)."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop()))

    def bridge(self, session: Session) -> Session:
        """The handler's view of its session: `push` hops back to the audio loop, where the call lives."""
        if not session.can_push:
            return Session(session.info, session.state)
        home = asyncio.get_running_loop()

        async def push(actions: list[Action]) -> None:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(session.push(*actions), home))

        return Session(session.info, session.state, push)
