"""Turn-taking evaluation set and benchmark (issue #5): does the assistant stop for real barge-ins, and only for them?

Every clip is built at run time, seeded, from real recordings shipped by Debian (Asterisk prompts, LibriVox read
speech, music on hold), from espeak-ng and from synthetic noise, and runs through the real engine on simulated time
(`SimulatedCall`) while the assistant speaks a long utterance with `BargeIn.immediate()`. A scripted streaming
recognizer reveals each clip's known words the way a real one would (first partial 300-500 ms after onset, growing
every ~200 ms, final ~300 ms after the speech ends). Echo is produced live from what the engine actually played, so
it stops when playback pauses, as on a real line.

Three ways of hearing the caller: the scripted words above (the ideal recognizer); flowapp's local recognizer in
the loop (`local STT`: Whisper hears the clip itself, echo and all); and sound alone (`no STT`).

    python -m benchmarks.turn_taking [--quick] [--seed N] [--details] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.signal import butter, lfilter, sosfilt

from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES, Pcm
from flowapp.audio.g711 import ulaw_decode, ulaw_encode
from flowapp.audio.tts import EspeakTts
from flowapp.audio.wav import decode_wav, encode_wav
from flowapp.engine.call import EngineConfig, Record
from flowapp.engine.turns import InterruptionOptions, TurnHandling, words
from flowapp.protocol.actions import Action, Audio, BargeIn
from flowapp.protocol.events import Event
from flowapp.simulation.run import SimulatedCall
from flowapp.stt import ScriptedRecognizer, StreamingRecognizer, Transcript, make_recognizer
from tests.media import asterisk_prompt, librivox_audio, librivox_clips, moh_clip, moh_clips

Signal = npt.NDArray[np.float64]
RATE = 8000

ASSISTANT_TEXT = (
    "Thanks for calling the city utilities service line. I can help you with billing, meter readings, moving house, "
    "and outages. Our opening hours are Monday to Friday from eight in the morning to six in the evening, and on "
    "Saturdays from nine to one. If you are calling about an outage, please have your customer number ready; you "
    "will find it at the top of your last bill, right next to the date."
)

BARGE_IN_CLASSES = ("barge_in_long", "barge_in_short", "barge_in_tts", "double_talk")
OTHER_CLASSES = ("backchannel", "burst", "music", "noise", "echo")
NOISE_CLASSES = ("burst", "music", "noise")
"""Classes that also run with a noisy recognizer, one that hears a spurious short word in the sound."""
CLASS_NOTES = {
    "barge_in_long": "Asterisk prompts and LibriVox sentences",
    "barge_in_short": "single words from real recordings: digits, letters, hello, no, sorry...",
    "barge_in_tts": "espeak-ng: wait, stop, hold on, wait listen, no no no, actually, excuse me",
    "double_talk": "a real barge-in over the assistant's own echo",
    "backchannel": "espeak-ng: uh-huh, mhm, yeah, okay, right, yes, I see, ja, genau",
    "burst": "coughs, clicks, rustle, door slams (synthetic)",
    "music": "music on hold at telephone levels",
    "noise": "steady hiss, hum, car rumble starting mid-call",
    "echo": "the assistant itself, 20-200 ms late, 6-25 dB down, G.711",
}
SPURIOUS_WORDS = ("the", "a", "uh", "oh", "and", "hmm", "i")
"""What recognizers tend to hallucinate on a cough or music: short, mostly function words."""


# Configurations ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Configuration:
    name: str
    interruption: dict[str, object]
    recognizer: Literal["scripted", "local", "none"] = "scripted"
    barge_in: str = "immediate"
    """The assistant's strategy: immediate, or minimum_characters (3)."""
    noisy: bool = False
    """Runs only the noise classes, with a recognizer that hears a spurious word in them."""

    def turn_handling(self, language: str) -> TurnHandling:
        options = {**self.interruption, "language": language}
        return TurnHandling(interruption=InterruptionOptions.model_validate(options))


IMMEDIATE = Configuration("immediate", {})
VAD = Configuration("vad", {"resume_false_interruption": True})
ADAPTIVE = Configuration("adaptive", {"mode": "adaptive"})
ADAPTIVE_LOCAL = Configuration("adaptive, local STT", {"mode": "adaptive"}, recognizer="local")
ADAPTIVE_AUDIO = Configuration("adaptive, no STT", {"mode": "adaptive"}, recognizer="none")
IMMEDIATE_LOCAL = Configuration("immediate, local STT", {}, recognizer="local")
MIN_CHARS_LOCAL = Configuration("min chars, local STT", {}, recognizer="local", barge_in="minimum_characters")
VAD_NOISY = Configuration("vad, noisy STT", {"resume_false_interruption": True}, noisy=True)
ADAPTIVE_NOISY = Configuration("adaptive, noisy STT", {"mode": "adaptive"}, noisy=True)
CONFIGURATIONS = (
    IMMEDIATE,
    VAD,
    ADAPTIVE,
    ADAPTIVE_LOCAL,
    ADAPTIVE_AUDIO,
    IMMEDIATE_LOCAL,
    MIN_CHARS_LOCAL,
    VAD_NOISY,
    ADAPTIVE_NOISY,
)
TARGETS_FOR = {ADAPTIVE.name: "all", ADAPTIVE_LOCAL.name: "all", ADAPTIVE_AUDIO.name: "audio"}


