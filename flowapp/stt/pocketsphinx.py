"""Local, offline streaming recognition with CMU PocketSphinx.

Accuracy on 8 kHz phone audio is low (roughly one word in three is wrong with the stock US English
model), so this recognizer is meant for timing, barge-in and plumbing tests without an account or network,
not for understanding callers.

Cost: building a decoder takes ~0.35 s and ~60 MB, so idle decoders are pooled per language and the
language model is loaded once and shared between them (pocketsphinx holds the GIL while decoding, so the
shared model is never used concurrently). Decoding costs roughly 0.15-0.2 s of CPU per second of speech
and next to nothing for silence, which is not decoded (see ``_SpeechGate``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections import deque
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import webrtcvad

from flowapp.audio.frames import as_pcm
from flowapp.audio.resample import StreamResampler
from flowapp.stt.base import FrameRecognizer, Transcript

try:
    import pocketsphinx as _ps
except ImportError as exc:
    raise ImportError(
        "PocketsphinxRecognizer needs the pocketsphinx package: pip install 'flowapp[pocketsphinx]'"
    ) from exc

PHONE_RATE = 8000
MODEL_RATE = 16000

# Beam and search settings trade a few points of accuracy for ~2.5x less CPU than pocketsphinx's
# defaults (measured on the librivox test clips through 8 kHz): the second, flat-lexicon pass is skipped
# and the number of active HMMs per frame is capped.
# The cepstral-mean prior is pocketsphinx's live normalization starting point; its default suits wideband
# microphones, so the first utterances of a phone call decode poorly until it adapts. This prior is the
# mean the decoder converged to over 60 Asterisk prompts (8 kHz, upsampled as here; none used in tests).
PHONE_CMN_INIT = "44.31,30.18,-31.77,39.98,-20.47,-1.69,5.50,-19.03,24.75,-15.34,-2.23,8.28,-10.67"
_DECODER_OPTIONS: dict[str, Any] = {
    "fwdflat": False,
    "maxhmmpf": 5000,
    "cmninit": PHONE_CMN_INIT,
    "loglevel": "FATAL",
}
_SEARCH = "flowapp"
# Idle decoders kept per language; beyond this, released decoders are freed to bound memory.
MAX_IDLE_DECODERS = 4
# Only audio near speech is decoded: silence and line hiss cost as much CPU as speech (more, for hiss) and
# make the decoder hallucinate short words. Pre-roll keeps word onsets the VAD detects late; the hangover
# keeps trailing consonants and short pauses inside a sentence.
_GATE_VAD_MODE = 2
# Frames quieter than this never count as speech: after loud speech webrtcvad keeps calling faint line hiss
# speech for seconds. Telephone speech sits around -20 to -35 dBFS.
_GATE_FLOOR_RMS = 32768 * 10 ** (-55 / 20)
# Speech frames needed among the last few to open the gate: webrtcvad flags isolated frames of line hiss.
_GATE_TRIGGER = (3, 5)
_GATE_PREROLL_MS = 300
_GATE_HANGOVER_MS = 600
# An utterance that has hypothesized nothing for this long is restarted, so listening to a silent line
# for minutes does not grow the decoder's history without bound.
_IDLE_RESTART_MS = 10_000


class _Model:
    """One language's decoder configuration, its shared language model and its pool of idle decoders."""

    def __init__(self, language: str) -> None:
        root = _ps.get_model_path(language)
        paths = {
            "hmm": os.path.join(root, language),
            "lm": os.path.join(root, f"{language}.lm.bin"),
            "dict": os.path.join(root, f"cmudict-{language}.dict"),
        }
        missing = [p for p in paths.values() if not os.path.exists(p)]
        if missing:
            available = sorted(d for d in os.listdir(_ps.get_model_path()) if os.path.isdir(_ps.get_model_path(d)))
            raise ValueError(f"no pocketsphinx model for language {language!r} (available: {available})")
        self._config = _ps.Config(hmm=paths["hmm"], dict=paths["dict"], lm=None, **_DECODER_OPTIONS)
        self._lm_path = paths["lm"]
        self._lm: Any = None
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._build()

    def release(self, decoder: Any) -> None:
        with contextlib.suppress(RuntimeError):  # raised when no utterance was open
            decoder.end_utt()
        decoder.set_cmn(PHONE_CMN_INIT)  # the next call's line is unrelated to this one
        with self._lock:
            if len(self._idle) < MAX_IDLE_DECODERS:
                self._idle.append(decoder)

    def _build(self) -> Any:
        decoder = _ps.Decoder(self._config)
        with self._lock:
            if self._lm is None:
                self._lm = _ps.NGramModel(self._config, decoder.logmath, self._lm_path)
            lm = self._lm
        decoder.add_lm(_SEARCH, lm)
        decoder.activate_search(_SEARCH)
        return decoder


