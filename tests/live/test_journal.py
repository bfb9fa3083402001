"""An instance killed with SIGKILL mid-call: its successor ends the lost calls, exactly once.

Real `flowapp serve` subprocesses on loopback; the app records every event it handles in a file, which
outlives the processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from flowapp.journal import LiveCallJournal
from flowapp.protocol.events import SessionInfo
from flowapp.session import SessionRegistry
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.live.calls import CUSTOM, PushedCall, RecordingApp
from tests.live.carrier import Carrier
from tests.live.serving import ServeProcess, free_port

APP = """
import json, os
from flowapp import FlowApp

app = FlowApp()

@app.on("session_start")
def start(event):
    return "Hello, this is a long enough greeting to still be playing when the server dies."

@app.on("session_end")
def end(event):
    with open(os.environ["EVENTS_FILE"], "a") as out:
        out.write(json.dumps({"pid": os.getpid(), "id": event.session.id, "reason": event.reason}) + "\\n")
"""


class Instance(ServeProcess):
    """The test app on a fixed port, so the next instance finds the journal of the one before."""

    def __init__(self, tmp_path: Path, port: int, **env: str) -> None:
        super().__init__(tmp_path, "lostapp:app", port, tmp_path / "journal", **env)


def journal_calls(tmp_path: Path) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    for path in (tmp_path / "journal").glob("*.json"):
        try:
            calls += json.loads(path.read_text())["calls"]
        except (ValueError, OSError):
            continue
    return calls


def recorded(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_calls_lost_to_sigkill_get_one_session_end_from_the_next_instance(tmp_path: Path) -> None:
    (tmp_path / "lostapp.py").write_text(textwrap.dedent(APP))
    port = free_port()
    first = Instance(tmp_path, port)
    media_id = str(uuid.uuid4())
    try:
        await first.ready()
        platform = await connect(first.ws + "/ws")
        await platform.send(json.dumps({"type": "session_start", "session": {"id": "ws-call-1"}}))
        assert json.loads(await asyncio.wait_for(platform.recv(), 10))["type"] == "speak"
        async with Carrier.connect(first.ws, {**CUSTOM, "session_id": media_id}) as carrier:
            await carrier.wait_for("media", count=5, timeout=15)
            await until(lambda: len(journal_calls(tmp_path)) == 2)
            first.kill()
        await platform.close()
    finally:
        if first.process.poll() is None:
            first.kill()
    assert {c["session"]["id"]: c["transport"] for c in journal_calls(tmp_path)} == {
        "ws-call-1": "websocket",
        media_id: "media",
    }
    assert recorded(tmp_path) == [], "a killed instance says nothing"

    second = Instance(tmp_path, port)
    try:
        await second.ready()
        await until(lambda: len(recorded(tmp_path)) >= 2)
        await asyncio.sleep(0.5)
        ends = recorded(tmp_path)
        assert sorted((e["id"], e["reason"]) for e in ends) == sorted(
            [("ws-call-1", "instance_lost"), (media_id, "instance_lost")]
        )
        assert {e["pid"] for e in ends} == {second.process.pid}
        assert journal_calls(tmp_path) == []
        assert len(list((tmp_path / "journal").glob("*.lock"))) == 1, "the dead instance's files are gone"
    finally:
        second.kill()

    third = Instance(tmp_path, port)
    try:
        await third.ready()
        await asyncio.sleep(1.0)
        assert len(recorded(tmp_path)) == 2, "delivered once, not again by the next instance"
    finally:
        third.stop()
    assert list((tmp_path / "journal").iterdir()) == [], "a clean shutdown with no live calls leaves nothing"


async def test_a_remote_app_hears_the_end_of_a_media_call_its_instance_lost(
    tmp_path: Path, live_server: StartServer
) -> None:
    remote = RecordingApp({"session_start": "Hello from far away, with a greeting long enough to be cut off."})
    app_server = live_server(remote.app, ServerSettings(recognizer=None))
    (tmp_path / "lostapp.py").write_text("from flowapp import FlowApp\napp = FlowApp()\n")
    port = free_port()
    media_id = str(uuid.uuid4())
    first = Instance(tmp_path, port, FLOWAPP_APP_URL=app_server.base_url + "/webhook")
    try:
        await first.ready()
        async with Carrier.connect(first.ws, {**CUSTOM, "session_id": media_id}) as carrier:
            await carrier.wait_for("media", count=5, timeout=15)
            await until(lambda: len(journal_calls(tmp_path)) == 1)
            first.kill()
    finally:
        if first.process.poll() is None:
            first.kill()
    assert remote.of("session_end") == []

    second = Instance(tmp_path, port, FLOWAPP_APP_URL=app_server.base_url + "/webhook")
    try:
        await second.ready()
        await until(lambda: remote.of("session_end"))
        await asyncio.sleep(0.5)
    finally:
        second.stop()
    assert [(e.session.id, e.reason) for e in remote.of("session_end")] == [(media_id, "instance_lost")]
    assert remote.of("session_end")[0].session.from_phone_number == "+4915100000001"


def test_the_journal_setting_and_an_unusable_directory(
    tmp_path: Path, live_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    assert ServerSettings.from_env({"FLOWAPP_JOURNAL": "off"}).journal_dir is None
    assert ServerSettings.from_env({"FLOWAPP_JOURNAL": str(tmp_path)}).journal_dir == str(tmp_path)
    assert ServerSettings.from_env({}).journal_dir == str(Path(os.environ["XDG_STATE_HOME"]) / "flowapp" / "live-calls")

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    app = RecordingApp({"session_start": "Hi."})
    server = live_server(app.app, ServerSettings(journal_dir=str(blocked / "journal"), recognizer=None))
    assert "live-call journal off: cannot use" in caplog.text
    assert httpx.post(server.base_url + "/webhook", json={"type": "session_start", "session": {"id": "x"}}).json()


async def test_journal_files_are_private_to_the_servers_user(tmp_path: Path) -> None:
    journal = LiveCallJournal(tmp_path / "journal", "127.0.0.1-8000")
    journal.open()
    registry = SessionRegistry()
    registry.watch(journal)
    call = PushedCall(SessionInfo(id="call-1", from_phone_number="+4915100000001"))
    registry.add(call)
    await until(lambda: journal.calls_path.exists())
    assert journal.calls_path.stat().st_mode & 0o077 == 0
    assert (tmp_path / "journal").stat().st_mode & 0o077 == 0
    registry.remove("call-1")
    await journal.close()
    assert list((tmp_path / "journal").iterdir()) == []