# Signals -------------------------------------------------------------------------------------------------------


def db_to_amp(db: float) -> float:
    return float(32768.0 * 10 ** (db / 20))


def active_db(x: Signal) -> float:
    """Level of the loud part of a clip (frames within 20 dB of the loudest), in dBFS: how loud it sounds."""
    n = len(x) // FRAME_SAMPLES
    if n == 0:
        return -100.0
    power = np.mean(x[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES) ** 2, axis=1) + 1e-9
    loud = power[power >= power.max() / 100]
    return float(10 * np.log10(loud.mean() / 32768.0**2))


def at_level(x: Signal, db: float) -> Signal:
    return x * 10 ** ((db - active_db(x)) / 20)


def band(x: Signal, low: float, high: float, order: int = 4) -> Signal:
    sos = butter(order, [low / (RATE / 2), high / (RATE / 2)], btype="band", output="sos")
    return np.asarray(sosfilt(sos, x), dtype=np.float64)


def lowpass(x: Signal, cutoff: float, order: int = 4) -> Signal:
    sos = butter(order, cutoff / (RATE / 2), btype="low", output="sos")
    return np.asarray(sosfilt(sos, x), dtype=np.float64)


def fade(x: Signal, ms: float = 10.0) -> Signal:
    n = min(len(x) // 2, int(ms * 8))
    if n == 0:
        return x
    ramp = np.linspace(0.0, 1.0, n)
    y = x.copy()
    y[:n] *= ramp
    y[-n:] *= ramp[::-1]
    return y


def line_noise(n: int, db: float, rng: np.random.Generator) -> Signal:
    """Telephone line hiss: band-limited, slightly pink, at `db` dBFS RMS."""
    white = rng.normal(0.0, 1.0, n + 400)
    pink: Signal = np.asarray(lfilter([1.0], [1.0, -0.7], white), dtype=np.float64)
    hiss = band(pink, 250, 3500)[400:]
    scaled: Signal = hiss / (np.sqrt(np.mean(hiss**2)) + 1e-12) * db_to_amp(db)
    return scaled


def onset_ms(x: Signal) -> float:
    """First sample above 10% of the clip's peak envelope (as tests/engine/harness.py): where speech audibly begins."""
    envelope = np.abs(x)
    threshold = 0.1 * np.percentile(envelope, 99.5)
    return float(np.argmax(envelope > threshold)) / 8.0


def offset_end_ms(x: Signal) -> float:
    envelope = np.abs(x[::-1])
    threshold = 0.1 * np.percentile(envelope, 99.5)
    return float(len(x) - np.argmax(envelope > threshold)) / 8.0


def trim(x: Signal, pad_ms: float = 30.0) -> Signal:
    """Cut leading and trailing silence of a recording, keeping a little room."""
    start = max(0, int((onset_ms(x) - pad_ms) * 8))
    end = min(len(x), int((offset_end_ms(x) + pad_ms) * 8))
    return x[start:end]


# Sources -------------------------------------------------------------------------------------------------------


@cache
def _espeak(text: str, voice: str, rate: int, pitch: int) -> bytes:
    args = ["espeak-ng", "--stdout", "-v", voice, "-s", str(rate), "-p", str(pitch), "--", text]
    return subprocess.run(args, capture_output=True, check=True).stdout


def espeak(text: str, voice: str, rate: int, pitch: int) -> Signal:
    return trim(decode_wav(_espeak(text, voice, rate, pitch)).astype(np.float64))


@cache
def asterisk_texts() -> dict[str, str]:
    """What each Asterisk prompt says, from the package's own transcript list."""
    path = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
    texts: dict[str, str] = {}
    for line in gzip.decompress(path.read_bytes()).decode("utf-8", "replace").splitlines():
        m = re.match(r"^([\w/-]+):\s*(.+)$", line)
        if m:
            texts[m.group(1)] = m.group(2).strip()
    return texts


def prompt(name: str) -> Signal:
    return trim(asterisk_prompt(name).astype(np.float64))


LONG_PROMPTS = (
    "please-try-again",
    "all-circuits-busy-now",
    "check-number-dial-again",
    "cannot-complete-as-dialed",
    "conf-getpin",
    "vm-enter-num-to-call",
    "queue-thankyou",
    "pbx-invalid",
    "conf-onlyperson",
    "privacy-unident",
    "vm-repeat",
    "vm-sorry",
    "sorry-youre-having-problems",
    "pls-hold-while-try",
    "one-moment-please",
    "agent-alreadyon",
    "please-try-call-later",
    "hello-world",
)
SHORT_PROMPTS = (
    *(f"digits/{d}" for d in range(10)),
    *(f"letters/{c}" for c in "abcde"),
    "hello",
    "vm-no",
    "goodbye",
    "im-sorry",
    "cancelled",
    "minute",
    "second",
)
TTS_BARGE_INS = ("wait", "stop", "hold on", "wait, listen", "no no no", "actually", "excuse me")
BACKCHANNELS = (
    ("uh-huh", "uh-huh", "en"),
    ("mm hmm", "mhm", "en"),
    ("yeah", "yeah", "en"),
    ("okay", "okay", "en"),
    ("right", "right", "en"),
    ("yes", "yes", "en"),
    ("I see", "I see", "en"),
    ("ja", "ja", "de"),
    ("genau", "genau", "de"),
)
"""(what espeak says, what the recognizer reports, language)."""
EN_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+f4", "en-us+m3", "en-029", "en-gb-scotland+f2", "en-us+m7")
DE_VOICES = ("de", "de+f3", "de+m3", "de+f4")


# The clip set --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EchoPath:
    delay_ms: int
    loss_db: float


@dataclass
class Clip:
    name: str
    kind: str
    caller: Signal
    """Caller-side audio for the whole call, before echo and G.711."""
    onset_ms: int
    """Call time where the sound truly begins (from the clean clip's energy)."""
    duration_ms: int
    script: list[Transcript] = field(default_factory=list)
    noisy_script: list[Transcript] = field(default_factory=list)
    echo: EchoPath | None = None
    language: str = "en"

    @property
    def barge_in(self) -> bool:
        return self.kind in BARGE_IN_CLASSES


def streaming_script(text: str, onset: float, end: float, rng: np.random.Generator) -> list[Transcript]:
    """A streaming recognizer's results for `text` spoken from `onset` to `end` (call ms)."""
    said = words(text)
    if not said:
        return []
    shown_text = text.split()
    n = len(said)
    span = max(end - onset, 1.0)
    final_at = end + rng.uniform(250, 350)
    t = onset + rng.uniform(300, 500)
    out: list[Transcript] = []
    shown = 0
    while t < final_at:
        heard = math.ceil(n * min(1.0, max(0.0, t - 150 - onset) / span))
        k = max(1, min(n, heard))
        if k > shown:
            out.append(Transcript(" ".join(shown_text[:k]), False, int(t)))
            shown = k
        t += rng.uniform(160, 240)
    out.append(Transcript(text, True, int(final_at)))
    return out


def _first_words(text: str, fraction: float) -> str:
    parts = text.split()
    return " ".join(parts[: max(1, round(len(parts) * fraction))])


class SetBuilder:
    """Builds the labelled clips; every random choice comes from one seeded generator."""

    def __init__(self, seed: int, quick: bool) -> None:
        self.rng = np.random.default_rng(seed)
        self.quick = quick
        self.clips: list[Clip] = []

    def pick(self, items: Sequence[str]) -> str:
        return items[int(self.rng.integers(len(items)))]

    def thin(self, items: Sequence[object], every: int = 3) -> list[int]:
        """Indices to build: all of them, or a spread-out share in --quick."""
        return [i for i in range(len(items)) if not self.quick or i % every == 0]

    def place(
        self,
        name: str,
        kind: str,
        sound: Signal,
        *,
        text: str = "",
        snr_db: float | None = None,
        noise_db: float | None = None,
        echo: EchoPath | None = None,
        language: str = "en",
        at_ms: int | None = None,
        tail_ms: int = 3000,
    ) -> Clip:
        """Put `sound` into a call at a random moment while the assistant speaks, over line noise."""
        rng = self.rng
        if kind in BARGE_IN_CLASSES and len(sound) > 3000 * 8:
            full = len(sound)
            sound = fade(sound[: int(rng.uniform(2200, 3000)) * 8], 20)
            text = _first_words(text, len(sound) / full)
        start = at_ms if at_ms is not None else int(rng.uniform(1000, 7000)) // 10 * 10
        duration = start + len(sound) // 8 + tail_ms
        duration -= duration % FRAME_MS
        caller = np.zeros(duration * 8)
        caller[start * 8 : start * 8 + len(sound)] = sound[: len(caller) - start * 8]
        if snr_db is not None:
            noise_db = active_db(sound) - snr_db
        if noise_db is not None:
            caller += line_noise(len(caller), noise_db, rng)
        onset = start + onset_ms(sound)
        end = start + offset_end_ms(sound)
        clip = Clip(name, kind, caller, round(onset), duration, echo=echo, language=language)
        if text:
            clip.script = streaming_script(text, onset, end, rng)
        if kind in NOISE_CLASSES:
            clip.noisy_script = streaming_script(self.pick(SPURIOUS_WORDS), onset, end, rng)
        self.clips.append(clip)
        return clip

    def speech_level(self) -> float:
        return float(self.rng.uniform(-30, -18))

    def snr(self) -> float:
        return float(self.rng.uniform(15, 25))

    def voice(self, voices: Sequence[str]) -> tuple[str, int, int]:
        return self.pick(voices), int(self.rng.integers(140, 231)), int(self.rng.integers(25, 80))

    def echo_path(self) -> EchoPath:
        return EchoPath(int(self.rng.integers(2, 11)) * 20, float(self.rng.uniform(6, 25)))

    def build(self) -> list[Clip]:
        self.long_barge_ins()
        self.short_barge_ins()
        self.tts_barge_ins()
        self.double_talk()
        self.backchannels()
        self.bursts()
        self.music()
        self.steady_noise()
        self.echo()
        return self.clips

    def long_speech(self) -> list[tuple[str, Signal, str]]:
        texts = asterisk_texts()
        out = [(name, prompt(name), texts[name]) for name in LONG_PROMPTS]
        for path, text in librivox_clips():
            out.append((path.stem[-4:], trim(librivox_audio(path).astype(np.float64)), text))
        return out

    def long_barge_ins(self) -> None:
        speech = self.long_speech()
        for i in self.thin(speech * 2):
            name, audio, text = speech[i % len(speech)]
            sound = at_level(audio, self.speech_level())
            self.place(f"long:{name}", "barge_in_long", sound, text=text, snr_db=self.snr())

    def short_speech(self) -> list[tuple[str, Signal, str]]:
        texts = asterisk_texts()
        return [(name, prompt(name), texts[name]) for name in SHORT_PROMPTS]

    def short_barge_ins(self) -> None:
        speech = self.short_speech()
        for i in self.thin(speech * 2):
            name, audio, text = speech[i % len(speech)]
            sound = at_level(audio, self.speech_level())
            self.place(f"short:{name}", "barge_in_short", sound, text=text, snr_db=self.snr())

    def tts_barge_ins(self) -> None:
        variants = [phrase for phrase in TTS_BARGE_INS for _ in range(6)]
        for i in self.thin(variants):
            phrase = variants[i]
            voice, rate, pitch = self.voice(EN_VOICES)
            sound = at_level(espeak(phrase, voice, rate, pitch), self.speech_level())
            self.place(f"tts:{phrase}:{voice}:{rate}:{pitch}", "barge_in_tts", sound, text=phrase, snr_db=self.snr())

    def double_talk(self) -> None:
        pool = self.long_speech() + self.short_speech()
        for i in self.thin(range(16)):
            name, audio, text = pool[int(self.rng.integers(len(pool)))]
            if i % 4 == 3:
                phrase = self.pick(TTS_BARGE_INS)
                voice, rate, pitch = self.voice(EN_VOICES)
                name, audio, text = f"tts:{phrase}", espeak(phrase, voice, rate, pitch), phrase
            sound = at_level(audio, self.speech_level())
            path = self.echo_path()
            self.place(
                f"double:{name}:{path.delay_ms}ms:{path.loss_db:.0f}dB",
                "double_talk",
                sound,
                text=text,
                snr_db=self.snr(),
                echo=path,
            )

    def backchannels(self) -> None:
        variants = [entry for entry in BACKCHANNELS for _ in range(6)]
        for i in self.thin(variants):
            said, heard, language = variants[i]
            voice, rate, pitch = self.voice(DE_VOICES if language == "de" else EN_VOICES)
            sound = espeak(said, voice, rate, pitch)[: 950 * 8]
            sound = at_level(fade(sound, 10), self.speech_level() - 3)
            self.place(
                f"bc:{heard}:{voice}:{rate}:{pitch}",
                "backchannel",
                sound,
                text=heard,
                snr_db=self.snr(),
                language=language,
            )

    def bursts(self) -> None:
        makers: list[tuple[str, Callable[[], Signal]]] = [
            ("cough", self.cough),
            ("click", self.clicks),
            ("rustle", self.rustle),
            ("door", self.door),
        ]
        variants = [entry for entry in makers for _ in range(12)]
        for i in self.thin(variants):
            name, make = variants[i]
            self.place(f"burst:{name}:{i}", "burst", make(), noise_db=float(self.rng.uniform(-60, -45)))

    def cough(self) -> Signal:
        rng = self.rng
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.uniform(150, 380) * 8)
            t = np.arange(n) / RATE
            attack = np.minimum(1.0, t / rng.uniform(0.004, 0.015))
            envelope = attack * np.exp(-t / rng.uniform(0.04, 0.12))
            center = rng.uniform(400, 1600)
            burst = band(rng.normal(0, 1, n), max(150.0, center * 0.4), min(3600.0, center * 2.5), 2)
            if rng.random() < 0.35:
                f0 = rng.uniform(110, 260)
                burst = burst + 0.6 * np.sign(np.sin(2 * np.pi * f0 * t)) * np.std(burst)
            parts.append(burst * envelope)
            parts.append(np.zeros(int(rng.uniform(60, 220) * 8)))
        return at_level(np.concatenate(parts[:-1]), float(rng.uniform(-26, -12)))

    def clicks(self) -> Signal:
        rng = self.rng
        n = int(rng.uniform(100, 700) * 8)
        x = np.zeros(n)
        for _ in range(int(rng.integers(1, 9))):
            at = int(rng.integers(0, n - 40))
            length = int(rng.integers(8, 40))
            x[at : at + length] += rng.normal(0, 1, length) * np.exp(-np.arange(length) / rng.uniform(2, 10))
        return at_level(band(x, 200, 3800, 2), float(rng.uniform(-24, -10)))

    def rustle(self) -> Signal:
        rng = self.rng
        n = int(rng.uniform(80, 500) * 8)
        x = band(rng.normal(0, 1, n), rng.uniform(300, 1200), 3700, 2) * np.hanning(n)
        return at_level(x, float(rng.uniform(-34, -18)))

    def door(self) -> Signal:
        rng = self.rng
        n = int(rng.uniform(250, 700) * 8)
        t = np.arange(n) / RATE
        thump = lowpass(rng.normal(0, 1, n), rng.uniform(250, 700)) * np.exp(-t / rng.uniform(0.05, 0.2))
        thump[:40] += rng.normal(0, 3, 40) * np.std(thump)
        return at_level(band(thump, 150, 3500, 2), float(rng.uniform(-20, -8)))

    def music(self) -> None:
        files = moh_clips()
        variants = [path for path in files for _ in range(4)]
        for i in self.thin(variants):
            path = variants[i]
            pcm = moh_clip(path.stem).astype(np.float64)
            ms = int(self.rng.uniform(2000, 4000))
            start = int(self.rng.uniform(0, len(pcm) / 8 - ms - 1)) * 8
            sound = fade(pcm[start : start + ms * 8], 40)
            sound = at_level(band(sound, 300, 3400), float(self.rng.uniform(-36, -22)))
            self.place(f"music:{path.stem}:{start // 8}", "music", sound, noise_db=float(self.rng.uniform(-60, -45)))

    def steady_noise(self) -> None:
        kinds = ("hiss", "hum", "rumble", "hiss")
        variants = [k for k in kinds for _ in range(4)]
        for i in self.thin(variants):
            kind = variants[i]
            rng = self.rng
            n = int(rng.uniform(2500, 4000)) * 8
            if kind == "hiss":
                sound = line_noise(n, 0.0, rng)
                level = float(rng.uniform(-50, -30))
            elif kind == "hum":
                t = np.arange(n) / RATE
                mains = rng.choice([50.0, 60.0])
                sound = sum(np.sin(2 * np.pi * mains * h * t + rng.uniform(0, 6)) / h for h in (1, 3, 5, 7, 9))
                sound = band(np.asarray(sound), 100, 3400, 2)
                level = float(rng.uniform(-45, -28))
            else:
                sound = lowpass(np.cumsum(rng.normal(0, 1, n)) * 0.05 + rng.normal(0, 1, n), 500)
                level = float(rng.uniform(-42, -28))
            sound = at_level(fade(sound, float(rng.uniform(20, 300))), level)
            from_start = i % 2 == 1
            self.place(
                f"noise:{kind}:{level:.0f}dB{':from-start' if from_start else ''}",
                "noise",
                sound,
                noise_db=float(rng.uniform(-62, -50)),
                at_ms=0 if from_start else None,
            )

    def echo(self) -> None:
        for i in self.thin(range(30)):
            path = self.echo_path()
            noisy = i % 2 == 0
            duration = int(self.rng.uniform(6000, 9000)) // 20 * 20
            clip = Clip(f"echo:{path.delay_ms}ms:{path.loss_db:.0f}dB", "echo", np.zeros(duration * 8), 0, duration)
            clip.echo = path
            if noisy:
                clip.caller += line_noise(len(clip.caller), float(self.rng.uniform(-58, -45)), self.rng)
                clip.name += ":noisy"
            self.clips.append(clip)


