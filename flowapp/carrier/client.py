"""A carrier's side of a media stream: what `flowapp call` uses to place a call to a running server.

It speaks the Twilio-style protocol `/media` accepts: it streams the caller's audio at real-time pace, plays
the assistant's audio on a carrier's clock (a `mark` is echoed once the audio before it has played, `clear`
drops what was not played yet), and reports each thing it sees, so a person or a script can follow the call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from flowapp.audio.frames import FRAME_SAMPLES, SAMPLE_RATE, Pcm
from flowapp.audio.g711 import ulaw_decode, ulaw_encode

FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
DEFAULT_PORT = 8000
"""The port of a bare `host` target: the one `flowapp serve` listens on by default."""
CLOSE_WAIT_SECONDS = 5.0
"""How long to wait, after `stop`, for the server to close the stream."""
NEW_BURST_SAMPLES = SAMPLE_RATE // 5
"""Silence longer than this (200 ms) before an assistant frame makes it the start of new speech."""

Report = Callable[[dict[str, Any]], None]


def media_url(target: str) -> str:
    """The WebSocket URL of a server's `/media`, from `host[:port]`, an http(s) base URL or a ws(s) URL."""
    target = target.strip()
    bare = "://" not in target
    parts = urlsplit("ws://" + target if bare else target)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"{target!r}: use host[:port], or an http://, https://, ws:// or wss:// URL")
    if not parts.hostname:
        raise ValueError(f"{target!r} names no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{target!r} has an invalid port") from None
    netloc = f"{parts.netloc}:{DEFAULT_PORT}" if bare and port is None else parts.netloc
    path = parts.path if parts.path not in ("", "/") else "/media"
    return urlunsplit((scheme, netloc, path, parts.query, ""))


@dataclass
class HeardFrame:
    start: int
    """Where the frame starts on the call's clock, in samples."""
    pcm: Pcm


@dataclass
class CallOutcome:
    ended_by: str
    """`carrier` (the caller's side sent `stop`) or `server` (it closed the stream, e.g. after a hangup)."""
    close_code: int | None
    close_reason: str
    heard: list[HeardFrame] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.close_code in (None, 1000)

    def assistant_audio(self) -> Pcm:
        """What the caller heard, on the call's clock: gaps where the assistant was silent stay silent."""
        if not self.heard:
            return np.zeros(0, dtype=np.int16)
        end = max(frame.start + len(frame.pcm) for frame in self.heard)
        audio = np.zeros(end, dtype=np.int16)
        for frame in self.heard:
            audio[frame.start : frame.start + len(frame.pcm)] = frame.pcm
        return audio


