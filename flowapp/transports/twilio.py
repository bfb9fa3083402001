"""The outbound half of Twilio's media-stream protocol: `media`, `mark` and `clear`, and what the marks say.

The carrier buffers what it is sent and echoes each mark when it has played up to it, so the echoes are the
only knowledge of how much the caller has heard; `clear` empties its buffer on a barge-in.
"""

from __future__ import annotations

import binascii
import json
import time
from collections.abc import Callable
from typing import Protocol

from flowapp.audio.frames import FRAME_MS

NORMAL_CLOSURE = 1000
MARK_EVERY_FRAMES = 10
"""A mark every 200 ms of sent audio bounds how stale the knowledge of what the caller heard can get."""
MARK_PREFIX = "flowapp-"


class TextSender(Protocol):
    """Sends WebSocket text frames from synchronous code, in order, without blocking."""

    def text(self, data: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class Playout:
    """What the carrier has played of the audio sent to it, from its mark echoes.

    Marks carry the count of frames sent before them. Between echoes the carrier keeps playing in real
    time, so the estimate advances with the clock, never past what was sent. A carrier that never echoes
    marks is taken to play everything at once (nothing unheard) rather than nothing at all.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.sent = 0
        self.heard = 0
        self._heard_at: float | None = None
        self._cleared_at = 0
        self._last_mark = 0

    def sent_frame(self) -> None:
        self.sent += 1

    def mark_due(self, boundary: bool) -> str | None:
        """A mark name to send now: at an item boundary, or every `MARK_EVERY_FRAMES` sent frames."""
        if self.sent == self._last_mark:
            return None
        if boundary or self.sent - self._last_mark >= MARK_EVERY_FRAMES:
            self._last_mark = self.sent
            return f"{MARK_PREFIX}{self.sent}"
        return None

    def echoed(self, name: str) -> bool:
        """A mark came back; marks flushed by a `clear` (or not ours) say nothing about playout."""
        if not name.startswith(MARK_PREFIX):
            return False
        try:
            frames = int(name[len(MARK_PREFIX) :])
        except ValueError:
            return False
        if frames <= self._cleared_at or frames > self.sent:
            return False
        self.heard = max(self.heard, frames)
        self._heard_at = self.clock()
        return True

    def cleared(self) -> None:
        """After `clear` the carrier holds nothing: earlier marks are flushed, not played."""
        self._cleared_at = self.sent
        self._last_mark = self.sent
        self.heard = self.sent
        self._heard_at = self.clock()

    def unheard_ms(self) -> int:
        if self._heard_at is None:
            return 0
        elapsed_frames = round((self.clock() - self._heard_at) * 1000) // FRAME_MS
        heard = min(self.sent, self.heard + elapsed_frames)
        return (self.sent - heard) * FRAME_MS


class CarrierOutlet:
    """A live call's `Outlet` on a media stream; message prefixes are built once per stream.

    Nothing goes out while nothing plays: the carrier fills the silence itself.
    """

    def __init__(self, sender: TextSender, stream_sid: str, clock: Callable[[], float] = time.monotonic) -> None:
        sid = json.dumps(stream_sid)
        self.sender = sender
        self.playout = Playout(clock)
        self._media = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"

    def send(self, ulaw: bytes | None, *, boundary: bool) -> None:
        if ulaw is None:
            return
        self.sender.text(self._media + binascii.b2a_base64(ulaw, newline=False).decode("ascii") + '"}}')
        self.playout.sent_frame()
        name = self.playout.mark_due(boundary)
        if name is not None:
            self.sender.text(self._mark + json.dumps(name) + "}}")

    def drop_queued(self) -> None:
        self.sender.text(self._clear)
        self.playout.cleared()

    def unheard_ms(self) -> int:
        return self.playout.unheard_ms()

    def mark_echoed(self, name: str) -> None:
        self.playout.echoed(name)

    def close(self, reason: str) -> None:
        self.sender.close(NORMAL_CLOSURE, reason)
