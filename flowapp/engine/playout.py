"""The playout stage: the queue, the item playing and the next outbound frame.

It knows nothing of the caller: the engine tells it to hold, resume or stop the item, and it reports what it
drops (`ItemsDropped`) through a callback and which item or control action is due (`next_due`) by return.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES
from flowapp.audio.limits import MAX_QUEUED_SECONDS
from flowapp.audio.mixer import LoopingSource, mix
from flowapp.engine.playback import ControlItem, PlaybackItem, PlaybackQueue, QueueItem
from flowapp.engine.render import Rendered
from flowapp.protocol.actions import Audio, BargeIn, Hangup, Speak, Transfer

_QUEUED = (Speak, Audio, Hangup, Transfer)
"""Actions that wait their turn in the playback queue."""

_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)

DropReason = Literal["newer_turn", "stale_reply", "clear_queue", "queue_full"]


@dataclass(frozen=True)
class ItemsDropped:
    """Queued audio or control actions that will never play."""

    reason: DropReason
    items: int


@dataclass(frozen=True)
class Reply:
    """One reply's actions as admitted for playout: numbered, and without audio that came too late."""

    rendered: list[Rendered]
    reply_id: int
    turn: int


class Playout:
    def __init__(self, log: logging.LoggerAdapter[logging.Logger], on_dropped: Callable[[ItemsDropped], None]) -> None:
        self.queue = PlaybackQueue()
        self.current: PlaybackItem | None = None
        self.held = False
        """The current item is paused: frames are silence (besides the background) until it resumes or stops."""
        self._background: LoopingSource | None = None
        self._background_volume = 0.0
        self._reply_counter = 0
        self._answered_turn = 0
        self._log = log
        self._on_dropped = on_dropped

    # Admitting replies ----------------------------------------------------------------------------

    def admit(self, rendered: list[Rendered], turn: int | None) -> Reply:
        """Number a reply and settle which turn it answers (see `CallEngine.apply`): a newer turn's reply drops
        what is queued for older ones; an older turn's reply, arriving late, loses its audio."""
        turn = self._answered_turn if turn is None else turn
        if turn > self._answered_turn:
            self._answered_turn = turn
            self._dropped(self.queue.drop_older(turn), "newer_turn")
        elif turn < self._answered_turn:
            kept = [r for r in rendered if not isinstance(r.action, _QUEUED)]
            if len(kept) < len(rendered):
                self._log.info("reply to an earlier caller turn arrived after a newer one's; its audio is dropped")
                self._on_dropped(ItemsDropped("stale_reply", len(rendered) - len(kept)))
            rendered = kept
        self._reply_counter += 1
        return Reply(rendered, self._reply_counter, turn)

    def enqueue_audio(self, rendered: Rendered, reply: Reply, default_barge_in: BargeIn) -> None:
        action = rendered.action
        assert isinstance(action, Speak | Audio)
        if rendered.pcm is None:
            self._log.error("%s skipped: %s", action.type, rendered.problem or "no audio")
            return
        if self.queued_ms + len(rendered.pcm) // 8 > MAX_QUEUED_SECONDS * 1000:
            self._log.error("%s skipped: the call already holds %d s of audio to play", action.type, MAX_QUEUED_SECONDS)
            self._on_dropped(ItemsDropped("queue_full", 1))
            return
        speak = action if isinstance(action, Speak) else None
        self.queue.append(
            PlaybackItem(
                action=action,
                pcm=rendered.pcm,
                barge_in=action.barge_in or default_barge_in,
                reply_id=reply.reply_id,
                turn=reply.turn,
                text=speak.text if speak is not None else None,
                ssml=speak.ssml if speak is not None else None,
                user_input_timeout_seconds=speak.user_input_timeout_seconds if speak is not None else None,
            )
        )

    def enqueue_control(self, action: Hangup | Transfer, reply: Reply) -> None:
        self.queue.append(ControlItem(action=action, reply_id=reply.reply_id, turn=reply.turn))

    def clear(self) -> None:
        self._dropped(self.queue.clear(), "clear_queue")

    def mix(self, pcm: np.ndarray | None, volume: float) -> None:
        """A background loop under everything played (None: stop it)."""
        if pcm is None:
            self._background = None
        else:
            self._background = LoopingSource(pcm)
            self._background_volume = volume

    # Playing --------------------------------------------------------------------------------------

    def next_due(self, now_ms: int) -> QueueItem | None:
        """With nothing playing, the head of the queue: an item, which starts now, or a control action for the
        engine to carry out. None while an item plays or the queue is empty."""
        if self.current is not None or not len(self.queue):
            return None
        head = self.queue.pop()
        if isinstance(head, PlaybackItem):
            self.current = head
            head.started_ms = now_ms
        return head

    def frame(self) -> np.ndarray:
        """The next 20 ms out: the current item's audio unless it is held, under it the background loop."""
        current = self.current
        frame = current.next_frame() if current is not None and not self.held else _SILENCE
        if self._background is not None:
            frame = mix(frame, self._background.next_frame(), self._background_volume)
        return frame

    def hold(self, rewind_ms: int) -> None:
        """Pause the current item, `rewind_ms` back (audio the caller never heard is played again on resume)."""
        item = self.current
        assert item is not None
        unheard_frames = rewind_ms // FRAME_MS
        item.position = max(0, item.position - unheard_frames * FRAME_SAMPLES)
        self.held = True

    def release(self) -> None:
        self.held = False

    def finish(self) -> PlaybackItem:
        """The current item is over (played out, interrupted or the call ended)."""
        item = self.current
        assert item is not None
        self.current = None
        self.held = False
        return item

    def drop_reply(self, reply_id: int) -> None:
        """A barge-in on one item cancels the rest of its reply."""
        dropped = self.queue.drop_reply(reply_id)
        if dropped:
            self._log.info("barge-in dropped %d queued item(s) of the same reply", len(dropped))

    # State ----------------------------------------------------------------------------------------

    @property
    def queued_ms(self) -> int:
        """Audio still to play: the rest of the current item and everything queued."""
        current = self.current
        rest = current.duration_ms - current.played_ms if current is not None else 0
        return rest + self.queue.audio_ms

    @property
    def playing(self) -> bool:
        return self.current is not None and not self.held

    @property
    def audible(self) -> bool:
        """The next frame may carry sound (speech, queued speech or a background loop)."""
        return self.playing or len(self.queue) > 0 or self._background is not None

    def _dropped(self, items: list[QueueItem], reason: DropReason) -> None:
        if items:
            self._log.info("%d queued item(s) dropped (%s)", len(items), reason)
            self._on_dropped(ItemsDropped(reason, len(items)))