def build_set(seed: int = 0, quick: bool = False) -> list[Clip]:
    return SetBuilder(seed, quick).build()


# Running a clip ------------------------------------------------------------------------------------------------


@cache
def assistant_wav() -> str:
    pcm = EspeakTts().synthesize(ASSISTANT_TEXT)
    return base64.b64encode(encode_wav(pcm)).decode("ascii")


class Assistant:
    """The app: it starts the long utterance at t=0 and says nothing else."""

    def __init__(self, barge_in: BargeIn) -> None:
        self.barge_in = barge_in

    async def respond(self, event: Event) -> list[Action]:
        if event.type == "session_start":
            return [Audio(audio=assistant_wav(), barge_in=self.barge_in)]
        return []


class LineEcho:
    """The far end of the line: what the engine plays comes back band-limited, late, quieter."""

    def __init__(self, path: EchoPath) -> None:
        b, a = butter(2, [300 / 4000, 3400 / 4000], btype="band")
        self._b, self._a = b, a
        self._state = np.zeros(max(len(a), len(b)) - 1)
        self._gain = 10 ** (-path.loss_db / 20)
        self._line = np.zeros(path.delay_ms * 8)

    def returned(self) -> Signal:
        out, self._line = self._line[:FRAME_SAMPLES], self._line[FRAME_SAMPLES:]
        return out

    def played(self, frame: Pcm) -> None:
        filtered, self._state = lfilter(self._b, self._a, frame.astype(np.float64), zi=self._state)
        self._line = np.concatenate([self._line, filtered * self._gain])


