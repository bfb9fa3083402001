"""flowapp's built-in local recognizer: Whisper decodes of whole caller turns, on a shared bounded pool.

The engine tells the recognizer when speech starts, asks for words when a decision waits for them (a paused
item, a `minimum_characters` item) and ends the utterance when the turn ends. Each of these starts at most
one decode; the audio path never waits for one. A live call's decodes run on one `DecodePool` for the whole
process; when its queue is full the decode is refused, the call judges by sound alone until the next turn,
and the refusal is logged and counted. A simulation decodes inline and releases the words after a fixed
`SIMULATED_LATENCY_MS` of call time, so a simulated call replays exactly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from flowapp.audio.frames import FRAME_MS
from flowapp.stt.base import Transcript
from flowapp.stt.whisper import BUILTIN, WhisperTranscriber, shared_transcriber

logger = logging.getLogger("flowapp.stt")

Pcm = npt.NDArray[np.int16]

SIMULATED_LATENCY_MS = 300
"""How long a simulated decode takes in call time: about what one decode costs a free worker."""
PREROLL_MS = 300
"""Audio kept from before the VAD's onset, so the first syllable is in the decode."""
PARTIAL_EVERY_MS = 300
MIN_PARTIAL_MS = 200
"""Less speech than this holds no word worth a decode."""
MAX_UTTERANCE_MS = 120_000
"""A turn longer than this keeps only its last two minutes (memory stays bounded on an open line)."""


class Job(Protocol):
    def done(self, t_ms: int) -> bool: ...

    def text(self) -> str: ...


class Decoder(Protocol):
    language: str | None
    """See `StreamingRecognizer.language`."""

    def start(self, pcm: Pcm, t_ms: int) -> Job | None:
        """Begin decoding; None when there is no capacity (the caller is then judged by sound alone)."""
        ...


@dataclass
class _TimedJob:
    ready_ms: int
    result: str

    def done(self, t_ms: int) -> bool:
        return t_ms >= self.ready_ms

    def text(self) -> str:
        return self.result


class InlineDecoder:
    """Decodes at once and releases the words `latency_ms` of call time later: simulations, replays, tests."""

    def __init__(self, transcriber: WhisperTranscriber, latency_ms: int = SIMULATED_LATENCY_MS) -> None:
        self.transcriber = transcriber
        self.latency_ms = latency_ms
        self.language = transcriber.language

    def start(self, pcm: Pcm, t_ms: int) -> Job:
        return _TimedJob(t_ms + self.latency_ms, self.transcriber.transcribe(pcm))


@dataclass
class _PoolJob:
    future: Future[str]

    def done(self, t_ms: int) -> bool:
        return self.future.done()

    def text(self) -> str:
        try:
            return self.future.result()
        except Exception:
            logger.exception("a decode failed; the turn goes on without its words")
            return ""


@dataclass
class PoolStats:
    decodes: int = 0
    refused: int = 0
    failed: int = 0
    cpu_s: float = 0.0
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    """The last decodes' time from submission to words, queueing included."""


