"""The `flowapp` command in-process (`main([...])`), where coverage sees it: simulate, serve's checks, call's."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from flowapp.audio.wav import read_wav
from flowapp.cli import DEFAULT_APP, main

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "examples" / "scenarios"


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """The commands configure the root logger for a process of their own; give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def exit_status(argv: list[str]) -> int | str | None:
    """What the process would exit with: argparse exits itself on a bad flag, the commands return a status."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def timeline(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


# flowapp simulate ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIOS.glob("*.json")))
def test_every_example_scenario_runs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(SCENARIOS / name)]) == 0
    records = timeline(capsys.readouterr().out)
    assert records[0] == {"t_ms": 0, "event": "session_start"}
    assert records[-1]["event"] == "session_end"
    assert [r["t_ms"] for r in records] == sorted(r["t_ms"] for r in records)


def test_simulate_writes_both_sides_to_a_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "call.wav"
    assert main(["simulate", str(SCENARIOS / "manual.json"), "--wav", str(out)]) == 0
    assert len(read_wav(out)) >= 6000 * 8 - 160
    barge = next(r for r in timeline(capsys.readouterr().out) if r["event"] == "barge_in")
    assert barge["trigger"] == "manual"


def test_a_barge_in_request_with_nothing_playing_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "late.json"
    scenario.write_text(json.dumps({"assistant": {"text": "Hi."}, "barge_in_requests_ms": [4000], "duration_ms": 5000}))
    assert main(["simulate", str(scenario)]) == 0
    ignored = [r for r in timeline(capsys.readouterr().out) if r["event"] == "barge_in_ignored"]
    assert ignored == [{"t_ms": 4000, "event": "barge_in_ignored", "reason": "nothing playing"}]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON at line 1"),
        ('{"assistant": {"text": "x"}, "recognizer": "psychic"}', "unknown recognizer 'psychic'"),
        ('{"assistant": {"text": "x"}, "caller": {"audio": "notes.txt"}}', "audio file notes.txt cannot be played"),
        ('{"assistant": {"audio": "notes.txt"}}', "audio file notes.txt cannot be played"),
        ('{"assistant": {"audio": "gone.wav"}}', "audio file not found: gone.wav"),
        ('{"app": "nowhere:app"}', "cannot import module 'nowhere'"),
        ('{"app": "x:app", "assistant": {"text": "x"}}', "only for scenarios without 'app'"),
        ('{"assistant": {"text": "x", "ssml": "<speak/>"}}', "exactly one of 'text', 'ssml' or 'audio'"),
        ('{"assistant": {"text": "x"}, "dtmf": [{"at_ms": 5, "digit": "x"}]}', "dtmf.0.digit"),
    ],
)
def test_an_invalid_scenario_exits_2(
    content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(content)
    (tmp_path / "notes.txt").write_text("not audio")
    assert main(["simulate", str(scenario)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_a_missing_scenario_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(tmp_path / "nope.json")]) == 2
    assert "scenario file not found" in capsys.readouterr().err


def test_a_recognizer_whose_package_is_missing_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    monkeypatch.delitem(sys.modules, "flowapp.stt.pocketsphinx", raising=False)
    scenario = tmp_path / "scenario.json"
    scenario.write_text('{"assistant": {"text": "x"}, "recognizer": "pocketsphinx"}')
    assert main(["simulate", str(scenario)]) == 2
    assert "pip install 'flowapp[pocketsphinx]'" in capsys.readouterr().err


def test_a_model_that_does_not_load_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text('{"assistant": {"text": "x"}, "recognizer": "whisper:/no/such/model"}')
    assert main(["simulate", str(scenario)]) == 2
    assert "recognizer 'whisper:/no/such/model': cannot load Whisper model" in capsys.readouterr().err


# flowapp serve -------------------------------------------------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[uvicorn.Config]:
    """uvicorn's run, replaced: what `serve` would have served, without serving it."""
    configs: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: configs.append(self.config))
    return configs


def test_serve_runs_uvicorn_with_the_flags(served: list[uvicorn.Config]) -> None:
    assert main(["serve", "tests.test_cli:APP", "--port", "9123", "--recognizer", "none", "--log-level", "error"]) == 0
    (config,) = served
    assert (config.host, config.port) == ("127.0.0.1", 9123)


def test_serve_without_an_app_serves_the_default(served: list[uvicorn.Config], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWAPP_APP", raising=False)
    assert DEFAULT_APP == "flowapp.default_app:app"
    assert main(["serve", "--recognizer", "none", "--log-format", "json"]) == 0
    assert len(served) == 1


def test_serve_refuses_a_recognizer_that_does_not_load(
    served: list[uvicorn.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "tests.test_cli:APP", "--recognizer", "whisper:/no/such/model"]) == 2
    assert "recognizer 'whisper:/no/such/model'" in capsys.readouterr().err
    assert served == []


@pytest.mark.parametrize("args", [["--recognizer", "psychic"], ["--vad", "loud"], ["--port", "many"]])
def test_serve_refuses_bad_flags_before_starting(
    args: list[str], served: list[uvicorn.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_status(["serve", "tests.test_cli:APP", *args]) == 2
    assert args[0].removeprefix("--") in capsys.readouterr().err
    assert served == []


# flowapp call --------------------------------------------------------------------------------------------------


def test_call_needs_its_audio(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["call", "localhost"])
    assert exit_.value.code == 2
    assert "--audio" in capsys.readouterr().err


def test_call_help_names_the_target_forms_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["call", "--help"])
    text = capsys.readouterr().out
    for expected in ("host[:port]", "ws(s)://", "--save", "--session-id", "FLOWAPP_API_TOKEN", "status 2"):
        assert expected in text
