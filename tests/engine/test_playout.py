"""The playout stage alone: queue, frames out, dropped replies, held items; no caller, no VAD."""

from __future__ import annotations

import logging

import numpy as np

from flowapp.audio.frames import FRAME_SAMPLES
from flowapp.engine.playback import ControlItem, PlaybackItem
from flowapp.engine.playout import ItemsDropped, Playout
from flowapp.engine.render import Rendered
from flowapp.logs import call_logger
from flowapp.protocol.actions import Audio, BargeIn, ClearQueue, Hangup, Speak

DEFAULT = BargeIn.min_characters(3)


def tone(frames: int, level: int) -> np.ndarray:
    return np.full(frames * FRAME_SAMPLES, level, dtype=np.int16)


def speak(text: str, frames: int, level: int) -> Rendered:
    return Rendered(Speak(text=text), tone(frames, level))


def make() -> tuple[Playout, list[ItemsDropped]]:
    dropped: list[ItemsDropped] = []
    return Playout(call_logger(logging.getLogger("test"), "s"), dropped.append), dropped


def offer(playout: Playout, rendered: list[Rendered], turn: int | None) -> None:
    reply = playout.admit(rendered, turn)
    for r in reply.rendered:
        if isinstance(r.action, Speak | Audio):
            playout.enqueue_audio(r, reply, DEFAULT)
        elif isinstance(r.action, Hangup):
            playout.enqueue_control(r.action, reply)
        elif isinstance(r.action, ClearQueue):
            playout.clear()


def play(playout: Playout, frames: int, now_ms: int = 0) -> list[int]:
    """The level of each frame out, starting due items as the engine does."""
    levels = []
    for i in range(frames):
        while playout.next_due(now_ms + 20 * i) is not None:
            pass
        levels.append(int(playout.frame()[0]))
        current = playout.current
        if current is not None and current.finished:
            playout.finish()
    return levels


def test_items_play_in_order_then_silence() -> None:
    playout, dropped = make()
    offer(playout, [speak("one", 2, 100), speak("two", 1, 200)], turn=0)
    assert playout.queued_ms == 60
    assert playout.audible and not playout.playing
    assert play(playout, 5) == [100, 100, 200, 0, 0]
    assert playout.queued_ms == 0 and not playout.audible and dropped == []


def test_an_item_starts_when_it_comes_due() -> None:
    playout, _ = make()
    offer(playout, [speak("one", 1, 100)], turn=0)
    due = playout.next_due(340)
    assert isinstance(due, PlaybackItem) and due.started_ms == 340 and playout.current is due
    assert playout.next_due(360) is None


def test_a_control_item_waits_for_the_audio_before_it() -> None:
    playout, _ = make()
    offer(playout, [speak("bye", 1, 100), Rendered(Hangup())], turn=0)
    assert isinstance(playout.next_due(0), PlaybackItem)
    assert playout.next_due(0) is None
    playout.frame()
    playout.finish()
    assert isinstance(playout.next_due(20), ControlItem)


def test_a_reply_to_an_older_turn_loses_its_audio() -> None:
    playout, dropped = make()
    offer(playout, [speak("new", 1, 100)], turn=2)
    offer(playout, [speak("old", 1, 200), Rendered(Hangup())], turn=1)
    assert dropped == [ItemsDropped("stale_reply", 2)]
    assert play(playout, 2) == [100, 0]


def test_a_reply_to_a_newer_turn_drops_what_older_turns_queued() -> None:
    playout, dropped = make()
    offer(playout, [speak("a", 1, 100), speak("b", 1, 200)], turn=1)
    offer(playout, [speak("c", 1, 300)], turn=2)
    assert dropped == [ItemsDropped("newer_turn", 2)]
    assert play(playout, 2) == [300, 0]


def test_pushed_actions_join_the_newest_turn() -> None:
    playout, dropped = make()
    offer(playout, [speak("a", 1, 100)], turn=3)
    reply = playout.admit([speak("pushed", 1, 200)], None)
    assert (reply.turn, reply.reply_id) == (3, 2)
    assert dropped == []


def test_clear_queue_drops_queued_items_not_the_one_playing() -> None:
    playout, dropped = make()
    offer(playout, [speak("a", 3, 100), speak("b", 1, 200)], turn=0)
    assert play(playout, 1) == [100]
    offer(playout, [Rendered(ClearQueue())], turn=None)
    assert dropped == [ItemsDropped("clear_queue", 1)]
    assert play(playout, 3) == [100, 100, 0]


def test_a_barge_in_drops_the_rest_of_the_reply_only() -> None:
    playout, _ = make()
    offer(playout, [speak("a", 2, 100), speak("b", 1, 200)], turn=0)
    offer(playout, [speak("c", 1, 300)], turn=None)
    assert play(playout, 1) == [100]
    item = playout.finish()
    playout.drop_reply(item.reply_id)
    assert play(playout, 2) == [300, 0]


def test_audio_without_pcm_is_skipped() -> None:
    playout, dropped = make()
    offer(playout, [Rendered(Speak(text="broken"), None, "tts failed")], turn=0)
    assert len(playout.queue) == 0 and dropped == []


def test_a_held_item_is_silent_rewound_and_resumes_where_the_caller_stopped_hearing() -> None:
    playout, _ = make()
    pcm = np.repeat(np.arange(1, 6, dtype=np.int16), FRAME_SAMPLES)
    offer(playout, [Rendered(Speak(text="count"), pcm)], turn=0)
    assert play(playout, 3) == [1, 2, 3]
    playout.hold(rewind_ms=40)
    assert not playout.playing and playout.audible is False
    assert play(playout, 2) == [0, 0]
    playout.release()
    assert play(playout, 4) == [2, 3, 4, 5]


def test_the_background_plays_under_silence_and_stops() -> None:
    playout, _ = make()
    playout.mix(tone(1, 1000), 0.5)
    assert playout.audible
    assert int(playout.frame()[0]) != 0
    playout.mix(None, 0.0)
    assert not playout.audible and int(playout.frame()[0]) == 0
