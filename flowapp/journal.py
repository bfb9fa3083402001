"""The live-call journal: which calls an instance carries, on disk, so its successor can end the ones it lost.

A process killed with SIGKILL (the OOM killer, a crashed container) cannot say goodbye, so the apps of its
calls would never hear `session_end`. Each instance keeps its live calls in a small JSON file, next to a lock
file it holds (`flock`) for as long as it runs: the kernel drops the lock when the process dies, however it
dies, so a lock anyone can take belongs to an instance that is gone (a reused pid cannot fool it). At
startup an instance takes the locks of the dead instances of its deployment (same host and port), delivers
`session_end` with reason `instance_lost` for each call left in their files, and removes the files. A call
is crossed off as soon as its `session_end` is answered, so a successor that dies while recovering leaves
only what it did not deliver.

The file is rewritten (to a temporary file, then renamed over the old one) by a thread, once per burst of
changes: a call's start or end never waits for the disk. Only a power cut or a kernel crash can lose the
last write (there is no fsync); a killed process cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flowapp.protocol.events import SessionInfo
from flowapp.session import LiveCall

logger = logging.getLogger("flowapp.journal")

INSTANCE_LOST = "instance_lost"
"""The `session_end` reason for a call whose instance died."""

Deliver = Callable[[SessionInfo, str], Awaitable[None]]
"""Deliver `session_end(instance_lost)` for one lost call, given its session and its transport."""

_DELIVERIES_AT_ONCE = 16
WRITE_INTERVAL_SECONDS = 0.05
"""After a write, changes are gathered this long before the next: a busy server rewrites the file 20 times a
second at most."""


@dataclass
class _DeadInstance:
    lock_fd: int
    lock_path: Path
    calls_path: Path
    calls: list[dict[str, Any]]

    async def save(self) -> None:
        await asyncio.to_thread(_write_atomically, self.calls_path, {"calls": list(self.calls)})

    def remove(self) -> None:
        """The calls file goes before the lock: whoever takes the lock next finds nothing left to deliver."""
        with contextlib.suppress(FileNotFoundError):
            self.calls_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()
        os.close(self.lock_fd)


class LiveCallJournal:
    """One instance's journal; a `RegistryWatcher` of the app's live calls."""

    def __init__(self, directory: str | os.PathLike[str], deployment: str) -> None:
        self.directory = Path(directory)
        self.prefix = "".join(c if c.isalnum() or c in ".-" else "_" for c in deployment) + "."
        name = f"{self.prefix}{os.getpid()}-{secrets.token_hex(4)}"
        self.lock_path = self.directory / f"{name}.lock"
        self.calls_path = self.directory / f"{name}.json"
        self._lock_fd: int | None = None
        self._calls: dict[str, dict[str, Any]] = {}
        self._version = 0
        self._written = 0
        self._writer: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Create the directory and take this instance's lock; raises OSError when the directory is unusable."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd = fd

    async def close(self) -> None:
        """Clean shutdown: the files go, unless calls are still live (then a successor ends them)."""
        if self._writer is not None:
            await self._writer
        if self._lock_fd is None:
            return
        if not self._calls:
            with contextlib.suppress(FileNotFoundError):
                self.calls_path.unlink()
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()
        os.close(self._lock_fd)
        self._lock_fd = None

    # RegistryWatcher ------------------------------------------------------------------------------

    def call_started(self, call: LiveCall) -> None:
        self._calls[call.info.id] = {
            "session": call.info.model_dump(mode="json", exclude_none=True),
            "transport": call.transport,
            "started_at": datetime.now(UTC).isoformat(),
        }
        self._changed()

    def call_ended(self, session_id: str) -> None:
        if self._calls.pop(session_id, None) is not None:
            self._changed()

    # Writing --------------------------------------------------------------------------------------

    def _changed(self) -> None:
        if self._lock_fd is None:
            return
        self._version += 1
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._flush(), name="flowapp-journal")

    async def _flush(self) -> None:
        try:
            while self._written != self._version:
                version = self._version
                contents = {"pid": os.getpid(), "calls": list(self._calls.values())}
                try:
                    await asyncio.to_thread(_write_atomically, self.calls_path, contents)
                except OSError as exc:
                    logger.error("cannot write the live-call journal %s: %r", self.calls_path, exc)
                self._written = version
                await asyncio.sleep(WRITE_INTERVAL_SECONDS)
        finally:
            self._writer = None

    # Recovery -------------------------------------------------------------------------------------

    async def recover(self, deliver: Deliver) -> int:
        """End the calls of this deployment's dead instances, once each; returns how many were delivered."""
        delivered = 0
        for dead in await asyncio.to_thread(self._take_dead_instances):
            try:
                delivered += await self._deliver_all(dead, deliver)
            finally:
                if dead.calls:
                    await dead.save()
                    os.close(dead.lock_fd)
                else:
                    await asyncio.to_thread(dead.remove)
        return delivered

    async def _deliver_all(self, dead: _DeadInstance, deliver: Deliver) -> int:
        gate = asyncio.Semaphore(_DELIVERIES_AT_ONCE)
        saving = asyncio.Lock()

        async def one(entry: dict[str, Any]) -> bool:
            try:
                info = SessionInfo.model_validate(entry.get("session"))
            except ValidationError as exc:
                logger.error("dropped an unreadable journal entry in %s: %s", dead.calls_path, exc)
                dead.calls.remove(entry)
                return False
            async with gate:
                try:
                    await deliver(info, str(entry.get("transport")))
                except Exception:
                    logger.exception("session_end(instance_lost) failed; kept for the next start")
                    return False
            logger.warning("call lost with its instance: delivered session_end", extra={"session_id": info.id})
            dead.calls.remove(entry)
            async with saving:
                await dead.save()
            return True

        results = await asyncio.gather(*(one(entry) for entry in list(dead.calls)))
        return sum(results)

    def _take_dead_instances(self) -> list[_DeadInstance]:
        dead: list[_DeadInstance] = []
        for lock_path in sorted(self.directory.glob(f"{self.prefix}*.lock")):
            if lock_path == self.lock_path:
                continue
            try:
                fd = os.open(lock_path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            calls_path = lock_path.with_suffix(".json")
            dead.append(_DeadInstance(fd, lock_path, calls_path, _read_calls(calls_path)))
        return dead


def _read_calls(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        logger.error("unreadable live-call journal %s (%r); its calls cannot be ended", path, exc)
        return []
    calls = data.get("calls") if isinstance(data, dict) else None
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def _write_atomically(path: Path, contents: dict[str, Any]) -> None:
    """Readable by the server's user only: the entries carry the callers' phone numbers."""
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(contents, separators=(",", ":")))
    os.replace(temporary, path)
