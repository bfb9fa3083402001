"""Word error rate on phone speech: what a caller's words become in `user_speak`.

Clips: Asterisk's prompts (with the package's own transcripts), the LibriVox readings of pocketsphinx-testdata and
espeak-ng sentences in several voices, each put through a phone line: a level of -30 to -18 dBFS, line noise at
15-25 dB SNR, G.711 mu-law. Every recognizer sees the same seeded clips.

    python -m benchmarks.wer [--recognizer local,pocketsphinx] [--window 10,15,30] [--every 4] [--details]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.turn_taking import active_db, asterisk_texts, espeak, g711, line_noise, prompt
from flowapp.audio.frames import Pcm
from tests.media import librivox_audio, librivox_clips

_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_SPELLING = {"mr": "mister", "mrs": "missus", "dr": "doctor", "ok": "okay", "st": "saint", "pin": "pin"}
ESPEAK_SENTENCES = (
    ("en-us", "I would like to book a table for two on Tuesday please"),
    ("en-gb+f3", "my account number is four five six seven"),
    ("en-us+m3", "can you tell me when the store opens tomorrow"),
    ("en-gb-scotland", "please cancel my order from last week"),
    ("en-us+f4", "no that is not what I asked for"),
    ("en-029", "I need to speak to someone about my bill"),
)


_TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _spell(number: str) -> str:
    """Numbers below 100 as words, others digit by digit (account numbers, PINs)."""
    n = int(number)
    if len(number) > 2 or (number.startswith("0") and len(number) > 1):
        return " ".join(_DIGITS[int(d)] for d in number)
    if n < 10:
        return _DIGITS[n]
    if n < 20:
        return _TEENS[n - 10]
    return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _DIGITS[n % 10])


_CONTRACTIONS = (
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b", "can not"),
    (r"\blet's\b", "let us"),
    (r"n't\b", " not"),
    (r"'re\b", " are"),
    (r"'s\b", " is"),
    (r"'d\b", " would"),
    (r"'ll\b", " will"),
    (r"'ve\b", " have"),
    (r"'m\b", " am"),
)
"""Spelled out on both sides, as the usual Whisper scoring does: "I'm" for "I am" is not a word wrong."""
_REFERENCE_TYPOS = {"umute": "unmute", "exclaimation": "exclamation"}
"""Misspellings in Asterisk's own transcripts (core-sounds-en.txt)."""


def normalize(text: str) -> list[str]:
    """Lower case, numbers spelled out, punctuation and hyphens gone: "4-6, Mr." and "four six mister" agree.

    Notes in the references ("[!]", "(note: ...)") are not words anyone said.
    """
    text = re.sub(r"\[[^]]*\]|\([^)]*\)", " ", text.lower().replace("\u2019", "'"))
    for pattern, spelled in _CONTRACTIONS:
        text = re.sub(pattern, spelled, text)
    text = text.replace("-", " ").replace("'", "")
    text = re.sub(r"\d+", lambda m: f" {_spell(m.group())} ", text)
    out = []
    for word in re.findall(r"[a-z]+", text):
        word = _REFERENCE_TYPOS.get(word, word)
        out.append(_SPELLING.get(word, word))
    return out


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


@dataclass(frozen=True)
class PhoneClip:
    name: str
    pcm: Pcm
    text: str


def build_clips(seed: int = 0, every: int = 4) -> list[PhoneClip]:
    rng = np.random.default_rng(seed)
    sources: list[tuple[str, np.ndarray, str]] = []
    texts = asterisk_texts()
    names = sorted(n for n in texts if "/" not in n or n.startswith(("digits/", "letters/")))
    for name in names[2::every]:
        try:
            sources.append((name, prompt(name), texts[name]))
        except FileNotFoundError:
            continue
    for path, text in librivox_clips():
        sources.append((path.stem, librivox_audio(path).astype(np.float64), text))
    for voice, text in ESPEAK_SENTENCES:
        sources.append((f"espeak:{voice}", espeak(text, voice, 160, 50), text))
    clips = []
    for name, audio, text in sources:
        x = audio * 10 ** ((rng.uniform(-30, -18) - active_db(audio)) / 20)
        x = np.concatenate([np.zeros(2400), x, np.zeros(2400)])
        x = x + line_noise(len(x), active_db(x) - rng.uniform(15, 25), rng)
        clips.append(PhoneClip(name, g711(x), text))
    return clips


Transcribe = Callable[[Pcm], str]


def local(window_s: float | None = None) -> Transcribe:
    from flowapp.stt import whisper

    if window_s is not None:
        whisper.WINDOW_S = window_s
    transcriber = whisper.WhisperTranscriber()
    return transcriber.transcribe


def pocketsphinx() -> Transcribe:
    from flowapp.audio.frames import split_frames
    from flowapp.stt.pocketsphinx import PocketsphinxRecognizer

    def transcribe(pcm: Pcm) -> str:
        with PocketsphinxRecognizer() as recognizer:
            for i, frame in enumerate(split_frames(pcm)):
                recognizer.feed(frame, 20 * (i + 1))
            finals = recognizer.end_utterance(20 * len(pcm) // 160)
        return finals[-1].text if finals else ""

    return transcribe


@dataclass
class Score:
    errors: int = 0
    words: int = 0
    cpu_s: float = 0.0
    audio_s: float = 0.0
    decodes: int = 0

    @property
    def wer(self) -> float:
        return self.errors / max(1, self.words)


def score(transcribe: Transcribe, clips: Sequence[PhoneClip], details: bool) -> Score:
    total = Score()
    for clip in clips:
        started = time.process_time()
        hypothesis = transcribe(clip.pcm)
        total.cpu_s += time.process_time() - started
        total.audio_s += len(clip.pcm) / 8000
        total.decodes += 1
        ref = normalize(clip.text)
        errors = edit_distance(ref, normalize(hypothesis))
        total.errors += errors
        total.words += len(ref)
        if details and errors:
            print(f"    {clip.name}: {clip.text!r} -> {hypothesis!r}")
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wer", description=__doc__.splitlines()[0])
    parser.add_argument("--recognizer", default="local", help="comma-separated: local, pocketsphinx")
    parser.add_argument("--window", default="", help="comma-separated decode windows in seconds (local only)")
    parser.add_argument("--every", type=int, default=4, help="take every n-th Asterisk prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--details", action="store_true", help="print every clip with an error")
    args = parser.parse_args(argv)
    clips = build_clips(args.seed, args.every)
    words = sum(len(normalize(c.text)) for c in clips)
    print(f"WER benchmark: {len(clips)} clips, {words} words, 8 kHz mu-law, 15-25 dB SNR, seed {args.seed}")
    runs: list[tuple[str, Callable[[], Transcribe]]] = []
    for name in args.recognizer.split(","):
        if name == "local":
            windows = [float(w) for w in args.window.split(",") if w] or [None]
            for w in windows:
                runs.append((f"local (window {w or 'default'} s)", lambda w=w: local(w)))  # type: ignore[misc]
        elif name == "pocketsphinx":
            runs.append(("pocketsphinx", pocketsphinx))
        else:
            parser.error(f"unknown recognizer {name!r}")
    print(f"{'recognizer':<28}{'WER':>8}{'CPU s/audio s':>16}{'CPU s/decode':>15}")
    for label, make in runs:
        result = score(make(), clips, args.details)
        print(
            f"{label:<28}{100 * result.wer:>7.1f}%{result.cpu_s / result.audio_s:>16.3f}"
            f"{result.cpu_s / result.decodes:>15.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
