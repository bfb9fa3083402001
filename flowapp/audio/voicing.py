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

MIN_LAG = 20
MAX_LAG = 130
"""Lags in samples at 8 kHz: 400 Hz down to about 60 Hz (a low male voice)."""
PERIODICITY = 0.45
"""Normalized autocorrelation peak that marks a voiced frame; unvoiced speech and noise stay well below."""
_FLOOR = 2 * FRAME_SAMPLES * (32768 * 10 ** (-50 / 20)) ** 2
"""Frame pairs quieter than -50 dBFS carry no voice worth counting."""
_TERMS = 2 * FRAME_SAMPLES - np.arange(MIN_LAG, MAX_LAG + 1)
"""How many sample pairs each lag's sum of the two frames has."""


class VoicingMeter:
    """Judges each frame with the one before it (two frames hold two periods of the lowest pitch).

    The autocorrelation is taken directly at the pitch lags only (one `np.correlate` of the two frames with
    themselves, zero-padded), rather than by a forward and an inverse FFT of 512 points: the same figures for
    less than half the time.
    """

    def __init__(self) -> None:
        n = 2 * FRAME_SAMPLES
        self._previous = np.zeros(FRAME_SAMPLES, dtype=np.float64)
        self._padded = np.zeros(n + MAX_LAG, dtype=np.float64)
        self._x = self._padded[:n]
        self._from_min_lag = self._padded[MIN_LAG:]

    def voiced(self, frame: npt.NDArray[np.int16]) -> bool:
        x = self._x
        x[:FRAME_SAMPLES] = self._previous
        x[FRAME_SAMPLES:] = frame
        self._previous[:] = x[FRAME_SAMPLES:]
        x -= x.sum() / x.size  # x.mean()'s figure without its Python-level wrapper
        energy = float(np.dot(x, x))
        if energy < _FLOOR:
            return False
        # Unbiased: each lag's sum has fewer terms; without this long lags (low voices) look weaker.
        unbiased = np.correlate(self._from_min_lag, x, "valid")
        unbiased *= 2 * FRAME_SAMPLES  # in place, in the same order: the same figures, no temporaries
        unbiased /= _TERMS
        return float(unbiased.max() / energy) >= PERIODICITY

    def reset(self) -> None:
        self._previous[:] = 0.0
