"""Webhook calls' session state in a real Redis: shared by instances, no lost update, bounded, and Redis down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from flowapp import FlowApp
from flowapp.cli import main
from flowapp.protocol.events import Event, SessionInfo, parse_event
from flowapp.redis_store import RedisSessionStore
from flowapp.session import InMemorySessionStore, Session, StoreUnavailable
from flowapp.settings import ServerSettings
from tests.cluster.redis_server import RedisServer, free_port
from tests.conftest import StartServer
from tests.live.calls import PushedCall


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_server.url, decode_responses=True)
    yield redis
    await redis.aclose()


def counting_app(client: Redis) -> FlowApp:
    """An app whose handler reads, yields to the loop, then writes: a lost update shows up as a low count."""
    app = FlowApp()
    app.store = RedisSessionStore(client, local=InMemorySessionStore(), is_live=app.calls.__contains__)

    @app.on_user_speak
    async def count(event: Event, session: Session) -> str:
        seen = session.get("count", 0)
        await asyncio.sleep(0.01)
        session["count"] = seen + 1
        return f"event {seen + 1}"

    return app


def user_speak(session_id: str) -> Event:
    return parse_event({"type": "user_speak", "text": "hi", "session": {"id": session_id}})


async def test_two_instances_share_state_and_concurrent_events_lose_no_update(client: Redis) -> None:
    first, second = counting_app(client), counting_app(client)
    await asyncio.gather(*(app.respond(user_speak("call-1")) for _ in range(10) for app in (first, second)))
    loaded = await first.store.load("call-1")
    assert loaded == {"count": 20}, "each of 20 events at once, on two instances, counted once"
    await first.store.save("call-1", loaded)
    replies = [await app.respond(user_speak("call-1")) for app in (second, first)]
    assert [a.to_wire()["text"] for reply in replies for a in reply] == ["event 21", "event 22"]
    await first.respond(parse_event({"type": "session_end", "session": {"id": "call-1"}}))
    assert await client.keys("flowapp:session:*") == [], "session_end deletes the state and its lock"


async def test_state_expires_and_is_bounded(client: Redis, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisSessionStore(
        client, local=InMemorySessionStore(), is_live=lambda _: False, idle_seconds=0.3, max_state_bytes=100
    )
    state = await store.load("never-ends")
    state["step"] = 1
    await store.save("never-ends", state)
    state = await store.load("never-ends")
    assert state == {"step": 1}
    state["blob"] = "x" * 200
    await store.save("never-ends", state)
    assert "over the 100 byte limit" in caplog.text
    state = await store.load("never-ends")
    assert state == {"step": 1}, "an oversized state is refused; the previous one stays"
    state["when"] = object()
    await store.save("never-ends", state)
    assert "not JSON" in caplog.text
    await asyncio.sleep(0.5)
    assert await client.get("flowapp:session:never-ends") is None, "a call that never ends expires"
    assert await client.get("flowapp:session:never-ends:lock") is None


async def test_a_live_calls_state_never_touches_redis(client: Redis) -> None:
    app = counting_app(client)
    app.calls.add(PushedCall(SessionInfo(id="live-1")))
    await app.respond(user_speak("live-1"))
    await app.respond(user_speak("live-1"))
    assert await client.keys("*") == []
    assert (await app.store.load("live-1"))["count"] == 2


async def test_redis_down_webhook_events_get_a_retryable_503_and_recover(live_server: StartServer) -> None:
    port = free_port()
    app = FlowApp()
    app.on_session_start(lambda: "hello")
    server = live_server(
        app, ServerSettings(recognizer=None, journal_dir=None, redis_url=f"redis://127.0.0.1:{port}/0")
    )
    event = {"type": "session_start", "session": {"id": "webhook-call"}}
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        answer = await http.post("/webhook", json=event)
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["error"] == "session_store_unavailable"
        assert f"127.0.0.1:{port}" in answer.json()["detail"]
        redis = RedisServer(port).start()
        try:
            answer = await http.post("/webhook", json=event)
            assert answer.status_code == 200, "reconnected by itself"
            assert answer.json()["text"] == "hello"
        finally:
            redis.cleanup()


async def test_a_store_that_cannot_reach_redis_raises_store_unavailable() -> None:
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    store = RedisSessionStore(redis, local=InMemorySessionStore(), is_live=lambda _: False)
    with pytest.raises(StoreUnavailable, match="unreachable"):
        await store.load("call-1")
    await redis.aclose()


def test_the_redis_flag_is_checked_at_startup(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--redis", "localhost:6379"]) == 2
    assert "--redis: must start with redis://, rediss:// or unix://" in capsys.readouterr().err


def test_the_redis_url_setting_is_checked() -> None:
    assert ServerSettings.from_env({"FLOWAPP_REDIS_URL": "redis://h:6379/0"}).redis_url == "redis://h:6379/0"
    with pytest.raises(ValueError, match=r"FLOWAPP_REDIS_URL: must start with redis://.*'http://:\*\*\*@h'"):
        ServerSettings.from_env({"FLOWAPP_REDIS_URL": "http://:secret@h"})
    with pytest.raises(ValueError, match="FLOWAPP_REDIS_URL"):
        ServerSettings.from_env({"FLOWAPP_REDIS_URL": "redis://h:port/0"})


async def test_a_holder_that_does_not_answer_gives_503_instance_unreachable(
    live_server: StartServer, redis_server: RedisServer, client: Redis
) -> None:
    """A peer whose heartbeat is alive but that does not listen, then one that listens and never answers."""
    settings = ServerSettings(recognizer=None, journal_dir=None, redis_url=redis_server.url, control_token="t")
    server = live_server(FlowApp(), settings)
    entry = {"session": {"id": "ghost-call"}, "transport": "websocket", "describe": {"session_id": "ghost-call"}}
    await client.sadd("flowapp:instances", "ghost")
    await client.set("flowapp:alive:ghost", "1", px=60_000)
    await client.hset("flowapp:calls:ghost", "ghost-call", json.dumps(entry))
    async with httpx.AsyncClient(base_url=server.base_url, headers={"authorization": "Bearer t"}) as http:
        listed = (await http.get("/v1/sessions")).json()["sessions"]
        assert listed == [{"session_id": "ghost-call", "instance": "ghost"}]
        answer = await http.post("/v1/sessions/ghost-call/barge-in")
        assert (answer.status_code, answer.json()["error"]) == (503, "instance_unreachable")
        assert "not listening" in answer.json()["detail"]
        mute = client.pubsub()
        await mute.subscribe("flowapp:control:ghost")
        answer = await http.post("/v1/sessions/ghost-call/actions", json={"type": "hangup"})
        assert (answer.status_code, answer.json()["error"]) == (503, "instance_unreachable")
        assert "did not answer within 2 s" in answer.json()["detail"]
        await mute.aclose()
