"""The `flowapp` command line.

Each subcommand is one `Command` in `COMMANDS`: a function that declares its arguments and one that runs it.
Adding a subcommand means writing those two functions and calling `register(Command(...))`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flowapp import __version__
from flowapp.app import FlowApp
from flowapp.carrier import command as call_command
from flowapp.loader import AppLoadError, load_app
from flowapp.logs import configure_logging
from flowapp.recording import command as recording_command
from flowapp.settings import DETECTORS, ServerSettings, SettingsError, env_name
from flowapp.simulation import command as simulate_command
from flowapp.stt import check_recognizer

DEFAULT_APP = "flowapp.default_app:app"
EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    """One sentence, shown in `flowapp --help`."""
    description: str
    """What `flowapp NAME --help` shows above the options: purpose, example, environment."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    COMMANDS[command.name] = command
    return command


# flowapp serve --------------------------------------------------------------------------------------------------

SERVE_DESCRIPTION = """\
Serve a FlowApp over HTTP: the webhook (POST /webhook), the event WebSocket (/ws),
carrier media streams (/media: Twilio-style, live phone calls), the control API (/v1),
/openapi.json and /healthz.

With --app-url the engine drives a remote app instead (any language, sipgate-style): each event
of a media call is POSTed to an http(s):// URL and the actions in the reply are run, or sent over
one WebSocket per call to a ws(s):// URL, whose actions run whenever the app sends them.

example:
  flowapp serve myapp:app --port 8000 --api-token s3cret
  flowapp serve --app-url https://bot.example.com/webhook

environment (a flag wins over its variable; prefer variables for secrets, flags show up in `ps`):
  FLOWAPP_APP, FLOWAPP_HOST, FLOWAPP_PORT, FLOWAPP_API_TOKEN, FLOWAPP_WEBHOOK_SECRET,
  FLOWAPP_CONTROL_TOKEN, FLOWAPP_INSECURE_CONTROL=1, FLOWAPP_MAX_BODY_BYTES,
  FLOWAPP_MAX_WS_MESSAGE_BYTES, FLOWAPP_LOG_LEVEL, FLOWAPP_LOG_FORMAT,
  FLOWAPP_APP_URL, FLOWAPP_APP_API_TOKEN (X-API-TOKEN sent to the remote app),
  FLOWAPP_APP_WEBHOOK_SECRET (sign events to the remote app), FLOWAPP_APP_TIMEOUT (seconds, default 1),
  FLOWAPP_RECOGNIZER, FLOWAPP_VAD_DETECTOR, FLOWAPP_MAX_MEDIA_MESSAGE_BYTES, FLOWAPP_MEDIA_JITTER_FRAMES,
  FLOWAPP_HEADER_TIMEOUT (seconds, default 10), FLOWAPP_BODY_TIMEOUT (seconds, default 30),
  FLOWAPP_MAX_CONNECTIONS (default 1000), FLOWAPP_REDIS_URL (redis://HOST:6379/0: run several instances),
  FLOWAPP_RECORD_DIR, FLOWAPP_RECORD_KEEP (default 100)
every value is checked at startup; a bad one exits with status 2 naming the flag or variable
"""


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "app",
        nargs="?",
        default=os.environ.get("FLOWAPP_APP", DEFAULT_APP),
        help=f"the app to serve as module:attr (default: {DEFAULT_APP}, or FLOWAPP_APP)",
    )
    parser.add_argument(
        "--app-url",
        help="drive the remote app at this URL instead of an in-process app: http(s):// for a webhook, "
        "ws(s):// for the event WebSocket (or FLOWAPP_APP_URL)",
    )
    parser.add_argument(
        "--recognizer",
        type=_recognizer_name,
        help="speech recognizer for media calls: local (default: the built-in Whisper tiny.en), whisper:MODEL "
        "(a faster-whisper model name, hub repository or directory), pocketsphinx, or none (or FLOWAPP_RECOGNIZER)",
    )
    parser.add_argument(
        "--vad",
        dest="vad_detector",
        choices=DETECTORS,
        help="speech detector for media calls (or FLOWAPP_VAD_DETECTOR)",
    )
    parser.add_argument(
        "--redis",
        dest="redis_url",
        help="share session state and live calls with the other instances using this Redis, "
        "redis://HOST:6379/0 (or FLOWAPP_REDIS_URL; put a password in the variable, not the flag)",
    )
    parser.add_argument(
        "--record",
        dest="record_dir",
        metavar="DIR",
        help="record every media call into a folder inside DIR, the caller's voice included (or FLOWAPP_RECORD_DIR)",
    )
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, help="TCP port, 1-65535 (default 8000)")
    parser.add_argument("--api-token", help="require this X-API-TOKEN on the webhook and the WebSocket")
    parser.add_argument("--webhook-secret", help="require an x-sipgate-signature HMAC-SHA256 of each body")
    parser.add_argument("--control-token", help="enable the /v1 control API behind this bearer token")
    parser.add_argument(
        "--insecure-control",
        action="store_true",
        default=None,
        help="enable the control API without auth (trusted networks only)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("FLOWAPP_LOG_LEVEL", "info"),
        choices=_LOG_CHOICES["log_level"],
        help="log verbosity (default info)",
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("FLOWAPP_LOG_FORMAT", "text"),
        choices=_LOG_CHOICES["log_format"],
        help="text: key=value lines for people; json: one object per line for log collectors",
    )


