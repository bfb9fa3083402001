"""Several instances, one Redis: control latency across instances, and the session store's cost per event.

    python -m benchmarks.instances [--requests 1000] [--events 5000]

Starts a `redis-server` on a free loopback port and two `flowapp serve --redis` processes. One `/ws` call is
live on instance A; `POST /v1/sessions/{id}/barge-in` is sent, one at a time, to A itself (the call is local)
and to B (forwarded over Redis pub/sub to A, answered back). Reported: p50 / p99 of the HTTP round trip.

Then, in this process, the same app answers `user_speak` events with the in-memory store and with the Redis
store (a lock, a read and a write per event): the time per event, median and p99, and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from flowapp import FlowApp
from flowapp.protocol.events import Event, parse_event
from flowapp.redis_store import RedisSessionStore
from flowapp.session import InMemorySessionStore, Session, SessionStore
from tests.cluster.redis_server import RedisServer, free_port

TOKEN = "bench"
APP = """
from flowapp import FlowApp

app = FlowApp()

@app.on("session_start")
def start(event, session):
    session["turns"] = 0
    return "Hello."
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def start_instance(directory: Path, redis_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "FLOWAPP_RECOGNIZER": "none", "FLOWAPP_CONTROL_TOKEN": TOKEN, "FLOWAPP_JOURNAL": "off"}
    command = [sys.executable, "-m", "flowapp", "serve", "benchapp:app", "--port", str(port), "--redis", redis_url]
    command += ["--log-level", "warning"]
    process = subprocess.Popen(command, cwd=directory, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                await http.get(base + "/healthz", timeout=1)
                return process, base
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise RuntimeError("flowapp did not start")


async def control_latency(redis_url: str, requests: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "benchapp.py").write_text(textwrap.dedent(APP))
        (a, base_a), (b, base_b) = await asyncio.gather(
            start_instance(Path(directory), redis_url), start_instance(Path(directory), redis_url)
        )
        try:
            platform = await connect(base_a.replace("http", "ws") + "/ws")
            await platform.send(json.dumps({"type": "session_start", "session": {"id": "bench-call"}}))
            await platform.recv()
            drained = asyncio.create_task(_drain(platform))
            timings: dict[str, list[float]] = {"local (A -> A)": [], "remote (B -> A)": []}
            headers = {"authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(headers=headers) as http:
                for base in (base_a, base_b):
                    while (await http.post(base + "/v1/sessions/bench-call/barge-in")).status_code != 200:
                        await asyncio.sleep(0.05)
                for n in range(2 * requests):
                    label, base = ("local (A -> A)", base_a) if n % 2 == 0 else ("remote (B -> A)", base_b)
                    started = time.perf_counter()
                    answer = await http.post(base + "/v1/sessions/bench-call/barge-in")
                    timings[label].append(time.perf_counter() - started)
                    assert answer.status_code == 200, answer.text
            drained.cancel()
            await platform.close()
            return timings
        finally:
            for process in (a, b):
                process.terminate()
                process.wait(timeout=15)


async def _drain(platform: ClientConnection) -> None:
    async for _ in platform:
        pass


def counting_app(store: SessionStore | None = None) -> FlowApp:
    app = FlowApp()
    if store is not None:
        app.store = store

    @app.on_user_speak
    async def count(event: Event, session: Session) -> str:
        session["turns"] = session.get("turns", 0) + 1
        return "ok"

    return app


async def store_cost(redis_url: str, events: int) -> dict[str, list[float]]:
    client = Redis.from_url(redis_url, decode_responses=True)
    memory = counting_app()
    redis_app = counting_app()
    redis_app.store = RedisSessionStore(client, local=InMemorySessionStore(), is_live=redis_app.calls.__contains__)
    timings: dict[str, list[float]] = {"in-memory": [], "redis": []}
    for name, app in (("in-memory", memory), ("redis", redis_app)):
        for n in range(events + 200):
            event = parse_event({"type": "user_speak", "text": "hi", "session": {"id": f"call-{n % 100}"}})
            started = time.perf_counter()
            await app.respond(event)
            if n >= 200:
                timings[name].append(time.perf_counter() - started)
    await client.aclose()
    return timings


def report(title: str, timings: dict[str, list[float]]) -> None:
    print(title)
    for label, values in timings.items():
        us = [v * 1e6 for v in values]
        print(f"  {label:18s} p50 {percentile(us, 0.5):8.0f} us   p99 {percentile(us, 0.99):8.0f} us   (n={len(us)})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="barge-in requests per path")
    parser.add_argument("--events", type=int, default=5000, help="webhook events per store")
    args = parser.parse_args()
    redis = RedisServer().start()
    try:
        report(
            "control: POST /v1/sessions/{id}/barge-in round trip, the call live on A",
            await control_latency(redis.url, args.requests),
        )
        costs = await store_cost(redis.url, args.events)
        report("session store: FlowApp.respond per user_speak event", costs)
        extra = statistics.median(costs["redis"]) - statistics.median(costs["in-memory"])
        print(f"  the Redis store adds {extra * 1e6:.0f} us per event (median)")
    finally:
        redis.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
