"""RIFF/WAVE decoding into the engine's 8 kHz int16 mono format, and encoding back.

The stdlib ``wave`` module rejects IEEE float and most WAVE_FORMAT_EXTENSIBLE files, which is what
many editors and TTS services emit, so the container is parsed here. Apps hand us arbitrary files
(and base64 blobs in protocol ``audio`` actions); anything that cannot be played raises
AudioFormatError naming the offending field, and anything that would render to more than the bounds in
flowapp.audio.limits raises LimitExceeded before a sample is decoded. Samples are decoded and resampled
a block at a time, so the working memory is the output plus one block, whatever the file's size.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from os import PathLike

import numpy as np
import numpy.typing as npt

from flowapp.audio.errors import AudioFormatError
from flowapp.audio.frames import SAMPLE_RATE, Pcm, as_pcm
from flowapp.audio.g711 import alaw_decode, ulaw_decode
from flowapp.audio.limits import MAX_ITEM_SECONDS, check_duration, check_wav_rate
from flowapp.audio.resample import StreamResampler

_PCM = 0x0001
_FLOAT = 0x0003
_ALAW = 0x0006
_ULAW = 0x0007
_EXTENSIBLE = 0xFFFE
_KSDATAFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_TAG_NAMES = {0x0002: "ADPCM", 0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0055: "MPEG Layer 3", 0x0050: "MPEG"}
_SUPPORTED = "only PCM, IEEE float and G.711 are supported"
_DATA_URI = re.compile(r"^data:[^,]*;base64,", re.IGNORECASE)
_BLOCK_BYTES = 1 << 20
"""Payload bytes decoded at a time (at most 8 MB once widened to float64)."""


@dataclass(frozen=True)
class _Fmt:
    tag: int
    channels: int
    rate: int
    block_align: int
    bits: int


def _tag_name(tag: int) -> str:
    name = _TAG_NAMES.get(tag)
    return f"0x{tag:04X} ({name})" if name else f"0x{tag:04X}"


def _parse_fmt(body: bytes) -> _Fmt:
    if len(body) < 16:
        raise AudioFormatError(f"WAV: fmt chunk is {len(body)} bytes; at least 16 are required")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE:
        if len(body) < 40:
            raise AudioFormatError(f"WAV: WAVE_FORMAT_EXTENSIBLE fmt chunk is {len(body)} bytes; expected 40")
        sub = body[24:40]
        if sub[2:] != _KSDATAFORMAT_TAIL:
            raise AudioFormatError(f"WAV: unknown WAVE_FORMAT_EXTENSIBLE subformat GUID {sub.hex()}")
        tag = struct.unpack_from("<H", sub)[0]
    if channels == 0:
        raise AudioFormatError("WAV: fmt chunk declares 0 channels")
    if rate == 0:
        raise AudioFormatError("WAV: fmt chunk declares a sample rate of 0 Hz")
    fmt = _Fmt(tag, channels, rate, block_align, bits)
    _check_encoding(fmt)
    return fmt


def _check_encoding(fmt: _Fmt) -> None:
    if fmt.tag not in (_PCM, _FLOAT, _ALAW, _ULAW):
        raise AudioFormatError(f"WAV: unsupported format tag {_tag_name(fmt.tag)}; {_SUPPORTED}")
    if fmt.block_align == 0 or fmt.block_align % fmt.channels:
        raise AudioFormatError(f"WAV: block align {fmt.block_align} does not fit {fmt.channels} channel(s)")
    width = fmt.block_align // fmt.channels
    allowed = {_PCM: (1, 2, 3, 4), _FLOAT: (4, 8), _ALAW: (1,), _ULAW: (1,)}[fmt.tag]
    if width not in allowed or fmt.bits > 8 * width or fmt.bits == 0:
        kind = {_PCM: "PCM", _FLOAT: "IEEE float", _ALAW: "A-law", _ULAW: "mu-law"}[fmt.tag]
        raise AudioFormatError(
            f"WAV: unsupported {kind} sample size: {fmt.bits} bits in {width}-byte containers "
            f"(supported containers: {', '.join(str(8 * w) for w in allowed)} bits)"
        )


def _samples(fmt: _Fmt, raw: bytes) -> npt.NDArray[np.float64]:
    """Decode interleaved samples to float64 on the int16 scale (full scale = 32768)."""
    width = fmt.block_align // fmt.channels
    if fmt.tag == _ALAW:
        return alaw_decode(raw).astype(np.float64)
    if fmt.tag == _ULAW:
        return ulaw_decode(raw).astype(np.float64)
    if fmt.tag == _FLOAT:
        floats = np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float64)
        return np.clip(np.nan_to_num(floats), -1.0, 1.0) * 32768.0
    if width == 1:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8
        return (v >> 8).astype(np.float64) / 256.0
    return np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0


def _chunks(data: bytes) -> tuple[_Fmt, memoryview]:
    """The format and the whole frames of the data chunk (a view: a large payload is not copied)."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise AudioFormatError(f"WAV: not a RIFF/WAVE file (starts with {bytes(data[:12])!r})")
    view = memoryview(data)
    fmt: _Fmt | None = None
    payload: memoryview | None = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = struct.unpack_from("<4sI", data, pos)
        body = view[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < size:
                raise AudioFormatError(f"WAV: fmt chunk truncated ({len(body)} of {size} bytes)")
            fmt = _parse_fmt(bytes(body))
        elif cid == b"data" and payload is None:
            payload = body
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise AudioFormatError("WAV: no fmt chunk found")
    if payload is None:
        raise AudioFormatError("WAV: no data chunk found")
    return fmt, payload[: len(payload) - len(payload) % fmt.block_align]


def _checked(data: bytes, max_seconds: float | None) -> tuple[_Fmt, memoryview]:
    fmt, payload = _chunks(data)
    check_wav_rate(fmt.rate)
    if max_seconds is not None:
        check_duration(len(payload) // fmt.block_align / fmt.rate, "the WAV", max_seconds)
    return fmt, payload


def check_wav(data: bytes, max_seconds: float | None = MAX_ITEM_SECONDS) -> None:
    """Raise what decode_wav would raise about the container and the bounds, without decoding a sample."""
    _checked(data, max_seconds)


def decode_wav(data: bytes, rate: int = SAMPLE_RATE, max_seconds: float | None = MAX_ITEM_SECONDS) -> Pcm:
    """Any supported WAV -> int16 mono at ``rate``; channels are averaged, a truncated data chunk is kept.

    ``max_seconds`` bounds the audio the file declares (None: no bound, for the developer's own files).
    """
    fmt, payload = _checked(data, max_seconds)
    resampler = StreamResampler(fmt.rate, rate)
    step = max(1, _BLOCK_BYTES // fmt.block_align) * fmt.block_align
    pieces: list[Pcm] = []
    for start in range(0, len(payload), step):
        samples = _samples(fmt, bytes(payload[start : start + step])).reshape(-1, fmt.channels).mean(axis=1)
        pieces.append(resampler.process(np.clip(np.rint(samples), -32768, 32767).astype(np.int16)))
    pieces.append(resampler.flush())
    return np.concatenate(pieces)


def read_wav(path: str | PathLike[str]) -> Pcm:
    """Read a WAV file as 8 kHz int16 mono, however long; errors name the file."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return decode_wav(data, max_seconds=None)
    except AudioFormatError as exc:
        raise AudioFormatError(f"{path}: {exc}") from exc


def encode_wav(pcm: npt.ArrayLike, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono PCM WAV, the most widely accepted flavour."""
    body = as_pcm(pcm).astype("<i2").tobytes()
    riff = struct.pack("<4sI4s", b"RIFF", 36 + len(body), b"WAVE")
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, _PCM, 1, rate, rate * 2, 2, 16)
    return riff + fmt + struct.pack("<4sI", b"data", len(body)) + body


def _unbase64(b64: str) -> bytes:
    text = _DATA_URI.sub("", b64.strip())
    text = "".join(text.split())
    if not text:
        raise AudioFormatError("audio: base64 payload is empty")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AudioFormatError(f"audio: payload is not valid base64 ({exc})") from exc


def check_base64_wav(b64: str) -> None:
    """check_wav for the base64 WAV of an ``audio`` action: refuse it before it is queued anywhere."""
    check_wav(_unbase64(b64))


def decode_base64_wav(b64: str) -> Pcm:
    """Decode the base64 WAV carried by protocol ``audio`` actions (a ``data:`` URI prefix is accepted)."""
    return decode_wav(_unbase64(b64))
