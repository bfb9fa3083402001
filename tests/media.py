"""Real recordings shipped by Debian packages, for tests and benchmarks.

Missing files raise instead of skipping: CI installs the packages, so an absent file is a setup bug.
"""

from __future__ import annotations

import re
import struct
import subprocess
from functools import cache
from pathlib import Path

import numpy as np

from flowapp.audio import alaw_decode, decode_wav, read_wav, resample
from flowapp.audio.frames import Pcm

ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en")
MOH_DIR = Path("/usr/share/asterisk/moh")
POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
LIBRIVOX_DIR = POCKETSPHINX_DATA / "librivox"
G711A_PCAP = Path("/usr/share/sip-tester/g711a.pcap")

SPEECH_PROMPTS = (
    "please-try-again",
    "all-circuits-busy-now",
    "check-number-dial-again",
    "cannot-complete-as-dialed",
    "conf-getpin",
    "vm-enter-num-to-call",
    "queue-thankyou",
    "pbx-invalid",
    "auth-thankyou",
    "conf-onlyperson",
    "vm-login",
    "privacy-unident",
)

_PACKAGES = {
    ASTERISK_SOUNDS: "asterisk-core-sounds-en-wav",
    MOH_DIR: "asterisk-moh-opsound-wav",
    POCKETSPHINX_DATA: "pocketsphinx-testdata",
    G711A_PCAP.parent: "sip-tester",
}


class MissingMediaError(FileNotFoundError):
    """A test recording is absent; the message names the Debian package that provides it."""


def _require(path: Path) -> Path:
    if not path.exists():
        package = next((pkg for d, pkg in _PACKAGES.items() if path.is_relative_to(d)), "the providing package")
        raise MissingMediaError(f"{path} not found; install it with: apt-get install {package}")
    return path


@cache
def _asterisk_prompt(name: str) -> Pcm:
    return read_wav(_require(ASTERISK_SOUNDS / f"{name}.wav"))


def asterisk_prompt(name: str) -> Pcm:
    """An 8 kHz human-voice IVR prompt, e.g. ``"please-try-again"``."""
    return _asterisk_prompt(name).copy()


def moh_clips() -> list[Path]:
    """All music-on-hold files."""
    clips = sorted(_require(MOH_DIR).glob("*.wav"))
    if not clips:
        raise MissingMediaError(f"no WAV files in {MOH_DIR}; install asterisk-moh-opsound-wav")
    return clips


@cache
def _moh(name: str) -> Pcm:
    return read_wav(_require(MOH_DIR / f"{name}.wav"))


def moh_clip(name: str | None = None, ms: int | None = None) -> Pcm:
    """A music-on-hold clip at 8 kHz (the first one by default), optionally cut to its first ``ms``."""
    pcm = _moh(name or moh_clips()[0].stem)
    if ms is not None:
        pcm = pcm[: 8 * ms]
    return pcm.copy()


@cache
def _librivox() -> tuple[tuple[Path, str], ...]:
    ids = _require(LIBRIVOX_DIR / "fileids").read_text().split()
    texts: dict[str, str] = {}
    for line in _require(LIBRIVOX_DIR / "transcription").read_text().splitlines():
        m = re.match(r"^\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^()]+)\)\s*$", line)
        if m:
            texts[m.group(2)] = m.group(1)
    return tuple((_require(LIBRIVOX_DIR / f"{fid}.wav"), texts[fid]) for fid in ids)


def librivox_clips() -> list[tuple[Path, str]]:
    """(path, lower-case transcript) of the 16 kHz read-speech clips; load with :func:`librivox_audio`."""
    return list(_librivox())


@cache
def _librivox_audio(path: Path, rate: int) -> Pcm:
    return decode_wav(path.read_bytes(), rate=rate)


def librivox_audio(path: Path, rate: int = 8000) -> Pcm:
    """A librivox clip resampled from its native 16 kHz to ``rate``."""
    return _librivox_audio(path, rate).copy()


_CMU_RAW = ("goforward.raw", "numbers.raw", "something.raw", "tidigits/dhd.2934z.raw")
"""Headerless 16 kHz 16-bit little-endian recordings of CMU speakers."""


@cache
def _cmu_readers() -> tuple[tuple[str, Pcm], ...]:
    cards = sorted(_require(POCKETSPHINX_DATA / "cards").glob("*.wav"))
    clips = [(f"cards-{p.stem}", decode_wav(p.read_bytes(), rate=8000)) for p in cards]
    for name in _CMU_RAW:
        raw = np.frombuffer(_require(POCKETSPHINX_DATA / name).read_bytes(), dtype="<i2")
        clips.append((Path(name).stem.split(".")[0], resample(raw, 16_000, 8000)))
    return tuple(clips)


