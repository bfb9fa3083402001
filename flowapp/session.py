"""Per-call state that survives between the events of one call.

State lives in a `SessionStore` so a shared store (Redis, a database) can replace the in-memory one when
several flowapp processes serve the same calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, Protocol

from flowapp.protocol.actions import Action
from flowapp.protocol.events import SessionInfo

PushActions = Callable[[list[Action]], Awaitable[None]]


class SessionStore(Protocol):
    def load(self, session_id: str) -> dict[str, Any]: ...

    def save(self, session_id: str, state: dict[str, Any]) -> None: ...

    def delete(self, session_id: str) -> None: ...


class InMemorySessionStore:
    def __init__(self) -> None:
        self._states: dict[str, dict[str, Any]] = {}

    def load(self, session_id: str) -> dict[str, Any]:
        return self._states.setdefault(session_id, {})

    def save(self, session_id: str, state: dict[str, Any]) -> None:
        self._states[session_id] = state

    def delete(self, session_id: str) -> None:
        self._states.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._states)


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


class SessionRegistry:
    """The calls that are live right now, by session id, across all transports."""

    def __init__(self) -> None:
        self._calls: dict[str, LiveCall] = {}

    def add(self, call: LiveCall) -> None:
        self._calls[call.info.id] = call

    def remove(self, session_id: str, call: LiveCall | None = None) -> None:
        if call is None or self._calls.get(session_id) is call:
            self._calls.pop(session_id, None)

    def get(self, session_id: str) -> LiveCall | None:
        return self._calls.get(session_id)

    def __iter__(self) -> Iterator[LiveCall]:
        return iter(list(self._calls.values()))

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._calls
