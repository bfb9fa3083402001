"""One action cannot make a real server allocate gigabytes: a 20,000-word speak and a WAV that declares 1 Hz
are refused (422 on the control API, logged with the call's session from a handler), normal speech still plays,
and the server process's peak RSS, read from /proc, grows by less than RSS_BOUND while it does."""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.live.calls import CUSTOM
from tests.live.carrier import Carrier
from tests.live.serving import free_port

RSS_BOUND = 150 * 2**20
ADDRESS_SPACE_LIMIT = 3 * 2**30
"""The server's address space is capped too, so a server without the bounds fails rather than swaps."""

SERVE = [
    *(sys.executable, "-m", "flowapp", "serve", "boundapp:app"),
    *("--recognizer", "none", "--vad", "webrtc", "--insecure-control"),
]

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")


def one_hz_wav(samples: int = 20_000) -> str:
    body = struct.pack("<HHIIHH", 1, 1, 1, 1, 1, 8)
    data = b"WAVE" + struct.pack("<4sI", b"fmt ", 16) + body + struct.pack("<4sI", b"data", samples) + b"\x80" * samples
    return base64.b64encode(b"RIFF" + struct.pack("<I", len(data)) + data).decode()


APP = f"""
from flowapp import Audio, FlowApp

app = FlowApp(fallback="Sorry, one moment.")

@app.on_session_start
def greet():
    return "word " * 20_000

@app.on_dtmf
def key():
    return [Audio(audio={one_hz_wav()!r}), "Still here."]
"""


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


async def media_count(carrier: Carrier, more_than: int, timeout: float = 20.0) -> int:
    await carrier.wait_for("media", count=more_than + 10, timeout=timeout)
    return len(carrier.events("media"))


async def test_huge_speak_and_1_hz_wav_are_refused_with_bounded_memory(tmp_path: Path) -> None:
    (tmp_path / "boundapp.py").write_text(textwrap.dedent(APP))
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [*SERVE, "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
        stdout=log,
        stderr=log,
        preexec_fn=cap_address_space,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "server did not come up"
                await asyncio.sleep(0.1)
        before = peak_rss(process.pid)
        async with (
            Carrier.connect(f"ws://127.0.0.1:{port}", CUSTOM) as carrier,
            httpx.AsyncClient(base_url=base, timeout=30) as http,
        ):
            streaming = asyncio.create_task(carrier.silence(30))
            played = await media_count(carrier, 0)
            session_id = (await http.get("/v1/sessions")).json()["sessions"][0]["session_id"]
            url = f"/v1/sessions/{session_id}/actions"

            huge = await http.post(url, json={"type": "speak", "text": "word " * 20_000})
            assert huge.status_code == 422
            assert huge.json()["detail"][0]["loc"] == ["speak", "text"]
            assert "5000 characters" in huge.json()["detail"][0]["msg"]

            slow_wav = await http.post(url, json=[{"type": "hangup"}, {"type": "audio", "audio": one_hz_wav()}])
            assert slow_wav.status_code == 422
            assert slow_wav.json()["detail"][0]["loc"] == [1, "audio", "audio"]
            assert "1 Hz" in slow_wav.json()["detail"][0]["msg"]
            assert "MIN_WAV_RATE" in slow_wav.json()["detail"][0]["msg"]

            pushed = await http.post(url, json={"type": "speak", "text": "Normal speech still plays."})
            assert pushed.status_code == 202
            played = await media_count(carrier, played)

            await carrier.dtmf("1")
            await media_count(carrier, played)
            await carrier.stop()
            streaming.cancel()
        after = peak_rss(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
    output = (tmp_path / "server.log").read_text()
    assert "the session_start handler boundapp.greet raised; answered with the fallback" in output
    assert "cannot render audio" in output and "1 Hz" in output
    print(f"server peak RSS {before / 2**20:.0f} MB -> {after / 2**20:.0f} MB")
    assert after - before < RSS_BOUND, f"peak RSS grew {(after - before) / 2**20:.0f} MB"
