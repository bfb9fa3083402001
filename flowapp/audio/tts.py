"""Speech output behind a provider-neutral interface, with the local espeak-ng engine as the default.

Hosted providers named by apps ("azure", "eleven_labs") cannot be reached from a local run, so the
registry substitutes the local voice and tells the caller, who logs it, instead of failing the call.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np

from flowapp.audio.errors import AudioFormatError
from flowapp.audio.frames import SAMPLE_RATE, Pcm
from flowapp.audio.limits import MAX_ITEM_SECONDS, LimitExceeded
from flowapp.audio.wav import decode_wav

DEFAULT_PROVIDER = "espeak"
REMOTE_PROVIDERS = frozenset({"azure", "eleven_labs"})
_SSML = re.compile(r"^\s*(<\?xml[^>]*>\s*)?<speak[\s>]", re.IGNORECASE)
_ESPEAK_BYTES_PER_SECOND = 22_050 * 2
"""espeak-ng writes 16-bit mono at 22,050 Hz: its output is read up to MAX_ITEM_SECONDS of that."""
_WAV_HEADER_BYTES = 4096
_READ_BYTES = 1 << 16


class TtsError(RuntimeError):
    """Synthesis failed or was misconfigured; the message says what to fix."""


class TextToSpeech(Protocol):
    """Turns text (or SSML starting with ``<speak>``) into 8 kHz int16 mono PCM."""

    def synthesize(self, text: str, *, voice: str | None = None, language: str | None = None) -> Pcm: ...


def is_ssml(text: str) -> bool:
    """True if the text is an SSML document, which engines must parse rather than read aloud."""
    return bool(_SSML.match(text))


class EspeakTts:
    """Runs the ``espeak-ng`` program (~20-50 ms per short prompt) and resamples its 22 kHz output."""

    def __init__(self, default_voice: str = "en-us", rate_wpm: int = 175, program: str = "espeak-ng") -> None:
        self.default_voice = default_voice
        self.rate_wpm = rate_wpm
        self.program = program

    def _executable(self) -> str:
        path = shutil.which(self.program)
        if path is None:
            raise TtsError(f"{self.program!r} not found; install espeak-ng (e.g. apt-get install espeak-ng)")
        return path

    @cached_property
    def _voices(self) -> dict[str, str]:
        """Lower-case language code or alias -> espeak voice, from ``espeak-ng --voices``."""
        out = subprocess.run([self._executable(), "--voices"], capture_output=True, text=True, check=False)
        primary: dict[str, str] = {}
        aliases: dict[str, tuple[int, str]] = {}
        for line in out.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 5:
                continue
            lang = fields[1].lower()
            primary.setdefault(lang, lang)
            for alias, prio in re.findall(r"\(([\w-]+) (\d+)\)", line):
                key = alias.lower()
                if key not in aliases or int(prio) < aliases[key][0]:
                    aliases[key] = (int(prio), lang)
        return {**{k: v for k, (_, v) in aliases.items()}, **primary}

    def voice_for_language(self, language: str) -> str:
        """Map a BCP-47 tag ("de-DE", "en_US", "pt-BR") to the closest installed espeak voice."""
        tag = language.replace("_", "-").lower()
        parts = tag.split("-")
        for n in range(len(parts), 0, -1):
            voice = self._voices.get("-".join(parts[:n]))
            if voice is not None:
                return voice
        raise TtsError(f"espeak-ng has no voice for language {language!r}; see `espeak-ng --voices`")

    def synthesize(self, text: str, *, voice: str | None = None, language: str | None = None) -> Pcm:
        """An explicit ``voice`` (an espeak voice name, e.g. "en-us" or "de+f3") wins over ``language``."""
        if voice is None:
            voice = self.voice_for_language(language) if language else self.default_voice
        cmd = [self._executable(), "--stdout", "-v", voice, "-s", str(self.rate_wpm)]
        if is_ssml(text):
            cmd.append("-m")
        max_bytes = _WAV_HEADER_BYTES + MAX_ITEM_SECONDS * _ESPEAK_BYTES_PER_SECOND
        returncode, wav, err = _run_capped(cmd, text.encode("utf-8"), max_bytes)
        if "voice does not exist" in err:
            raise TtsError(f"espeak-ng has no voice {voice!r}; see `espeak-ng --voices` for the installed ones")
        if wav is None:
            raise LimitExceeded(f"speech runs past {MAX_ITEM_SECONDS} s", "MAX_ITEM_SECONDS")
        if returncode != 0 or not wav:
            raise TtsError(f"espeak-ng failed (exit {returncode}): {err or 'no output'}")
        try:
            return decode_wav(wav, SAMPLE_RATE)
        except LimitExceeded:
            raise
        except AudioFormatError as exc:
            raise TtsError(f"espeak-ng produced unreadable audio: {exc}") from exc


def _run_capped(cmd: list[str], stdin: bytes, max_bytes: int) -> tuple[int, bytes | None, str]:
    """Run a program; its stdout, or None (the program killed) once it passes ``max_bytes``, and its stderr.

    Input and errors go through files, so neither pipe can fill up while stdout is being read.
    """
    with tempfile.TemporaryFile() as text_file, tempfile.TemporaryFile() as err_file:
        text_file.write(stdin)
        text_file.seek(0)
        with subprocess.Popen(cmd, stdin=text_file, stdout=subprocess.PIPE, stderr=err_file) as proc:
            assert proc.stdout is not None
            out: bytearray | None = bytearray()
            while out is not None and (chunk := proc.stdout.read(_READ_BYTES)):
                out += chunk
                if len(out) > max_bytes:
                    proc.kill()
                    out = None
        err_file.seek(0)
        err = err_file.read().decode("utf-8", "replace").strip()
    return proc.returncode, None if out is None else bytes(out), err


class CachedTts:
    """LRU cache in front of any engine: IVR prompts repeat, and synthesis is the slow part of a turn.

    Cached arrays are returned read-only so one caller cannot corrupt another's prompt. ``max_bytes`` bounds
    the cache's memory as well as its count: one item may hold minutes of audio.
    """

    def __init__(self, inner: TextToSpeech, max_items: int = 256, max_bytes: int = 64 << 20) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.inner = inner
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[str, str | None, str | None, bool], Pcm] = OrderedDict()
        self._lock = threading.Lock()

    def synthesize(self, text: str, *, voice: str | None = None, language: str | None = None) -> Pcm:
        key = (text, voice, language, is_ssml(text))
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return cached
        pcm = self.inner.synthesize(text, voice=voice, language=language)
        pcm = np.array(pcm, dtype=np.int16)
        pcm.setflags(write=False)
        with self._lock:
            self.misses += 1
            if pcm.nbytes > self.max_bytes or key in self._items:
                return pcm
            self._items[key] = pcm
            self.bytes += pcm.nbytes
            while len(self._items) > self.max_items or self.bytes > self.max_bytes:
                self.bytes -= self._items.popitem(last=False)[1].nbytes
        return pcm

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


@dataclass(frozen=True)
class TtsSelection:
    """The engine to use, and ``fallback_message`` to log when it is not the one that was asked for."""

    tts: TextToSpeech
    provider: str
    requested: str | None
    fallback_message: str | None = None

    @property
    def is_fallback(self) -> bool:
        return self.fallback_message is not None


class TtsRegistry:
    """Provider name -> engine. Remote providers without a local registration fall back to the default."""

    def __init__(
        self,
        providers: Mapping[str, TextToSpeech] | None = None,
        default_provider: str = DEFAULT_PROVIDER,
    ) -> None:
        """Without ``providers``, registers local espeak-ng behind a cache as "espeak"."""
        self.default_provider = default_provider
        if providers is None:
            providers = {DEFAULT_PROVIDER: CachedTts(EspeakTts())}
        self._providers: dict[str, TextToSpeech] = dict(providers)

    def register(self, name: str, tts: TextToSpeech) -> None:
        self._providers[name] = tts

    def select(self, provider: str | None) -> TtsSelection:
        """Resolve a provider name; unknown names raise TtsError, known-but-remote ones fall back."""
        name = provider or self.default_provider
        if name in self._providers:
            return TtsSelection(self._providers[name], name, provider)
        if name in REMOTE_PROVIDERS:
            default = self._default()
            message = f"tts provider {name!r} is not available locally; using {self.default_provider}"
            return TtsSelection(default, self.default_provider, provider, message)
        known = sorted(set(self._providers) | REMOTE_PROVIDERS)
        raise TtsError(f"unknown tts provider {name!r}; expected one of {', '.join(known)}")

    def get(self, provider: str | None) -> TextToSpeech:
        """The engine for ``provider``; use select() when the fallback must be reported."""
        return self.select(provider).tts

    def _default(self) -> TextToSpeech:
        try:
            return self._providers[self.default_provider]
        except KeyError:
            raise TtsError(f"default tts provider {self.default_provider!r} is not registered") from None
