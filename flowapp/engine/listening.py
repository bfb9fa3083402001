"""The input stage: the caller's frame -> echo handling -> VAD, voicing and recognizer -> what was heard.

Everything downstream (turn tracking, the barge-in policy, the app's `user_speak`) hears the caller through
this one stage, so nothing after it hears the assistant's own voice: a frame the echo guard takes for echo
is silence to the VAD and to the recognizer alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from flowapp.audio.echo import EchoGuard, EchoGuardedDetector, EchoGuardSettings
from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES, Pcm
from flowapp.audio.vad import SpeechDetector, VadConfig, VadEvent, VadTracker
from flowapp.audio.voicing import VoicingMeter
from flowapp.stt.base import StreamingRecognizer, Transcript

_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


@dataclass(frozen=True)
class Heard:
    """What one 20 ms caller frame told the engine."""

    vad: list[VadEvent]
    transcripts: list[Transcript]
    voiced: bool
    """The frame had pitch while the caller was speaking (see voicing.py)."""


_NOTHING = Heard([], [], False)
"""Most frames tell nothing: one shared answer, read-only like every `Heard`, saves building one per frame."""


class InputStage:
    def __init__(
        self,
        detector: SpeechDetector,
        vad: VadConfig,
        recognizer: StreamingRecognizer | None,
        echo: EchoGuardSettings,
    ) -> None:
        self.echo_guard = EchoGuard()
        self.echo_guard.configure(echo)
        self.detector = EchoGuardedDetector(detector, self.echo_guard)
        self.vad = VadTracker(self.detector, vad)
        self.recognizer = recognizer
        self._voicing = VoicingMeter()
        self.vad_seconds = 0.0
        self.recognizer_seconds = 0.0
        """Time spent in the detector and in the recognizer's `feed` (a live recognizer decodes elsewhere)."""

    def played(self, frame: Pcm) -> None:
        """The assistant's frame for the same 20 ms: the echo guard's reference."""
        self.echo_guard.play(frame)

    def hear(self, frame: Pcm, t_ms: int) -> Heard:
        started = time.perf_counter()
        vad_events = self.vad.process(frame, t_ms)
        heard_at = time.perf_counter()
        self.vad_seconds += heard_at - started
        echo = self.detector.last_echo
        voiced = not echo and self.vad.speaking and self._voicing.voiced(frame)
        recognizer = self.recognizer
        for event in vad_events:
            if event.kind == "end" and not self.vad.speaking:
                self._voicing.reset()  # the next speech starts afresh; silent frames never reach the meter
            elif event.kind == "start" and recognizer is not None:
                recognizer.speech_started(event.t_ms)
        transcripts: list[Transcript] = []
        if recognizer is not None:
            transcripts = recognizer.feed(_SILENCE if echo else frame, t_ms + FRAME_MS)
            self.recognizer_seconds += time.perf_counter() - heard_at
        if not vad_events and not transcripts and not voiced:
            return _NOTHING
        return Heard(vad_events, transcripts, voiced)

    def want_words(self, t_ms: int) -> None:
        if self.recognizer is not None:
            self.recognizer.want_words(t_ms)
