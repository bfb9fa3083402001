import numpy as np
import pytest

from flowapp.audio import LoopingSource, add_noise_at_snr, line_noise, mix, rms_dbfs
from tests.media import asterisk_prompt


def test_mix_saturates_and_keeps_length() -> None:
    a = np.array([30000, -30000, 100, 5], dtype=np.int16)
    b = np.array([30000, -30000, 100], dtype=np.int16)
    out = mix(a, b, 1.0)
    assert out.tolist() == [32767, -32768, 200, 5]
    assert mix(a[:2], b, 0.5).tolist() == [32767, -32768]


def test_looping_source_wraps_across_frames() -> None:
    clip = np.arange(250, dtype=np.int16)
    src = LoopingSource(clip)
    got = np.concatenate([src.next_frame() for _ in range(5)])
    np.testing.assert_array_equal(got, np.tile(clip, 4)[:800])
    short = LoopingSource(np.array([1, 2, 3], dtype=np.int16)).next_frame()
    assert short.size == 160 and short[:6].tolist() == [1, 2, 3, 1, 2, 3]
    with pytest.raises(ValueError):
        LoopingSource(np.zeros(0, dtype=np.int16))


def test_rms_dbfs() -> None:
    assert rms_dbfs(np.full(100, 32768 // 2, dtype=np.int16)) == pytest.approx(-6.02, abs=0.01)
    assert rms_dbfs(np.zeros(10, dtype=np.int16)) == -np.inf


def test_line_noise_level_and_band() -> None:
    noise = line_noise(2000, -40.0, np.random.default_rng(1))
    assert noise.size == 16000
    assert rms_dbfs(noise) == pytest.approx(-40.0, abs=0.2)
    spectrum = np.abs(np.fft.rfft(noise.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(noise.size, 1 / 8000)
    assert spectrum[freqs > 3500].sum() < 1e-3 * spectrum.sum()


def test_noise_added_at_requested_snr_over_active_speech() -> None:
    speech = np.concatenate([np.zeros(8000, dtype=np.int16), asterisk_prompt("please-try-again")])
    noise = line_noise(1000, -30.0, np.random.default_rng(2))
    noisy = add_noise_at_snr(speech, noise, 20.0, np.random.default_rng(3))
    added = noisy.astype(np.float64) - speech
    lead_noise_db = rms_dbfs(added)
    active = speech[8000:]
    frames = active[: active.size // 160 * 160].reshape(-1, 160).astype(np.float64)
    power = (frames**2).mean(axis=1)
    speech_db = 10 * np.log10(power[power >= power.max() / 1000].mean() / 32768**2)
    assert speech_db - lead_noise_db == pytest.approx(20.0, abs=0.5)
