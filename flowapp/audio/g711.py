"""G.711 mu-law / A-law codecs as numpy table lookups, bit-exact with the classic Sun/audioop code.

Per-packet codec work runs on every 20 ms frame of every call, so all arithmetic happens once at
import time: decoding is a 256-entry table, encoding a 65536-entry table indexed by the raw sample bits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from flowapp.audio.frames import Pcm, as_pcm

_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159


def _all_int16() -> npt.NDArray[np.int32]:
    """Every int16 value, ordered so that position == the value's uint16 bit pattern."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    val = _all_int16() >> 2
    mask = np.where(val < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(val), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    code = (seg << 4) | ((mag >> (seg + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    val = _all_int16() >> 3
    mask = np.where(val >= 0, 0xD5, 0x55)
    mag = np.where(val >= 0, val, -val - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    code = (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENC = _build_ulaw_encode()
_ULAW_DEC = _build_ulaw_decode()
_ALAW_ENC = _build_alaw_encode()
_ALAW_DEC = _build_alaw_decode()


def ulaw_encode(pcm: npt.ArrayLike) -> bytes:
    """16-bit PCM -> mu-law bytes (PCMU, RTP payload type 0)."""
    return _ULAW_ENC.take(as_pcm(pcm).view(np.uint16)).tobytes()


def ulaw_decode(data: bytes) -> Pcm:
    """Mu-law bytes -> 16-bit PCM."""
    return _ULAW_DEC.take(np.frombuffer(data, dtype=np.uint8))


def alaw_encode(pcm: npt.ArrayLike) -> bytes:
    """16-bit PCM -> A-law bytes (PCMA, RTP payload type 8)."""
    return _ALAW_ENC.take(as_pcm(pcm).view(np.uint16)).tobytes()


def alaw_decode(data: bytes) -> Pcm:
    """A-law bytes -> 16-bit PCM."""
    return _ALAW_DEC.take(np.frombuffer(data, dtype=np.uint8))
