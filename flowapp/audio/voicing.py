"""Is a frame voiced? Periodicity in the human pitch range, the sound that words are made of.

A cough, a click, a door or line hiss trips a VAD as readily as a syllable does, but it has no pitch: its
autocorrelation has no strong peak between 2.5 and 16 ms (60-400 Hz). Speech, even one short word, has
a run of voiced frames. The engine counts voiced time per caller turn, so a judgement on sound alone
and a word a recognizer claims to have heard both need acoustic support.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from flowapp.audio.frames import FRAME_SAMPLES

_MIN_LAG = 20
_MAX_LAG = 130
"""Lags in samples at 8 kHz: 400 Hz down to about 60 Hz (a low male voice)."""
_FFT = 512
_PERIODICITY = 0.45
"""Normalized autocorrelation peak that marks a voiced frame; unvoiced speech and noise stay well below."""
_FLOOR = 2 * FRAME_SAMPLES * (32768 * 10 ** (-50 / 20)) ** 2
"""Frame pairs quieter than -50 dBFS carry no voice worth counting."""


class VoicingMeter:
    """Judges each frame with the one before it (two frames hold two periods of the lowest pitch)."""

    def __init__(self) -> None:
        self._previous = np.zeros(FRAME_SAMPLES, dtype=np.float64)

    def voiced(self, frame: npt.NDArray[np.int16]) -> bool:
        current = frame.astype(np.float64)
        x = np.concatenate((self._previous, current))
        self._previous = current
        x -= x.mean()
        energy = float(x @ x)
        if energy < _FLOOR:
            return False
        spectrum = np.fft.rfft(x, _FFT)
        r = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, _FFT)
        # Unbiased: each lag's sum has fewer terms; without this long lags (low voices) look weaker.
        n = len(x)
        lags = np.arange(_MIN_LAG, _MAX_LAG + 1)
        unbiased = r[_MIN_LAG : _MAX_LAG + 1] * n / (n - lags)
        return float(unbiased.max() / r[0]) >= _PERIODICITY

    def reset(self) -> None:
        self._previous[:] = 0.0
