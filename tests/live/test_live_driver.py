"""The pieces of the real-time driver: playout tracking from marks, the jitter buffer, the shared ticker."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np

from flowapp import BargeIn, FlowApp, Speak
from flowapp.audio.frames import FRAME_SAMPLES, split_frames
from flowapp.audio.g711 import ulaw_encode
from flowapp.audio.vad import SILERO_BATCH
from flowapp.engine.live import LISTEN_BEHIND_FRAMES, InboundAudio, LiveDriver, Tickable, Ticker
from flowapp.engine.render import Renderer
from flowapp.protocol.events import SessionInfo
from flowapp.settings import ServerSettings
from flowapp.transports.media import engine_config
from flowapp.transports.twilio import MARK_EVERY_FRAMES, CarrierOutlet, Playout
from tests.engine.harness import true_onset_ms
from tests.media import asterisk_prompt, espeak


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

    def listen(self) -> None:
        if self.fail:
            raise RuntimeError("boom while listening")

    def abort(self, reason: str) -> None:
        self.aborted = reason


async def test_one_failing_call_does_not_stop_the_ticker() -> None:
    ticker = Ticker()
    good, bad = Counter(), Counter(fail=True)
    ticker.hear_soon(bad)
    ticker.hear_soon(good)
    await asyncio.sleep(0)
    assert bad.aborted == "internal_error" and good.aborted is None, "failing while listening"
    bad.aborted = None
    ticker.add(bad)
    ticker.add(good)
    await asyncio.sleep(0.3)
    ticker.remove(good)
    assert bad.ticks == 1 and bad.aborted == "internal_error"
    assert good.ticks >= 5
    await asyncio.sleep(0.05)
    assert len(ticker) == 0


class NullOutlet:
    def send(self, ulaw: bytes | None, *, boundary: bool) -> None: ...

    def drop_queued(self) -> None: ...

    def unheard_ms(self) -> int:
        return 0

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


class EchoingOutlet(CarrierOutlet):
    """The media-stream outlet, recording what it sends (media payloads, mark names, "clear"); each mark is
    echoed at once, as a carrier that keeps up would."""

    def __init__(self) -> None:
        super().__init__(self, "MZ-test")
        self.sent: list[bytes | str] = []

    def text(self, data: str) -> None:
        message = json.loads(data)
        if message["event"] == "media":
            self.sent.append(base64.b64decode(message["media"]["payload"]))
        elif message["event"] == "mark":
            self.sent.append(message["mark"]["name"])
            self.mark_echoed(message["mark"]["name"])
        else:
            self.sent.append(message["event"])

    def close(self, *args: object) -> None: ...


class NoTicker(Ticker):
    """The test steps the call itself, as fast as it likes."""

    def add(self, call: object) -> None: ...

    def align(self, call: object) -> None: ...

    def remove(self, call: object) -> None: ...

    def hear_soon(self, call: Tickable) -> None:
        call.listen()


async def talking_driver(app: FlowApp, outlet: EchoingOutlet) -> LiveDriver:
    """A driver on the webrtc VAD, started, once the app's greeting is playing; the test ticks it."""
    config = engine_config(ServerSettings(vad_detector="webrtc"), app)
    driver = LiveDriver(SessionInfo(id="live-driver"), app, Renderer(), outlet, config=config, ticker=NoTicker())
    driver.start()
    for _ in range(500):
        if driver.engine.audible:
            return driver
        await asyncio.sleep(0.01)
    raise AssertionError("the greeting never started")


async def test_a_resumed_item_replays_what_the_clear_took_from_the_caller() -> None:
    """Paused, the carrier's buffer is cleared: on resume the item goes on from the last frame the caller is
    known to have heard (the last mark echoed), so nothing is skipped."""
    text = "Thanks for calling. Our opening hours are Monday to Friday from eight in the morning to six."
    app = FlowApp(
        turn_handling={"interruption": {"resume_false_interruption": True, "false_interruption_timeout": 0.6}}
    )

    @app.on_session_start
    def greet() -> Speak:
        return Speak(text=text, barge_in=BargeIn.immediate())

    outlet = EchoingOutlet()
    driver = await talking_driver(app, outlet)
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
    before = [m for m in outlet.sent[:cut] if isinstance(m, bytes)]
    after = [m for m in outlet.sent[cut + 1 :] if isinstance(m, bytes)]
    heard = max(int(m.removeprefix("flowapp-")) for m in outlet.sent[:cut] if isinstance(m, str))
    rendered = Renderer().render(Speak(text=text)).pcm
    assert rendered is not None
    frames = [ulaw_encode(f) for f in split_frames(rendered)]
    assert before == frames[: len(before)]
    assert heard < len(before), "some frames were sent but not yet played when the clear took them"
    assert after, "playback resumed"
    assert after == frames[heard : heard + len(after)], "resumed at the last frame known to be heard"


