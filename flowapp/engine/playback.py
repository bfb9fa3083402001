"""The per-call playback queue: what the assistant will say, in order, to the frame."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES
from flowapp.protocol.actions import Action, BargeIn


@dataclass
class PlaybackItem:
    """One `speak` or `audio` action rendered to 8 kHz PCM."""

    action: Action
    pcm: np.ndarray
    barge_in: BargeIn
    reply_id: int
    turn: int = 0
    """The caller turn its reply answers (see `CallEngine.apply`)."""
    text: str | None = None
    ssml: str | None = None
    user_input_timeout_seconds: float | None = None
    position: int = 0
    """Samples already handed out for playout."""
    started_ms: int | None = None

    @property
    def duration_ms(self) -> int:
        return -(-len(self.pcm) // FRAME_SAMPLES) * FRAME_MS

    @property
    def played_ms(self) -> int:
        return min(self.position // FRAME_SAMPLES * FRAME_MS, self.duration_ms)

    @property
    def finished(self) -> bool:
        return self.position >= len(self.pcm)

    def next_frame(self) -> np.ndarray:
        frame = self.pcm[self.position : self.position + FRAME_SAMPLES]
        self.position += FRAME_SAMPLES
        if len(frame) < FRAME_SAMPLES:
            frame = np.concatenate([frame, np.zeros(FRAME_SAMPLES - len(frame), dtype=np.int16)])
        return frame

    def heard_text(self, played_ms: int | None = None) -> str:
        """Best estimate of the words the caller heard: the text cut in proportion to the audio played."""
        text = self.text if self.text is not None else _strip_tags(self.ssml or "")
        played = self.played_ms if played_ms is None else played_ms
        if not text or self.duration_ms == 0:
            return ""
        if played >= self.duration_ms:
            return text
        cut = int(len(text) * played / self.duration_ms)
        words = text[:cut].split()
        # A word cut mid-way was not heard whole: keep only complete words.
        if cut < len(text) and not text[cut].isspace() and words:
            words = words[:-1]
        return " ".join(words)


class QueueFull(RuntimeError):
    """The call already holds as much audio waiting to play as it may (`MAX_QUEUED_SECONDS`)."""


@dataclass
class ControlItem:
    """A `hangup` or `transfer`: it waits for the audio queued before it, then takes effect."""

    action: Action
    reply_id: int
    turn: int = 0


QueueItem = PlaybackItem | ControlItem


@dataclass
class PlaybackQueue:
    items: deque[QueueItem] = field(default_factory=deque)

    def append(self, item: QueueItem) -> None:
        self.items.append(item)

    def head(self) -> QueueItem | None:
        return self.items[0] if self.items else None

    def pop(self) -> QueueItem:
        return self.items.popleft()

    def drop_reply(self, reply_id: int) -> list[QueueItem]:
        """Remove the queued items of one reply; a barge-in on one item cancels the rest of its reply."""
        dropped = [item for item in self.items if item.reply_id == reply_id]
        self.items = deque(item for item in self.items if item.reply_id != reply_id)
        return dropped

    def drop_older(self, turn: int) -> list[QueueItem]:
        """Remove the queued items that answer caller turns before `turn`."""
        dropped = [item for item in self.items if item.turn < turn]
        self.items = deque(item for item in self.items if item.turn >= turn)
        return dropped

    def clear(self) -> list[QueueItem]:
        dropped, self.items = list(self.items), deque()
        return dropped

    @property
    def audio_ms(self) -> int:
        return sum(item.duration_ms - item.played_ms for item in self.items if isinstance(item, PlaybackItem))

    def __iter__(self) -> Iterator[QueueItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _strip_tags(ssml: str) -> str:
    out: list[str] = []
    inside = False
    for ch in ssml:
        if ch == "<":
            inside = True
        elif ch == ">":
            inside = False
            out.append(" ")
        elif not inside:
            out.append(ch)
    return " ".join("".join(out).split())
