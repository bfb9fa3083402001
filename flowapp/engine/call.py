"""`CallEngine`: one phone call, frame by frame, on a clock the driver controls.

Audio flows one way: caller frame -> VAD / transcripts -> turn and barge-in policy -> playout -> frame out.
The engine never sleeps, never awaits and knows nothing of HTTP or of `FlowApp`: a driver calls `step()` every
20 ms of call time with the caller's frame and gets the frame to play back; the events the engine raises
wait in `outbox` until the driver has them answered and hands the actions back through `apply()`.
A simulation drives it as fast as the CPU allows, a live media stream at the pace of the carrier.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES
from flowapp.audio.vad import SpeechDetector, VadConfig, VadEvent, make_detector
from flowapp.engine.bargein import CallerActivity, Trigger, automatic_trigger, key_press_interrupts
from flowapp.engine.interruption import Candidate, InterruptionHook, Verdict, classify_words, judge
from flowapp.engine.listening import Heard, InputStage
from flowapp.engine.playback import ControlItem, PlaybackItem
from flowapp.engine.playout import ItemsDropped, Playout, Reply
from flowapp.engine.render import Rendered
from flowapp.engine.turns import TurnHandling, words
from flowapp.logs import call_logger
from flowapp.protocol import events as ev
from flowapp.protocol.actions import (
    Audio,
    BargeIn,
    BargeInNow,
    ClearQueue,
    CommitUserTurn,
    ConfigureTranscription,
    ConfigureTurnHandling,
    Hangup,
    MixAudio,
    Speak,
    Transfer,
)
from flowapp.stt.base import StreamingRecognizer, Transcript, count_characters

logger = logging.getLogger("flowapp.engine")

_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)
FINAL_WAIT_MS = 5000
"""An ended turn waits this long for its final words (a decode on a busy pool) before it goes out with the
words it has."""

Record = dict[str, Any]


class CallTap(Protocol):
    """Sees everything that reaches the engine from outside, in order, and every decision: what a recording
    needs to show a call and to run it again (see flowapp.recording)."""

    def recognizer(self, recognizer: StreamingRecognizer | None) -> StreamingRecognizer | None:
        """The recognizer the engine should use: the given one, or a stand-in that notes what it returns."""
        ...

    def played(self, frame: np.ndarray) -> None: ...

    def heard(self, frame: np.ndarray, heard: Heard, echo: bool) -> None: ...

    def applied(self, rendered: list[Rendered], turn: int | None) -> None: ...

    def dtmf(self, digit: str) -> None: ...

    def barge_in_requested(self, trigger: Trigger) -> None: ...

    def unheard(self, ms: int) -> None:
        """What the transport's `unheard_ms` said, each time the engine asked."""
        ...

    def verdict(self, verdict: Verdict | None) -> None:
        """What the app's interruption hook said about a paused item."""
        ...

    def record(self, record: Record) -> None:
        """A timeline record (what `on_record` gets), or a detail only a recording keeps (`trace`)."""
        ...


@dataclass
class EngineConfig:
    detector: str = "cascade"
    """webrtc alone fires on music; Silero alone is slower and costs more (see benchmarks.bargein)."""
    vad: VadConfig | None = None
    """None: the detector's own timing (see `vad_timing`)."""
    default_barge_in: BargeIn = field(default_factory=lambda: BargeIn.min_characters(3))
    """For actions that arrive without a `barge_in` (a remote app that leaves it out)."""
    start_unix_ms: int = 0
    """Wall-clock time of t=0, for `speech_started_at`; a simulation fixes it so every run is identical."""
    turn_handling: TurnHandling = field(default_factory=TurnHandling)


def vad_timing(detector: str) -> VadConfig:
    """Onset and hangover for a detector: one frame of onset for the cascade, whose Silero stage has already
    judged the sound; two for detectors that judge each frame alone (one frame of echo or a click is not
    yet speech)."""
    return VadConfig(onset_ms=20 if detector == "cascade" else 40, hangover_ms=120)