def cmu_readers() -> list[tuple[str, Pcm]]:
    """(name, 8 kHz PCM) of pocketsphinx's test recordings: CMU card readers and other CMU speakers."""
    return [(name, pcm.copy()) for name, pcm in _cmu_readers()]


def _pcap_udp_payloads(data: bytes) -> list[bytes]:
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
    if magic not in endian:
        raise ValueError(f"not a classic pcap file (magic {magic.hex()})")
    e = endian[magic]
    linktype = struct.unpack_from(e + "I", data, 20)[0]
    payloads = []
    pos = 24
    while pos + 16 <= len(data):
        incl = struct.unpack_from(e + "I", data, pos + 8)[0]
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        if linktype == 1:
            ethertype, off = struct.unpack_from(">H", frame, 12)[0], 14
            while ethertype == 0x8100:
                ethertype, off = struct.unpack_from(">H", frame, off + 2)[0], off + 4
        elif linktype == 113:
            ethertype, off = struct.unpack_from(">H", frame, 14)[0], 16
        elif linktype in (101, 228):
            ethertype, off = 0x0800, 0
        else:
            raise ValueError(f"unsupported pcap link type {linktype}")
        if ethertype != 0x0800 or (frame[off] >> 4) != 4:
            continue
        ihl = (frame[off] & 0x0F) * 4
        total_len = struct.unpack_from(">H", frame, off + 2)[0]
        if frame[off + 9] != 17:
            continue
        udp = frame[off + ihl : off + total_len]
        udp_len = struct.unpack_from(">H", udp, 4)[0]
        payloads.append(udp[8:udp_len])
    return payloads


def _rtp_payload(packet: bytes, payload_type: int) -> tuple[int, bytes] | None:
    """(sequence number, payload) of an RTP v2 packet of the wanted type, honouring CSRCs/extension/padding."""
    if len(packet) < 12 or packet[0] >> 6 != 2 or packet[1] & 0x7F != payload_type:
        return None
    off = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        ext_words = struct.unpack_from(">H", packet, off + 2)[0]
        off += 4 + 4 * ext_words
    end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
    return struct.unpack_from(">H", packet, 2)[0], packet[off:end]


@cache
def _pcap_alaw() -> Pcm:
    packets = _pcap_udp_payloads(_require(G711A_PCAP).read_bytes())
    rtp = [p for p in (_rtp_payload(pkt, 8) for pkt in packets) if p is not None]
    if not rtp:
        raise ValueError(f"{G711A_PCAP}: no RTP packets with payload type 8 (PCMA)")
    first = rtp[0][0]
    rtp.sort(key=lambda sp: (sp[0] - first) & 0xFFFF)
    return alaw_decode(b"".join(payload for _, payload in rtp))


def pcap_speech_alaw() -> Pcm:
    """The A-law RTP speech in sip-tester's g711a.pcap, decoded to 8 kHz PCM in sequence order."""
    return _pcap_alaw().copy()


@cache
def _espeak(text: str, voice: str, pitch: int | None, rate: int | None) -> Pcm:
    pitched = [] if pitch is None else ["-p", str(pitch)]
    paced = [] if rate is None else ["-s", str(rate)]
    command = ["espeak-ng", "--stdout", "-v", voice, *pitched, *paced, "--", text]
    try:
        out = subprocess.run(command, capture_output=True, check=True).stdout
    except FileNotFoundError as exc:
        raise MissingMediaError("espeak-ng not found; install it with: apt-get install espeak-ng") from exc
    return decode_wav(out)


def espeak(text: str, voice: str = "en-us", pitch: int | None = None, rate: int | None = None) -> Pcm:
    """Synthetic speech at 8 kHz, straight from the espeak-ng program (no flowapp TTS layer involved);
    ``pitch`` is espeak-ng's ``-p`` (0-99, 50 by default), ``rate`` its ``-s`` (words a minute, 175 by default)."""
    return _espeak(text, voice, pitch, rate).copy()


__all__ = [
    "ASTERISK_SOUNDS",
    "G711A_PCAP",
    "LIBRIVOX_DIR",
    "MOH_DIR",
    "POCKETSPHINX_DATA",
    "SPEECH_PROMPTS",
    "MissingMediaError",
    "asterisk_prompt",
    "cmu_readers",
    "espeak",
    "librivox_audio",
    "librivox_clips",
    "moh_clip",
    "moh_clips",
    "pcap_speech_alaw",
]
