"""`flowapp simulate` as a user runs it: a subprocess, a scenario from examples/, JSON lines out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a Python process per test; tests/test_cli_inprocess.py runs the same paths

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "examples" / "scenarios"


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowapp", "simulate", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIOS.glob("*.json")))
def test_every_example_scenario_prints_an_ordered_timeline(name: str) -> None:
    result = simulate(str(SCENARIOS / name))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0] == {"t_ms": 0, "event": "session_start"}
    assert records[-1]["event"] == "session_end"
    assert [r["t_ms"] for r in records] == sorted(r["t_ms"] for r in records)
    assert all("event" in r for r in records)


def test_immediate_scenario_barges_in_at_the_callers_onset() -> None:
    records = [json.loads(line) for line in simulate(str(SCENARIOS / "immediate.json")).stdout.splitlines()]
    barge = next(r for r in records if r["event"] == "barge_in")
    assert barge["strategy"] == "immediate" and barge["trigger"] == "vad"
    assert 2000 <= barge["t_ms"] <= 2100
    assert next(r for r in records if r["event"] == "user_speak")["barged_in"] is True


def test_the_same_scenario_gives_the_same_output() -> None:
    first = simulate(str(SCENARIOS / "protected.json")).stdout
    assert first == simulate(str(SCENARIOS / "protected.json")).stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON"),
        ('{"assistant": {"text": "x", "barge_in": {"strategy": "sometimes"}}}', "assistant.barge_in.strategy"),
        ('{"assistant": {"text": "x"}, "duration_ms": -5}', "duration_ms"),
        ('{"duration_ms": 1000}', "needs 'app'"),
        ('{"assistant": {"audio": "missing.wav"}}', "audio file not found: missing.wav"),
        ('{"app": "nowhere:app"}', "cannot import module 'nowhere'"),
        ('{"assistant": {"text": "x"}, "turn_handling": {"interruption": {"mode": "psychic"}}}', "turn_handling"),
        ('{"assistant": {"text": "x"}, "recognizer": "psychic"}', "unknown recognizer 'psychic'"),
        ('{"assistant": {"text": "x"}, "caller": {"audio": "notes.txt"}}', "audio file notes.txt cannot be played"),
        ('{"assistant": {"audio": "notes.txt"}}', "audio file notes.txt cannot be played: WAV: not a RIFF"),
    ],
)
def test_an_invalid_scenario_exits_2_naming_the_problem(tmp_path: Path, content: str, message: str) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(content)
    (tmp_path / "notes.txt").write_text("not audio")
    result = simulate(str(scenario))
    assert (result.returncode, result.stdout) == (2, "")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


SHADOWED_POCKETSPHINX = "raise ImportError(\"No module named 'pocketsphinx'\")\n"


def test_a_recognizer_whose_package_is_missing_exits_2_saying_what_to_install(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "pocketsphinx.py").write_text(SHADOWED_POCKETSPHINX)
    scenario = tmp_path / "scenario.json"
    scenario.write_text('{"assistant": {"text": "x"}, "recognizer": "pocketsphinx"}')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "flowapp", "simulate", str(scenario)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "recognizer 'pocketsphinx'" in result.stderr and "pip install 'flowapp[pocketsphinx]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_that_does_not_load_exits_2(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text('{"assistant": {"text": "x"}, "recognizer": "whisper:/no/such/model"}')
    result = simulate(str(scenario))
    assert result.returncode == 2
    assert "cannot load Whisper model '/no/such/model'" in result.stderr
    assert "Traceback" not in result.stderr


def test_wav_output_holds_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "call.wav"
    assert simulate(str(SCENARIOS / "manual.json"), "--wav", str(out)).returncode == 0
    assert out.read_bytes()[:4] == b"RIFF" and out.stat().st_size > 6000 * 16
