"""`flowapp simulate SCENARIO.json`: one call through the real engine, its timeline as JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from flowapp.loader import AppLoadError, load_app
from flowapp.logs import configure_logging
from flowapp.recording.store import RecordingError, recorder_for
from flowapp.simulation.run import recognizer_for, run_scenario, timeline_lines
from flowapp.simulation.scenario import ScenarioError, load_scenario
from flowapp.stt.whisper import ModelError

EXIT_INVALID = 2
RECORD_KEEP = 100
"""Recordings `--record` keeps in its folder, as `flowapp serve` does by default."""

DESCRIPTION = """\
Run one call described by a scenario file through the real engine, on a simulated clock
(far faster than real time, the same timeline every run), and print the timeline as JSON
lines ordered by t_ms: every event delivered to the app, plus barge_in records.

example:
  flowapp simulate examples/scenarios/immediate.json

scenario (paths relative to the file):
  {"app": "module:attr",                          optional; without it "assistant" plays once at t=0
   "assistant": {"text": "...", "barge_in": {"strategy": "immediate"}},
   "caller": {"audio": "caller.wav", "offset_ms": 0},
   "transcripts": [{"at_ms": 1200, "text": "wai", "final": false}],
   "barge_in_requests_ms": [2500], "dtmf": [{"at_ms": 3000, "digit": "1"}],
   "duration_ms": 8000}
An invalid scenario exits with status 2 and a message naming the problem.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="the scenario JSON file")
    parser.add_argument("--wav", type=Path, help="also write what the line carried (both sides mixed) to this WAV")
    parser.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="also write the call's recording into a folder inside DIR, for flowapp replay and flowapp timeline",
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"], help="logs go to stderr"
    )


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:
        scenario, base = load_scenario(args.scenario)
        app = load_app(scenario.app, extra_paths=(str(base),)) if scenario.app else None
    except (ScenarioError, AppLoadError) as exc:
        print(f"flowapp simulate: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        recognizer = recognizer_for(scenario)
    except (ModelError, ImportError) as exc:
        print(f"flowapp simulate: error: recognizer {scenario.recognizer!r}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    recorder = None
    if args.record is not None:
        try:
            recorder = recorder_for(str(args.record), RECORD_KEEP)
        except RecordingError as exc:
            print(f"flowapp simulate: error: --record: {exc}", file=sys.stderr)
            return EXIT_INVALID
    timeline = asyncio.run(
        run_scenario(scenario, base, app, recognizer=recognizer, record_wav=args.wav, recorder=recorder)
    )
    if recorder is not None and not recorder.flush():
        print("flowapp simulate: error: the recording could not be written in time", file=sys.stderr)
        return 1
    for line in timeline_lines(timeline):
        print(line)
    return 0