def g711(x: Signal) -> Pcm:
    return ulaw_decode(ulaw_encode(np.clip(np.round(x), -32768, 32767).astype(np.int16)))


@dataclass(frozen=True)
class Outcome:
    clip: int
    config: str
    paused_ms: int | None
    barge_in_ms: int | None
    confirmed_ms: int | None
    resumed: bool
    cpu_s: float


def run_clip(index: int, clip: Clip, config: Configuration) -> Outcome:
    """One call through the real engine; the line (echo, G.711) is simulated frame by frame around it."""
    script = clip.noisy_script if config.noisy else clip.script
    recognizer: StreamingRecognizer | None = None
    if config.recognizer == "scripted":
        recognizer = ScriptedRecognizer(script)
    elif config.recognizer == "local":
        recognizer = make_recognizer("local")
    engine_config = EngineConfig(start_unix_ms=0, turn_handling=config.turn_handling(clip.language))
    barge_in = BargeIn.immediate() if config.barge_in == "immediate" else BargeIn.min_characters(3)
    call = SimulatedCall(Assistant(barge_in), config=engine_config, recognizer=recognizer)
    engine = call.engine
    step = engine.step
    echo = LineEcho(clip.echo) if clip.echo is not None else None
    caller = clip.caller
    frame_no = 0

    def line_step(_: np.ndarray | None) -> np.ndarray:
        nonlocal frame_no
        x = caller[frame_no * FRAME_SAMPLES : (frame_no + 1) * FRAME_SAMPLES]
        frame_no += 1
        if echo is not None:
            x = x + echo.returned()
        out = step(g711(x))
        if echo is not None:
            echo.played(out)
        return out

    # The line sits between the engine's output and its next input: echo must follow what was actually played.
    engine.step = line_step  # type: ignore[method-assign,assignment]
    started = time.process_time()
    timeline = asyncio.run(call.run(np.zeros(0, np.int16), clip.duration_ms))
    cpu = time.process_time() - started
    return outcome(index, config.name, timeline, cpu)