async def test_the_caller_is_heard_on_arrival_and_a_missing_frame_as_silence() -> None:
    app = FlowApp()

    @app.on_session_start
    def greet() -> Speak:
        return Speak(text="A long greeting that the caller will interrupt right away.", barge_in=BargeIn.immediate())

    outlet = EchoingOutlet()
    driver = await talking_driver(app, outlet)
    for _ in range(3):  # the carrier sends nothing yet: call time goes on with silence, a little behind
        driver.tick()
    assert driver.silent_frames == 3 - LISTEN_BEHIND_FRAMES
    assert driver.engine.now_ms == 20 * (3 - LISTEN_BEHIND_FRAMES)
    speech = asterisk_prompt("please-try-again")
    speech = speech[int(true_onset_ms(speech) * 8) :]
    cleared_in = None
    for k in range(len(speech) // FRAME_SAMPLES):
        driver.feed(ulaw_encode(speech[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES]))
        if "clear" in outlet.sent:
            cleared_in = "feed"
            break
        driver.tick()
        if "clear" in outlet.sent:
            cleared_in = "tick"
            break
    assert cleared_in == "feed", "the barge-in is decided as the caller's frame arrives, not at the next tick"
    assert driver.barge_ins == 1
    await driver.stop("test over")


def test_a_backlog_left_standing_for_a_second_is_trimmed() -> None:
    inbound = InboundAudio(capacity=5)
    for k in range(3):
        inbound.add(bytes([k]) * 160)
    for _ in range(49):
        inbound.after_tick()
    assert inbound.trimmed == 0
    inbound.after_tick()
    assert inbound.trimmed == 1 and inbound.take() == bytes([1]) * 160, "the oldest frame went"
    inbound.take()
    for _ in range(50):
        inbound.after_tick()
    assert inbound.trimmed == 1, "an empty buffer is no backlog"


class ManualTicker(Ticker):
    """The shared ticker's slots and batches, stepped by the test instead of its timer."""

    def add(self, call: Tickable) -> None:
        self.align(call)

    def run_round(self) -> None:
        self._hear_all()
        for slot in self._slots:
            self._tick_slot(slot)


async def test_the_shared_ticker_hears_and_plays_every_calls_frames_in_order() -> None:
    """Many cascade calls heard and played a batch at a time (their Silero windows scored together): each
    call hears every frame its carrier sent, none as silence, and sends its greeting frame after frame."""
    text = "Please hold the line while I look up your account; this will only take a moment or two."
    app = FlowApp()

    @app.on_session_start
    def greet() -> Speak:
        return Speak(text=text, barge_in=BargeIn.none())

    ticker = ManualTicker()
    outlets = [EchoingOutlet() for _ in range(12)]
    config = engine_config(ServerSettings(vad_detector="cascade"), app)
    drivers = [
        LiveDriver(SessionInfo(id=f"live-{k}"), app, Renderer(), outlet, config=config, ticker=ticker)
        for k, outlet in enumerate(outlets)
    ]
    for driver in drivers:
        driver.start()
    for _ in range(500):
        if all(d.engine.audible for d in drivers):
            break
        await asyncio.sleep(0.01)
    speech = [asterisk_prompt(name) for name in ("please-try-again", "queue-thankyou", "all-circuits-busy-now")]
    caller = [np.concatenate([np.zeros(8 * 100 * (k % 4), np.int16), speech[k % 3]]) for k in range(len(drivers))]
    frames = min(len(c) for c in caller) // FRAME_SAMPLES
    inferences, windows = SILERO_BATCH.inferences, SILERO_BATCH.windows
    for k in range(frames):
        for driver, pcm in zip(drivers, caller, strict=True):
            assert driver.feed(ulaw_encode(pcm[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES]))
        ticker.run_round()
    batched = SILERO_BATCH.windows - windows
    assert batched > SILERO_BATCH.inferences - inferences > 0, "the calls' Silero windows were scored together"
    rendered = Renderer().render(Speak(text=text)).pcm
    assert rendered is not None
    greeting = [ulaw_encode(f) for f in split_frames(rendered)]
    for driver, outlet in zip(drivers, outlets, strict=True):
        assert driver.inbound.received == frames and driver.silent_frames == 0, "every frame heard, on time"
        assert driver.engine.now_ms == 20 * frames
        sent = [m for m in outlet.sent if isinstance(m, bytes)]
        assert sent == greeting[: len(sent)] and len(sent) >= frames - 1, "the greeting, frame after frame"
        await driver.stop("test over")
