"""A test carrier: speaks the media-stream protocol over a real WebSocket, as Twilio-style carriers do.

It streams 8 kHz audio at real-time pace, records every message it receives with its arrival time, and
plays the received audio on a simulated clock: a mark is echoed when the audio before it has played,
`clear` empties the buffer and echoes the pending marks at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from flowapp.audio.frames import FRAME_SAMPLES, Pcm
from flowapp.audio.g711 import ulaw_encode

FRAME_SECONDS = 0.02


@dataclass
class Received:
    at: float
    data: dict[str, Any]

    @property
    def event(self) -> str:
        return str(self.data.get("event"))


class Carrier:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.received: list[Received] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.echoed_marks: list[str] = []
        self._play_until = 0.0
        self._pending_marks: dict[str, asyncio.TimerHandle] = {}
        self._reader: asyncio.Task[None] | None = None
        self._echoes: set[asyncio.Task[None]] = set()

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, url: str, custom: dict[str, str] | None = None, *, start: bool = True, path: str = "/media"
    ) -> AsyncIterator[Carrier]:
        async with connect(url + path, compression=None) as ws:  # as carriers connect: no permessage-deflate
            carrier = cls(ws)
            carrier._reader = asyncio.create_task(carrier._read())
            if start:
                await carrier.start(custom or {})
            try:
                yield carrier
            finally:
                carrier._reader.cancel()

    async def send(self, data: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(data))

    async def start(self, custom: dict[str, str]) -> None:
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": self.stream_sid,
                "start": {
                    "streamSid": self.stream_sid,
                    "accountSid": "AC123",
                    "callSid": "CA" + uuid.uuid4().hex,
                    "tracks": ["inbound"],
                    "customParameters": custom,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )

    def media_message(self, ulaw: bytes) -> dict[str, Any]:
        payload = base64.b64encode(ulaw).decode("ascii")
        return {"event": "media", "streamSid": self.stream_sid, "media": {"track": "inbound", "payload": payload}}

    async def stream(self, pcm: Pcm, *, until: Callable[[], bool] | None = None) -> None:
        """Send audio one 20 ms frame at a time on a real-time schedule, as a carrier does."""
        frames = -(-len(pcm) // FRAME_SAMPLES)
        padded = np.zeros(frames * FRAME_SAMPLES, dtype=np.int16)
        padded[: len(pcm)] = pcm
        start = time.monotonic()
        for k in range(frames):
            if until is not None and until():
                return
            delay = start + k * FRAME_SECONDS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = padded[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES]
            try:
                await self.send(self.media_message(ulaw_encode(frame)))
            except ConnectionClosed:
                return

    async def silence(self, seconds: float) -> None:
        await self.stream(np.zeros(int(seconds * 8000), dtype=np.int16))

    async def dtmf(self, digit: str) -> None:
        dtmf = {"track": "inbound_track", "digit": digit}
        await self.send({"event": "dtmf", "streamSid": self.stream_sid, "dtmf": dtmf})

    async def stop(self) -> None:
        await self.send({"event": "stop", "streamSid": self.stream_sid, "stop": {"accountSid": "AC123"}})

    # What came back ---------------------------------------------------------------------------------

    def events(self, name: str) -> list[Received]:
        return [r for r in self.received if r.event == name]

    def index_of(self, name: str) -> int:
        return next(i for i, r in enumerate(self.received) if r.event == name)

    async def wait_for(self, name: str, count: int = 1, timeout: float = 5.0) -> Received:
        deadline = time.monotonic() + timeout
        while len(self.events(name)) < count:
            if time.monotonic() > deadline:
                seen = sorted({r.event for r in self.received})
                raise AssertionError(f"no {count}x {name!r} within {timeout} s; received {seen}")
            await asyncio.sleep(0.01)
        return self.events(name)[count - 1]

    async def closed(self, timeout: float = 5.0) -> None:
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for raw in self.ws:
                data = json.loads(raw)
                now = time.monotonic()
                self.received.append(Received(now, data))
                event = data.get("event")
                if event == "media":
                    self._play_until = max(self._play_until, now) + FRAME_SECONDS
                elif event == "mark":
                    name = data["mark"]["name"]
                    delay = max(0.0, self._play_until - now)
                    self._pending_marks[name] = loop.call_later(delay, self._echo, name)
                elif event == "clear":
                    self._play_until = now
                    for name, handle in list(self._pending_marks.items()):
                        handle.cancel()
                        self._echo(name)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason

    def _echo(self, name: str) -> None:
        self._pending_marks.pop(name, None)
        self.echoed_marks.append(name)
        if self.ws.close_code is None:
            echo = {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
            task = asyncio.ensure_future(self._send_quietly(echo))
            self._echoes.add(task)
            task.add_done_callback(self._echoes.discard)

    async def _send_quietly(self, data: dict[str, Any]) -> None:
        with suppress(ConnectionClosed):
            await self.send(data)
