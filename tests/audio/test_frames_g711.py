import numpy as np
import numpy.typing as npt
import pytest

from flowapp.audio import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    alaw_decode,
    alaw_encode,
    duration_ms,
    silence,
    split_frames,
    ulaw_decode,
    ulaw_encode,
)
from tests.media import SPEECH_PROMPTS, asterisk_prompt

ALL_INT16 = np.arange(65536, dtype=np.uint16).view(np.int16)

# An independent reference: the G.711 segment arithmetic of the classic Sun code, as numpy tables
# (flowapp runs audioop's C code).

_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159


def all_int16() -> npt.NDArray[np.int32]:
    """Every int16 value, ordered so that position == the value's uint16 bit pattern."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def build_ulaw_encode() -> npt.NDArray[np.uint8]:
    val = all_int16() >> 2
    mask = np.where(val < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(val), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    code = (seg << 4) | ((mag >> (seg + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def build_alaw_encode() -> npt.NDArray[np.uint8]:
    val = all_int16() >> 3
    mask = np.where(val >= 0, 0xD5, 0x55)
    mag = np.where(val >= 0, val, -val - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    code = (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    r = ref.astype(np.float64)
    err = r - test.astype(np.float64)
    return float(10 * np.log10(np.sum(r * r) / np.sum(err * err)))


def test_frame_constants_and_split() -> None:
    assert FRAME_SAMPLES == 160 and FRAME_BYTES == 320
    frames = split_frames(np.arange(400, dtype=np.int16))
    assert [f.shape for f in frames] == [(160,)] * 3
    assert all(f.dtype == np.int16 for f in frames)
    assert frames[2][79] == 399 and not frames[2][80:].any()
    assert split_frames(np.zeros(0, dtype=np.int16)) == []


def test_silence_and_duration() -> None:
    s = silence(250)
    assert s.dtype == np.int16 and s.size == 2000 and not s.any()
    assert duration_ms(s) == 250
    with pytest.raises(ValueError):
        silence(-1)


@pytest.mark.parametrize(("enc", "table"), [(ulaw_encode, build_ulaw_encode), (alaw_encode, build_alaw_encode)])
def test_encode_matches_the_reference_for_every_sample(enc, table) -> None:  # type: ignore[no-untyped-def]
    assert enc(ALL_INT16) == table()[ALL_INT16.view(np.uint16)].tobytes()


@pytest.mark.parametrize(("dec", "table"), [(ulaw_decode, build_ulaw_decode), (alaw_decode, build_alaw_decode)])
def test_decode_matches_the_reference_for_every_code(dec, table) -> None:  # type: ignore[no-untyped-def]
    out = dec(bytes(range(256)))
    assert out.dtype == np.int16
    assert out.tolist() == table().tolist()


def test_known_code_points() -> None:
    assert ulaw_decode(bytes([0x00, 0x7F, 0x80, 0xFF])).tolist() == [-32124, 0, 32124, 0]
    assert alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A])).tolist() == [8, -8, 32256, -32256]
    assert ulaw_encode(np.array([0, 32767, -32768], dtype=np.int16)) == bytes([0xFF, 0x80, 0x00])


@pytest.mark.parametrize(("enc", "dec"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_codes_survive_decode_encode(enc, dec) -> None:  # type: ignore[no-untyped-def]
    codes = bytes(range(256))
    again = enc(dec(codes))
    # mu-law has two codes for zero (0x7F and 0xFF); everything else is a fixed point.
    assert sum(a != b for a, b in zip(again, codes, strict=True)) <= 1


@pytest.mark.parametrize(("enc", "dec"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_round_trip_snr_on_real_speech(enc, dec) -> None:  # type: ignore[no-untyped-def]
    speech = np.concatenate([asterisk_prompt(p) for p in SPEECH_PROMPTS[:6]])
    coded = enc(speech)
    assert len(coded) == speech.size
    assert snr_db(speech, dec(coded)) > 30.0


def test_encode_accepts_non_contiguous_views() -> None:
    x = np.arange(-1000, 1000, dtype=np.int16)
    assert ulaw_encode(x[::2]) == ulaw_encode(x[::2].copy())