_models: dict[str, _Model] = {}
_models_lock = threading.Lock()


def _model(language: str) -> _Model:
    with _models_lock:
        model = _models.get(language)
        if model is None:
            model = _models[language] = _Model(language)
        return model


def preload(count: int = 1, language: str = "en-us") -> None:
    """Build decoders ahead of time, so the first calls do not pay ~0.35 s each at answer time."""
    model = _model(language)
    decoders = [model.acquire() for _ in range(count)]
    for decoder in decoders:
        model.release(decoder)


def _release(model: _Model, decoder: Any) -> None:
    model.release(decoder)


class _SpeechGate:
    """Passes frames from shortly before detected speech until shortly after it, and holds back the rest."""

    def __init__(self) -> None:
        self._vad = webrtcvad.Vad(_GATE_VAD_MODE)
        self._preroll: deque[npt.NDArray[np.int16]] = deque()
        self._preroll_ms = 0
        self._open_until_ms: int | None = None
        self._votes: deque[bool] = deque(maxlen=_GATE_TRIGGER[1])

    def admit(self, frame: npt.NDArray[np.int16], t_ms: int) -> list[npt.NDArray[np.int16]]:
        frame_ms = frame.size * 1000 // PHONE_RATE
        # webrtcvad only judges 10/20/30 ms frames; anything else is decoded rather than guessed at.
        if frame_ms not in (10, 20, 30):
            speech = True
        elif float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) < _GATE_FLOOR_RMS:
            speech = False
        else:
            speech = bool(self._vad.is_speech(frame.tobytes(), PHONE_RATE))
        self._votes.append(speech)
        opening = sum(self._votes) >= _GATE_TRIGGER[0]
        if speech and (opening or self._open_until_ms is not None):
            self._open_until_ms = t_ms + _GATE_HANGOVER_MS
        if self._open_until_ms is not None and t_ms <= self._open_until_ms:
            passed = [*self._preroll, frame]
            self.clear()
            return passed
        self._open_until_ms = None
        self._preroll.append(frame.copy())  # callers may reuse their frame buffer
        self._preroll_ms += frame_ms
        while self._preroll_ms > _GATE_PREROLL_MS:
            self._preroll_ms -= self._preroll.popleft().size * 1000 // PHONE_RATE
        return []

    def clear(self) -> None:
        self._preroll.clear()
        self._preroll_ms = 0

    def reset(self) -> None:
        self.clear()
        self._votes.clear()
        self._open_until_ms = None