class CarrierCall:
    """One call on an open `/media` WebSocket, from `start` to `stop` (or until the server closes it)."""

    def __init__(self, ws: ClientConnection, session_id: str, report: Report) -> None:
        self.ws = ws
        self.session_id = session_id
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.call_sid = "CA" + uuid.uuid4().hex
        self.report = report
        self.heard: list[HeardFrame] = []
        self._t0 = time.monotonic()
        self._playhead = 0
        self._speaking = False
        self._pending_marks: dict[str, asyncio.TimerHandle] = {}
        self._sends: set[asyncio.Task[None]] = set()

    def now_ms(self) -> int:
        return round((time.monotonic() - self._t0) * 1000)

    def _now_samples(self) -> int:
        return round((time.monotonic() - self._t0) * SAMPLE_RATE)

    def _emit(self, event: str, **fields: Any) -> None:
        self.report({"t_ms": self.now_ms(), "event": event, **fields})

    async def run(self, caller: Pcm, *, wait_seconds: float) -> CallOutcome:
        """Stream `caller`, then silence for `wait_seconds`, then `stop`; a server that closes first ends it."""
        reader = asyncio.create_task(self._read())
        try:
            await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            await self._send(self._start_message())
            self._emit("started", session_id=self.session_id, stream_sid=self.stream_sid)
            silence = np.zeros(round(wait_seconds * SAMPLE_RATE), dtype=np.int16)
            if await self._stream(caller, reader):
                self._emit("caller_audio_ended")
                await self._stream(silence, reader)
            ended_by = "server" if reader.done() else "carrier"
            if not reader.done():
                with suppress(ConnectionClosed):
                    await self._send(
                        {"event": "stop", "streamSid": self.stream_sid, "stop": {"callSid": self.call_sid}}
                    )
                with suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), CLOSE_WAIT_SECONDS)
        finally:
            reader.cancel()
            for handle in self._pending_marks.values():
                handle.cancel()
            await self.ws.close()
        outcome = CallOutcome(ended_by, self.ws.close_code, self.ws.close_reason or "", self.heard)
        self._emit(
            "ended",
            ended_by=ended_by,
            close_code=outcome.close_code,
            close_reason=outcome.close_reason,
            assistant_ms=sum(len(frame.pcm) for frame in self.heard) * 1000 // SAMPLE_RATE,
        )
        return outcome

    def _start_message(self) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": {"session_id": self.session_id, "direction": "inbound"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1},
            },
        }

    def _stop_message(self) -> dict[str, Any]:
        return {"event": "stop", "streamSid": self.stream_sid, "stop": {"callSid": self.call_sid}}

    async def _stream(self, pcm: Pcm, reader: asyncio.Task[None]) -> bool:
        """One 20 ms frame at a time on a real-time schedule; False once the stream is closed."""
        frames = -(-len(pcm) // FRAME_SAMPLES)
        padded = np.zeros(frames * FRAME_SAMPLES, dtype=np.int16)
        padded[: len(pcm)] = pcm
        start = time.monotonic()
        for k in range(frames):
            if reader.done():
                return False
            delay = start + k * FRAME_SECONDS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = base64.b64encode(ulaw_encode(padded[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES])).decode()
            try:
                await self._send({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})
            except ConnectionClosed:
                return False
        return not reader.done()

    async def _send(self, data: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(data))

    async def _read(self) -> None:
        with suppress(ConnectionClosed):
            async for raw in self.ws:
                try:
                    data = json.loads(raw)
                except (ValueError, TypeError):
                    self._emit("unreadable_message")
                    continue
                if isinstance(data, dict):
                    self._received(data)

    def _received(self, data: dict[str, Any]) -> None:
        event = data.get("event")
        now = self._now_samples()
        if event == "media":
            self._play(data.get("media"), now)
        elif event == "mark":
            mark = data.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if isinstance(name, str):
                delay = max(0, self._playhead - now) / SAMPLE_RATE
                self._pending_marks[name] = asyncio.get_running_loop().call_later(delay, self._echo, name)
        elif event == "clear":
            unplayed = [frame for frame in self.heard if frame.start >= now]
            del self.heard[len(self.heard) - len(unplayed) :]
            self._playhead = min(self._playhead, now)
            self._speaking = False
            self._emit("clear", dropped_ms=len(unplayed) * 1000 * FRAME_SAMPLES // SAMPLE_RATE)
            for name, handle in list(self._pending_marks.items()):
                handle.cancel()
                self._echo(name)
        else:
            self._emit(str(event), message=data)

    def _play(self, media: object, now: int) -> None:
        payload = media.get("payload") if isinstance(media, dict) else None
        try:
            ulaw = binascii.a2b_base64(payload) if isinstance(payload, str) else b""
        except ValueError:
            ulaw = b""
        if not ulaw:
            self._emit("unreadable_media")
            return
        if not self._speaking or self._playhead + NEW_BURST_SAMPLES < now:
            self._emit("assistant_audio")
            self._speaking = True
        start = max(self._playhead, now)
        pcm = ulaw_decode(ulaw)
        self.heard.append(HeardFrame(start, pcm))
        self._playhead = start + len(pcm)

    def _echo(self, name: str) -> None:
        """The audio before this mark has played: tell the server, as a carrier does."""
        self._pending_marks.pop(name, None)
        self._emit("mark", name=name)
        task = asyncio.ensure_future(
            self._send_quietly({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
        )
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send_quietly(self, data: dict[str, Any]) -> None:
        with suppress(ConnectionClosed):
            await self._send(data)