class DecodePool:
    """Every live call's decodes, on a few worker threads with a bounded queue (CTranslate2 releases the GIL)."""

    def __init__(self, transcriber: WhisperTranscriber, workers: int = 1, max_pending: int | None = None) -> None:
        if workers < 1:
            raise ValueError("a decode pool needs at least one worker")
        self.transcriber = transcriber
        self.language = transcriber.language
        self.max_pending = max_pending if max_pending is not None else 3 * workers
        self.stats = PoolStats()
        self._pending = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flowapp-stt")

    def start(self, pcm: Pcm, t_ms: int) -> Job | None:
        with self._lock:
            if self._pending >= self.max_pending:
                self.stats.refused += 1
                return None
            self._pending += 1
        return _PoolJob(self._executor.submit(self._run, pcm, time.perf_counter()))

    def _run(self, pcm: Pcm, submitted: float) -> str:
        cpu = time.thread_time()
        try:
            return self.transcriber.transcribe(pcm)
        except Exception:
            with self._lock:
                self.stats.failed += 1
            raise
        finally:
            with self._lock:
                self._pending -= 1
                self.stats.decodes += 1
                self.stats.cpu_s += time.thread_time() - cpu
                self.stats.latency_ms.append(1000 * (time.perf_counter() - submitted))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class LocalRecognizer:
    """One call's view of the recognizer: its utterance audio, its decodes in flight, its words."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self._preroll: deque[Pcm] = deque(maxlen=PREROLL_MS // FRAME_MS)
        self._utterance: deque[Pcm] | None = None
        self._partial: Job | None = None
        self._partial_asked_ms = -PARTIAL_EVERY_MS
        self._finals: deque[Job | str] = deque()
        self.hearing = True
        """False after the pool refused this call's decode: judge by sound alone until the next utterance."""

    turn_decoding = True

    @property
    def language(self) -> str | None:
        return self.decoder.language

    @property
    def decoding(self) -> bool:
        return self._partial is not None

    def speech_started(self, t_ms: int) -> None:
        if self._utterance is None:
            self._utterance = deque(self._preroll, maxlen=MAX_UTTERANCE_MS // FRAME_MS)
            self._preroll.clear()
            self._partial = None
            self._partial_asked_ms = t_ms - PARTIAL_EVERY_MS
            self.hearing = True

    def feed(self, frame: Pcm, t_ms: int) -> list[Transcript]:
        (self._preroll if self._utterance is None else self._utterance).append(frame)
        return self._collect(t_ms)

    def want_words(self, t_ms: int) -> None:
        """A decision waits for words: decode what the caller has said so far, unless a decode is under way."""
        utterance = self._utterance
        if utterance is None or self._partial is not None or not self.hearing:
            return
        if t_ms - self._partial_asked_ms < PARTIAL_EVERY_MS or len(utterance) * FRAME_MS < MIN_PARTIAL_MS:
            return
        self._partial_asked_ms = t_ms
        self._partial = self._start(utterance, t_ms)

    def end_utterance(self, t_ms: int) -> list[Transcript]:
        utterance, self._utterance = self._utterance, None
        self._partial = None
        job = self._start(utterance, t_ms) if utterance is not None else None
        self._finals.append(job if job is not None else "")
        return self._collect(t_ms)

    def reset(self) -> None:
        self._utterance = None
        self._partial = None
        self._finals.clear()
        self._preroll.clear()

    def _start(self, frames: deque[Pcm], t_ms: int) -> Job | None:
        job = self.decoder.start(np.concatenate(frames), t_ms)
        if job is None and self.hearing:
            self.hearing = False
            logger.warning("recognizer overloaded: this turn is judged by its sound alone")
        return job

    def _collect(self, t_ms: int) -> list[Transcript]:
        out: list[Transcript] = []
        partial = self._partial
        if partial is not None and partial.done(t_ms):
            self._partial = None
            text = partial.text()
            if text and self._utterance is not None:
                out.append(Transcript(text, False, t_ms))
        finals = self._finals
        while finals:
            head = finals[0]
            if isinstance(head, str):
                text = head
            elif head.done(t_ms):
                text = head.text()
            else:
                break
            finals.popleft()
            out.append(Transcript(text, True, t_ms))
        return out


_pools: dict[str, DecodePool] = {}
_pools_lock = threading.Lock()


def pool_stats() -> list[PoolStats]:
    """The figures of every live decode pool of this process (for metrics)."""
    with _pools_lock:
        return [pool.stats for pool in _pools.values()]


def shared_pool(model: str = BUILTIN, workers: int = 1) -> DecodePool:
    """The process's decode pool for live calls of one model, created with the model on first use."""
    with _pools_lock:
        pool = _pools.get(model)
        if pool is None:
            pool = _pools[model] = DecodePool(shared_transcriber(model), workers=workers)
        return pool