def outcome(index: int, config: str, timeline: list[Record], cpu: float) -> Outcome:
    def first(event: str, **match: object) -> int | None:
        for record in timeline:
            if record["event"] == event and all(record.get(k) == v for k, v in match.items()):
                return int(record["t_ms"])
        return None

    return Outcome(
        clip=index,
        config=config,
        paused_ms=first("assistant_speech_paused"),
        barge_in_ms=first("barge_in"),
        confirmed_ms=first("assistant_speech_ended", interrupted=True),
        resumed=first("assistant_speech_resumed") is not None,
        cpu_s=cpu,
    )


def evaluate(clips: Sequence[Clip], configs: Iterable[Configuration]) -> dict[str, list[Outcome]]:
    results: dict[str, list[Outcome]] = {}
    for config in configs:
        results[config.name] = [
            run_clip(i, clip, config) for i, clip in enumerate(clips) if not config.noisy or clip.kind in NOISE_CLASSES
        ]
    return results


# Metrics -------------------------------------------------------------------------------------------------------

EARLY_MS = 60
"""A barge-in this long before the true onset was set off by something else (noise, echo): not a detection."""


@dataclass
class Metrics:
    recall: dict[str, tuple[int, int]]
    """Per barge-in class (and "all"): (detected, total)."""
    false: dict[str, tuple[int, int]]
    """Per other class: (barge-ins, total)."""
    paused: dict[str, tuple[int, int]]
    """Per other class: (clips where playback paused at all, total)."""
    resumed: tuple[int, int]
    """False pauses (no barge-in followed) that resumed, of all pauses on non-barge-in clips."""
    pause_latency: list[float]
    confirm_latency: list[float]
    cpu_per_call_s: float
    misses: list[str]
    false_alarms: list[str]


