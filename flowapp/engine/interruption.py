"""Is the caller really interrupting? The judgement behind pause / confirm / resume, as a pure function.

`vad` mode goes by how long the caller has spoken and how many words the recognizer heard.
`adaptive` mode adds what the words are and how the sound behaves: "uh-huh" and "yeah" over the assistant's
speech are backchannels (listening, not taking the turn); "wait", "stop", "no", "hold on" interrupt even when
short; a short burst with no words (a cough, a click, a door) is noise. With a recognizer attached, a long sound
it finds no words in (music, a fan switched on) is noise too, and without one so is a long sound with no vowel
in it: the assistant pauses once and plays on over it.
All of it runs locally; benchmarks/turn_taking.py measures it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from flowapp.engine.turns import InterruptionOptions, normalize, words

Verdict = Literal["interrupt", "backchannel", "resume", "wait"]

# Without a recognizer, noise and backchannels are told from speech by length alone; after this much quiet
# a short burst is taken to be over (adaptive mode resumes this soon; vad mode waits its timeout).
_ADAPTIVE_QUIET_MS = 300
# Hesitations and the function words recognizers hallucinate on coughs and music: alone they carry no request,
# so they count as no words at all (a real interruption brings more words, or a phrase from the list).
_HESITATIONS = frozenset({"uh", "um", "uhm", "er", "erm", "ah", "eh", "oh"})
"""Sounds of thinking, not words: "um, mm-hmm" is a backchannel all the same."""
_FILLERS = _HESITATIONS | {"the", "and", "of", "to"}
_HUM = re.compile(r"(?=[h-]*m)[mh]+(?:-[mh]+)*")
WORD_SUPPORT_MS = 60
"""Voiced time a turn needs before its words count: Whisper writes words for a cough, a click or line noise,
and a word nobody voiced was never said."""
_WORDS_WAIT_MS = 1500
"""A held item waits this long at most for words already being decoded."""
VOICED_SPEECH_MS = 80
"""Judging by sound alone, this much voiced time is speech: a short fast "stop" has it, a click or a hiss does
not. The detector has already let the sound through as speech; this asks only that a vowel was voiced."""


@dataclass(frozen=True)
class Candidate:
    """What is known about the caller's activity while the assistant speaks."""

    text: str
    """Words heard since the activity began (partial or final)."""
    final: bool
    speaking: bool
    speech_ms: int
    """Voice activity so far in this turn."""
    silent_ms: int
    """Quiet since the caller's last activity (0 while speaking)."""
    paused_ms: int
    """How long playback has been held (0 when it was not paused)."""
    played_ms: int
    strategy: str
    transcribing: bool = False
    """A recognizer hears the caller: speech this long would have brought words by now, sound without any is not
    speech (music, a fan, a noisy line) and is ridden out instead of stopping the assistant for good."""
    voiced_ms: int = 0
    """Of `speech_ms`, the frames with pitch (see flowapp/audio/voicing.py)."""
    words_language: str | None = None
    """The one language the recognizer writes in, whatever the caller speaks (an English-only model)."""
    words_pending: bool = False
    """The recognizer is decoding this speech: its words are on the way."""


InterruptionHook = Callable[[Candidate], Verdict | None]
"""A custom decision: return a verdict, or None to let the built-in judgement decide."""


def judge(candidate: Candidate, options: InterruptionOptions) -> Verdict:
    if options.mode == "adaptive":
        return _adaptive(candidate, options)
    return _by_duration(candidate, options)


def _enough_words(candidate: Candidate, options: InterruptionOptions) -> bool:
    return len(words(candidate.text)) >= max(1, options.min_words)


def _by_duration(candidate: Candidate, options: InterruptionOptions) -> Verdict:
    if candidate.paused_ms == 0:
        return "wait"
    long_enough = candidate.speech_ms >= options.min_duration * 1000
    if (long_enough and (options.min_words == 0 or _enough_words(candidate, options))) or (
        candidate.final and _enough_words(candidate, options)
    ):
        return "interrupt"
    timeout = options.false_interruption_timeout
    if not candidate.speaking and timeout is not None and candidate.silent_ms >= timeout * 1000:
        return "resume"
    return "wait"


