"""Recordings of simulated calls: replay, what-if, retention, a slow disk, and bad input."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from flowapp.cli import main
from flowapp.engine.call import EngineConfig
from flowapp.loader import load_app
from flowapp.protocol.actions import BargeIn
from flowapp.recording import store
from flowapp.recording.replay import ReplayOptions, compare, decisions, replay
from flowapp.recording.store import Recorder, RecordingError, load_recording
from flowapp.settings import ServerSettings, SettingsError
from flowapp.simulation.run import SIMULATED_SESSION, recognizer_for, run_scenario
from flowapp.simulation.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


async def _record(name: str, root: Path, keep: int = 10) -> Path:
    scenario, base = load_scenario(SCENARIOS / name)
    app = load_app(scenario.app, extra_paths=(str(base),)) if scenario.app else None
    recorder = Recorder(root, keep)
    await run_scenario(scenario, base, app, recognizer=recognizer_for(scenario), recorder=recorder)
    assert recorder.flush()
    return max((p for p in root.iterdir() if p.is_dir()), key=lambda p: (p / "call.json").stat().st_mtime)


async def test_a_recorded_simulation_replays_to_its_decisions(tmp_path: Path) -> None:
    recording = load_recording(await _record("pizza-app.json", tmp_path))
    assert recording.meta["transport"] == "simulation"
    assert len(recording.caller) == len(recording.assistant) == 12_000 * 8
    assert recording.clock == "ph" * 600
    replayed = await replay(recording)
    assert decisions(replayed.timeline) == decisions(recording.timeline)
    assert [r for r in replayed.trace if r["event"] == "vad_start"] == [
        r for r in recording.timeline if r["event"] == "vad_start"
    ]
    assert np.array_equal(replayed.assistant, recording.assistant)


async def test_other_barge_in_rules_change_the_barge_ins(tmp_path: Path) -> None:
    recording = load_recording(await _record("pizza-app.json", tmp_path))
    [original] = [r for r in recording.timeline if r["event"] == "barge_in"]
    assert original["trigger"] == "vad"
    strict = await replay(recording, ReplayOptions(barge_in=BargeIn.min_characters(20)))
    assert not [r for r in strict.timeline if r["event"] == "barge_in"], "'large please' has 11 characters"
    summary = compare(recording.timeline, strict.timeline)
    assert summary[1] == "barge-ins: 1 before, 0 now; gone: vad at 1.26 s"
    words = await replay(recording, ReplayOptions(barge_in=BargeIn.min_characters(3)))
    [by_words] = [r for r in words.timeline if r["event"] == "barge_in"]
    assert by_words["trigger"] == "transcript" and by_words["t_ms"] > original["t_ms"]


def test_the_replay_command_prints_the_timeline_and_the_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", str(SCENARIOS / "pizza-app.json")]) == 0
    unrecorded = capsys.readouterr().out
    assert main(["simulate", str(SCENARIOS / "pizza-app.json"), "--record", str(tmp_path)]) == 0
    simulated = capsys.readouterr().out
    assert simulated == unrecorded, "recording a call changes nothing in it"
    [folder] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert folder.name == SIMULATED_SESSION.id
    assert main(["replay", str(folder)]) == 0
    out = capsys.readouterr()
    assert out.out == simulated
    assert out.err.startswith("replay: same decisions as the recording")
    assert main(["replay", str(folder), "--turn-handling", '{"interruption": {"enabled": false}}']) == 0
    assert "gone: vad at 1.26 s" in capsys.readouterr().err


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "@missing"], "recording not found"),
        (["replay", "@folder", "--turn-handling", "{"], "invalid JSON"),
        (["replay", "@folder", "--turn-handling", '{"interruption": {"mode": "psychic"}}'], "interruption.mode"),
        (["replay", "@folder", "--barge-in", '{"strategy": "bogus"}'], "strategy"),
        (["replay", "@folder", "--vad", "nope"], "invalid choice"),
        (["replay", "@broken"], "incomplete"),
        (["simulate", str(SCENARIOS / "immediate.json"), "--record", "@file"], "cannot write recordings"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["simulate", str(SCENARIOS / "immediate.json"), "--record", str(tmp_path / "rec")]) == 0
    [folder] = (tmp_path / "rec").iterdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "call.json").write_text(json.dumps({"format": 1, "session": {"id": "x"}}))
    (tmp_path / "file").write_text("")
    capsys.readouterr()
    paths = {"@missing": tmp_path / "nothing", "@folder": folder, "@broken": broken, "@file": tmp_path / "file"}
    assert _exit_code([str(paths.get(a, a)) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


async def test_only_the_newest_recordings_are_kept(tmp_path: Path) -> None:
    written = [await _record("immediate.json", tmp_path, keep=2) for _ in range(4)]
    kept = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert sorted(kept) == sorted(written[-2:])
    assert written[-1] != written[-2]


def test_a_slow_disk_drops_and_counts_chunks_without_blocking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "MAX_PENDING_CHUNKS", 3)
    recorder = Recorder(tmp_path, 5)
    disk = threading.Event()
    write = recorder._write
    monkeypatch.setattr(recorder, "_write", lambda chunk: (disk.wait(10), write(chunk)))
    recording = recorder.start(SIMULATED_SESSION, EngineConfig(), transport="test", recognizer_name=None)
    frame = np.zeros(160, np.int16)
    started = time.monotonic()
    for _ in range(store.CHUNK_OPS * 10):
        recording.played(frame)
    assert time.monotonic() - started < 1.0, "the audio path never waits for the disk"
    recording.close()
    disk.set()
    assert recorder.flush()
    meta = json.loads((tmp_path / SIMULATED_SESSION.id / "call.json").read_text())
    assert meta["dropped_chunks"] == recorder.dropped_chunks >= 5
    with pytest.raises(RecordingError, match="cannot write recordings"):
        Recorder(tmp_path / SIMULATED_SESSION.id / "call.json" / "sub", 5)


def test_record_settings_are_validated() -> None:
    assert ServerSettings.from_env({"FLOWAPP_RECORD_DIR": "off"}).record_dir is None
    assert ServerSettings.from_env({"FLOWAPP_RECORD_DIR": "~/calls"}).record_dir == str(Path.home() / "calls")
    with pytest.raises(SettingsError, match="FLOWAPP_RECORD_KEEP"):
        ServerSettings.from_env({"FLOWAPP_RECORD_KEEP": "0"})


def test_serve_refuses_a_folder_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    assert main(["serve", "--record", str(tmp_path / "file" / "calls")]) == 2
    err = capsys.readouterr().err
    assert "--record: cannot write recordings" in err


async def test_recordings_are_private_to_their_owner(tmp_path: Path) -> None:
    folder = await _record("immediate.json", tmp_path / "calls")
    assert (tmp_path / "calls").stat().st_mode & 0o077 == 0
    assert folder.stat().st_mode & 0o077 == 0