def measure(clips: Sequence[Clip], outcomes: Sequence[Outcome]) -> Metrics:
    recall: dict[str, list[int]] = {}
    false: dict[str, list[int]] = {}
    paused: dict[str, list[int]] = {}
    resumed = [0, 0]
    pause_latency: list[float] = []
    confirm_latency: list[float] = []
    misses: list[str] = []
    false_alarms: list[str] = []
    cpu = 0.0
    call_s = 0.0
    for out in outcomes:
        clip = clips[out.clip]
        cpu += out.cpu_s
        call_s += clip.duration_ms / 1000
        if clip.barge_in:
            hit = out.barge_in_ms is not None and out.barge_in_ms >= clip.onset_ms - EARLY_MS
            for key in (clip.kind, "all"):
                tally = recall.setdefault(key, [0, 0])
                tally[0] += hit
                tally[1] += 1
            if not hit:
                misses.append(f"{clip.name} (barge_in at {out.barge_in_ms}, onset {clip.onset_ms})")
                continue
            assert out.barge_in_ms is not None
            stop = out.paused_ms if out.paused_ms is not None and out.paused_ms <= out.barge_in_ms else out.barge_in_ms
            pause_latency.append(stop - clip.onset_ms)
            if out.confirmed_ms is not None:
                confirm_latency.append(out.confirmed_ms - clip.onset_ms)
        else:
            tally = false.setdefault(clip.kind, [0, 0])
            tally[0] += out.barge_in_ms is not None
            tally[1] += 1
            if out.barge_in_ms is not None:
                false_alarms.append(f"{clip.name} (barge_in at {out.barge_in_ms}, onset {clip.onset_ms})")
            stops = paused.setdefault(clip.kind, [0, 0])
            stops[0] += out.paused_ms is not None or out.barge_in_ms is not None
            stops[1] += 1
            if out.paused_ms is not None:
                resumed[1] += 1
                resumed[0] += out.barge_in_ms is None and out.resumed
    return Metrics(
        recall={k: (v[0], v[1]) for k, v in recall.items()},
        false={k: (v[0], v[1]) for k, v in false.items()},
        paused={k: (v[0], v[1]) for k, v in paused.items()},
        resumed=(resumed[0], resumed[1]),
        pause_latency=pause_latency,
        confirm_latency=confirm_latency,
        cpu_per_call_s=cpu / call_s if call_s else 0.0,
        misses=misses,
        false_alarms=false_alarms,
    )


