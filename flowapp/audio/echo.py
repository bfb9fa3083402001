"""Telling the assistant's own voice, coming back down the line, from the caller's.

Phone lines and speakerphones return an attenuated, delayed copy of what was played. Without a guard that
echo trips the VAD and the assistant interrupts itself. The guard keeps the recent outbound audio as a
reference and calls an inbound frame echo when it correlates strongly with the reference at some delay
and is no louder than that reference. A caller talking over the echo breaks the correlation, so real
double talk still counts as speech.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import numpy as np
import numpy.typing as npt

from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES
from flowapp.audio.vad import CascadeDetector, SpeechDetector, WebRtcDetector

_BLOCK_FFT = 2 * FRAME_SAMPLES
_ODD_BINS_NEGATED = (-1.0) ** np.arange(_BLOCK_FFT // 2 + 1)
_SILENT_FRAME = np.zeros(FRAME_SAMPLES, dtype=np.int16)
_TRACK = 16
"""Samples either side of the learned delay checked per frame (2 ms: the path drifts little)."""
_PRE_EMPHASIS = 0.95
_LOCKED_BONUS = 0.15
"""How much the correlation threshold drops near a learned delay."""
_QUIET_ENERGY = FRAME_SAMPLES * (32768 * 10 ** (-70 / 20)) ** 2
"""A frame quieter than -70 dBFS after pre-emphasis (about -60 dBFS before) is line noise at most."""
_CLEAR_MISS = 0.3
"""A search whose best match is this weak heard the caller, not echo, and the caller's next frame is taken
for the caller's too, unsearched: that halves the searches of double talk, and echo right after a caller's
last frame passes as speech for one frame at most. Once the assistant has gone quiet (a barge-in stopped it)
its echo only fades, so the caller keeps the benefit for as long as they go on talking without a pause:
the fading tail can lengthen their speech by the echo delay at most, never start it."""
_RESEARCH_EVERY = 10
"""With a known echo path, a frame that does not match it is the caller's; look for a moved path now and then."""
_ENERGY_MARGIN = 2.0
"""3 dB: a frame this close to the expected echo energy carries no caller of its own (6 dB held back callers
speaking over a loud echo: pause p95 145 -> 133 ms on the turn-taking benchmark, with no more echo let through)."""


class EchoGuardSettings(Protocol):
    enabled: bool
    max_delay_ms: int
    correlation: float