class PocketsphinxRecognizer(FrameRecognizer):
    """StreamingRecognizer backed by a pooled PocketSphinx decoder; see the module docstring on accuracy.

    Only audio near speech (webrtcvad, with pre-roll and hangover) is upsampled to the model's 16 kHz and
    decoded, which bounds CPU on silent lines and keeps line noise from turning into words. Partials are
    emitted at most every ``partial_interval_ms`` and only when the hypothesis changed; they hold the whole
    utterance so far and may revise earlier words. Call ``close()`` (or use ``with``) when the call ends to
    return the decoder to the pool promptly; otherwise that happens when the recognizer is garbage-collected.
    """

    def __init__(self, partial_interval_ms: int = 200, language: str = "en-us") -> None:
        if partial_interval_ms <= 0:
            raise ValueError(f"partial_interval_ms must be positive, got {partial_interval_ms}")
        self.partial_interval_ms = partial_interval_ms
        self.language = language
        model = _model(language)
        self._decoder: Any = model.acquire()
        self._finalizer = weakref.finalize(self, _release, model, self._decoder)
        self._resampler = StreamResampler(PHONE_RATE, MODEL_RATE)
        self._gate = _SpeechGate()
        self._in_utterance = False
        self._cmn_before = PHONE_CMN_INIT
        self._utt_start_ms = 0
        self._next_partial_ms = 0
        self._last_text = ""

    def feed(self, frame: npt.NDArray[np.int16], t_ms: int) -> list[Transcript]:
        """Decode one frame; a partial is checked for once per interval because hyp() walks the search."""
        decoder = self._live_decoder()
        admitted = self._gate.admit(as_pcm(frame), t_ms)
        if not admitted:
            return []
        if not self._in_utterance:
            self._cmn_before = str(decoder.get_cmn(False))
            decoder.start_utt()
            self._in_utterance = True
            self._utt_start_ms = t_ms
            self._next_partial_ms = t_ms + self.partial_interval_ms
            self._last_text = ""
        for chunk in admitted:
            self._process(self._resampler.process(chunk))
        if t_ms < self._next_partial_ms:
            return []
        self._next_partial_ms = t_ms + self.partial_interval_ms
        text = self._hypothesis()
        if not text:
            if t_ms - self._utt_start_ms >= _IDLE_RESTART_MS:
                self._abandon_utterance()
            return []
        if text == self._last_text:
            return []
        self._last_text = text
        return [Transcript(text=text, final=False, t_ms=t_ms)]

    def end_utterance(self, t_ms: int) -> list[Transcript]:
        """Final from the full search; falls back to the last partial so a heard utterance is never lost."""
        self._gate.reset()
        if not self._in_utterance:
            return []
        decoder = self._live_decoder()
        self._process(self._resampler.flush())
        decoder.end_utt()
        self._in_utterance = False
        text = self._hypothesis() or self._last_text
        self._last_text = ""
        if not text:
            decoder.set_cmn(self._cmn_before)
        return [Transcript(text=text, final=True, t_ms=t_ms)] if text else []

    def reset(self) -> None:
        """Discard the utterance in progress; the next frame starts a fresh one."""
        self._gate.reset()
        if self._in_utterance:
            self._abandon_utterance()
        self._last_text = ""

    def close(self) -> None:
        """Return the decoder to the shared pool; the recognizer cannot be used afterwards."""
        if self._decoder is None:
            return
        self.reset()
        self._decoder = None
        self._finalizer()

    def __enter__(self) -> PocketsphinxRecognizer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _live_decoder(self) -> Any:
        if self._decoder is None:
            raise RuntimeError("PocketsphinxRecognizer is closed")
        return self._decoder

    def _process(self, samples: npt.NDArray[np.int16]) -> None:
        # The resampler's filter delay yields empty chunks at first; process_raw rejects empty buffers.
        if samples.size:
            self._decoder.process_raw(samples.tobytes(), False, False)

    def _hypothesis(self) -> str:
        hyp = self._decoder.hyp()
        return "" if hyp is None else str(hyp.hypstr).strip()

    def _abandon_utterance(self) -> None:
        """Also undo the utterance's normalization update: noise bursts must not skew the next utterance."""
        self._resampler.flush()
        self._decoder.end_utt()
        self._decoder.set_cmn(self._cmn_before)
        self._in_utterance = False