def classify_words(
    text: str, options: InterruptionOptions, words_language: str | None = None
) -> Literal["interruption", "backchannel", "other", "none"]:
    """`words_language`: the one language the recognizer writes in, whatever the caller speaks (None: the call's)."""
    said = normalize(text)
    if not said:
        return "none"
    interruptions = options.phrases("interruption", words_language)
    tokens = words(said)
    padded = f" {said} "
    if any(f" {phrase} " in padded for phrase in interruptions):
        return "interruption"
    backchannels = options.phrases("backchannel", words_language)
    single = {p for p in backchannels if " " not in p and "-" not in p}
    multi = sorted((p for p in backchannels if p not in single), key=len, reverse=True)
    rest = padded
    for phrase in multi:
        rest = rest.replace(f" {phrase} ", " ")
    leftover = [t for t in rest.split() if t not in single and t not in _HESITATIONS and not _is_hum(t)]
    listening = rest != padded or any(t not in _HESITATIONS for t in tokens)
    if listening and not leftover:
        return "backchannel"
    return "other"


def _is_hum(token: str) -> bool:
    """A closed-mouth "mm-hm" however the recognizer spells it ("mmm", "mhmm", "m-m", "hmm"): listening, not a
    word. One letter alone is not a hum: a caller spelling out "M" is answering."""
    return bool(_HUM.fullmatch(token)) and len(token.replace("-", "")) >= 2


def _wordless_noise(candidate: Candidate, wordless_limit_ms: float) -> bool:
    """A long sound that is not speech: a recognizer found no words in it, or, with none, it has no vowel in it
    (a fan, a hiss); nobody talks that long without voicing."""
    return candidate.speech_ms >= wordless_limit_ms and (
        candidate.transcribing or candidate.voiced_ms < VOICED_SPEECH_MS
    )


def _adaptive(candidate: Candidate, options: InterruptionOptions) -> Verdict:
    kind = classify_words(candidate.text, options, candidate.words_language)
    if kind != "none" and candidate.voiced_ms < WORD_SUPPORT_MS:
        kind = "none"
    if kind == "interruption":
        return "interrupt"
    if kind == "other" and all(word in _FILLERS for word in words(candidate.text)):
        kind = "none"
    wordless_limit_ms = max(options.min_duration, options.max_backchannel) * 1000
    if candidate.paused_ms == 0:
        # Still playing: only words decide (a backchannel must not trip a `minimum_characters` item). Fillers heard
        # after the sound is over, or a long sound the recognizer found no words in (already paused for once),
        # do not stop playback.
        if kind == "backchannel":
            return "backchannel"
        if kind == "none" and (not candidate.speaking or _wordless_noise(candidate, wordless_limit_ms)):
            return "resume"
        return "wait"
    max_backchannel_ms = options.max_backchannel * 1000
    if kind == "backchannel":
        if candidate.speech_ms > max_backchannel_ms:
            return "interrupt"
        return "wait" if candidate.speaking else "backchannel"
    if kind == "other":
        if _enough_words(candidate, options) and (
            candidate.final or candidate.speech_ms >= options.min_duration * 1000 or len(words(candidate.text)) >= 2
        ):
            return "interrupt"
        return "wait" if candidate.speaking or candidate.silent_ms < _ADAPTIVE_QUIET_MS else "interrupt"
    # No words (yet): the sound alone. A long sound with no words or no vowel in it (music, a fan) is ruled out;
    # a short voiced sound a recognizer made nothing of ("stop" heard as "oh") is still taken for speech.
    if not candidate.transcribing and candidate.voiced_ms >= VOICED_SPEECH_MS:
        return "interrupt"
    if _wordless_noise(candidate, wordless_limit_ms):
        return "resume"
    if candidate.speaking or candidate.silent_ms < _ADAPTIVE_QUIET_MS:
        return "wait"
    if candidate.transcribing and candidate.words_pending and candidate.paused_ms < _WORDS_WAIT_MS:
        return "wait"
    return "interrupt" if candidate.voiced_ms >= VOICED_SPEECH_MS else "resume"
