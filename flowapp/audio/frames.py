"""The engine's one internal audio format: int16 mono at 8 kHz, cut into 20 ms frames."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2

Pcm = npt.NDArray[np.int16]


def as_pcm(pcm: npt.ArrayLike) -> Pcm:
    """Accept anything array-like but refuse silent float->int truncation surprises."""
    arr = np.asarray(pcm)
    if arr.ndim != 1:
        raise ValueError(f"expected mono 1-D PCM, got shape {arr.shape}")
    if arr.dtype != np.int16:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"expected int16 PCM, got dtype {arr.dtype}")
        arr = np.clip(arr, -32768, 32767).astype(np.int16)
    return arr


def split_frames(pcm: npt.ArrayLike) -> list[Pcm]:
    """Zero-pad the tail so every frame is exactly one 20 ms packet, as RTP and the VAD expect."""
    arr = as_pcm(pcm)
    if arr.size == 0:
        return []
    n_frames = -(-arr.size // FRAME_SAMPLES)
    padded = np.zeros(n_frames * FRAME_SAMPLES, dtype=np.int16)
    padded[: arr.size] = arr
    return list(padded.reshape(n_frames, FRAME_SAMPLES))


def silence(ms: int) -> Pcm:
    """Digital silence of the given length (rounded down to whole samples)."""
    if ms < 0:
        raise ValueError(f"silence length must be >= 0 ms, got {ms}")
    return np.zeros(SAMPLE_RATE * ms // 1000, dtype=np.int16)


def duration_ms(pcm: npt.ArrayLike) -> int:
    """Length of 8 kHz PCM in whole milliseconds."""
    return int(np.asarray(pcm).shape[0]) * 1000 // SAMPLE_RATE
