"""`CallEngine`: one phone call, frame by frame, on a clock the driver controls.

Audio flows one way through four stages, and the engine only wires them: the input stage (listening.py: echo,
VAD, recognizer) -> turn tracking (caller_turns.py) -> the barge-in and pause policy (policy.py, pure: it
decides, the engine applies) -> playout (playout.py: the queue and the frame out).
The engine never sleeps, never awaits and knows nothing of HTTP or of `FlowApp`: a driver calls `step()` every
20 ms of call time with the caller's frame and gets the frame to play back; the events the engine raises
wait in `outbox` until the driver has them answered and hands the actions back through `apply()`.
A simulation drives it as fast as the CPU allows, a live media stream at the pace of the carrier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES
from flowapp.audio.vad import SpeechDetector, VadConfig, make_detector
from flowapp.engine.bargein import Trigger
from flowapp.engine.caller_turns import CallerTurns
from flowapp.engine.interruption import InterruptionHook, Verdict
from flowapp.engine.listening import Heard, InputStage
from flowapp.engine.playback import ControlItem, PlaybackItem
from flowapp.engine.playout import ItemsDropped, Playout, Reply
from flowapp.engine.policy import (
    Confirm,
    Hold,
    Interrupt,
    Pause,
    Resume,
    on_key_press,
    wants_words,
    weighs_words,
    while_held,
    while_playing,
)
from flowapp.engine.render import Rendered
from flowapp.engine.turns import TurnHandling
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
from flowapp.stt.base import StreamingRecognizer, Transcript

logger = logging.getLogger("flowapp.engine")

_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)
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
        self._tap = tap
        if tap is not None:
            recognizer = tap.recognizer(recognizer)
        self.input = InputStage(
            detector or make_detector(self.config.detector),
            self.config.vad or vad_timing(self.config.detector),
            recognizer,
            self.config.turn_handling.echo_guard,
        )
        self.echo_guard = self.input.echo_guard
        self.detector = self.input.detector
        self.vad = self.input.vad
        self.now_ms = 0
        self.outbox: list[ev.Event] = []
        self.log = call_logger(logger, session.id)
        self.playout = Playout(self.log, self._on_dropped)
        self.turns = CallerTurns(
            session,
            self.config.turn_handling,
            self.input,
            lambda: self.playout.current,
            self._emit,
            self._record,
            self.log,
        )
        self.hold: Hold | None = None
        self.ended = False
        self.end_reason: str | None = None
        self.transfer: Transfer | None = None
        self._on_record = on_record
        self._unheard_ms = unheard_ms
        self._hook = interruption_hook
        self._input_timeout_at: int | None = None

    @property
    def turn_handling(self) -> TurnHandling:
        return self.turns.options

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
        decision = on_key_press(item.barge_in, item.played_ms, options) if item is not None else None
        if decision is not None:
            self._interrupt(decision.trigger)
        self._emit(ev.DtmfReceived(session=self.session, digit=digit))

    def push_transcript(self, transcript: Transcript) -> None:
        """A transcript delivered by the media side rather than the engine's own recognizer."""
        push = getattr(self.recognizer, "push", None)
        if push is None:
            raise RuntimeError("this call's recognizer does not accept pushed transcripts")
        push(transcript)

    def configure_turn_handling(self, changes: dict[str, Any]) -> None:
        """Per-call turn-handling options, merged over the app's (raises pydantic.ValidationError)."""
        options = self.turn_handling.updated(changes)
        self.turns.configure(options, changes)
        self.echo_guard.configure(options.echo_guard)

    def end(self, reason: str) -> None:
        """The call is over (caller hung up, stream stopped): `session_end` exactly once."""
        if self.ended:
            return
        if self.current is not None:
            self._finish_item(interrupted=True)
        self.turns.close()
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
        self.turns.item_started()
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
        self.hold = None
        self.turns.item_finished()
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
        if (
            not interrupted
            and item.user_input_timeout_seconds
            and not len(self.playout.queue)
            and self.turns.turn is None
        ):
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
        silent = self.turns.turn is None
        self.turns.heard(heard)
        if silent and self.turns.turn is not None:
            self._input_timeout_at = None

    # Decisions ----------------------------------------------------------------------------------

    def _decide(self) -> None:
        item = self.current
        if item is not None and self.hold is not None:
            self._judge_hold(item, self.hold)
        elif item is not None and item.finished:
            self._finish_item(interrupted=False)
        elif item is not None:
            self._check_barge_in(item)
        held = self.hold is not None
        self.turns.tick(self.now_ms, held=held)
        if item is not None and wants_words(item.barge_in, item.played_ms, self.turn_handling.interruption, held=held):
            self.turns.want_words(self.now_ms)
        if self._input_timeout_at is not None and self.now_ms >= self._input_timeout_at:
            self._input_timeout_at = None
            if self.turns.turn is None and self.current is None:
                self._emit(ev.UserInputTimeout(session=self.session))

    def _check_barge_in(self, item: PlaybackItem) -> None:
        options = self.turn_handling.interruption
        if not options.enabled or (self.turns.turn is None and not self.vad.speaking and options.mode != "adaptive"):
            return  # no speech and no words: nothing can trigger (the common case, so skip describing the caller)
        activity = self.turns.activity()
        heard = None
        if weighs_words(item.barge_in, item.played_ms, options):
            heard = self.turns.candidate(item, self.turns.item_baseline_chars, self.now_ms, self.now_ms)
        decision = while_playing(item.barge_in, item.played_ms, activity, options, heard)
        if isinstance(decision, Pause):
            self._pause(item, decision.trigger)
        elif isinstance(decision, Interrupt):
            self._interrupt(decision.trigger)

    def _pause(self, item: PlaybackItem, trigger: Trigger) -> None:
        """Stop the item where the caller stopped hearing it.

        A live transport clears the carrier's buffer on a pause, so what it sent but the caller did not
        hear yet is gone: the item is rewound by that much, and a resume replays it instead of skipping it.
        """
        self.playout.hold(self._unheard() if self._unheard_ms is not None else 0)
        self.hold = Hold(self.now_ms, trigger, self.turns.item_baseline_chars)
        self._trace({"event": "pause", "trigger": trigger})
        self._emit(ev.AssistantSpeechPaused(session=self.session, played_ms=item.played_ms))

    def _judge_hold(self, item: PlaybackItem, hold: Hold) -> None:
        heard = self.turns.candidate(item, hold.baseline_chars, hold.at_ms, self.now_ms)
        overrule: Verdict | None = None
        if self._hook is not None:
            overrule = self._hook(heard)
            if self._tap is not None:
                self._tap.verdict(overrule)
        decision = while_held(hold, heard, self.turn_handling.interruption, overrule)
        if isinstance(decision, Confirm):
            self._interrupt(decision.trigger, at_ms=decision.at_ms)
        elif isinstance(decision, Resume):
            self._resume(item, hold, decision)

    def _resume(self, item: PlaybackItem, hold: Hold, resume: Resume) -> None:
        self.hold = None
        self.playout.release()
        self._emit(
            ev.AssistantSpeechResumed(
                session=self.session, played_ms=item.played_ms, paused_ms=self.now_ms - hold.at_ms
            )
        )
        if resume.backchannel:
            self._emit(ev.UserBackchannel(session=self.session, text=resume.text))
        self.turns.resumed(backchannel=resume.backchannel, now_ms=self.now_ms)

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
        self.turns.barged_in(trigger)

    # Actions ------------------------------------------------------------------------------------

    def _on_dropped(self, dropped: ItemsDropped) -> None:
        self._record({"event": "items_dropped", "reason": dropped.reason, "items": dropped.items})

    def _apply_one(self, rendered: Rendered, reply: Reply) -> None:
        action = rendered.action
        if isinstance(action, Speak | Audio):
            if isinstance(action, Speak) and action.vad and action.vad.end_of_turn_silence_ms:
                self.turns.end_of_turn_silence_ms = action.vad.end_of_turn_silence_ms
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
                self.turns.end_of_turn_silence_ms = action.vad.end_of_turn_silence_ms
        elif isinstance(action, ConfigureTurnHandling):
            try:
                self.configure_turn_handling(action.turn_handling)
            except ValueError as exc:
                self.log.error("configure_turn_handling rejected: %s", exc)
        elif isinstance(action, CommitUserTurn):
            self.turns.commit(self.now_ms)

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