@dataclass
class CallerTurn:
    """One caller turn, from the first sign of speech to the end of turn."""

    started_ms: int
    last_activity_ms: int
    text: str = ""
    final_text: str | None = None
    barged_in: bool = False
    limit_reported: bool = False
    discardable: bool = False
    """Began during an item that may not be interrupted (see `discard_audio_if_uninterruptible`)."""
    speech_ms: int = 0
    """Voice activity so far, summed over the turn's speech segments."""
    voiced_ms: int = 0
    """Of that, frames with pitch: what words are made of (coughs, clicks and hiss have none)."""
    closed_ms: int | None = None
    """When the turn ended, if its final words are still being decoded."""


@dataclass
class Pause:
    """Playback held on caller activity, waiting to learn whether it was a real interruption."""

    item: PlaybackItem
    at_ms: int
    trigger: Trigger
    baseline_chars: int
    speech_start_ms: int


class CallEngine:
    def __init__(
        self,
        session: ev.SessionInfo,
        config: EngineConfig | None = None,
        *,
        recognizer: StreamingRecognizer | None = None,
        detector: SpeechDetector | None = None,
        on_record: Callable[[Record], None] | None = None,
        unheard_ms: Callable[[], int] | None = None,
        interruption_hook: InterruptionHook | None = None,
        tap: CallTap | None = None,
    ) -> None:
        """`unheard_ms`, from a live transport: audio sent to the carrier but not yet confirmed played.

        `interruption_hook` may overrule the built-in judgement of a paused interruption (see interruption.py).
        """
        self.session = session
        self.config = config or EngineConfig()
        self.turn_handling = self.config.turn_handling
        self._tap = tap
        if tap is not None:
            recognizer = tap.recognizer(recognizer)
        self.input = InputStage(
            detector or make_detector(self.config.detector),
            self.config.vad or vad_timing(self.config.detector),
            recognizer,
            self.turn_handling.echo_guard,
        )
        self.echo_guard = self.input.echo_guard
        self.detector = self.input.detector
        self.vad = self.input.vad
        self._awaiting: deque[CallerTurn | None] = deque()
        """Ended utterances whose final words a turn-decoding recognizer still owes, oldest first (None: the
        utterance was dropped, as noise or a backchannel, and its words go nowhere)."""
        self.end_of_turn_silence_ms = int(self.turn_handling.endpointing.min_delay * 1000)
        """Caller silence that ends their turn: `endpointing.min_delay`, until a speak's `vad` setting replaces it."""
        self._learned_pause_ms: float | None = None
        self.now_ms = 0
        self.outbox: list[ev.Event] = []
        self.log = call_logger(logger, session.id)
        self.playout = Playout(self.log, self._on_dropped)
        self.pause: Pause | None = None
        self.turn: CallerTurn | None = None
        self.ended = False
        self.end_reason: str | None = None
        self.transfer: Transfer | None = None
        self._on_record = on_record
        self._unheard_ms = unheard_ms
        self._hook = interruption_hook
        self._input_timeout_at: int | None = None
        self._item_baseline_chars = 0
        self._item_speech_began = True
        """The caller has begun speaking since the current item started; until then, words that arrive belong
        to speech from before the item and move the baseline instead of counting towards `minimum_characters`."""
        self._segment_start_ms: int | None = None
        self._last_speech_end_ms: int | None = None
        self._words_asked_ms: int | None = None
        """When the recognizer last began decoding the open turn for early words."""

    @property
    def current(self) -> PlaybackItem | None:
        """The item playing (or held), if any."""
        return self.playout.current

    @property
    def recognizer(self) -> StreamingRecognizer | None:
        return self.input.recognizer

    @recognizer.setter
    def recognizer(self, recognizer: StreamingRecognizer | None) -> None:
        self.input.recognizer = recognizer

    # Driver interface ---------------------------------------------------------------------------

    def start(self) -> None:
        self._emit(ev.SessionStart(session=self.session))

    def step(self, caller_frame: np.ndarray | None) -> np.ndarray:
        """20 ms of call time: play the next frame, hear the caller's frame for the same 20 ms, then decide."""
        if self.ended:
            return _SILENCE
        out = self._play_next()
        self._listen(caller_frame)
        return out

    def play(self) -> np.ndarray:
        """The assistant's next 20 ms, alone: a live driver plays on its own clock and hears the caller as
        the carrier's frames arrive (`hear`), so a barge-in is decided the moment its audio is in."""
        return _SILENCE if self.ended else self._play_next()

    def hear(self, caller_frame: np.ndarray | None) -> None:
        """The caller's next 20 ms (None: missing, heard as silence); call time moves on and the engine decides."""
        if not self.ended:
            self._listen(caller_frame)

    def _play_next(self) -> np.ndarray:
        out = self._play_frame()
        self.input.played(out)
        if self._tap is not None:
            self._tap.played(out)
        return out

    def _listen(self, caller_frame: np.ndarray | None) -> None:
        self._hear(caller_frame if caller_frame is not None else _SILENCE)
        self.now_ms += FRAME_MS
        self._decide()

    def apply(self, rendered: list[Rendered], *, turn: int | None = None) -> None:
        """Run one reply's actions: audio is queued in order, control actions act now.

        `turn` numbers the caller turn the reply answers (how many `user_speak`, `dtmf_received` and
        `user_input_timeout` events came before, and including, the event it answers); None for pushed
        actions, which join the newest turn. A reply to a newer turn drops what is still queued for older
        ones, and a reply that arrives after a newer turn's reply is stale: its audio is dropped.
        """
        if not rendered:
            return
        if self._tap is not None:
            self._tap.applied(rendered, turn)
        if self.ended:
            self.log.info("call ended; actions dropped: %s", [r.action.type for r in rendered])
            return
        reply = self.playout.admit(rendered, turn)
        for item in reply.rendered:
            self._apply_one(item, reply)

    def barge_in_now(self, trigger: Trigger = "manual") -> bool:
        """Stop the current playback at once (the control API)."""
        if self._tap is not None:
            self._tap.barge_in_requested(trigger)
        return self._barge_in_now(trigger)

    def _barge_in_now(self, trigger: Trigger) -> bool:
        if self.current is None:
            return False
        self._interrupt(trigger)
        return True

    def dtmf(self, digit: str) -> None:
        """A key press: it interrupts first, so the app's answer to it is not queued behind the menu."""
        if self.ended:
            return
        if self._tap is not None:
            self._tap.dtmf(digit)
        item = self.current
        options = self.turn_handling.interruption
        if (
            item is not None
            and options.enabled
            and options.dtmf
            and key_press_interrupts(item.barge_in, item.played_ms)
        ):
            self._interrupt("dtmf")
        self._emit(ev.DtmfReceived(session=self.session, digit=digit))

    def push_transcript(self, transcript: Transcript) -> None:
        """A transcript delivered by the media side rather than the engine's own recognizer."""
        push = getattr(self.recognizer, "push", None)
        if push is None:
            raise RuntimeError("this call's recognizer does not accept pushed transcripts")
        push(transcript)

    def configure_turn_handling(self, changes: dict[str, Any]) -> None:
        """Per-call turn-handling options, merged over the app's (raises pydantic.ValidationError)."""
        self.turn_handling = self.turn_handling.updated(changes)
        self.echo_guard.configure(self.turn_handling.echo_guard)
        if "endpointing" in changes and "min_delay" in changes["endpointing"]:
            self.end_of_turn_silence_ms = int(self.turn_handling.endpointing.min_delay * 1000)

    def end(self, reason: str) -> None:
        """The call is over (caller hung up, stream stopped): `session_end` exactly once."""
        if self.ended:
            return
        if self.current is not None:
            self._finish_item(interrupted=True)
        self._stop_waiting()
        self._awaiting.clear()
        self.ended = True
        self.end_reason = reason
        self._emit(ev.SessionEnd(session=self.session, reason=reason))

    @property
    def queued_ms(self) -> int:
        """Audio still to play: the rest of the current item and everything queued."""
        return self.playout.queued_ms

    @property
    def playing(self) -> bool:
        return self.playout.playing

    @property
    def audible(self) -> bool:
        """The next frame may carry sound (speech, queued speech or a background loop): a live transport
        sends frames only then, and lets the carrier fill silence."""
        return self.playout.audible

    def take_events(self) -> list[ev.Event]:
        events, self.outbox = self.outbox, []
        return events

    # Playout ------------------------------------------------------------------------------------

    def _play_frame(self) -> np.ndarray:
        while (due := self.playout.next_due(self.now_ms)) is not None:
            if isinstance(due, ControlItem):
                self._run_control(due)
                if self.ended:
                    return _SILENCE
            else:
                self._start_item(due)
        return self.playout.frame()

    def _start_item(self, item: PlaybackItem) -> None:
        self._input_timeout_at = None
        turn = self.turn
        self._item_baseline_chars = count_characters(turn.text) if turn is not None else 0
        self._item_speech_began = turn is None
        self._emit(
            ev.AssistantSpeak(
                session=self.session,
                text=item.text,
                ssml=item.ssml,
                duration_ms=item.duration_ms,
                speech_started_at=self.config.start_unix_ms + self.now_ms,
            )
        )

    def _finish_item(self, *, interrupted: bool) -> None:
        item = self.playout.finish()
        self.pause = None
        if self.turn is not None and self.turn.discardable and self.vad.speaking:
            self.turn.discardable = False
        played_ms = item.played_ms
        if interrupted and self._unheard_ms is not None:
            played_ms = max(0, played_ms - self._unheard())
        self._emit(
            ev.AssistantSpeechEnded(
                session=self.session,
                interrupted=interrupted,
                played_ms=played_ms,
                heard_text=item.heard_text(played_ms),
            )
        )
        if not interrupted and item.user_input_timeout_seconds and not len(self.playout.queue) and self.turn is None:
            self._input_timeout_at = self.now_ms + int(item.user_input_timeout_seconds * 1000)

    def _run_control(self, item: ControlItem) -> None:
        action = item.action
        if isinstance(action, Hangup):
            self._record({"event": "hangup"})
            self.end("hangup")
        elif isinstance(action, Transfer):
            self.transfer = action
            self._record({"event": "transfer", **action.to_wire()})
            self.end("transfer")

    # Listening ----------------------------------------------------------------------------------

    def _unheard(self) -> int:
        assert self._unheard_ms is not None
        ms = self._unheard_ms()
        if self._tap is not None:
            self._tap.unheard(ms)
        return ms

    def _hear(self, frame: np.ndarray) -> None:
        heard = self.input.hear(frame, self.now_ms)
        if self._tap is not None:
            self._tap.heard(frame, heard, self.input.detector.last_echo)
        for vad_event in heard.vad:
            self._on_vad(vad_event)
        if heard.voiced and self.turn is not None:
            self.turn.voiced_ms += FRAME_MS
        for transcript in heard.transcripts:
            self._on_transcript(transcript)

    def _on_vad(self, vad_event: VadEvent) -> None:
        if vad_event.kind == "start":
            self._segment_start_ms = vad_event.t_ms
            if self._last_speech_end_ms is not None:
                self._learn_pause(vad_event.t_ms - self._last_speech_end_ms)
            turn = self.turn
            if turn is not None and turn.discardable and (self.current is None or self._interruptible(self.current)):
                turn.discardable = False
            if turn is not None and not self._item_speech_began:
                self._item_baseline_chars = max(self._item_baseline_chars, count_characters(turn.text))
                self._item_speech_began = True
            self._begin_turn(vad_event.t_ms)
        else:
            self._last_speech_end_ms = vad_event.t_ms
            if self.turn is not None:
                self.turn.last_activity_ms = max(self.turn.last_activity_ms, vad_event.t_ms)
                if self._segment_start_ms is not None:
                    self.turn.speech_ms += vad_event.t_ms - self._segment_start_ms
            self._segment_start_ms = None

    def _on_transcript(self, transcript: Transcript) -> None:
        recognizer = self.recognizer
        if recognizer is not None and recognizer.turn_decoding:
            self._on_decoded(transcript)
            return
        if not transcript.text.strip():
            return
        if self.turn is None:
            self._begin_turn(transcript.t_ms)
        turn = self.turn
        assert turn is not None
        turn.text = transcript.text
        turn.last_activity_ms = max(turn.last_activity_ms, transcript.t_ms)
        if transcript.final:
            turn.final_text = transcript.text

    def _on_decoded(self, transcript: Transcript) -> None:
        """Words of a turn-decoding recognizer: partials belong to the open turn, finals to the oldest ended one."""
        if not transcript.final:
            if self.turn is not None and transcript.text.strip():
                self.turn.text = transcript.text
            return
        if not self._awaiting:
            return
        turn = self._awaiting.popleft()
        if turn is None:
            return
        turn.final_text = transcript.text.strip()
        if turn.final_text:
            turn.text = turn.final_text
        if turn.closed_ms is not None:
            self._deliver_turn(turn)

    def _close_utterance(self, turn: CallerTurn | None) -> None:
        """End the recognizer's utterance; its words go to `turn` (None: they are not wanted)."""
        recognizer = self.recognizer
        if recognizer is None:
            return
        if recognizer.turn_decoding:
            self._awaiting.append(turn)
            for transcript in recognizer.end_utterance(self.now_ms):
                self._on_decoded(transcript)
            return
        for transcript in recognizer.end_utterance(self.now_ms):
            if turn is not None:
                self._on_transcript(transcript)

    def _stop_waiting(self, overdue_before_ms: int | None = None) -> None:
        """Ended turns whose words are overdue (all of them: None) go out with the words they have; their
        finals, when they come, are dropped."""
        for i, turn in enumerate(self._awaiting):
            if turn is None or turn.closed_ms is None:
                continue
            if overdue_before_ms is not None and turn.closed_ms > overdue_before_ms:
                continue
            self.log.warning("final words overdue; the turn goes out with the words it has")
            self._awaiting[i] = None
            turn.final_text = turn.text
            self._deliver_turn(turn)

    def _begin_turn(self, t_ms: int) -> None:
        if self.turn is not None:
            return
        item = self.current
        discardable = (
            self.turn_handling.interruption.discard_audio_if_uninterruptible
            and item is not None
            and not self._interruptible(item)
        )
        self.turn = CallerTurn(started_ms=t_ms, last_activity_ms=t_ms, discardable=discardable)
        self._input_timeout_at = None
        self._item_baseline_chars = 0
        self._item_speech_began = True
        self._emit(ev.UserSpeechStarted(session=self.session))

    def _current_speech_ms(self) -> int:
        turn = self.turn
        done = turn.speech_ms if turn is not None else 0
        running = self.now_ms - self._segment_start_ms if self._segment_start_ms is not None else 0
        return done + running

    # Decisions ----------------------------------------------------------------------------------

    def _decide(self) -> None:
        item = self.current
        if item is not None and self.pause is not None:
            self._judge_pause()
        elif item is not None and item.finished:
            self._finish_item(interrupted=False)
        elif item is not None:
            self._check_barge_in(item)
        self._check_turn_limit()
        self._maybe_end_turn()
        if self._awaiting:
            self._stop_waiting(overdue_before_ms=self.now_ms - FINAL_WAIT_MS)
        recognizer = self.recognizer
        if recognizer is not None and self.turn is not None and self._waits_for_words(item):
            was_decoding = recognizer.decoding
            self.input.want_words(self.now_ms)
            if recognizer.decoding and not was_decoding:
                self._words_asked_ms = self.now_ms
        if self._input_timeout_at is not None and self.now_ms >= self._input_timeout_at:
            self._input_timeout_at = None
            if self.turn is None and self.current is None:
                self._emit(ev.UserInputTimeout(session=self.session))

    def _waits_for_words(self, item: PlaybackItem | None) -> bool:
        """A decision hangs on what the caller is saying: a held item, or an item only words can interrupt."""
        if item is None or not self.turn_handling.interruption.enabled:
            return False
        if self.pause is not None:
            return True
        if item.played_ms < item.barge_in.allow_after_ms:
            return False
        adaptive = self.turn_handling.interruption.mode == "adaptive" and self._interruptible(item)
        return item.barge_in.strategy == "minimum_characters" or adaptive

    def _interruptible(self, item: PlaybackItem) -> bool:
        return self.turn_handling.interruption.enabled and item.barge_in.strategy in ("immediate", "minimum_characters")

    def _caller_activity(self) -> CallerActivity:
        turn = self.turn
        characters = 0
        if turn is not None and not self._item_speech_began:
            self._item_baseline_chars = max(self._item_baseline_chars, count_characters(turn.text))
        elif turn is not None:
            characters = max(0, count_characters(turn.text) - self._item_baseline_chars)
        return CallerActivity(speaking=self.vad.speaking, characters=characters)

    def _new_text(self, baseline_chars: int) -> str:
        """The caller's words since a baseline, for phrase matching."""
        turn = self.turn
        if turn is None:
            return ""
        text = turn.text
        skip = baseline_chars
        out = []
        for word in text.split():
            if skip > 0:
                skip -= count_characters(word)
                continue
            out.append(word)
        return " ".join(out)

    def _check_barge_in(self, item: PlaybackItem) -> None:
        options = self.turn_handling.interruption
        if not options.enabled:
            return
        if self.turn is None and not self.vad.speaking and options.mode != "adaptive":
            return  # no speech and no words: the rule cannot trigger (the common case, so skip building it)
        activity = self._caller_activity()
        trigger = automatic_trigger(item.barge_in, item.played_ms, activity)
        if options.mode == "adaptive" and self._interruptible(item) and item.played_ms >= item.barge_in.allow_after_ms:
            verdict = judge(self._candidate(item, self._item_baseline_chars, self.now_ms), options)
            if verdict == "interrupt" and trigger is None:
                trigger = "transcript"
            elif verdict == "backchannel" and trigger == "transcript":
                trigger = None
            elif verdict == "resume":
                trigger = None  # noise the judge has already ridden out, or fillers (see interruption.py)
        if trigger is None:
            return
        if options.pauses_first and trigger == "vad":
            self._pause(item, trigger)
        else:
            self._interrupt(trigger)

    def _candidate(self, item: PlaybackItem, baseline_chars: int, since_ms: int) -> Candidate:
        turn = self.turn
        return Candidate(
            text=self._new_text(baseline_chars),
            final=turn is not None and turn.final_text is not None,
            speaking=self.vad.speaking,
            speech_ms=self._current_speech_ms(),
            silent_ms=self.now_ms - turn.last_activity_ms if turn is not None and not self.vad.speaking else 0,
            paused_ms=self.now_ms - since_ms,
            played_ms=item.played_ms,
            strategy=item.barge_in.strategy,
            transcribing=self.recognizer is not None and self.recognizer.hearing,
            voiced_ms=turn.voiced_ms if turn is not None else 0,
            words_pending=self._words_pending(),
        )

    def _words_pending(self) -> bool:
        """Words are on the way, or would be: a decode is running, or none has yet heard the caller's last
        sound (so a verdict on "uh" waits for the "-huh")."""
        recognizer = self.recognizer
        if recognizer is None or not recognizer.hearing:
            return False
        if recognizer.decoding:
            return True
        heard_until = self._words_asked_ms if self._words_asked_ms is not None else -1
        return (
            recognizer.turn_decoding and self._last_speech_end_ms is not None and heard_until < self._last_speech_end_ms
        )

    def _pause(self, item: PlaybackItem, trigger: Trigger) -> None:
        """Stop the item where the caller stopped hearing it.

        A live transport clears the carrier's buffer on a pause, so what it sent but the caller did not
        hear yet is gone: the item is rewound by that much, and a resume replays it instead of skipping it.
        """
        self.playout.hold(self._unheard() if self._unheard_ms is not None else 0)
        speech_start = self.vad.speech_started_ms if self.vad.speech_started_ms is not None else self.now_ms
        self.pause = Pause(item, self.now_ms, trigger, self._item_baseline_chars, speech_start)
        self._trace({"event": "pause", "trigger": trigger})
        self._emit(ev.AssistantSpeechPaused(session=self.session, played_ms=item.played_ms))

    def _judge_pause(self) -> None:
        pause = self.pause
        assert pause is not None
        candidate = self._candidate(pause.item, pause.baseline_chars, pause.at_ms)
        verdict: Verdict | None = None
        if self._hook is not None:
            verdict = self._hook(candidate)
            if self._tap is not None:
                self._tap.verdict(verdict)
        if verdict is None:
            verdict = judge(candidate, self.turn_handling.interruption)
        if verdict == "interrupt":
            self._interrupt(pause.trigger, at_ms=pause.at_ms)
        elif verdict in ("backchannel", "resume"):
            self._resume(pause, backchannel=verdict == "backchannel", text=candidate.text)

    def _resume(self, pause: Pause, *, backchannel: bool, text: str) -> None:
        self.pause = None
        self.playout.release()
        self._emit(
            ev.AssistantSpeechResumed(
                session=self.session, played_ms=pause.item.played_ms, paused_ms=self.now_ms - pause.at_ms
            )
        )
        if backchannel:
            self._emit(ev.UserBackchannel(session=self.session, text=text))
        turn = self.turn
        if turn is not None and not self.vad.speaking and (backchannel or not turn.text):
            # The backchannel's words went out with its event; noise had none. Words of any other kind
            # stay in the turn, which ends as a `user_speak` as usual: nothing the caller said is lost.
            self._close_utterance(None)
            self.turn = None
            self._segment_start_ms = None

    def _interrupt(self, trigger: Trigger, at_ms: int | None = None) -> None:
        item = self.current
        assert item is not None
        record = {
            "event": "barge_in",
            "strategy": item.barge_in.strategy,
            "trigger": trigger,
            "played_ms": item.played_ms,
        }
        self._record(record, at_ms=at_ms)
        self._finish_item(interrupted=True)
        self.playout.drop_reply(item.reply_id)
        if trigger in ("vad", "transcript") and self.turn is not None:
            self.turn.barged_in = True
            self.turn.discardable = False

    def _check_turn_limit(self) -> None:
        turn = self.turn
        limit = self.turn_handling.user_turn_limit
        if turn is None or turn.limit_reported or (limit.max_words is None and limit.max_duration is None):
            return
        count = len(words(turn.text))
        duration_ms = self.now_ms - turn.started_ms
        reached: Literal["max_words", "max_duration"] | None = None
        if limit.max_words is not None and count >= limit.max_words:
            reached = "max_words"
        elif limit.max_duration is not None and duration_ms >= limit.max_duration * 1000:
            reached = "max_duration"
        if reached is not None:
            turn.limit_reported = True
            self._emit(
                ev.UserTurnLimit(
                    session=self.session, text=turn.text, words=count, duration_ms=duration_ms, limit=reached
                )
            )

    def _end_of_turn_delay_ms(self) -> int:
        endpointing = self.turn_handling.endpointing
        if endpointing.mode == "dynamic" and self._learned_pause_ms is not None:
            low, high = self.end_of_turn_silence_ms, int(endpointing.max_delay * 1000)
            return int(min(max(self._learned_pause_ms, low), high))
        return self.end_of_turn_silence_ms

    def _learn_pause(self, pause_ms: int) -> None:
        """Dynamic endpointing: a moving average of this caller's pauses between bursts of speech.

        A pause that ended a turn counts too when the caller went on speaking soon after: that is exactly
        the pause the fixed delay got wrong.
        """
        if pause_ms <= 0 or pause_ms > self.turn_handling.endpointing.max_delay * 1000:
            return
        alpha = self.turn_handling.endpointing.alpha
        previous = self._learned_pause_ms
        self._learned_pause_ms = pause_ms if previous is None else alpha * previous + (1 - alpha) * pause_ms

    def _maybe_end_turn(self) -> None:
        turn = self.turn
        if turn is None or self.pause is not None:
            return
        detection = self.turn_handling.turn_detection
        if detection == "manual":
            return
        if detection == "stt" and turn.final_text is not None and not self.vad.speaking:
            self._end_turn()
            return
        if self.vad.speaking:
            return
        silence_needed = self._end_of_turn_delay_ms()
        if detection == "stt":
            silence_needed = max(silence_needed, int(self.turn_handling.endpointing.max_delay * 1000))
        if self.now_ms - turn.last_activity_ms >= silence_needed:
            self._end_turn()

    def _end_turn(self) -> None:
        turn = self.turn
        assert turn is not None
        self._close_utterance(turn)
        self.turn = None
        self._segment_start_ms = None
        if turn.final_text is None and any(t is turn for t in self._awaiting):
            turn.closed_ms = self.now_ms
            return
        self._deliver_turn(turn)

    def _deliver_turn(self, turn: CallerTurn) -> None:
        text = turn.final_text if turn.final_text is not None else turn.text
        if turn.discardable:
            self._record({"event": "user_speech_discarded", "text": text})
            return
        if self._is_backchannel_over_speech(turn, text):
            self._emit(ev.UserBackchannel(session=self.session, text=text))
            return
        if text or turn.barged_in or self.recognizer is None:
            self._emit(ev.UserSpeak(session=self.session, text=text, barged_in=True if turn.barged_in else None))

    def _is_backchannel_over_speech(self, turn: CallerTurn, text: str) -> bool:
        """Adaptive mode: "uh-huh" while the assistant talks is listening, not a turn for the app to answer."""
        options = self.turn_handling.interruption
        return (
            options.mode == "adaptive"
            and not turn.barged_in
            and self.current is not None
            and classify_words(text, options) == "backchannel"
        )

    # Actions ------------------------------------------------------------------------------------

    def _on_dropped(self, dropped: ItemsDropped) -> None:
        self._record({"event": "items_dropped", "reason": dropped.reason, "items": dropped.items})

    def _apply_one(self, rendered: Rendered, reply: Reply) -> None:
        action = rendered.action
        if isinstance(action, Speak | Audio):
            if isinstance(action, Speak) and action.vad and action.vad.end_of_turn_silence_ms:
                self.end_of_turn_silence_ms = action.vad.end_of_turn_silence_ms
            self.playout.enqueue_audio(rendered, reply, self.config.default_barge_in)
        elif isinstance(action, Hangup | Transfer):
            self.playout.enqueue_control(action, reply)
        elif isinstance(action, ClearQueue):
            self.playout.clear()
        elif isinstance(action, BargeInNow):
            if not self._barge_in_now("manual"):
                self.log.info("barge_in action with nothing playing")
        elif isinstance(action, MixAudio):
            self.playout.mix(None if action.stop else rendered.pcm, action.volume)
        elif isinstance(action, ConfigureTranscription):
            if action.vad and action.vad.end_of_turn_silence_ms:
                self.end_of_turn_silence_ms = action.vad.end_of_turn_silence_ms
        elif isinstance(action, ConfigureTurnHandling):
            try:
                self.configure_turn_handling(action.turn_handling)
            except ValueError as exc:
                self.log.error("configure_turn_handling rejected: %s", exc)
        elif isinstance(action, CommitUserTurn) and self.turn is not None:
            self._end_turn()

    # Output -------------------------------------------------------------------------------------

    def _emit(self, event: ev.Event) -> None:
        self.outbox.append(event)
        self._record(
            {"event": event.type, **event.model_dump(mode="json", exclude={"type", "session"}, exclude_none=True)}
        )

    def _record(self, record: Record, at_ms: int | None = None) -> None:
        if self._on_record is None and self._tap is None:
            return
        stamped = {"t_ms": self.now_ms if at_ms is None else at_ms, **record}
        if self._on_record is not None:
            self._on_record(stamped)
        if self._tap is not None:
            self._tap.record(stamped)

    def _trace(self, record: Record) -> None:
        """A detail of a decision that only a recording keeps (the simulation's timeline leaves it out)."""
        if self._tap is not None:
            self._tap.record({"t_ms": self.now_ms, **record})
