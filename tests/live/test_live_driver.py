"""The pieces of the real-time driver: playout tracking from marks, the jitter buffer, the shared ticker."""

from __future__ import annotations

import asyncio

import numpy as np

from flowapp import BargeIn, FlowApp, Speak
from flowapp.audio.frames import FRAME_SAMPLES, split_frames
from flowapp.audio.g711 import ulaw_encode
from flowapp.engine.live import MARK_EVERY_FRAMES, InboundAudio, LiveDriver, Playout, Ticker
from flowapp.engine.render import Renderer
from flowapp.protocol.events import SessionInfo
from flowapp.settings import ServerSettings
from flowapp.transports.media import engine_config
from tests.engine.harness import true_onset_ms
from tests.media import espeak


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_unheard_audio_follows_mark_echoes_and_the_clock() -> None:
    clock = Clock()
    playout = Playout(clock)
    for _ in range(30):
        playout.sent_frame()
    assert playout.unheard_ms() == 0, "without any echo the carrier is assumed to keep up"
    assert playout.echoed("flowapp-10")
    assert playout.unheard_ms() == 20 * 20
    clock.now += 0.1
    assert playout.unheard_ms() == 15 * 20, "the carrier goes on playing between echoes"
    clock.now += 10
    assert playout.unheard_ms() == 0, "never more heard than sent"


def test_marks_flushed_by_clear_say_nothing() -> None:
    clock = Clock()
    playout = Playout(clock)
    for _ in range(20):
        playout.sent_frame()
    playout.cleared()
    assert not playout.echoed("flowapp-20")
    assert not playout.echoed("someone-elses-mark")
    assert not playout.echoed("flowapp-x")
    assert playout.unheard_ms() == 0


def test_marks_are_due_periodically_and_at_boundaries() -> None:
    playout = Playout(Clock())
    names = []
    for k in range(25):
        playout.sent_frame()
        name = playout.mark_due(boundary=k == 24)
        if name:
            names.append(name)
    assert names == [f"flowapp-{MARK_EVERY_FRAMES}", f"flowapp-{2 * MARK_EVERY_FRAMES}", "flowapp-25"]
    assert playout.mark_due(boundary=True) is None, "nothing sent since the last mark"


def test_inbound_audio_is_recut_to_20_ms_and_bounded() -> None:
    inbound = InboundAudio(capacity=3)
    inbound.add(b"\x01" * 100)
    assert inbound.take() is None
    inbound.add(b"\x02" * 220)
    assert inbound.take() == b"\x01" * 100 + b"\x02" * 60
    assert inbound.take() == b"\x02" * 160
    for k in range(5):
        inbound.add(bytes([k]) * 160)
    assert inbound.dropped == 2 and inbound.received == 7
    assert [inbound.take() for _ in range(4)] == [bytes([2]) * 160, bytes([3]) * 160, bytes([4]) * 160, None]


class Counter:
    def __init__(self, fail: bool = False) -> None:
        self.ticks = 0
        self.fail = fail
        self.aborted: str | None = None

    def tick(self) -> None:
        self.ticks += 1
        if self.fail:
            raise RuntimeError("boom")

    def abort(self, reason: str) -> None:
        self.aborted = reason


async def test_one_failing_call_does_not_stop_the_ticker() -> None:
    ticker = Ticker()
    good, bad = Counter(), Counter(fail=True)
    ticker.add(bad)
    ticker.add(good)
    await asyncio.sleep(0.3)
    ticker.remove(good)
    assert bad.ticks == 1 and bad.aborted == "internal_error"
    assert good.ticks >= 5
    await asyncio.sleep(0.05)
    assert len(ticker) == 0


class NullOutlet:
    def media(self, ulaw: bytes) -> None: ...

    def mark(self, name: str) -> None: ...

    def clear(self) -> None: ...

    def close(self, reason: str) -> None: ...


def test_an_in_process_apps_turn_handling_and_judge_reach_live_calls() -> None:
    app = FlowApp(turn_handling={"interruption": {"mode": "adaptive"}})

    @app.judge_interruptions
    def judge(candidate: object) -> None:
        return None

    config = engine_config(ServerSettings(), app)
    assert config.turn_handling.interruption.mode == "adaptive"
    driver = LiveDriver(SessionInfo(id="live-1"), app, Renderer(), NullOutlet(), config=config)
    assert driver.engine.turn_handling.interruption.mode == "adaptive"
    assert driver.engine._hook is judge


class RecordingOutlet(NullOutlet):
    def __init__(self) -> None:
        self.sent: list[bytes | str] = []

    def media(self, ulaw: bytes) -> None:
        self.sent.append(ulaw)

    def clear(self) -> None:
        self.sent.append("clear")


class NoTicker(Ticker):
    """The test steps the call itself, as fast as it likes."""

    def add(self, call: object) -> None: ...

    def align(self, call: object) -> None: ...

    def remove(self, call: object) -> None: ...


async def test_a_resumed_item_replays_what_the_clear_took_from_the_caller() -> None:
    """Paused, the carrier's buffer is cleared: on resume the caller hears every frame of the item, none skipped."""
    text = "Thanks for calling. Our opening hours are Monday to Friday from eight in the morning to six."
    app = FlowApp(
        turn_handling={"interruption": {"resume_false_interruption": True, "false_interruption_timeout": 0.6}}
    )

    @app.on_session_start
    def greet() -> Speak:
        return Speak(text=text, barge_in=BargeIn.immediate())

    config = engine_config(ServerSettings(vad_detector="webrtc"), app)
    outlet = RecordingOutlet()
    driver = LiveDriver(SessionInfo(id="live-2"), app, Renderer(), outlet, config=config, ticker=NoTicker())
    driver.start()
    for _ in range(500):
        if driver.engine.audible:
            break
        await asyncio.sleep(0.01)
    hm = espeak("hm")
    onset = int(true_onset_ms(hm) * 8)
    caller = np.concatenate([np.zeros(8 * 1500, np.int16), hm[onset : onset + 8 * 250], np.zeros(8 * 3000, np.int16)])
    for k in range(len(caller) // FRAME_SAMPLES):
        driver.feed(ulaw_encode(caller[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES]))
        driver.tick()
        await asyncio.sleep(0)
    await driver.stop("test over")
    assert "clear" in outlet.sent, "the sound paused playback"
    cut = outlet.sent.index("clear")
    before, after = outlet.sent[:cut], outlet.sent[cut + 1 :]
    rendered = Renderer().render(Speak(text=text)).pcm
    assert rendered is not None
    frames = [ulaw_encode(f) for f in split_frames(rendered)]
    assert before == frames[: len(before)]
    assert after, "playback resumed"
    # The frame of the step that paused was never sent; the carrier echoed no marks, so it is taken to have
    # played the rest. Playback goes on with exactly that withheld frame.
    assert after == frames[len(before) : len(before) + len(after)]
