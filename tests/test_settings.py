"""Every setting is validated before the server starts: from code, the environment or a `serve` flag."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flowapp.cli import main
from flowapp.settings import ServerSettings, SettingsError


def test_every_variable_name_sets_its_setting() -> None:
    settings = ServerSettings.from_env(
        {
            "FLOWAPP_API_TOKEN": "t",
            "FLOWAPP_WEBHOOK_SECRET": "w",
            "FLOWAPP_CONTROL_TOKEN": "c",
            "FLOWAPP_INSECURE_CONTROL": "yes",
            "FLOWAPP_MAX_BODY_BYTES": "2048",
            "FLOWAPP_MAX_WS_MESSAGE_BYTES": "4096",
            "FLOWAPP_MAX_MEDIA_MESSAGE_BYTES": "1024",
            "FLOWAPP_MEDIA_JITTER_FRAMES": "7",
            "FLOWAPP_RECOGNIZER": "none",
            "FLOWAPP_RECOGNIZER_WORKERS": "2",
            "FLOWAPP_VAD_DETECTOR": "webrtc",
            "FLOWAPP_APP_URL": "ws://app.example/ws",
            "FLOWAPP_APP_API_TOKEN": "a",
            "FLOWAPP_APP_WEBHOOK_SECRET": "s",
            "FLOWAPP_APP_TIMEOUT": "0.5",
            "FLOWAPP_HEADER_TIMEOUT": "4",
            "FLOWAPP_BODY_TIMEOUT": "6.5",
            "FLOWAPP_MAX_CONNECTIONS": "300",
            "FLOWAPP_HOST": "0.0.0.0",
            "FLOWAPP_PORT": "9000",
        }
    )
    assert settings == ServerSettings(
        api_token="t",
        webhook_secret="w",
        control_token="c",
        insecure_control=True,
        max_body_bytes=2048,
        max_ws_message_bytes=4096,
        max_media_message_bytes=1024,
        media_jitter_frames=7,
        recognizer=None,
        recognizer_workers=2,
        vad_detector="webrtc",
        app_url="ws://app.example/ws",
        app_api_token="a",
        app_webhook_secret="s",
        app_timeout_seconds=0.5,
        header_timeout_seconds=4.0,
        body_timeout_seconds=6.5,
        max_connections=300,
        host="0.0.0.0",
        port=9000,
    )


def test_code_given_settings_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWAPP_PORT", "9000")
    assert ServerSettings().port == 8000
    assert ServerSettings.from_env().port == 9000


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("FLOWAPP_PORT", "99999", "less than or equal to 65535"),
        ("FLOWAPP_PORT", "-1", "greater than or equal to 1"),
        ("FLOWAPP_PORT", "http", "valid integer"),
        ("FLOWAPP_VAD_DETECTOR", "bogus", "'webrtc', 'silero' or 'cascade'"),
        ("FLOWAPP_INSECURE_CONTROL", "enabled", "true/false"),
        ("FLOWAPP_INSECURE_CONTROL", "t", "true/false"),
        ("FLOWAPP_MAX_BODY_BYTES", "0", "greater than 0"),
        ("FLOWAPP_MAX_WS_MESSAGE_BYTES", "1MB", "valid integer"),
        ("FLOWAPP_MEDIA_JITTER_FRAMES", "-3", "greater than 0"),
        ("FLOWAPP_RECOGNIZER_WORKERS", "0", "greater than 0"),
        ("FLOWAPP_APP_TIMEOUT", "nan", "finite"),
        ("FLOWAPP_APP_TIMEOUT", "-1", "greater than 0"),
        ("FLOWAPP_HEADER_TIMEOUT", "0", "greater than 0"),
        ("FLOWAPP_BODY_TIMEOUT", "inf", "finite"),
        ("FLOWAPP_MAX_CONNECTIONS", "none", "valid integer"),
        ("FLOWAPP_RECOGNIZER", "bogus", "unknown recognizer"),
        ("FLOWAPP_APP_URL", "ftp://app.example", "http://"),
    ],
)
def test_a_bad_variable_is_refused_by_name(variable: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as error:
        ServerSettings.from_env({variable: value})
    assert str(error.value).startswith(f"{variable}: ")
    assert reason in str(error.value)


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("TRUE", True), ("on", True), ("0", False), ("no", False)]
)
def test_flags_take_the_usual_spellings(value: str, expected: bool) -> None:
    assert ServerSettings.from_env({"FLOWAPP_INSECURE_CONTROL": value}).insecure_control is expected


def test_assignment_is_validated_too() -> None:
    settings = ServerSettings()
    with pytest.raises(SettingsError, match="FLOWAPP_PORT"):
        settings.port = 0
    assert settings.port == 8000


def test_pocketsphinx_without_its_package_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(SettingsError, match=r"FLOWAPP_RECOGNIZER: .*pip install"):
        ServerSettings(recognizer="pocketsphinx")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "99999"], "--port: input should be less than or equal to 65535"),
        (["--port", "-1"], "--port: input should be greater than or equal to 1"),
        (["--host", ""], "--host: "),
        (["--app-url", "app.example"], "--app-url: must start with"),
    ],
)
def test_serve_refuses_a_bad_flag_by_name(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", *argv]) == 2
    assert message in capsys.readouterr().err


def test_serve_refuses_a_bad_variable_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOWAPP_VAD_DETECTOR", "bogus")
    assert main(["serve"]) == 2
    assert "FLOWAPP_VAD_DETECTOR: input should be 'webrtc'" in capsys.readouterr().err
    monkeypatch.delenv("FLOWAPP_VAD_DETECTOR")
    monkeypatch.setenv("FLOWAPP_LOG_LEVEL", "loud")
    assert main(["serve"]) == 2
    assert "FLOWAPP_LOG_LEVEL: must be one of debug" in capsys.readouterr().err


def test_a_flag_wins_over_a_bad_variable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLOWAPP_PORT", "0")
    monkeypatch.setenv("FLOWAPP_INSECURE_CONTROL", "enabled")
    assert main(["serve", "--port", "70000", "--insecure-control"]) == 2
    err = capsys.readouterr().err
    assert "--port: " in err and "FLOWAPP_PORT" not in err and "INSECURE_CONTROL" not in err


def test_serve_refuses_pocketsphinx_without_its_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    assert main(["serve", "--recognizer", "pocketsphinx"]) == 2
    assert "--recognizer: recognizer 'pocketsphinx' needs the pocketsphinx package" in capsys.readouterr().err


def test_a_flag_argparse_cannot_read_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "eighty"])
    assert exit_.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_serve_process_exits_2_naming_the_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowapp", "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLOWAPP_INSECURE_CONTROL": "enabled"},
    )
    assert result.returncode == 2
    assert "--port: input should be less than or equal to 65535" in result.stderr
    assert "FLOWAPP_INSECURE_CONTROL: must be one of true/false" in result.stderr
    assert "Traceback" not in result.stderr