class EchoGuard:
    def __init__(
        self, max_delay_ms: int = 240, correlation: float = 0.6, loudness_margin_db: float = 3.0, enabled: bool = True
    ) -> None:
        self.loudness_margin = 10 ** (loudness_margin_db / 10)
        self.last_correlation = 0.0
        self.last_explained = False
        self._set(enabled, max_delay_ms, correlation)

    def configure(self, settings: EchoGuardSettings) -> None:
        self._set(settings.enabled, settings.max_delay_ms, settings.correlation)

    def _set(self, enabled: bool, max_delay_ms: int, correlation: float) -> None:
        self.enabled = enabled
        self.correlation = correlation
        self._blocks = -(-max_delay_ms // FRAME_MS) + 1
        """Frames in the echo window: the delay is searched in whole frames' worth of lags, rounded up."""
        self.max_lag = (self._blocks - 1) * FRAME_SAMPLES
        self._played: deque[npt.NDArray[np.int16]] = deque([_SILENT_FRAME] * (self._blocks + 1), self._blocks + 1)
        """One frame more than the window: the oldest frame's pre-emphasis needs the sample before it."""
        self._spectra = np.zeros((self._blocks, _BLOCK_FFT // 2 + 1), dtype=np.complex128)
        """Each window frame's spectrum, in a ring: computed the first time a search needs it, kept while it stays."""
        self._spectrum_known = [True] * self._blocks
        self._oldest = 0
        """Ring position of the oldest window frame."""
        self._reference: npt.NDArray[np.float64] | None = None
        self._active_frames = 0
        self._lag: int | None = None
        """Index into the history windows of the echo path's delay, once learned."""
        self._gain = 0.0
        """Energy ratio echo / reference of that path."""
        self._candidate: int | None = None
        self._since_search = 0
        self._in_last = 0.0
        self._step = 0
        self._caller_step = -1
        """The step after a search that clearly heard the caller: that step's frame is the caller's too."""

    def play(self, frame: npt.NDArray[np.int16]) -> None:
        """Record one outbound frame, in step with the inbound frame of the same 20 ms.

        Every frame the assistant speaks passes here, but only frames the screen flags are ever checked:
        the reference is assembled (and pre-emphasised) only when one is.
        """
        self._step += 1
        sounding = bool(np.count_nonzero(frame))
        if not sounding and self._active_frames == 0:
            return  # the whole window is silence already: nothing to shift (most of a call's frames)
        self._played.append(frame)
        self._spectrum_known[self._oldest] = False
        self._oldest = (self._oldest + 1) % self._blocks
        self._reference = None
        self._active_frames = self._blocks if sounding else max(0, self._active_frames - 1)

    @property
    def _history(self) -> npt.NDArray[np.float64]:
        """The outbound audio of the echo window, oldest first, pre-emphasised."""
        if self._reference is None:
            played = np.concatenate(self._played).astype(np.float64)
            self._reference = played[FRAME_SAMPLES:] - _PRE_EMPHASIS * played[FRAME_SAMPLES - 1 : -1]
        return self._reference

    def _window_spectra(self) -> npt.NDArray[np.complex128]:
        """Spectra of each window frame followed by the next (the newest by silence), as `_BLOCK_FFT` points.

        A pair's spectrum is the sum of its two frames' zero-padded spectra, the second shifted by one
        frame, which at `_BLOCK_FFT` = 2 frames is a sign flip of the odd bins. So each frame is
        transformed once while it stays in the window, not once per search.
        """
        blocks, oldest, known = self._blocks, self._oldest, self._spectrum_known
        missing = [k for k in range(blocks) if not known[(oldest + k) % blocks]]
        if missing:
            frames = self._history.reshape(blocks, FRAME_SAMPLES)[missing]
            slots = [(oldest + k) % blocks for k in missing]
            self._spectra[slots] = np.fft.rfft(frames, _BLOCK_FFT, axis=1)
            for slot in slots:
                known[slot] = True
        single = np.roll(self._spectra, -oldest, axis=0) if oldest else self._spectra
        pairs = single.copy()
        pairs[:-1] += single[1:] * _ODD_BINS_NEGATED
        return pairs

    @property
    def active(self) -> bool:
        """The assistant has played something within the echo window: only then can there be echo."""
        return self.enabled and self._active_frames > 0

    def is_echo(self, frame: npt.NDArray[np.int16]) -> bool:
        """Whether the frame is only echo; `last_explained` then says the verdict rests on loudness alone."""
        self.last_explained = False
        if not self.active:
            return False
        x = self._emphasis(frame)
        x_energy = float(np.dot(x, x))
        if x_energy < _QUIET_ENERGY:
            return False  # below anything a detector would call speech: not worth a look
        if self._step == self._caller_step:
            if self._active_frames < self._blocks:
                self._caller_step += 1  # the assistant has gone quiet: its echo only fades from here
            return False
        if self._lag is not None:
            near = self._near_lag(x, x_energy)
            if near is not None:
                return near
            self._since_search += 1
            if self._since_search < _RESEARCH_EVERY:
                return False
        self._since_search = 0
        return self._search(x, x_energy)

    def _near_lag(self, x: npt.NDArray[np.float64], x_energy: float) -> bool | None:
        """Once the echo path is known, check only around its delay: a few dot products instead of an FFT."""
        assert self._lag is not None
        lo = max(0, self._lag - _TRACK)
        hi = min(self.max_lag, self._lag + _TRACK)
        segment = self._history[lo : hi + FRAME_SAMPLES]
        power = np.concatenate(([0.0], np.cumsum(segment * segment)))
        energies = power[FRAME_SAMPLES:] - power[:-FRAME_SAMPLES]
        ncc = np.abs(np.correlate(segment, x, mode="valid")) / np.sqrt(np.maximum(energies, 1e-9) * x_energy)
        best = int(np.argmax(ncc))
        self.last_correlation = float(ncc[best])
        matched = self.last_correlation >= self.correlation - _LOCKED_BONUS
        if matched and x_energy <= energies[best] * self.loudness_margin:
            self._learn(lo + best, x_energy / max(float(energies[best]), 1e-9))
            return True
        # Weak correlation (a fricative, a filtered echo path) but no louder than the echo this path returns.
        expected = float(energies[self._lag - lo]) * self._gain
        if x_energy <= expected * _ENERGY_MARGIN:
            self.last_explained = True
            return True
        return None

    def _search(self, x: npt.NDArray[np.float64], x_energy: float) -> bool:
        h = self._history
        power = np.concatenate(([0.0], np.cumsum(h * h)))
        window_energy = power[FRAME_SAMPLES:] - power[:-FRAME_SAMPLES]
        if x_energy > float(window_energy.max()) * self.loudness_margin:
            self._candidate = None
            return False  # louder than anything played lately: not (only) echo, and no FFT needed
        # Correlation of the frame with every window of the reference: lags 0..159 of each pair of frames.
        pairs = self._window_spectra() * np.conj(np.fft.rfft(x, _BLOCK_FFT))
        xcorr = np.fft.irfft(pairs, _BLOCK_FFT, axis=1)[:, :FRAME_SAMPLES].ravel()[: self.max_lag + 1]
        ncc = np.abs(xcorr) / np.sqrt(np.maximum(window_energy, 1e-9) * x_energy)
        best = int(np.argmax(ncc))
        self.last_correlation = float(ncc[best])
        if self.last_correlation < self.correlation or x_energy > window_energy[best] * self.loudness_margin:
            self._candidate = None
            if self.last_correlation < _CLEAR_MISS:
                self._caller_step = self._step + 1
            return False
        gain = x_energy / max(float(window_energy[best]), 1e-9)
        # One strong match may be chance (voiced speech resembles voiced speech at some delay among hundreds):
        # it costs the caller one frame at most. Only the same delay twice in a row is taken for the echo path.
        if self._candidate is not None and abs(self._candidate - best) <= _TRACK // 2:
            self._learn(best, gain)
        self._candidate = best
        return True

    def _learn(self, lag: int, gain: float) -> None:
        self._gain = gain if self._lag is None else 0.8 * self._gain + 0.2 * gain
        self._lag = lag

    def _emphasis(self, frame: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
        """Pre-emphasis: without it the low-frequency bulk of any voiced speech correlates with any other."""
        x = frame.astype(np.float64)
        previous = self._in_last
        self._in_last = float(x[-1])
        out = np.empty_like(x)
        out[0] = x[0] - _PRE_EMPHASIS * previous
        rest = out[1:]
        np.multiply(x[:-1], _PRE_EMPHASIS, out=rest)  # x[1:] - 0.95 * x[:-1] without its temporaries
        np.subtract(x[1:], rest, out=rest)
        return out


class EchoGuardedDetector:
    """A SpeechDetector that answers 0 for frames the guard takes for echo.

    Only frames a cheap screen flags get a look, so silence and line noise cost no FFT: webrtcvad itself
    when it is the detector (it answers frame by frame, so the guard sees echo from its first frame).
    A cascade's own screen serves, and the cascade hears a matched echo frame as silence: echo left in its
    pre-roll would make its next wake hear speech. A frame rejected on loudness alone may carry the
    caller's first syllable over the echo, so the cascade keeps it in the pre-roll, unflagged. (On the
    turn-taking benchmark, silencing every rejected frame cost 20 ms more at p95; keeping matched echo in
    the pre-roll let the assistant interrupt itself on 7-50% of echo clips.) Silero alone gets a webrtcvad
    screen of its own and never sees echo frames.
    """

    def __init__(self, inner: SpeechDetector, guard: EchoGuard) -> None:
        self.inner = inner
        self.guard = guard
        self._cascade = inner if isinstance(inner, CascadeDetector) else None
        self._screen: SpeechDetector | None = None
        if self._cascade is not None:
            self._screen = self._cascade.screen
        elif not isinstance(inner, WebRtcDetector):
            self._screen = WebRtcDetector(aggressiveness=2)
        self.rejected_frames = 0
        self.last_echo = False
        """Whether the last frame was judged the assistant's echo: the input stage keeps it from the recognizer."""

    def speech_probability(self, frame: npt.NDArray[np.int16]) -> float:
        self.last_echo = False
        if self._cascade is not None:
            flagged = self._cascade.screen.speech_probability(frame) >= 0.5
            if flagged and self.guard.is_echo(frame):
                self.rejected_frames += 1
                self.last_echo = True
                return self._cascade.judge(frame if self.guard.last_explained else _SILENT_FRAME, False)
            return self._cascade.judge(frame, flagged)
        if self._screen is None:
            p = self.inner.speech_probability(frame)
            if p >= 0.5 and self.guard.is_echo(frame):
                self.rejected_frames += 1
                self.last_echo = True
                return 0.0
            return p
        if self.guard.active and self._screen.speech_probability(frame) >= 0.5 and self.guard.is_echo(frame):
            self.rejected_frames += 1
            self.last_echo = True
            return 0.0
        return self.inner.speech_probability(frame)

    @property
    def onset_lookback_ms(self) -> int:
        """Passes on the inner detector's back-dating (see DelayedConfirmation); 0 for detectors without it."""
        return int(getattr(self.inner, "onset_lookback_ms", 0))

    def reset(self) -> None:
        self.inner.reset()
        if self._screen is not None and self._cascade is None:
            self._screen.reset()
