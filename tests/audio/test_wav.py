import base64
import struct

import numpy as np
import pytest

from flowapp.audio import AudioFormatError, decode_base64_wav, decode_wav, encode_wav, read_wav
from tests.media import ASTERISK_SOUNDS

KSDATAFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def tone(rate: int, seconds: float = 0.5, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def chunk(cid: bytes, body: bytes) -> bytes:
    return struct.pack("<4sI", cid, len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def fmt_body(tag: int, channels: int, rate: int, bits: int, extensible: bool = False) -> bytes:
    width = (bits + 7) // 8
    align = width * channels
    body = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * align, align, bits)
    if extensible:
        body += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + KSDATAFORMAT_TAIL
    return body


def wav(fmt: bytes, data: bytes, extra: bytes = b"") -> bytes:
    body = b"WAVE" + extra + chunk(b"fmt ", fmt) + chunk(b"data", data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def encode_samples(x: np.ndarray, tag: int, bits: int) -> bytes:
    if tag == 3:
        return x.astype("<f4" if bits == 32 else "<f8").tobytes()
    if bits == 8:
        return np.clip(np.rint(x * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    scale = 2 ** (bits - 1)
    ints = np.clip(np.rint(x * scale), -scale, scale - 1).astype(np.int64)
    if bits == 24:
        return b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    return ints.astype("<i2" if bits == 16 else "<i4").tobytes()


def level(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


FORMATS = [(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)]


@pytest.mark.parametrize("extensible", [False, True])
@pytest.mark.parametrize(("tag", "bits"), FORMATS)
def test_decodes_every_supported_format(tag: int, bits: int, extensible: bool) -> None:
    x = tone(8000)
    out = decode_wav(wav(fmt_body(tag, 1, 8000, bits, extensible), encode_samples(x, tag, bits)))
    assert out.dtype == np.int16 and out.size == x.size
    tolerance = 300 if bits == 8 else 2
    assert np.max(np.abs(out.astype(np.int32) - np.rint(x * 32768))) <= tolerance


def test_stereo_is_averaged_and_rate_converted() -> None:
    left = tone(44100, freq=440.0, amp=0.4)
    right = np.zeros_like(left)
    data = np.column_stack([left, right]).ravel()
    out = decode_wav(wav(fmt_body(1, 2, 44100, 16), encode_samples(data, 1, 16)))
    assert abs(out.size - 4000) <= 1
    assert level(out[400:-400]) == pytest.approx(0.2 * 32768 / np.sqrt(2), rel=0.02)


def test_six_channel_float_extensible() -> None:
    x = tone(48000, seconds=0.25, amp=0.6)
    data = np.repeat(x, 6)
    out = decode_wav(wav(fmt_body(3, 6, 48000, 32, extensible=True), encode_samples(data, 3, 32)))
    assert out.size == 2000
    assert level(out[200:-200]) == pytest.approx(0.6 * 32768 / np.sqrt(2), rel=0.02)


def test_odd_sized_unknown_chunks_are_skipped() -> None:
    x = tone(8000, seconds=0.1)
    extra = chunk(b"LIST", b"INFOabc") + chunk(b"fact", b"\x01\x02\x03")
    out = decode_wav(wav(fmt_body(1, 1, 8000, 16), encode_samples(x, 1, 16), extra=extra))
    assert out.size == x.size


def test_odd_8bit_data_chunk_followed_by_a_chunk() -> None:
    x = tone(8000, seconds=0.001)[:7]
    body = b"WAVE" + chunk(b"fmt ", fmt_body(1, 1, 8000, 8)) + chunk(b"data", encode_samples(x, 1, 8))
    body += chunk(b"junk", b"zz")
    out = decode_wav(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert out.size == 7


def test_truncated_data_chunk_uses_what_is_there() -> None:
    full = wav(fmt_body(1, 1, 8000, 16), encode_samples(tone(8000, 0.1), 1, 16))
    out = decode_wav(full[:-101])
    assert out.size == (800 * 2 - 101) // 2


def test_streaming_header_sizes_like_espeak() -> None:
    good = wav(fmt_body(1, 1, 8000, 16), encode_samples(tone(8000, 0.1), 1, 16))
    patched = good[:4] + b"\xff\xff\xff\x7f" + good[8:40] + b"\x00\xf0\xff\x7f" + good[44:]
    assert decode_wav(patched).size == 800


def test_encode_decode_round_trip() -> None:
    pcm = np.rint(tone(8000) * 32767).astype(np.int16)
    data = encode_wav(pcm)
    assert data[:4] == b"RIFF" and len(data) == 44 + 2 * pcm.size
    np.testing.assert_array_equal(decode_wav(data), pcm)
    np.testing.assert_array_equal(decode_base64_wav(base64.b64encode(data).decode()), pcm)
    uri = "data:audio/wav;base64," + base64.b64encode(data).decode()
    np.testing.assert_array_equal(decode_base64_wav(uri), pcm)


def test_g711_wav() -> None:
    ulaw = wav(struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8), bytes([0xFF, 0x80, 0x00, 0x7F]))
    assert decode_wav(ulaw).tolist() == [0, 32124, -32124, 0]


def test_read_real_file() -> None:
    pcm = read_wav(ASTERISK_SOUNDS / "please-try-again.wav")
    assert pcm.dtype == np.int16 and 0.8 < pcm.size / 8000 < 2.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a RIFF/WAVE"),
        (b"garbage garbage garbage", "not a RIFF/WAVE"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
        (b"RIFF\x00\x00\x00\x00WAVE" + chunk(b"fmt ", fmt_body(1, 1, 8000, 16)), "no data chunk"),
        (wav(struct.pack("<HHIIHH", 2, 1, 8000, 4000, 256, 4), b"\x00" * 256), r"0x0002 \(ADPCM\)"),
        (wav(fmt_body(1, 1, 8000, 12)[:12] + struct.pack("<HH", 5, 40), b"\x00" * 10), "sample size"),
        (wav(fmt_body(3, 1, 8000, 16), b"\x00" * 10), "IEEE float sample size"),
        (wav(fmt_body(1, 0, 8000, 16), b""), "0 channels"),
        (wav(fmt_body(1, 1, 0, 16), b""), "0 Hz"),
        (wav(b"\x01\x00", b""), "fmt chunk is 2 bytes"),
    ],
)
def test_bad_input_raises_named_error(data: bytes, message: str) -> None:
    with pytest.raises(AudioFormatError, match=message):
        decode_wav(data)


def test_unsupported_format_message() -> None:
    with pytest.raises(AudioFormatError) as info:
        decode_wav(wav(struct.pack("<HHIIHH", 2, 1, 8000, 4000, 256, 4), b""))
    assert str(info.value).startswith("WAV: unsupported format tag 0x0002 (ADPCM); only PCM")


@pytest.mark.parametrize("payload", ["not base64!!", "", "QUJD", "   "])
def test_bad_base64(payload: str) -> None:
    with pytest.raises(AudioFormatError, match=r"^(audio|WAV): "):
        decode_base64_wav(payload)


def test_error_is_a_value_error() -> None:
    assert issubclass(AudioFormatError, ValueError)


def test_a_wav_declaring_1_hz_is_refused_before_decoding() -> None:
    import tracemalloc

    from flowapp.audio.limits import LimitExceeded

    one_hz = wav(fmt_body(1, 1, 1, 8), b"\x80" * 20_000)
    tracemalloc.start()
    with pytest.raises(LimitExceeded, match=r"1 Hz.*MIN_WAV_RATE") as refused:
        decode_base64_wav(base64.b64encode(one_hz).decode())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(refused.value, AudioFormatError) and refused.value.limit == "MIN_WAV_RATE..MAX_WAV_RATE"
    assert peak < 1_000_000
    with pytest.raises(LimitExceeded, match="384000 Hz"):
        decode_wav(wav(fmt_body(1, 1, 400_000, 16), b"\x00" * 100))


def test_a_wav_longer_than_the_item_bound_is_refused_by_its_size() -> None:
    from flowapp.audio.limits import MAX_ITEM_SECONDS, LimitExceeded

    long_wav = wav(fmt_body(1, 1, 8000, 8), b"\x80" * (8000 * (MAX_ITEM_SECONDS + 1)))
    with pytest.raises(LimitExceeded, match=rf"lasts {MAX_ITEM_SECONDS + 1} s.*MAX_ITEM_SECONDS"):
        decode_wav(long_wav)
    assert decode_wav(long_wav, max_seconds=None).size == 8000 * (MAX_ITEM_SECONDS + 1), "no bound: own files"


def test_decoding_works_a_block_at_a_time() -> None:
    """60 s of 48 kHz stereo float: a whole-file decode would widen all 46 MB of samples to float64 at once."""
    import tracemalloc

    x = tone(48000, seconds=60.0, amp=0.3)
    data = wav(fmt_body(3, 2, 48000, 32), np.repeat(x, 2).astype("<f4").tobytes())
    tracemalloc.start()
    out = decode_wav(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.size == 60 * 8000
    assert peak < out.nbytes + 20_000_000
    assert abs(level(out) - 0.3 * 32768 / np.sqrt(2)) < 100
