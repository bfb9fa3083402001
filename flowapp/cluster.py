"""Many instances, one service: the live calls of every instance in Redis, and control routed to their holder.

Each instance keeps, in Redis, a heartbeat key that expires `lost_after_seconds` after its last beat and a hash
of the live calls it carries (kept in step with `app.calls`, by a background task: a call never waits on Redis).
The control API of any instance lists the calls of every instance whose heartbeat is alive, and reaches a call
elsewhere by publishing the request on its holder's channel; the holder runs it on the call and publishes the
answer back on the asker's channel.

When a heartbeat expires, the first instance to take that instance's recovery lock delivers `session_end`
(reason `instance_lost`) for each of its calls, through the same path the live-call journal uses. Each lost
call is claimed (`SET NX`) before delivery, by this and by the journal, so a call gets one `session_end` even
when the dead instance also restarts and reads its journal. A claim made by a process that dies before it
delivers loses that one delivery: at most once, never twice.

Anyone who can write to this Redis can control the calls: give it a password and a private network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowapp.journal import Deliver
from flowapp.protocol.events import SessionInfo
from flowapp.session import LiveCall, SessionRegistry

logger = logging.getLogger("flowapp.cluster")

PREFIX = "flowapp:"
INSTANCES = PREFIX + "instances"

ControlResult = tuple[int, dict[str, Any]]
Execute = Callable[[str, LiveCall, Any], Awaitable[ControlResult]]
"""Run a control operation (`barge_in`, `actions` with its wire actions) on a call of this instance."""

_CLAIM_SECONDS = 86_400
_RECOVERY_LOCK_MS = 30_000
_DELIVERIES_AT_ONCE = 16


class ClusterUnavailable(RuntimeError):
    """Redis cannot be reached: calls on other instances can be neither listed nor controlled."""


class InstanceUnreachable(RuntimeError):
    """The instance holding the call did not answer."""


def _alive(instance: str) -> str:
    return f"{PREFIX}alive:{instance}"


def _calls(instance: str) -> str:
    return f"{PREFIX}calls:{instance}"


def _channel(instance: str) -> str:
    return f"{PREFIX}control:{instance}"


def _recovering(instance: str) -> str:
    return f"{PREFIX}recovering:{instance}"


def _ended(session_id: str) -> str:
    return f"{PREFIX}ended:{session_id}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def new_instance_id(port: int) -> str:
    return f"{socket.gethostname()}-{port}-{os.getpid()}-{secrets.token_hex(3)}"


class Cluster:
    """This instance's membership: a `RegistryWatcher` of `calls`, the control router and the lost-call sweeper."""

    def __init__(
        self,
        client: Redis,
        calls: SessionRegistry,
        *,
        instance: str,
        execute: Execute,
        deliver: Deliver,
        label: str = "Redis",
        heartbeat_seconds: float = 1.0,
        lost_after_seconds: float = 3.0,
        request_timeout_seconds: float = 2.0,
    ) -> None:
        self.client = client
        self.calls = calls
        self.instance = instance
        self.execute = execute
        self.deliver = deliver
        self.label = label
        self.heartbeat_seconds = heartbeat_seconds
        self.lost_after_ms = int(lost_after_seconds * 1000)
        self.request_timeout_seconds = request_timeout_seconds
        self._entries: dict[str, str] = {}
        self._pending: dict[str, str | None] = {}
        self._resync = True
        self._wake = asyncio.Event()
        self._replies: dict[str, asyncio.Future[ControlResult]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reachable: bool | None = None
        self._listening = asyncio.Event()
        self._sweep_after = 0.0

    # Lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster in the background; a Redis that is down now is retried until it is back."""
        self.calls.watch(self)
        for call in self.calls:
            self.call_started(call)
        self._spawn(self._beat(), "flowapp-cluster-beat")
        self._spawn(self._listen(), "flowapp-cluster-control")

    async def stop(self) -> None:
        """Leave cleanly: without calls left, this instance's keys go; with some, its peers end them."""
        self.calls.unwatch(self)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.delete(_alive(self.instance))
                    if not self._entries:
                        pipe.delete(_calls(self.instance))
                        pipe.srem(INSTANCES, self.instance)
                    await pipe.execute()

    def _spawn(self, work: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # RegistryWatcher ------------------------------------------------------------------------------

    def call_started(self, call: LiveCall) -> None:
        entry = {
            "session": call.info.model_dump(mode="json", exclude_none=True),
            "transport": call.transport,
            "describe": call.describe(),
        }
        self._entries[call.info.id] = self._pending[call.info.id] = json.dumps(entry, separators=(",", ":"))
        self._wake.set()

    def call_ended(self, session_id: str) -> None:
        if self._entries.pop(session_id, None) is not None:
            self._pending[session_id] = None
            self._wake.set()

    # Heartbeat, registry and recovery -------------------------------------------------------------

    async def _beat(self) -> None:
        next_beat = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_beat - time.monotonic())):
                    await self._wake.wait()
            self._wake.clear()
            beat = time.monotonic() >= next_beat
            if beat:
                next_beat = time.monotonic() + self.heartbeat_seconds
            try:
                await self._sync()
                self._report(True)
                if beat and time.monotonic() >= self._sweep_after:
                    await self._sweep()
            except (RedisError, OSError) as exc:
                self._resync = True
                self._report(False, exc)
            except Exception:
                logger.exception("cluster heartbeat failed; retried in %.1f s", self.heartbeat_seconds)
                self._resync = True

    async def _sync(self) -> None:
        """The heartbeat and the calls hash; after a failure, or when Redis forgot this instance (a restart without
        persistence, or peers that took it for dead), the whole hash is written afresh."""
        pending, self._pending = self._pending, {}
        resync = self._resync
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.sadd(INSTANCES, self.instance)
                pipe.set(_alive(self.instance), "1", px=self.lost_after_ms)
                if resync:
                    pipe.delete(_calls(self.instance))
                    if self._entries:
                        pipe.hset(_calls(self.instance), mapping=cast(Any, dict(self._entries)))
                else:
                    gone = [sid for sid, entry in pending.items() if entry is None]
                    kept = {sid: entry for sid, entry in pending.items() if entry is not None}
                    if gone:
                        pipe.hdel(_calls(self.instance), *gone)
                    if kept:
                        pipe.hset(_calls(self.instance), mapping=cast(Any, kept))
                added = (await pipe.execute())[0]
        except BaseException:
            self._resync = True
            raise
        self._resync = False
        if added and not resync:
            logger.warning("this instance was missing from %s (restarted, or it took us for dead)", self.label)
            self._resync = True
            await self._sync()

    def _report(self, reachable: bool, exc: BaseException | None = None) -> None:
        if reachable == self._reachable:
            return
        if reachable:
            if self._reachable is not None:
                # Peers cut off with us get one heartbeat window to come back before they count as dead.
                self._sweep_after = time.monotonic() + self.lost_after_ms / 1000
                logger.warning("%s reachable again: this instance's calls are registered afresh", self.label)
        else:
            logger.error(
                "%s unreachable (%s): live calls go on; webhook events get 503 and remote control 503 until it is back",
                self.label,
                exc,
            )
        self._reachable = reachable

    async def _sweep(self) -> None:
        members = await self._peers()
        if not members:
            return
        alive = await self.client.mget([_alive(m) for m in members])
        for instance, beat in zip(members, alive, strict=True):
            if beat is None:
                await self._recover(instance)

    async def _recover(self, instance: str) -> None:
        if not await self.client.set(_recovering(instance), self.instance, nx=True, px=_RECOVERY_LOCK_MS):
            return
        try:
            entries = {_text(k): _text(v) for k, v in (await self.client.hgetall(_calls(instance))).items()}
            gate = asyncio.Semaphore(_DELIVERIES_AT_ONCE)

            async def one(session_id: str, raw: str) -> None:
                async with gate:
                    if await self._end_lost(session_id, raw):
                        await self.client.hdel(_calls(instance), session_id)

            await asyncio.gather(*(one(sid, raw) for sid, raw in entries.items()))
            if not await self.client.hlen(_calls(instance)):
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.delete(_calls(instance))
                    pipe.srem(INSTANCES, instance)
                    await pipe.execute()
                if entries:
                    logger.warning("instance %s lost: %d calls ended with session_end", instance, len(entries))
        finally:
            with contextlib.suppress(RedisError, OSError):
                if await self.client.get(_recovering(instance)) == self.instance:
                    await self.client.delete(_recovering(instance))

    async def _end_lost(self, session_id: str, raw: str) -> bool:
        """Deliver one lost call's `session_end`; False keeps it for the next sweep."""
        try:
            entry = json.loads(raw)
            info = SessionInfo.model_validate(entry["session"])
            transport = str(entry["transport"])
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            logger.error("dropped an unreadable call entry of a lost instance: %r", exc)
            return True
        try:
            await self.once(self.deliver)(info, transport)
        except (RedisError, OSError):
            raise
        except Exception:
            logger.exception("session_end(instance_lost) failed; retried at the next sweep")
            return False
        return True

    def once(self, deliver: Deliver) -> Deliver:
        """`deliver` for calls nobody has ended yet: the claim is shared by every instance and the journal."""

        async def deliver_once(info: SessionInfo, transport: str) -> None:
            if not await self.client.set(_ended(info.id), self.instance, nx=True, ex=_CLAIM_SECONDS):
                logger.info("lost call already ended elsewhere", extra={"session_id": info.id})
                return
            try:
                await deliver(info, transport)
            except BaseException:
                with contextlib.suppress(RedisError, OSError):
                    await self.client.delete(_ended(info.id))
                raise
            logger.warning("call lost with its instance: delivered session_end", extra={"session_id": info.id})

        return deliver_once

    # Control --------------------------------------------------------------------------------------

    async def sessions(self) -> list[dict[str, Any]]:
        """Every live call of every instance with a live heartbeat; this instance's from memory."""
        listed = [{**call.describe(), "instance": self.instance} for call in self.calls]
        try:
            peers = await self._live_peers()
            if peers:
                async with self.client.pipeline(transaction=False) as pipe:
                    for peer in peers:
                        pipe.hvals(_calls(peer))
                    held = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        for peer, entries in zip(peers, held if peers else [], strict=True):
            for raw in entries:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    listed.append({**json.loads(raw)["describe"], "instance": peer})
        return listed

    async def forward(self, op: str, session_id: str, payload: Any = None) -> ControlResult | None:
        """Run `op` on the call wherever it is live; None when no instance holds it."""
        try:
            holder = await self._holder(session_id)
            if holder is None:
                return None
            request_id = secrets.token_hex(8)
            answer: asyncio.Future[ControlResult] = asyncio.get_running_loop().create_future()
            self._replies[request_id] = answer
            try:
                message = {
                    "kind": "request",
                    "id": request_id,
                    "from": self.instance,
                    "op": op,
                    "session_id": session_id,
                    "payload": payload,
                }
                if not self._listening.is_set():
                    raise InstanceUnreachable("this instance cannot hear answers right now (Redis reconnecting)")
                receivers = await self.client.publish(_channel(holder), json.dumps(message))
                if not receivers:
                    raise InstanceUnreachable(f"instance {holder} holding the call is not listening")
                async with asyncio.timeout(self.request_timeout_seconds):
                    return await answer
            except TimeoutError:
                raise InstanceUnreachable(
                    f"instance {holder} holding the call did not answer within {self.request_timeout_seconds:g} s "
                    "(the request may still reach the call)"
                ) from None
            finally:
                self._replies.pop(request_id, None)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def _peers(self) -> list[str]:
        return sorted(m for m in map(_text, await self.client.smembers(INSTANCES)) if m != self.instance)

    async def _live_peers(self) -> list[str]:
        members = await self._peers()
        if not members:
            return []
        alive = await self.client.mget([_alive(m) for m in members])
        return [m for m, beat in zip(members, alive, strict=True) if beat is not None]

    async def _holder(self, session_id: str) -> str | None:
        peers = await self._live_peers()
        if not peers:
            return None
        async with self.client.pipeline(transaction=False) as pipe:
            for peer in peers:
                pipe.hexists(_calls(peer), session_id)
            found = await pipe.execute()
        return next((peer for peer, has in zip(peers, found, strict=True) if has), None)

    def _unavailable(self, exc: BaseException) -> ClusterUnavailable:
        return ClusterUnavailable(f"{self.label} unreachable ({exc}): calls on other instances cannot be reached")

    async def _listen(self) -> None:
        """This instance's channel: requests for its calls, answers to its own requests. Resubscribes by itself."""
        pause = 0.1
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(_channel(self.instance))
                self._listening.set()
                pause = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
            except (RedisError, OSError) as exc:
                self._report(False, exc)
            except Exception:
                logger.exception("control channel failed; subscribing again")
            finally:
                self._listening.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(pause)
            pause = min(2 * pause, 2.0)

    def _on_message(self, data: str) -> None:
        try:
            message = json.loads(data)
            kind = message["kind"]
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed control message")
            return
        if kind == "reply":
            answer = self._replies.get(str(message.get("id")))
            if answer is not None and not answer.done():
                status, body = message.get("status"), message.get("body")
                if isinstance(status, int) and isinstance(body, dict):
                    answer.set_result((status, body))
        elif kind == "request":
            self._spawn(self._serve(message), "flowapp-cluster-request")

    async def _serve(self, message: dict[str, Any]) -> None:
        session_id = str(message.get("session_id"))
        call = self.calls.get(session_id)
        result: ControlResult
        if call is None:
            result = 404, {"error": "session_not_found", "detail": f"no live call with session id {session_id!r}"}
        else:
            try:
                result = await self.execute(str(message.get("op")), call, message.get("payload"))
            except Exception:
                logger.exception("a forwarded control request failed", extra={"session_id": session_id})
                result = 502, {"error": "control_failed", "detail": "the instance holding the call failed"}
        reply = {"kind": "reply", "id": message.get("id"), "status": result[0], "body": result[1]}
        with contextlib.suppress(RedisError, OSError):
            await self.client.publish(_channel(str(message.get("from"))), json.dumps(reply))
