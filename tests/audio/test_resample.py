import numpy as np
import pytest

from flowapp.audio import StreamResampler, decode_wav, resample, rms_dbfs
from tests.media import librivox_audio, librivox_clips


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def steady_level(pcm: np.ndarray) -> float:
    edge = pcm.size // 10
    return rms_dbfs(pcm[edge:-edge])


def test_alias_band_is_suppressed() -> None:
    x = tone(5000, 24000)
    y = resample(x, 24000, 8000)
    assert y.dtype == np.int16 and y.size == 8000
    assert steady_level(y) < steady_level(x) - 50


def test_passband_tone_is_kept() -> None:
    x = tone(1000, 24000)
    y = resample(x, 24000, 8000)
    assert abs(steady_level(y) - steady_level(x)) < 1.0


def test_same_rate_is_a_copy() -> None:
    x = tone(1000, 8000)
    y = resample(x, 8000, 8000)
    np.testing.assert_array_equal(x, y)
    assert y is not x


def test_full_scale_input_saturates_instead_of_wrapping() -> None:
    square = np.where(np.arange(8000) % 40 < 20, 32767, -32768).astype(np.int16)
    y = resample(square, 8000, 16000)
    assert y.dtype == np.int16 and y.max() == 32767 and y.min() == -32768


def test_bad_rate() -> None:
    with pytest.raises(ValueError, match="from_rate"):
        resample(tone(1000, 8000), 0, 8000)


def test_stream_matches_whole_clip_and_flushes() -> None:
    x = tone(440, 8000, seconds=2.0)
    stream = StreamResampler(8000, 16000)
    parts = [stream.process(chunk) for chunk in np.split(x, 100)]
    parts.append(stream.flush())
    y = np.concatenate(parts)
    np.testing.assert_array_equal(y, resample(x, 8000, 16000))
    again = np.concatenate([stream.process(x), stream.flush()])
    assert again.size == 32000


def test_stream_same_rate_passthrough() -> None:
    stream = StreamResampler(8000, 8000)
    x = tone(440, 8000, seconds=0.02)
    np.testing.assert_array_equal(stream.process(x), x)
    assert stream.flush().size == 0


@pytest.mark.parametrize(("path", "transcript"), librivox_clips())
def test_librivox_speech_resamples_to_8k(path, transcript) -> None:  # type: ignore[no-untyped-def]
    wide = decode_wav(path.read_bytes(), rate=16000)
    narrow = librivox_audio(path)
    assert abs(narrow.size * 2 - wide.size) <= 2
    assert len(transcript.split()) >= 5
    # read speech has little energy above 4 kHz, so the level barely moves
    assert abs(rms_dbfs(narrow) - rms_dbfs(wide)) < 1.5
    spectrum = np.abs(np.fft.rfft(narrow.astype(np.float64)))
    freqs = np.fft.rfftfreq(narrow.size, 1 / 8000)
    assert spectrum[freqs > 3900].mean() < spectrum[(freqs > 200) & (freqs < 1000)].mean() / 100
