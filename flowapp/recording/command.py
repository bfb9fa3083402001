"""`flowapp replay RECORDING`: a recorded call through the engine again, with its own or other settings."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flowapp.loader import AppLoadError, load_app
from flowapp.logs import configure_logging
from flowapp.protocol.actions import BargeIn
from flowapp.recording.replay import ReplayOptions, compare, replay
from flowapp.recording.store import RecordingError, load_recording
from flowapp.settings import DETECTORS
from flowapp.simulation.run import timeline_lines
from flowapp.stt import check_recognizer
from flowapp.stt.whisper import ModelError

EXIT_INVALID = 2

REPLAY_DESCRIPTION = """\
Run a recorded call (a folder written by `flowapp serve --record DIR` or `flowapp simulate
--record DIR`) through the engine again, far faster than real time: the caller's recorded audio,
the app's recorded replies (or a live app with --app), and the recognizer's recorded words (or
another recognizer with --recognizer). Prints the new timeline as JSON lines, as `flowapp simulate`
does, then (on stderr) how it compares with the recording: barge-ins added or gone, when each item
stopped, what the caller heard. With the call's own settings the decisions are the same.

examples:
  flowapp replay recordings/3f2a...
  flowapp replay recordings/3f2a... --barge-in '{"strategy": "immediate"}'
  flowapp replay recordings/3f2a... --turn-handling '{"interruption": {"enabled": false}}'
Bad input exits with status 2 and a message naming the problem.
"""


def _json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _recognizer(raw: str) -> str:
    try:
        return check_recognizer(raw) or "none"
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", type=Path, help="a call's recording folder")
    parser.add_argument(
        "--turn-handling", type=_json_object, metavar="JSON", help="turn-handling options merged over the recorded ones"
    )
    parser.add_argument(
        "--barge-in", type=_json_object, metavar="JSON", help="barge-in rule for every recorded speak and audio"
    )
    parser.add_argument("--vad", choices=DETECTORS, help="speech detector instead of the recorded one")
    parser.add_argument(
        "--recognizer", type=_recognizer, help="run this recognizer on the audio instead of the recorded words"
    )
    parser.add_argument(
        "--app", metavar="MODULE:ATTR", help="answer the events with this app, not the recorded replies"
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"], help="logs go to stderr"
    )


def run_replay(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:
        recording = load_recording(args.recording)
        options = ReplayOptions(
            turn_handling=args.turn_handling,
            barge_in=BargeIn.model_validate(args.barge_in) if args.barge_in is not None else None,
            detector=args.vad,
            recognizer=None if args.recognizer in (None, "none") else args.recognizer,
            app=load_app(args.app) if args.app else None,
        )
        replayed = asyncio.run(replay(recording, options))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        print(f"flowapp replay: error: {problems}", file=sys.stderr)
        return EXIT_INVALID
    except (RecordingError, AppLoadError) as exc:
        print(f"flowapp replay: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (ModelError, ImportError) as exc:
        print(f"flowapp replay: error: recognizer {args.recognizer!r}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for line in timeline_lines(replayed.timeline):
        print(line)
    for line in compare(recording.timeline, replayed.timeline):
        print(f"replay: {line}", file=sys.stderr)
    return 0


TIMELINE_DESCRIPTION = """\
Draw a recorded call as one picture: both legs' waveforms on one time axis, the caller's speech as the
VAD heard it, transcripts at their times, the assistant's items with what the caller heard of them, and
barge-in (with its trigger), pause and resume marks. Needs matplotlib (pip install 'flowapp[plot]').

example:
  flowapp timeline recordings/3f2a... -o call.png
"""


def add_timeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", type=Path, help="a call's recording folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the picture to write: .png or .svg")


def run_timeline(args: argparse.Namespace) -> int:
    from flowapp.recording.picture import FORMATS

    if args.output.suffix.lower() not in FORMATS:
        print(f"flowapp timeline: error: -o must end in {' or '.join(FORMATS)}, got {args.output}", file=sys.stderr)
        return EXIT_INVALID
    try:
        recording = load_recording(args.recording)
        from flowapp.recording.picture import draw
    except RecordingError as exc:
        print(f"flowapp timeline: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        draw(recording, args.output)
    except ImportError:
        print("flowapp timeline: error: needs matplotlib: pip install 'flowapp[plot]'", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"flowapp timeline: error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    return 0