def share(tally: tuple[int, int] | None) -> float | None:
    return None if tally is None or tally[1] == 0 else tally[0] / tally[1]


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass(frozen=True)
class Target:
    label: str
    value: Callable[[Metrics], float | None]
    limit: float
    at_least: bool

    def check(self, metrics: Metrics) -> tuple[float | None, bool]:
        value = self.value(metrics)
        if value is None:
            return None, False
        return value, value >= self.limit if self.at_least else value <= self.limit


def _false(kind: str) -> Callable[[Metrics], float | None]:
    return lambda m: share(m.false.get(kind))


TARGETS = (
    Target("recall on real barge-ins >= 97%", lambda m: share(m.recall.get("all")), 0.97, True),
    Target("false interruptions, backchannels <= 10%", _false("backchannel"), 0.10, False),
    Target("false interruptions, coughs/clicks/bursts <= 5%", _false("burst"), 0.05, False),
    Target("false interruptions, music <= 5%", _false("music"), 0.05, False),
    Target("false interruptions, steady noise <= 5%", _false("noise"), 0.05, False),
    Target("false interruptions, echo <= 2%", _false("echo"), 0.02, False),
    Target("audio paused within 100 ms of onset (p95)", lambda m: percentile(m.pause_latency, 95), 100.0, False),
    Target("barge-in confirmed within 1 s of onset (p95)", lambda m: percentile(m.confirm_latency, 95), 1000.0, False),
)
AUDIO_TARGETS = tuple(t for t in TARGETS if "backchannels" not in t.label and "paused" not in t.label)
"""Judging by sound alone, backchannels are reported, not held to a target: "yeah" and "wait" sound alike."""


# Report --------------------------------------------------------------------------------------------------------


def _pct(tally: tuple[int, int] | None) -> str:
    value = share(tally)
    return "-" if value is None or tally is None else f"{100 * value:5.1f}% ({tally[0]}/{tally[1]})"


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):.0f} / {percentile(values, 95):.0f}"


