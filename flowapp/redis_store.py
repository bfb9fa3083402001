"""Per-call state in Redis, so the webhook events of one call can land on any instance behind a load balancer.

A call carried by a connection (`/ws`, a media stream) sends all its events to the instance holding the
connection: its state stays in that instance's memory, so audio and live calls never wait on Redis.

An update of a webhook call's state runs under a per-call lock in Redis (`SET NX PX`, released by a script that
checks the holder's token): the second of two events at once waits until the first is saved, so neither
update is lost. The lock expires by itself, so a process that dies holding it delays the call's next event by
`lock_seconds` at most. State expires `idle_seconds` after its last event, and state larger than
`max_state_bytes` as JSON is refused (logged), keeping the previous state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowapp.session import SessionStore, StoreUnavailable

logger = logging.getLogger("flowapp.redis_store")

KEY_PREFIX = "flowapp:session:"

_SAVE = """
local mine = redis.call('GET', KEYS[2]) == ARGV[1]
if mine then redis.call('DEL', KEYS[2]) end
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return mine and 1 or 0
"""
"""Write the state (when given) and release the lock if it is still ours; 0 tells that it was not."""

_DELETE = """
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""


class _Loaded(dict[str, Any]):
    """A state as `load` returned it, carrying the token of the lock its update holds."""

    lock_token: str = ""


class RedisSessionStore:
    """A `SessionStore` in Redis for calls without a connection here; `local` keeps the state of the others."""

    def __init__(
        self,
        client: Redis,
        *,
        local: SessionStore,
        is_live: Callable[[str], bool],
        idle_seconds: float = 3600.0,
        max_state_bytes: int = 64 * 1024,
        lock_seconds: float = 5.0,
        label: str = "Redis",
    ) -> None:
        """`is_live(session_id)`: the call is carried by a connection of this instance. `lock_seconds` must
        outlast a handler (its deadline and then some): past it, another event may take the lock."""
        if not idle_seconds > 0 or max_state_bytes < 2 or not lock_seconds > 0:
            raise ValueError("idle_seconds and lock_seconds must be positive, max_state_bytes at least 2")
        self.client = client
        self.local = local
        self.is_live = is_live
        self.idle_ms = max(1, int(idle_seconds * 1000))
        self.max_state_bytes = max_state_bytes
        self.lock_ms = max(1, int(lock_seconds * 1000))
        self.label = label
        self._save = client.register_script(_SAVE)
        self._delete = client.register_script(_DELETE)
        self._held: dict[str, str] = {}

    async def load(self, session_id: str) -> dict[str, Any]:
        if self.is_live(session_id):
            return await self.local.load(session_id)
        token = secrets.token_hex(8)
        state_key, lock_key = _keys(session_id)
        deadline = time.monotonic() + 2 * self.lock_ms / 1000
        pause = 0.002
        while True:
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.set(lock_key, token, nx=True, px=self.lock_ms)
                    pipe.get(state_key)
                    acquired, raw = await pipe.execute()
            except RedisError as exc:
                raise self._unavailable(exc) from exc
            if acquired:
                break
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"session {session_id!r} stayed locked by another event in {self.label}")
            await asyncio.sleep(pause)
            pause = min(2 * pause, 0.05)
        state = _Loaded(_decode(raw, session_id))
        state.lock_token = token
        self._held[session_id] = token
        return state

    async def save(self, session_id: str, state: dict[str, Any]) -> None:
        token = self._token(session_id, state)
        if token is None:
            await self.local.save(session_id, state)
            return
        encoded = self._encode(session_id, state)
        state_key, lock_key = _keys(session_id)
        try:
            mine = await self._save(keys=[state_key, lock_key], args=[token, encoded, self.idle_ms])
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        if not mine:
            logger.warning(
                "the state lock expired before the save (a handler ran longer than %.1f s): an event handled "
                "meanwhile may have been overwritten",
                self.lock_ms / 1000,
                extra={"session_id": session_id},
            )

    async def delete(self, session_id: str) -> None:
        token = self._held.pop(session_id, None)
        await self.local.delete(session_id)
        if token is None and self.is_live(session_id):
            return
        try:
            await self._delete(keys=list(_keys(session_id)), args=[token or ""])
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    def _token(self, session_id: str, state: dict[str, Any]) -> str | None:
        """The lock this update holds: the loaded state's, else (a handler replaced the dict) the last load's."""
        held = self._held.pop(session_id, None)
        return state.lock_token if isinstance(state, _Loaded) else held

    def _encode(self, session_id: str, state: dict[str, Any]) -> str:
        """The state as JSON; '' (write nothing, keep the previous state) when it cannot be stored."""
        try:
            encoded = json.dumps(state, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            logger.error("session state not saved: not JSON (%s)", exc, extra={"session_id": session_id})
            return ""
        if len(encoded) > self.max_state_bytes:
            logger.error(
                "session state not saved: %d bytes as JSON, over the %d byte limit",
                len(encoded),
                self.max_state_bytes,
                extra={"session_id": session_id},
            )
            return ""
        return encoded

    def _unavailable(self, exc: RedisError) -> StoreUnavailable:
        return StoreUnavailable(f"session store {self.label} unreachable: {exc}")


def _keys(session_id: str) -> tuple[str, str]:
    return KEY_PREFIX + session_id, KEY_PREFIX + session_id + ":lock"


def _decode(raw: str | bytes | None, session_id: str) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        state = json.loads(raw)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        logger.error("unreadable session state in Redis: the call starts afresh", extra={"session_id": session_id})
        return {}
    return state
