"""Mixing and level tools: background audio under prompts (``mix_audio``) and controlled test signals."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from flowapp.audio.frames import FRAME_SAMPLES, SAMPLE_RATE, Pcm, as_pcm

_FULL_SCALE = 32768.0
_ACTIVE_FRAME_DB = 30.0


def _saturate(x: npt.NDArray[np.float64]) -> Pcm:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def mix(a: npt.ArrayLike, b: npt.ArrayLike, gain_b: float) -> Pcm:
    """``a + gain_b * b`` clipped to int16 rather than wrapped; the result has ``a``'s length.

    ``b`` is zero-padded or truncated to fit ``a``, because ``a`` is the stream being played.
    """
    pa = as_pcm(a)
    pb = as_pcm(b)[: pa.size]
    out = pa.astype(np.float64)
    out[: pb.size] += gain_b * pb
    return _saturate(out)


class LoopingSource:
    """Endless background clip served one 20 ms frame at a time, wrapping across the loop point."""

    def __init__(self, pcm: npt.ArrayLike) -> None:
        clip = as_pcm(pcm)
        if clip.size == 0:
            raise ValueError("LoopingSource needs a non-empty clip")
        self._clip = clip.copy()
        self._steps = np.arange(FRAME_SAMPLES)
        self._pos = 0

    def next_frame(self) -> Pcm:
        """The next 160 samples; a clip shorter than a frame simply repeats within the frame."""
        frame = self._clip[(self._pos + self._steps) % self._clip.size]
        self._pos = (self._pos + FRAME_SAMPLES) % self._clip.size
        return frame

    def reset(self) -> None:
        """Restart from the clip's beginning."""
        self._pos = 0


def rms_dbfs(pcm: npt.ArrayLike) -> float:
    """RMS level relative to int16 full scale; digital silence is -inf."""
    arr = np.asarray(pcm, dtype=np.float64)
    if arr.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(arr * arr)))
    return 20.0 * math.log10(rms / _FULL_SCALE) if rms > 0 else -math.inf


def _active_power(speech: npt.NDArray[np.float64]) -> float:
    """Mean power of the frames within 30 dB of the loudest one, so leading/trailing silence is ignored."""
    n = speech.size // FRAME_SAMPLES
    if n == 0:
        return float(np.mean(speech * speech)) if speech.size else 0.0
    frames = speech[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
    power = np.mean(frames * frames, axis=1)
    peak = float(power.max())
    if peak == 0.0:
        return 0.0
    return float(power[power >= peak * 10 ** (-_ACTIVE_FRAME_DB / 10)].mean())


def add_noise_at_snr(
    speech: npt.ArrayLike,
    noise: npt.ArrayLike,
    snr_db: float,
    rng: np.random.Generator | None = None,
) -> Pcm:
    """Speech plus ``noise`` scaled to ``snr_db`` over the speech's active frames (not its silences).

    A shorter noise clip is looped from a random offset (chosen by ``rng``) so that repeated runs with
    different generators see different noise alignments.
    """
    s = as_pcm(speech).astype(np.float64)
    n = as_pcm(noise).astype(np.float64)
    if n.size == 0:
        raise ValueError("noise clip is empty")
    gen = np.random.default_rng(0) if rng is None else rng
    start = int(gen.integers(0, n.size))
    idx = (start + np.arange(s.size)) % n.size
    n = n[idx]
    p_speech = _active_power(s)
    p_noise = float(np.mean(n * n)) if n.size else 0.0
    if p_speech == 0.0 or p_noise == 0.0:
        return _saturate(s + n * 0.0)
    scale = math.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return _saturate(s + scale * n)


def line_noise(ms: int, level_dbfs: float, rng: np.random.Generator | None = None) -> Pcm:
    """Telephone-line-like noise: hiss band-limited to 300-3400 Hz plus mains hum 20 dB below it."""
    gen = np.random.default_rng(0) if rng is None else rng
    n = SAMPLE_RATE * ms // 1000
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    white = gen.standard_normal(n)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum[(freqs < 300.0) | (freqs > 3400.0)] = 0.0
    hiss = np.fft.irfft(spectrum, n)
    hiss /= math.sqrt(float(np.mean(hiss * hiss))) or 1.0
    t = np.arange(n) / SAMPLE_RATE
    phase = gen.uniform(0.0, 2 * math.pi)
    hum = np.sin(2 * math.pi * 50.0 * t + phase) + 0.5 * np.sin(2 * math.pi * 150.0 * t + phase)
    hum *= 0.1 / math.sqrt(float(np.mean(hum * hum)))
    signal = hiss + hum
    signal *= _FULL_SCALE * 10 ** (level_dbfs / 20) / math.sqrt(float(np.mean(signal * signal)))
    return _saturate(signal)
