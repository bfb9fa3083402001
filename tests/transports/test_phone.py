"""`GET /phone` in headless Chromium: the page calls the app through `/media` with a fake microphone."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from flowapp import BargeIn, Speak
from flowapp.audio.wav import encode_wav
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.live.calls import LONG_TEXT, RecordingApp, caller_speech, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_page_is_self_contained(live_server: StartServer) -> None:
    answer = httpx.get(live_server(RecordingApp().app).base_url + "/phone")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    page = answer.text
    assert "AudioWorkletProcessor" in page and '"media"' in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|<link|import\s*\(|importScripts""", page)


@pytest.mark.slow
async def test_a_browser_call_greets_and_the_callers_speech_barges_in(live_server: StartServer) -> None:
    if CHROMIUM is None:
        pytest.fail("needs Debian's chromium: scripts/install --test installs it")
    rec = RecordingApp(
        {
            "session_start": Speak(text=LONG_TEXT, barge_in=BargeIn.immediate()),
            "user_speak": Speak(text="Thanks."),
        }
    )
    settings = ServerSettings(recognizer="local")
    server = live_server(rec.app, settings)
    settings.allowed_origins = (server.base_url,)
    with tempfile.TemporaryDirectory(prefix="flowapp-phone-") as scratch:
        speech = Path(scratch) / "speech.wav"
        speech.write_bytes(encode_wav(caller_speech("please-try-again", lead_ms=2500, tail_ms=6000)))
        browser = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={scratch}/profile",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={speech}%noloop",
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-port=0",
                f"{server.base_url}/phone?call=1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_until(lambda: rec.of("user_speak"), timeout=30)
        finally:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
    await wait_until(lambda: rec.of("session_end"), timeout=10)
    assert rec.of("session_start")[0].session.from_phone_number == "browser"
    assert rec.of("assistant_speak")[0].text == LONG_TEXT
    greeting = rec.of("assistant_speech_ended")[0]
    assert greeting.interrupted is True and greeting.played_ms > 0, "the caller's speech barged in"
    assert rec.of("user_speak")[0].barged_in is True