def _recognizer_name(raw: str) -> str:
    try:
        return check_recognizer(raw) or "none"
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_FLAG_FIELDS = (
    "host",
    "port",
    "api_token",
    "webhook_secret",
    "control_token",
    "insecure_control",
    "app_url",
    "recognizer",
    "vad_detector",
    "redis_url",
    "record_dir",
)
_FLAGS = {"vad_detector": "--vad", "redis_url": "--redis", "record_dir": "--record"}
_LOG_CHOICES = {"log_level": ("debug", "info", "warning", "error"), "log_format": ("text", "json")}


def _flag(field: str) -> str:
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def _settings_from(args: argparse.Namespace) -> ServerSettings:
    """The environment's settings with the given flags on top, validated together; an error names the flag or
    the variable the bad value came from."""
    flags = {name: value for name in _FLAG_FIELDS if (value := getattr(args, name)) is not None}
    try:
        return ServerSettings.from_env(**flags)
    except SettingsError as exc:
        raise SettingsError(exc.problems, lambda field: _flag(field) if field in flags else env_name(field)) from None


def _check_log_options(args: argparse.Namespace) -> None:
    """argparse checks a flag against its choices but not a default taken from the environment."""
    for name, choices in _LOG_CHOICES.items():
        value = getattr(args, name)
        if value not in choices:
            raise SettingsError({name: f"must be one of {', '.join(choices)}, got {value!r}"})


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from flowapp.server import create_server, uvicorn_config

    try:
        _check_log_options(args)
        settings = _settings_from(args)
        app = FlowApp() if settings.app_url else load_app(args.app)
    except (SettingsError, AppLoadError) as exc:
        print(f"flowapp serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if settings.record_dir is not None:
        from flowapp.recording.store import RecordingError, recorder_for

        try:
            recorder_for(settings.record_dir, settings.record_keep)
        except RecordingError as exc:
            print(
                f"flowapp serve: error: {_flag('record_dir') if args.record_dir else env_name('record_dir')}: {exc}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    configure_logging(args.log_level, args.log_format)
    if settings.recognizer is not None:
        from flowapp.stt import make_recognizer
        from flowapp.stt.whisper import ModelError

        try:
            make_recognizer(settings.recognizer, live=True, workers=settings.recognizer_workers)
        except (ModelError, ImportError) as exc:
            print(f"flowapp serve: error: recognizer {settings.recognizer!r}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    config = uvicorn_config(create_server(app, settings), settings, log_config=None, log_level=args.log_level)
    uvicorn.Server(config).run()
    return 0


register(
    Command(
        name="serve",
        summary="serve an app over the webhook, the event WebSocket and the control API",
        description=SERVE_DESCRIPTION,
        add_arguments=_serve_arguments,
        run=_serve,
    )
)


register(
    Command(
        name="simulate",
        summary="run one call from a scenario file through the engine and print its timeline",
        description=simulate_command.DESCRIPTION,
        add_arguments=simulate_command.add_arguments,
        run=simulate_command.run,
    )
)


register(
    Command(
        name="replay",
        summary="run a recorded call through the engine again, with its own or other settings",
        description=recording_command.REPLAY_DESCRIPTION,
        add_arguments=recording_command.add_replay_arguments,
        run=recording_command.run_replay,
    )
)


register(
    Command(
        name="timeline",
        summary="draw a recorded call as a picture: waveforms, VAD, transcripts, items and barge-ins",
        description=recording_command.TIMELINE_DESCRIPTION,
        add_arguments=recording_command.add_timeline_arguments,
        run=recording_command.run_timeline,
    )
)


register(
    Command(
        name="call",
        summary="place a live call to a running server as a carrier would, streaming a WAV as the caller",
        description=call_command.DESCRIPTION,
        add_arguments=call_command.add_arguments,
        run=call_command.run,
    )
)


# entry point ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowapp",
        description="Phone-call voice apps in Python, speaking the sipgate AI Flow event/action protocol.",
        epilog="example: flowapp serve myapp:app --port 8000\nrun 'flowapp COMMAND --help' for a command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flowapp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        sub = commands.add_parser(
            command.name,
            help=command.summary,
            description=command.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
