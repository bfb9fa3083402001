"""Sample-rate conversion through libsoxr, so that downsampling never folds energy above Nyquist back in.

Samples travel through soxr as float32 holding int16-scaled values and are rounded and saturated on the
way out: explicit clipping is deterministic, whereas int16 output inside soxr would add its own rounding.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from flowapp.audio.frames import Pcm, as_pcm

QUALITY = "HQ"


def _to_int16(x: npt.NDArray[np.float32] | npt.NDArray[np.float64]) -> Pcm:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def _check_rate(name: str, rate: int) -> None:
    if rate <= 0:
        raise ValueError(f"{name} must be a positive sample rate, got {rate}")


def resample(pcm: npt.ArrayLike, from_rate: int, to_rate: int) -> Pcm:
    """Convert a whole clip; for live audio use StreamResampler so chunk edges do not click."""
    _check_rate("from_rate", from_rate)
    _check_rate("to_rate", to_rate)
    arr = as_pcm(pcm)
    if from_rate == to_rate or arr.size == 0:
        return arr.copy()
    out = soxr.resample(arr.astype(np.float32), from_rate, to_rate, quality=QUALITY)
    return _to_int16(np.asarray(out))


class StreamResampler:
    """Chunk-by-chunk conversion that keeps filter state between chunks (e.g. 8 kHz RTP -> 16 kHz ASR).

    The filter delays output slightly, so early calls may return fewer samples than the rate ratio
    suggests; flush() returns the remainder once the stream ends.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        _check_rate("from_rate", from_rate)
        _check_rate("to_rate", to_rate)
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._stream: soxr.ResampleStream | None = None
        if from_rate != to_rate:
            self._stream = soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32", quality=QUALITY)

    def process(self, chunk: npt.ArrayLike) -> Pcm:
        """Feed the next chunk; returns whatever output is ready."""
        arr = as_pcm(chunk)
        if self._stream is None:
            return arr.copy()
        out = self._stream.resample_chunk(arr.astype(np.float32))
        return _to_int16(np.asarray(out))

    def flush(self) -> Pcm:
        """End the stream, return the delayed tail, and make the resampler ready for a new stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        out = _to_int16(np.asarray(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)))
        self._stream.clear()
        return out
