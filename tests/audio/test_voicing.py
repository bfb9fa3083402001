"""The voicing meter: pitch in the human range, and the same verdicts as a full FFT autocorrelation."""

from __future__ import annotations

import numpy as np

from flowapp.audio import split_frames
from flowapp.audio.voicing import _FLOOR, MAX_LAG, MIN_LAG, PERIODICITY, VoicingMeter
from tests.media import SPEECH_PROMPTS, asterisk_prompt


def fft_periodicity(previous: np.ndarray, frame: np.ndarray) -> float | None:
    """The normalized autocorrelation peak at the pitch lags, by a 512-point FFT (None below the floor)."""
    x = np.concatenate((previous, frame)).astype(np.float64)
    x -= x.mean()
    if float(x @ x) < _FLOOR:
        return None
    spectrum = np.fft.rfft(x, 512)
    r = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, 512)
    lags = np.arange(MIN_LAG, MAX_LAG + 1)
    return float((r[MIN_LAG : MAX_LAG + 1] * x.size / (x.size - lags)).max() / r[0])


def test_verdicts_equal_the_fft_autocorrelation() -> None:
    rng = np.random.default_rng(7)
    meter = VoicingMeter()
    checked = voiced = 0
    for name in SPEECH_PROMPTS:
        clip = asterisk_prompt(name).astype(np.float64) + rng.normal(0, 100, asterisk_prompt(name).size)
        frames = split_frames(np.clip(clip, -32768, 32767).astype(np.int16))
        previous = np.zeros_like(frames[0])
        meter.reset()
        for frame in frames:
            expected = fft_periodicity(previous, frame)
            got = meter.voiced(frame)
            previous = frame
            if expected is not None and abs(expected - PERIODICITY) < 1e-9:
                continue  # on the threshold itself rounding may go either way
            assert got == (expected is not None and expected >= PERIODICITY)
            checked += 1
            voiced += got
    assert voiced > checked / 4 and voiced < checked, "both verdicts were exercised"


def test_a_vowel_is_voiced_and_hiss_is_not() -> None:
    t = np.arange(160 * 10) / 8000
    vowel = (8000 * np.sin(2 * np.pi * 140 * t) + 3000 * np.sin(2 * np.pi * 280 * t)).astype(np.int16)
    hiss = np.random.default_rng(1).normal(0, 3000, vowel.size).astype(np.int16)
    for pcm, want in ((vowel, True), (hiss, False)):
        meter = VoicingMeter()
        verdicts = [meter.voiced(frame) for frame in split_frames(pcm)][1:]
        assert all(v == want for v in verdicts)
