"""Named thread pools: each kind of blocking work gets its own threads.

With one shared executor, work of one kind piling up (sync handlers sleeping, a long synthesis) takes every
thread, and the other kinds wait behind it: a call already running stops getting its next line rendered, a
new call cannot even be set up. Each kind here is bounded on its own, so it can only starve itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

RENDER_THREADS = 4
"""Speech synthesis and audio decoding for all calls together (the TTS program runs in a subprocess)."""
SETUP_THREADS = 4
"""Building new calls (a neural speech detector loads its model) and server start-up work."""


class WorkerPool:
    """A bounded thread pool created on first use; `run` awaits one job on it from the event loop."""

    def __init__(self, name: str, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"a worker pool needs at least one thread, got {threads}")
        self.name = name
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix=f"flowapp-{self.name}")
            return self._executor

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Like `asyncio.to_thread` (context variables included), on this pool's threads only."""
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)


RENDER = WorkerPool("render", RENDER_THREADS)
SETUP = WorkerPool("setup", SETUP_THREADS)
