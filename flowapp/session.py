"""Per-call state that survives between the events of one call.

State lives in a `SessionStore` so a shared store (Redis, a database) can replace the in-memory one when
several flowapp processes serve the same calls.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, Protocol

from flowapp.protocol.actions import Action
from flowapp.protocol.events import SessionInfo

PushActions = Callable[[list[Action]], Awaitable[None]]

logger = logging.getLogger("flowapp.session")


class SessionStore(Protocol):
    """Where per-call state lives between events.

    `load` starts one event's update of a call's state and `save` (or `delete`, at `session_end`) completes it:
    a store shared by several processes serialises the updates of one call, so two events of the call at once
    cannot lose one. Async, so a store that talks to a server never blocks the event loop; a store that cannot
    reach its server raises `StoreUnavailable`.
    """

    async def load(self, session_id: str) -> dict[str, Any]: ...

    async def save(self, session_id: str, state: dict[str, Any]) -> None: ...

    async def delete(self, session_id: str) -> None: ...


class StoreUnavailable(RuntimeError):
    """The shared session store cannot be reached: the event was not handled and can be sent again."""


class InMemorySessionStore:
    """Per-call state in this process, bounded: a call that never sends `session_end` does not stay forever.

    State untouched for `idle_seconds` is dropped, and past `max_sessions` the state idle longest goes first,
    so a flood of made-up session ids costs a bounded amount of memory.
    """

    def __init__(
        self,
        *,
        max_sessions: int = 100_000,
        idle_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_sessions < 1 or not idle_seconds > 0:
            raise ValueError("max_sessions must be at least 1 and idle_seconds positive")
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._states: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._evicted = 0

    async def load(self, session_id: str) -> dict[str, Any]:
        """Events of one call share the one dict: concurrent updates cannot get lost."""
        entry = self._states.get(session_id)
        state = entry[1] if entry is not None else {}
        self._put(session_id, state)
        return state

    async def save(self, session_id: str, state: dict[str, Any]) -> None:
        self._put(session_id, state)

    async def delete(self, session_id: str) -> None:
        self._states.pop(session_id, None)

    def _put(self, session_id: str, state: dict[str, Any]) -> None:
        now = self._clock()
        self._states[session_id] = (now, state)
        self._states.move_to_end(session_id)
        self._expire(now)

    def __len__(self) -> int:
        return len(self._states)

    def _expire(self, now: float) -> None:
        """The oldest entries are first: drop the idle ones, then any over the cap."""
        while self._states:
            session_id, (touched, _) = next(iter(self._states.items()))
            if now - touched < self.idle_seconds and len(self._states) <= self.max_sessions:
                return
            del self._states[session_id]
            if now - touched < self.idle_seconds:
                self._evicted += 1
                if self._evicted in (1, 10, 100) or self._evicted % 1000 == 0:
                    logger.warning(
                        "session store full (%d sessions): dropped the state idle longest (%d so far)",
                        self.max_sessions,
                        self._evicted,
                    )


class NotConnected(RuntimeError):
    """The call has no live channel to push actions into (plain HTTP webhook calls only answer events)."""


class Session:
    """What a handler sees of its call: who is calling, per-call `state`, and `push` for unprompted actions."""

    def __init__(self, info: SessionInfo, state: dict[str, Any], push: PushActions | None = None) -> None:
        self.info = info
        self.state = state
        self._push = push

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def can_push(self) -> bool:
        return self._push is not None

    async def push(self, *actions: Action) -> None:
        """Send actions into the call now, without waiting for an event (WebSocket and media calls)."""
        if self._push is None:
            raise NotConnected(f"session {self.id} has no live connection to push actions into")
        await self._push(list(actions))

    def __getitem__(self, key: str) -> Any:
        return self.state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.state[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self.state.get(key, default)


class LiveCall(Protocol):
    """A call the control API can act on: registered by whichever transport carries it."""

    @property
    def info(self) -> SessionInfo: ...

    @property
    def transport(self) -> str: ...

    async def barge_in(self) -> bool: ...

    async def push(self, actions: list[Action]) -> None: ...

    def describe(self) -> dict[str, Any]: ...


def describe_call(info: SessionInfo, transport: str, connected_since: datetime) -> dict[str, Any]:
    """What `GET /v1/sessions` shows of one live call, whatever carries it."""
    return {
        "session_id": info.id,
        "transport": transport,
        "direction": info.direction,
        "from_phone_number": info.from_phone_number,
        "to_phone_number": info.to_phone_number,
        "connected_since": connected_since.isoformat(),
    }


class SessionTaken(Exception):
    """The session id belongs to another live call: whoever sent it does not own that call."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session id {session_id!r} belongs to another live call")
        self.session_id = session_id


class RegistryWatcher(Protocol):
    """Told when a call goes live and when it is over (the live-call journal listens)."""

    def call_started(self, call: LiveCall) -> None: ...

    def call_ended(self, session_id: str) -> None: ...


class SessionRegistry:
    """The calls that are live right now, by session id, across all transports.

    Each id is owned by the connection that claimed it first (a `/ws` connection, a media stream) until
    that owner releases it: nobody else can register, replace or remove the call, and a transport asks
    `in` before it lets an event naming the id reach the app.
    """

    def __init__(self) -> None:
        self._calls: dict[str, LiveCall] = {}
        self._owners: dict[str, object] = {}
        self._watchers: list[RegistryWatcher] = []

    def watch(self, watcher: RegistryWatcher) -> None:
        self._watchers.append(watcher)

    def unwatch(self, watcher: RegistryWatcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def claim(self, session_id: str, owner: object) -> bool:
        """Reserve the id for `owner`: True when it was free or is already `owner`'s."""
        return self._owners.setdefault(session_id, owner) is owner

    def add(self, call: LiveCall, owner: object | None = None) -> None:
        """Register a live call for its owner (the call itself when none is given); raises SessionTaken."""
        session_id = call.info.id
        if not self.claim(session_id, call if owner is None else owner):
            raise SessionTaken(session_id)
        self._calls[session_id] = call
        for watcher in self._watchers:
            watcher.call_started(call)

    def remove(self, session_id: str, owner: object | None = None) -> None:
        """Release the id; only its owner can, or anyone when `owner` is None."""
        held = self._owners.get(session_id)
        if held is None or (owner is not None and held is not owner):
            return
        del self._owners[session_id]
        if self._calls.pop(session_id, None) is not None:
            for watcher in self._watchers:
                watcher.call_ended(session_id)

    def get(self, session_id: str) -> LiveCall | None:
        return self._calls.get(session_id)

    def __iter__(self) -> Iterator[LiveCall]:
        return iter(list(self._calls.values()))

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, session_id: object) -> bool:
        """Live or being set up: either way the id is taken."""
        return session_id in self._owners
