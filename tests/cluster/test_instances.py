"""Three real `flowapp serve --redis` processes against a real Redis: one service, whichever instance answers.

The app records every `session_end` it handles in a file, which outlives the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.cluster.redis_server import RedisServer
from tests.live.calls import CUSTOM
from tests.live.carrier import Carrier
from tests.live.serving import ServeProcess, free_port

APP = """
import json, os
from flowapp import FlowApp

app = FlowApp()

@app.on("session_start")
def start(event, session):
    session["seen"] = [os.getpid()]
    return "Hello, this is a long enough greeting to still be playing when the server dies."

@app.on("user_speak")
def speak(event, session):
    session["seen"] = session.get("seen", []) + [os.getpid()]
    return f"turn {len(session['seen'])}"

@app.on("session_end")
def end(event, session):
    with open(os.environ["EVENTS_FILE"], "a") as out:
        record = {"pid": os.getpid(), "id": event.session.id, "reason": event.reason, "seen": session.get("seen")}
        out.write(json.dumps(record) + "\\n")
"""

TOKEN = "control-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}


class Instance(ServeProcess):
    """One instance of the cluster: the test app, the shared Redis, its own journal."""

    def __init__(self, tmp_path: Path, redis_url: str, port: int | None = None) -> None:
        port = port or free_port()
        log_level = os.environ.get("CLUSTER_LOG", "warning")
        args = ("--redis", redis_url, "--log-level", log_level)
        super().__init__(
            tmp_path, "clusterapp:app", port, tmp_path / f"journal-{port}", *args, FLOWAPP_CONTROL_TOKEN=TOKEN
        )


@pytest.fixture
async def instances(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[list[Instance]]:
    (tmp_path / "clusterapp.py").write_text(textwrap.dedent(APP))
    started = [Instance(tmp_path, redis_server.url) for _ in range(3)]
    try:
        await asyncio.gather(*(instance.ready() for instance in started))
        yield started
    finally:
        for instance in started:
            instance.kill()


def recorded(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def ws_call(instance: Instance, session_id: str) -> ClientConnection:
    platform = await connect(instance.ws + "/ws")
    await platform.send(json.dumps({"type": "session_start", "session": {"id": session_id}}))
    assert (
        json.loads(await asyncio.wait_for(platform.recv(), 10))["text"]
        == "Hello, this is a long enough greeting to still be playing when the server dies."
    )
    return platform


async def listed(http: httpx.AsyncClient, instance: Instance) -> set[str]:
    answer = await http.get(instance.base + "/v1/sessions", headers=AUTH)
    assert answer.status_code == 200, answer.text
    return {call["session_id"] for call in answer.json()["sessions"]}


async def test_webhook_events_of_one_call_share_state_across_instances(
    instances: list[Instance], tmp_path: Path
) -> None:
    session = {"id": "webhook-call-1"}
    async with httpx.AsyncClient() as http:
        await http.post(instances[0].base + "/webhook", json={"type": "session_start", "session": session})
        texts = []
        for instance in (instances[1], instances[2], instances[0]):
            event = {"type": "user_speak", "text": "hi", "session": session}
            texts.append((await http.post(instance.base + "/webhook", json=event)).json()["text"])
        assert texts == ["turn 2", "turn 3", "turn 4"]
        await http.post(instances[1].base + "/webhook", json={"type": "session_end", "session": session})
    [end] = recorded(tmp_path)
    pids = [instance.process.pid for instance in instances]
    assert end["seen"] == [pids[0], pids[1], pids[2], pids[0]], "each event saw the state the others left"


async def test_control_reaches_a_call_on_another_instance_and_a_killed_ones_calls_end_once(
    instances: list[Instance], tmp_path: Path, redis_server: RedisServer
) -> None:
    first, second, third = instances
    platform = await ws_call(first, "ws-call-1")
    survivor = await ws_call(second, "ws-call-2")
    media_id = str(uuid.uuid4())
    async with contextlib.AsyncExitStack() as stack:
        carrier = await stack.enter_async_context(Carrier.connect(first.ws, {**CUSTOM, "session_id": media_id}))
        await carrier.wait_for("media", count=5, timeout=15)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))

        async def all_listed() -> bool:
            return await listed(http, third) == {"ws-call-1", "ws-call-2", media_id}

        await until(all_listed, timeout=5)
        sessions = (await http.get(third.base + "/v1/sessions", headers=AUTH)).json()["sessions"]
        assert {call["session_id"]: call["transport"] for call in sessions if call["transport"] == "media"}
        assert len({call["instance"] for call in sessions}) == 2

        answer = await http.post(second.base + "/v1/sessions/ws-call-1/barge-in", headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"session_id": "ws-call-1", "barged_in": True}
        assert json.loads(await asyncio.wait_for(platform.recv(), 5))["type"] == "barge_in"

        speak = {"type": "speak", "text": "from the supervisor"}
        answer = await http.post(third.base + "/v1/sessions/ws-call-1/actions", headers=AUTH, json=speak)
        assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
        pushed = json.loads(await asyncio.wait_for(platform.recv(), 5))
        assert (pushed["text"], pushed["session_id"]) == ("from the supervisor", "ws-call-1")

        foreign = {**speak, "session_id": "ws-call-2"}
        answer = await http.post(third.base + "/v1/sessions/ws-call-1/actions", headers=AUTH, json=foreign)
        assert (answer.status_code, answer.json()["error"]) == (422, "foreign_session")
        answer = await http.post(third.base + "/v1/sessions/nobody/barge-in", headers=AUTH)
        assert (answer.status_code, answer.json()["error"]) == (404, "session_not_found")

        first.kill()
        killed_at = time.monotonic()

        async def gone() -> bool:
            return await listed(http, third) == {"ws-call-2"}

        await until(gone, timeout=10)
        left_after = time.monotonic() - killed_at

        async def ended() -> bool:
            return len(recorded(tmp_path)) >= 2

        await until(ended, timeout=10)
        restarted = Instance(tmp_path, redis_server.url, port=first.port)
        instances.append(restarted)
        await restarted.ready()
        await asyncio.sleep(2.0)
        ends = recorded(tmp_path)
        assert sorted((e["id"], e["reason"]) for e in ends) == sorted(
            [("ws-call-1", "instance_lost"), (media_id, "instance_lost")]
        ), "once: not per survivor, nor again from the killed instance's journal when it restarts"
        assert {e["pid"] for e in ends} <= {second.process.pid, third.process.pid}
        assert left_after < 6, f"the dead instance's calls stayed listed {left_after:.1f} s"
        answer = await http.post(third.base + "/v1/sessions/ws-call-1/barge-in", headers=AUTH)
        assert answer.status_code == 404
    await platform.close()
    await survivor.close()


async def test_redis_down_live_calls_go_on_and_remote_control_answers_503(
    instances: list[Instance], redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis goes down for longer than a heartbeat lasts and comes back with its snapshot: the heartbeats in
    it have expired, yet no instance takes a peer for dead before it could beat again."""
    first, second, _ = instances
    platform = await ws_call(first, "ws-call-1")
    async with httpx.AsyncClient(timeout=10) as http:

        async def registered() -> bool:
            return "ws-call-1" in await listed(http, second)

        await until(registered, timeout=5)
        redis_server.snapshot()
        redis_server.stop()
        stopped_at = time.monotonic()

        await platform.send(json.dumps({"type": "user_speak", "text": "hi", "session": {"id": "ws-call-1"}}))
        assert json.loads(await asyncio.wait_for(platform.recv(), 5))["text"] == "turn 2", "the live call goes on"
        answer = await http.post(first.base + "/v1/sessions/ws-call-1/barge-in", headers=AUTH)
        assert answer.status_code == 200, "a call on this instance needs no Redis"
        assert json.loads(await asyncio.wait_for(platform.recv(), 5))["type"] == "barge_in"

        answer = await http.post(second.base + "/v1/sessions/ws-call-1/barge-in", headers=AUTH)
        assert (answer.status_code, answer.json()["error"]) == (503, "redis_unavailable")
        assert "Redis at redis://127.0.0.1" in answer.json()["detail"]
        answer = await http.get(second.base + "/v1/sessions", headers=AUTH)
        assert (answer.status_code, answer.json()["error"]) == (503, "redis_unavailable")
        event = {"type": "session_start", "session": {"id": "webhook-call"}}
        answer = await http.post(second.base + "/webhook", json=event)
        assert (answer.status_code, answer.headers["retry-after"]) == (503, "1")

        await asyncio.sleep(max(0.0, stopped_at + 3.5 - time.monotonic()))
        redis_server.start()

        async def reachable_again() -> bool:
            answer = await http.post(second.base + "/v1/sessions/ws-call-1/barge-in", headers=AUTH)
            return answer.status_code == 200

        await until(reachable_again, timeout=10)
        assert json.loads(await asyncio.wait_for(platform.recv(), 5))["type"] == "barge_in"
        assert (await http.post(second.base + "/webhook", json=event)).status_code == 200
    await platform.close()
    assert recorded(tmp_path) == [], "a Redis outage ends no live call, although every heartbeat expired"


NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
NGINX_CONF = Path(__file__).parents[2] / "examples" / "nginx" / "nginx.conf"


@pytest.fixture
def nginx(tmp_path: Path, instances: list[Instance]) -> Iterator[str]:
    """The README's nginx config, in front of this test's three instances."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx; scripts/install --test does)")
    prefix = tmp_path / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    port = free_port()
    config = NGINX_CONF.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    for n, instance in enumerate(instances, start=1):
        config = config.replace(f"127.0.0.1:800{n}", f"127.0.0.1:{instance.port}")
    (prefix / "nginx.conf").write_text(config)
    process = subprocess.Popen([NGINX, "-p", str(prefix), "-c", "nginx.conf"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


async def test_behind_the_readmes_nginx_config(nginx: str, tmp_path: Path) -> None:
    session = {"id": "through-nginx"}
    async with httpx.AsyncClient(base_url=f"http://{nginx}", timeout=10) as http:
        await http.post("/webhook", json={"type": "session_start", "session": session})
        for turn in (2, 3, 4):
            answer = await http.post("/webhook", json={"type": "user_speak", "text": "hi", "session": session})
            assert answer.json()["text"] == f"turn {turn}"
        await http.post("/webhook", json={"type": "session_end", "session": session})
        assert len(recorded(tmp_path)[0]["seen"]) == 4

        platform = await connect(f"ws://{nginx}/ws")
        await platform.send(json.dumps({"type": "session_start", "session": {"id": "ws-through-nginx"}}))
        assert json.loads(await asyncio.wait_for(platform.recv(), 10))["text"].startswith("Hello")
        for _ in range(3):
            answer = await http.post("/v1/sessions/ws-through-nginx/barge-in", headers=AUTH)
            assert answer.status_code == 200, answer.text
            assert json.loads(await asyncio.wait_for(platform.recv(), 5))["type"] == "barge_in"
        await platform.close()
