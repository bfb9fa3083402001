"""The `flowapp` command: version, help, app loading errors, and `serve` as a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from flowapp import FlowApp, __version__
from flowapp.cli import AppLoadError, build_parser, load_app, main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowapp", *args], capture_output=True, text=True, timeout=30, cwd=cwd)


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"flowapp {__version__}"


def test_help_explains_serve_with_an_example_and_its_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as top:
        main(["--help"])
    assert top.value.code == 0
    assert "serve" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    serve_help = capsys.readouterr().out
    for text in ("example:", "flowapp serve", "FLOWAPP_API_TOKEN", "--insecure-control", "--log-format"):
        assert text in serve_help


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:app", "cannot import module"),
        ("tests.test_cli:missing", "no attribute"),
        ("tests.test_cli:NOT_AN_APP", "not a FlowApp"),
        (":app", "module:attr"),
    ],
)
def test_bad_app_spec_exits_2(spec: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", spec]) == 2
    assert message in capsys.readouterr().err


NOT_AN_APP = "a string"
APP = FlowApp()


def test_load_app() -> None:
    assert load_app("tests.test_cli:APP") is APP
    with pytest.raises(AppLoadError):
        load_app("tests.test_cli")


@pytest.mark.slow
def test_serve_answers_healthz_and_the_webhook(tmp_path: Path) -> None:
    (tmp_path / "myvoiceapp.py").write_text(
        textwrap.dedent(
            """
            from flowapp import FlowApp

            app = FlowApp()

            @app.on_session_start
            def greet():
                return "Hello from a subprocess"
            """
        )
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "FLOWAPP_API_TOKEN": "from-env"}
    process = subprocess.Popen(
        [sys.executable, "-m", "flowapp", "serve", "myvoiceapp:app", "--port", str(port), "--log-format", "json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
        body = {"type": "session_start", "session": {"id": "cli-1"}}
        assert httpx.post(base + "/webhook", json=body).status_code == 401
        reply = httpx.post(base + "/webhook", json=body, headers={"X-API-TOKEN": "from-env"})
        assert reply.json()["text"] == "Hello from a subprocess"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert "Finished server process" in stderr
    assert '"level": "info"' in stderr


def test_parser_has_one_subparser_per_registered_command() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "x:y", "--port", "9000", "--insecure-control"])
    assert (args.command, args.app, args.port, args.insecure_control) == ("serve", "x:y", 9000, True)