def report(clips: Sequence[Clip], results: dict[str, list[Outcome]], seconds: float, seed: int, quick: bool) -> bool:
    metrics = {name: measure(clips, outcomes) for name, outcomes in results.items()}
    main = [c.name for c in CONFIGURATIONS if not c.noisy and c.name in metrics]
    noisy = [c.name for c in CONFIGURATIONS if c.noisy and c.name in metrics]
    counts = {kind: sum(c.kind == kind for c in clips) for kind in (*BARGE_IN_CLASSES, *OTHER_CLASSES)}
    calls = sum(len(v) for v in results.values())
    print(
        f"turn-taking benchmark: {len(clips)} clips, {calls} calls, seed {seed}{', quick' if quick else ''}, "
        f"{seconds:.1f} s"
    )
    print()
    print("evaluation set")
    for kind, n in counts.items():
        print(f"  {kind:<16}{n:>4}  {CLASS_NOTES[kind]}")
    width = 21
    print()
    print(f"{'':<34}" + "".join(f"{name:>{width}}" for name in main))
    rows: list[tuple[str, Callable[[Metrics], str]]] = [("recall on real barge-ins", lambda m: "")]
    for kind in (*BARGE_IN_CLASSES, "all"):
        rows.append((f"  {kind}", lambda m, k=kind: _pct(m.recall.get(k))))  # type: ignore[misc]
    rows.append(("false interruptions (barge_in)", lambda m: ""))
    for kind in OTHER_CLASSES:
        rows.append((f"  {kind}", lambda m, k=kind: _pct(m.false.get(k))))  # type: ignore[misc]
    rows.append(("audible stops (pause or barge_in)", lambda m: ""))
    for kind in OTHER_CLASSES:
        rows.append((f"  {kind}", lambda m, k=kind: _pct(m.paused.get(k))))  # type: ignore[misc]
    rows += [
        ("false pauses that resumed", lambda m: _pct(m.resumed)),
        ("audio stopped - onset, p50/p95 ms", lambda m: _ms(m.pause_latency)),
        ("confirmed - onset, p50/p95 ms", lambda m: _ms(m.confirm_latency)),
        ("CPU ms per call-second", lambda m: f"{1000 * m.cpu_per_call_s:.1f}"),
    ]
    for label, cell in rows:
        print(f"{label:<34}" + "".join(f"{cell(metrics[name]):>{width}}" for name in main))
    if noisy:
        print()
        print("noisy recognizer: a spurious short word (the, uh, oh...) heard in every burst, music and noise clip")
        print(f"{'false interruptions (barge_in)':<34}" + "".join(f"{name:>{width}}" for name in noisy))
        for kind in NOISE_CLASSES:
            print(f"  {kind:<32}" + "".join(f"{_pct(metrics[name].false.get(kind)):>{width}}" for name in noisy))
    passed = True
    for name, which in TARGETS_FOR.items():
        if name not in metrics:
            continue
        print()
        print(f"targets: {name}")
        for target in TARGETS if which == "all" else AUDIO_TARGETS:
            value, ok = target.check(metrics[name])
            passed &= ok
            shown = "-" if value is None else (f"{value:.0f} ms" if target.limit > 1 else f"{100 * value:.1f}%")
            print(f"  {target.label:<50}{shown:>10}  {'PASS' if ok else 'FAIL'}")
    for name in (IMMEDIATE_LOCAL.name, MIN_CHARS_LOCAL.name):
        if name in metrics:
            m = metrics[name]
            ok = not m.false.get("echo", (0, 0))[0] and not m.false.get("burst", (0, 0))[0]
            passed &= ok
            print(f"  {name}: no barge-in on echo or bursts{'':<14}{'PASS' if ok else 'FAIL'}")
    return passed


def details(clips: Sequence[Clip], results: dict[str, list[Outcome]]) -> None:
    for name, outcomes in results.items():
        m = measure(clips, outcomes)
        print(f"\n[{name}] missed barge-ins: {len(m.misses)}, false interruptions: {len(m.false_alarms)}")
        for line in m.misses + m.false_alarms:
            print(f"  {line}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.turn_taking", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a third of the set (about 30 s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--details", action="store_true", help="list every missed barge-in and false interruption")
    parser.add_argument("--only", action="append", default=[], help="a configuration to run (repeatable; default: all)")
    args = parser.parse_args(argv)
    names = [c.name for c in CONFIGURATIONS]
    chosen = args.only or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}; choose from {names}")
    started = time.perf_counter()
    clips = build_set(args.seed, args.quick)
    results = evaluate(clips, [c for c in CONFIGURATIONS if c.name in chosen])
    passed = report(clips, results, time.perf_counter() - started, args.seed, args.quick)
    if args.details:
        details(clips, results)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
