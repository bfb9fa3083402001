"""What the engine needs from speech recognition: timed partial and final transcripts per caller turn."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Transcript:
    """One recognition result; ``t_ms`` is call time when it became available, so timing can be replayed."""

    text: str
    final: bool
    t_ms: int


@runtime_checkable
class StreamingRecognizer(Protocol):
    """Frame-synchronous recognizer, so barge-in rules can react to partials while the caller speaks.

    Partials carry the whole current hypothesis for the utterance, not increments, and may revise
    earlier words; a final closes the utterance.
    """

    def feed(self, frame: npt.NDArray[np.int16], t_ms: int) -> list[Transcript]:
        """Take one 20 ms frame of 8 kHz audio; return results that became available by ``t_ms``."""
        ...

    def end_utterance(self, t_ms: int) -> list[Transcript]:
        """The caller's turn ended: flush, so the engine gets a final without waiting for more audio."""
        ...

    def reset(self) -> None:
        """Drop the utterance in progress, e.g. when the call is torn down or restarted."""
        ...

    def speech_started(self, t_ms: int) -> None:
        """The VAD heard the caller begin at ``t_ms``: a recognizer that decodes turns starts one here."""
        ...

    def want_words(self, t_ms: int) -> None:
        """A decision waits for words: a recognizer that decodes on demand decodes what it has so far."""
        ...

    @property
    def turn_decoding(self) -> bool:
        """Finals come after ``end_utterance``, exactly one per call and in call order, when their decode is
        done: the engine holds each ended turn until its words arrive. False: finals come by ``end_utterance``."""
        ...

    @property
    def decoding(self) -> bool:
        """Words for the open utterance are being decoded and will come by a later ``feed``."""
        ...

    @property
    def hearing(self) -> bool:
        """False while the recognizer cannot keep up: the engine then judges the caller by sound alone."""
        ...

    @property
    def language(self) -> str | None:
        """The one language its words come in whatever the caller speaks (an English-only model: "en"), so
        the engine also knows that language's backchannels; None: it writes the caller's language."""
        ...


class FrameRecognizer:
    """For recognizers that produce words frame by frame: the turn-level hints need no action."""

    turn_decoding = False
    decoding = False
    hearing = True
    language: str | None = None

    def speech_started(self, t_ms: int) -> None:
        """Frame-synchronous recognizers hear every frame anyway."""

    def want_words(self, t_ms: int) -> None:
        """Partials come as they are decoded; there is nothing to ask for."""


def count_characters(text: str) -> int:
    """Whitespace-free length, so ``minimum_characters`` barge-in thresholds ignore spacing quirks."""
    return sum(1 for ch in text if not ch.isspace())


class ScriptedRecognizer(FrameRecognizer):
    """Replays known transcripts on the call clock, for simulations or results delivered by the media side.

    Results are released in time order (stable for equal times), each once, when ``feed`` reaches their
    ``t_ms``. ``end_utterance`` always closes an open utterance with a final: the script's next final if it
    is the next result pending (released early, stamped with the end time, so it is not duplicated later),
    otherwise one synthesized from the last partial, so nothing the caller said is lost.
    """

    def __init__(self, script: Iterable[Transcript] = ()) -> None:
        self._pending: list[Transcript] = []
        self._last_partial: Transcript | None = None
        for transcript in script:
            self.push(transcript)

    def push(self, transcript: Transcript) -> None:
        """Add a result at run time; it is released by the next ``feed`` at or after its ``t_ms``."""
        bisect.insort_right(self._pending, transcript, key=lambda t: t.t_ms)

    @property
    def pending(self) -> tuple[Transcript, ...]:
        """Results not yet released, for assertions in tests and simulations."""
        return tuple(self._pending)

    def feed(self, frame: npt.NDArray[np.int16], t_ms: int) -> list[Transcript]:
        """The audio itself is ignored: the script already says what was heard."""
        return self._release_due(t_ms)

    def end_utterance(self, t_ms: int) -> list[Transcript]:
        """Release what is due, then make sure an open utterance ends with a final."""
        out = self._release_due(t_ms)
        if self._last_partial is None:
            return out
        closing = self._pending.pop(0) if self._pending and self._pending[0].final else self._last_partial
        self._last_partial = None
        out.append(Transcript(text=closing.text, final=True, t_ms=t_ms))
        return out

    def reset(self) -> None:
        """Forget the open utterance; scripted results still to come are kept, as they are future events."""
        self._last_partial = None

    def _release_due(self, t_ms: int) -> list[Transcript]:
        n_due = bisect.bisect_right(self._pending, t_ms, key=lambda t: t.t_ms)
        due = self._pending[:n_due]
        del self._pending[:n_due]
        for transcript in due:
            self._last_partial = None if transcript.final else transcript
        return due
