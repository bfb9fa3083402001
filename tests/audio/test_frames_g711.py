import warnings

import numpy as np
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

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference implementation (audioop-lts on Python >= 3.13)

ALL_INT16 = np.arange(65536, dtype=np.uint16).view(np.int16)


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


@pytest.mark.parametrize(("enc", "ref"), [(ulaw_encode, audioop.lin2ulaw), (alaw_encode, audioop.lin2alaw)])
def test_encode_bit_exact_vs_audioop(enc, ref) -> None:  # type: ignore[no-untyped-def]
    assert enc(ALL_INT16) == ref(ALL_INT16.tobytes(), 2)


@pytest.mark.parametrize(("dec", "ref"), [(ulaw_decode, audioop.ulaw2lin), (alaw_decode, audioop.alaw2lin)])
def test_decode_bit_exact_vs_audioop(dec, ref) -> None:  # type: ignore[no-untyped-def]
    codes = bytes(range(256))
    out = dec(codes)
    assert out.dtype == np.int16
    assert out.tobytes() == ref(codes, 2)


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
    assert ulaw_encode(x[::2]) == audioop.lin2ulaw(x[::2].tobytes(), 2)
