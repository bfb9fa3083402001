"""`flowapp call`: a carrier on the command line, against real uvicorn servers on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from flowapp import BargeIn, Hangup, Speak
from flowapp.audio.wav import encode_wav, read_wav
from flowapp.carrier.client import media_url
from flowapp.cli import main
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.live.calls import LONG_TEXT, RecordingApp, caller_speech
from tests.live.serving import free_port

HELLO = "Hello, and welcome."
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def caller_wav(tmp_path: Path) -> Path:
    path = tmp_path / "caller.wav"
    path.write_bytes(encode_wav(caller_speech("vm-goodbye", lead_ms=300)))
    return path


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize(
    ("target", "url"),
    [
        ("localhost", "ws://localhost:8000/media"),
        ("127.0.0.1:9000", "ws://127.0.0.1:9000/media"),
        ("http://example.com", "ws://example.com/media"),
        ("https://example.com:8443/", "wss://example.com:8443/media"),
        ("wss://example.com/carrier/media?x=1", "wss://example.com/carrier/media?x=1"),
        ("[::1]:8001", "ws://[::1]:8001/media"),
    ],
)
def test_targets_name_the_media_endpoint(target: str, url: str) -> None:
    assert media_url(target) == url


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ftp://example.com"], "use host[:port]"),
        (["http://"], "names no host"),
        (["localhost:port"], "invalid port"),
        (["localhost", "--audio", "missing.wav"], "cannot read missing.wav"),
        (["localhost", "--audio", "notes.txt"], "notes.txt: WAV: not a RIFF/WAVE file"),
        (["localhost", "--save", "no/such/dir/out.wav"], "is not a directory"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(
    args: list[str], message: str, tmp_path: Path, caller_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("not audio")
    full = ["call", *args] if "--audio" in args else ["call", *args, "--audio", str(caller_wav)]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert main(full) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value"), [("--session-id", "not-a-uuid"), ("--wait", "-1"), ("--wait", "soon")])
def test_bad_option_values_exit_2(flag: str, value: str, caller_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["call", "localhost", "--audio", str(caller_wav), flag, value])
    assert exit_.value.code == 2
    assert flag in capsys.readouterr().err


def test_a_server_that_is_not_there_exits_2(caller_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["call", f"127.0.0.1:{port}", "--audio", str(caller_wav)]) == 2
    assert f"cannot connect to ws://127.0.0.1:{port}/media" in capsys.readouterr().err


@pytest.mark.slow
def test_a_server_that_wants_a_token_refuses_without_one(
    live_server: StartServer, caller_wav: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWAPP_API_TOKEN", raising=False)
    server = live_server(RecordingApp().app, ServerSettings(api_token="s3cret"))
    assert main(["call", server.base_url, "--audio", str(caller_wav), "--wait", "0"]) == 2
    assert "refused the media stream: HTTP 403 (wrong or missing --token?)" in capsys.readouterr().err
    assert main(["call", server.base_url, "--audio", str(caller_wav), "--wait", "0", "--token", "s3cret"]) == 0


@pytest.mark.slow
def test_a_call_streams_the_wav_prints_what_happens_and_saves_what_the_assistant_said(
    live_server: StartServer, caller_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = RecordingApp({"session_start": Speak(text=HELLO, barge_in=BargeIn.none())})
    server = live_server(rec.app)
    session_id = str(uuid.uuid4())
    saved = tmp_path / "assistant.wav"
    args = ["call", server.base_url, "--audio", str(caller_wav), "--save", str(saved), "--session-id", session_id]
    assert main([*args, "--wait", "1"]) == 0
    records = lines(capsys.readouterr().out)
    events = [r["event"] for r in records]
    assert records[0] == {**records[0], "event": "started", "session_id": session_id}
    assert events.index("assistant_audio") < events.index("mark") < events.index("ended")
    assert "caller_audio_ended" in events
    end = records[-1]
    assert (end["event"], end["ended_by"], end["close_code"]) == ("ended", "carrier", 1000)
    spoken = rec.of("assistant_speak")[0].duration_ms
    assert abs(end["assistant_ms"] - spoken) <= 40
    assert rec.events[0].session.id == session_id
    deadline = time.monotonic() + 5
    while not rec.of("session_end") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e.reason for e in rec.of("session_end")] == ["stream_stopped"]
    audio = read_wav(saved)
    assert len(audio) >= spoken * 8
    assert np.abs(audio.astype(np.int32)).max() > 1000, "the saved audio holds the assistant's speech"
    assert rec.of("assistant_speech_ended")[0].played_ms >= spoken - 200, "mark echoes told the engine it played"


@pytest.mark.slow
def test_an_app_hangup_ends_the_call_from_the_server_side(
    live_server: StartServer, caller_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = RecordingApp({"session_start": [Speak(text=HELLO, barge_in=BargeIn.none()), Hangup()]})
    server = live_server(rec.app)
    started = time.monotonic()
    assert main(["call", server.base_url, "--audio", str(caller_wav), "--wait", "30"]) == 0
    assert time.monotonic() - started < 20, "the call ended at the hangup, not after --wait"
    end = lines(capsys.readouterr().out)[-1]
    assert (end["ended_by"], end["close_code"]) == ("server", 1000)


@pytest.mark.slow
def test_the_control_api_barges_in_on_a_call_it_places(
    live_server: StartServer, caller_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = RecordingApp({"session_start": Speak(text=LONG_TEXT, barge_in=BargeIn.none())})
    server = live_server(rec.app, ServerSettings(control_token="boss"))
    session_id = str(uuid.uuid4())
    saved = tmp_path / "assistant.wav"
    args = ["call", server.base_url, "--audio", str(caller_wav), "--session-id", session_id, "--save", str(saved)]
    status: list[int] = []
    call = threading.Thread(target=lambda: status.append(main([*args, "--wait", "4"])))
    call.start()
    auth = {"Authorization": "Bearer boss"}
    with httpx.Client(base_url=server.base_url, headers=auth) as http:
        deadline = time.monotonic() + 10
        while not rec.of("assistant_speak"):
            assert time.monotonic() < deadline, "the call did not start"
            time.sleep(0.05)
        time.sleep(1)
        assert [s["session_id"] for s in http.get("/v1/sessions").json()["sessions"]] == [session_id]
        assert http.post(f"/v1/sessions/{session_id}/barge-in").json()["barged_in"] is True
        say = {"type": "speak", "text": "A supervisor has joined.", "barge_in": {"strategy": "none"}}
        assert http.post(f"/v1/sessions/{session_id}/actions", json=say).status_code == 202
    call.join(timeout=30)
    assert status == [0]
    records = lines(capsys.readouterr().out)
    events = [r["event"] for r in records]
    cleared = events.index("clear")
    assert "assistant_audio" in events[cleared:], "the pushed speech was heard after the clear"
    first, second = rec.of("assistant_speech_ended")[:2]
    assert first.interrupted is True
    assert first.played_ms < rec.of("assistant_speak")[0].duration_ms
    assert second.interrupted is False
    heard_ms = first.played_ms + second.played_ms
    assert abs(records[-1]["assistant_ms"] - heard_ms) <= 200, "what the clear dropped is not in the saved audio"
    assert len(read_wav(saved)) >= heard_ms * 8


@pytest.mark.slow
def test_flowapp_call_as_a_user_runs_it(live_server: StartServer, caller_wav: Path) -> None:
    server = live_server(RecordingApp({"session_start": Speak(text=HELLO, barge_in=BargeIn.none())}).app)
    command = [sys.executable, "-m", "flowapp", "call", server.base_url, "--audio", str(caller_wav), "--wait", "0.5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout)[-1]["event"] == "ended"
    refused = subprocess.run(
        [*command[:4], f"127.0.0.1:{free_port()}", *command[5:]], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("flowapp call: error: cannot connect") and "Traceback" not in refused.stderr


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    return section[section.index("```sh\n") + len("```sh\n") : section.index("\n```", section.index("```sh\n"))]


@pytest.mark.slow
def test_the_readme_control_api_example_runs_top_to_bottom(tmp_path: Path) -> None:
    port = free_port()
    script = (
        readme_block("### Control API")
        .replace(".venv/bin/flowapp", f"{sys.executable} -m flowapp")
        .replace("localhost:8000", f"localhost:{port}")
        .replace("examples/scenarios/", f"{ROOT}/examples/scenarios/")
    )
    env = {**os.environ, "FLOWAPP_PORT": str(port), "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"transport":"media"' in result.stdout
    assert '"barged_in":' in result.stdout and '{"accepted":1}' in result.stdout
    call = lines((tmp_path / "call.jsonl").read_text())
    assert call[-1]["event"] == "ended" and call[-1]["close_code"] == 1000
    assert "clear" in [r["event"] for r in call]
    assert len(read_wav(tmp_path / "heard.wav")) > 8000
