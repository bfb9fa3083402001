"""`flowapp call TARGET --audio caller.wav`: act as the carrier of one live call to a running server."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from flowapp.audio.errors import AudioFormatError
from flowapp.audio.frames import Pcm
from flowapp.audio.wav import decode_wav, encode_wav
from flowapp.carrier.client import CallOutcome, CarrierCall, media_url

EXIT_FAILED = 1
EXIT_INVALID = 2
CONNECT_TIMEOUT_SECONDS = 10.0

DESCRIPTION = """\
Place one live call to a running flowapp server, as a carrier would: connect to its /media
WebSocket, stream a WAV file as the caller at real-time pace (then silence for --wait seconds),
play the assistant's audio on a carrier's clock (echoing marks, obeying clear), and print what
happens as JSON lines: started (with the session id, for the control API), assistant_audio,
mark, clear, caller_audio_ended, ended. The call ends with a stop, or when the server hangs up.

example:
  flowapp call localhost:8000 --audio caller.wav --save assistant.wav

TARGET is host[:port] (port 8000 if none), an http(s):// base URL or a ws(s):// URL (path /media
if none). The audio may be any PCM WAV; it is sent as 8 kHz mu-law.

environment: FLOWAPP_API_TOKEN (the X-API-TOKEN to send, if the server wants one; --token wins)
Bad arguments, an unreadable WAV or a server that cannot be reached exit with status 2; a call the
server closes with an error exits with 1.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="the server: host[:port], http(s)://host[:port] or ws(s)://host[:port]/media")
    parser.add_argument("--audio", type=Path, required=True, help="what the caller says: a PCM WAV file")
    parser.add_argument("--save", type=Path, help="write what the caller heard from the assistant to this 8 kHz WAV")
    parser.add_argument(
        "--wait",
        type=_seconds,
        default=5.0,
        help="seconds of silence to stream after the audio, for the assistant to answer (default 5)",
    )
    parser.add_argument(
        "--session-id", type=_session_id, help="the call's session id (a UUID; default: a new random one)"
    )
    parser.add_argument("--token", help="the server's API token, sent as X-API-TOKEN (or FLOWAPP_API_TOKEN)")


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{raw} is outside 0..3600 seconds")
    return value


def _session_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a UUID") from None


def _fail(message: str, status: int = EXIT_INVALID) -> int:
    print(f"flowapp call: error: {message}", file=sys.stderr)
    return status


def _print_json(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        url = media_url(args.target)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        caller = decode_wav(args.audio.read_bytes())
    except OSError as exc:
        return _fail(f"cannot read {args.audio}: {exc.strerror or exc}")
    except AudioFormatError as exc:
        return _fail(f"{args.audio}: {exc}")
    if args.save is not None and not args.save.parent.resolve().is_dir():
        return _fail(f"cannot save to {args.save}: {args.save.parent} is not a directory")
    token = args.token or os.environ.get("FLOWAPP_API_TOKEN")
    session_id = args.session_id or str(uuid.uuid4())
    try:
        outcome = asyncio.run(_call(url, caller, session_id, token, args.wait))
    except ConnectError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    if args.save is not None:
        args.save.write_bytes(encode_wav(outcome.assistant_audio()))
    if not outcome.clean:
        return _fail(f"the server closed the call with {outcome.close_code}: {outcome.close_reason}", EXIT_FAILED)
    return 0


class ConnectError(Exception):
    """The server could not be reached, or refused the WebSocket."""


async def _call(url: str, caller: Pcm, session_id: str, token: str | None, wait_seconds: float) -> CallOutcome:
    headers = {"X-API-TOKEN": token} if token else None
    try:
        ws = await connect(url, additional_headers=headers, open_timeout=CONNECT_TIMEOUT_SECONDS, compression=None)
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = " (wrong or missing --token?)" if status in (401, 403) else ""
        raise ConnectError(f"{url} refused the media stream: HTTP {status}{hint}") from None
    except (OSError, TimeoutError, InvalidURI, InvalidHandshake) as exc:
        raise ConnectError(f"cannot connect to {url}: {exc}") from None
    return await CarrierCall(ws, session_id, _print_json).run(caller, wait_seconds=wait_seconds)
