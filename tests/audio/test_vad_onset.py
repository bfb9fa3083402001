"""The cascade's onset-evidence stage: soft real onsets are confirmed early, non-speech is not, speech stays."""

import numpy as np
import pytest

from flowapp.audio import (
    CascadeDetector,
    VadConfig,
    VadEvent,
    VadTracker,
    add_noise_at_snr,
    line_noise,
    split_frames,
)
from flowapp.audio.g711 import ulaw_decode, ulaw_encode
from tests.media import asterisk_prompt, moh_clip, moh_clips

LEAD_MS = 1000
CASCADE_VAD = VadConfig(onset_ms=20, hangover_ms=120)
SOFT_ONSETS = (
    "dir-first",
    "one-moment-please",
    "to-rerecord-it",
    "demo-thanks",
    "vm-incorrect",
    "agent-user",
    "vm-instructions",
    "vm-reenterpassword",
)
"""Prompts outside the tuning set, most with a soft first sound (a glide, a fricative, a breathy vowel)."""
SNRS_DB = (15, 20, 25)


@pytest.fixture(scope="module")
def cascade() -> CascadeDetector:
    return CascadeDetector()


def events(detector: CascadeDetector, pcm: np.ndarray) -> list[tuple[VadEvent, int]]:
    """Each event with the time the engine would act on it (the end of the frame that emitted it)."""
    tracker = VadTracker(detector, CASCADE_VAD)
    tracker.reset()
    return [(e, (i + 1) * 20) for i, frame in enumerate(split_frames(pcm)) for e in tracker.process(frame, i * 20)]


def first_start_ms(detector: CascadeDetector, pcm: np.ndarray) -> int | None:
    return next((acted for e, acted in events(detector, pcm) if e.kind == "start"), None)


def onset_ms(clean: np.ndarray) -> float:
    """First 5 ms block within 25 dB of the clip's loudest 20 ms frame and held over the next 50 ms."""
    x = clean.astype(np.float64)
    loudest = float(np.mean(x[: x.size // 160 * 160].reshape(-1, 160) ** 2, axis=1).max())
    blocks = np.mean(x[: x.size // 40 * 40].reshape(-1, 40) ** 2, axis=1)
    threshold = loudest * 10 ** (-25 / 10)
    held = (k for k in range(blocks.size - 10) if blocks[k] >= threshold and blocks[k : k + 10].mean() >= threshold)
    return 5.0 * next(held)


def on_the_line(clean: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """After a second of quiet line, in line noise at ``snr_db``, through G.711 mu-law as a carrier sends it."""
    pcm = np.concatenate([np.zeros(8 * LEAD_MS, dtype=np.int16), clean, np.zeros(2400, dtype=np.int16)])
    noisy = add_noise_at_snr(pcm, line_noise(len(pcm) // 8 + 20, -40.0, rng), snr_db, rng)
    return ulaw_decode(ulaw_encode(noisy))


def quiet_line(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return line_noise(int(seconds * 1000), -60.0, rng).astype(np.float64)[: int(seconds * 8000)]


def pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def soft_onset_cases() -> list[tuple[np.ndarray, float]]:
    """(audio on the line, true onset ms) of each soft-onset prompt at each SNR."""
    cases = []
    for name in SOFT_ONSETS:
        clean = asterisk_prompt(name)
        cases += [(on_the_line(clean, snr, np.random.default_rng(snr)), LEAD_MS + onset_ms(clean)) for snr in SNRS_DB]
    return cases


def test_soft_real_onsets_are_confirmed_early(cascade: CascadeDetector) -> None:
    def latencies(detector: CascadeDetector) -> list[float]:
        out = []
        for pcm, onset in soft_onset_cases():
            acted = first_start_ms(detector, pcm)
            assert acted is not None
            out.append(acted - onset)
        return out

    with_evidence = latencies(cascade)
    silero_alone = latencies(CascadeDetector(onset_evidence=None))
    assert min(with_evidence) > 0
    assert max(with_evidence) <= 100
    assert np.median(with_evidence) < np.median(silero_alone)
    assert sum(with_evidence) < sum(silero_alone)


def test_the_evidence_confirms_onsets_silero_is_not_yet_sure_of(cascade: CascadeDetector) -> None:
    by_evidence = []
    for pcm, _ in soft_onset_cases():
        cascade.reset()
        for frame in split_frames(pcm):
            if cascade.speech_probability(frame) == 1.0:
                by_evidence.append(cascade.score < cascade.threshold)
                break
    assert len(by_evidence) == len(SOFT_ONSETS) * len(SNRS_DB)
    assert sum(by_evidence) >= len(by_evidence) // 8, by_evidence


def test_mains_hum_does_not_trigger(cascade: CascadeDetector) -> None:
    rng = np.random.default_rng(50)
    t = np.arange(6 * 8000) / 8000
    for mains in (50.0, 60.0):
        hum = sum(np.sin(2 * np.pi * mains * k * t + k) / k for k in range(1, 12, 2))
        hum *= 32768 * 10 ** (-25 / 20) / np.sqrt(np.mean(hum**2))
        quiet = quiet_line(7.0, rng)
        quiet[8000:] += hum
        assert first_start_ms(cascade, pcm16(quiet)) is None, mains


def test_a_click_train_does_not_trigger(cascade: CascadeDetector) -> None:
    rng = np.random.default_rng(9)
    x = quiet_line(6.0, rng)
    for at in range(8000, x.size - 800, 800):
        x[at : at + int(rng.integers(2, 24))] += rng.choice([-1.0, 1.0]) * 32768 * 10 ** (rng.uniform(-12, -1) / 20)
    assert first_start_ms(cascade, pcm16(x)) is None


def test_music_stays_rare(cascade: CascadeDetector) -> None:
    rng = np.random.default_rng(11)
    triggered = []
    for path in moh_clips():
        music = moh_clip(path.stem).astype(np.float64)
        for _ in range(3):
            start = int(rng.integers(0, music.size - 32_000))
            segment = music[start : start + 32_000]
            segment *= 32768 * 10 ** (rng.uniform(-35, -20) / 20) / np.sqrt(np.mean(segment**2))
            x = quiet_line(5.0, rng)
            x[8000:] += segment
            triggered.append(first_start_ms(cascade, pcm16(x)) is not None)
    assert sum(triggered) <= 3, triggered


@pytest.mark.parametrize("snr_db", [15, 25])
def test_sustained_speech_is_not_vetoed_once_confirmed(cascade: CascadeDetector, snr_db: float) -> None:
    for name in ("one-moment-please", "auth-incorrect"):
        clean = asterisk_prompt(name).astype(np.float64)
        power = np.mean(clean[: clean.size // 160 * 160].reshape(-1, 160) ** 2, axis=1)
        loud = LEAD_MS + 20 * np.flatnonzero(power >= power.max() * 10 ** (-25 / 10))
        spans, start = [], 0
        for event, _ in events(cascade, on_the_line(asterisk_prompt(name), snr_db, np.random.default_rng(snr_db))):
            if event.kind == "start":
                start = event.t_ms
            else:
                spans.append((start, event.t_ms))
        covered = sum(any(a <= t < b for a, b in spans) for t in loud)
        # measured: 86-100% of the loud frames are inside a speech span
        assert covered >= 0.85 * loud.size, (name, spans)
