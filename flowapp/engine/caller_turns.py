"""Turn tracking: what the input stage heard -> the caller's turns, from first sound to `user_speak`.

A turn begins at the first sign of speech (VAD onset or words), gathers words and speech time, and ends after
the caller's silence (the end-of-turn delay, learned per caller in dynamic endpointing), on a final transcript
or when the app commits it. An ended turn waits for the final words a turn-decoding recognizer owes it, then
goes out as a `user_speak`, as a backchannel (listening, over the assistant's speech), or not at all (speech
during an item that may not be interrupted, when the app asked to discard it).

It decides nothing about playback: the barge-in policy reads `activity` and `candidate` from it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from flowapp.audio.frames import FRAME_MS
from flowapp.audio.vad import VadEvent
from flowapp.engine.bargein import CallerActivity, Trigger
from flowapp.engine.interruption import Candidate, classify_words
from flowapp.engine.listening import Heard, InputStage
from flowapp.engine.playback import PlaybackItem
from flowapp.engine.policy import may_interrupt
from flowapp.engine.turns import TurnHandling, words
from flowapp.logs import CallLogger
from flowapp.protocol import events as ev
from flowapp.stt.base import Transcript, count_characters

FINAL_WAIT_MS = 5000
"""An ended turn waits this long for its final words (a decode on a busy pool) before it goes out with the
words it has."""


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


class CallerTurns:
    def __init__(
        self,
        session: ev.SessionInfo,
        options: TurnHandling,
        listening: InputStage,
        current_item: Callable[[], PlaybackItem | None],
        emit: Callable[[ev.Event], None],
        record: Callable[[dict[str, Any]], None],
        log: CallLogger,
    ) -> None:
        """`current_item`: the assistant's item playing or held, if any (speech during an item that may not be
        interrupted can be discarded; an "uh-huh" over one is a backchannel)."""
        self.session = session
        self.options = options
        self._listening = listening
        self._current_item = current_item
        self._emit = emit
        self._record = record
        self._log = log
        self.turn: CallerTurn | None = None
        self._awaiting: deque[CallerTurn | None] = deque()
        """Ended utterances whose final words a turn-decoding recognizer still owes, oldest first (None: the
        utterance was dropped, as noise or a backchannel, and its words go nowhere)."""
        self.end_of_turn_silence_ms = int(options.endpointing.min_delay * 1000)
        """Caller silence that ends their turn: `endpointing.min_delay`, until a speak's `vad` setting replaces it."""
        self._learned_pause_ms: float | None = None
        self.item_baseline_chars = 0
        """Characters of the open turn said before the current item began: they do not count against it."""
        self._item_speech_began = True
        """The caller has begun speaking since the current item started; until then, words that arrive belong
        to speech from before the item and move the baseline instead of counting towards `minimum_characters`."""
        self._segment_start_ms: int | None = None
        self._last_speech_end_ms: int | None = None
        self._words_asked_ms: int | None = None
        """When the recognizer last began decoding the open turn for early words."""

    def configure(self, options: TurnHandling, changes: dict[str, Any]) -> None:
        self.options = options
        if "endpointing" in changes and "min_delay" in changes["endpointing"]:
            self.end_of_turn_silence_ms = int(options.endpointing.min_delay * 1000)

    # What the input stage heard -----------------------------------------------------------------

    def heard(self, heard: Heard) -> None:
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
            item = self._current_item()
            if turn is not None and turn.discardable and (item is None or self._interruptible(item)):
                turn.discardable = False
            if turn is not None and not self._item_speech_began:
                self.item_baseline_chars = max(self.item_baseline_chars, count_characters(turn.text))
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
        recognizer = self._listening.recognizer
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

    def _begin_turn(self, t_ms: int) -> None:
        if self.turn is not None:
            return
        item = self._current_item()
        discardable = (
            self.options.interruption.discard_audio_if_uninterruptible
            and item is not None
            and not self._interruptible(item)
        )
        self.turn = CallerTurn(started_ms=t_ms, last_activity_ms=t_ms, discardable=discardable)
        self.item_baseline_chars = 0
        self._item_speech_began = True
        self._emit(ev.UserSpeechStarted(session=self.session))

    def _interruptible(self, item: PlaybackItem) -> bool:
        return may_interrupt(item.barge_in, self.options.interruption)

    # What the assistant did ---------------------------------------------------------------------

    def item_started(self) -> None:
        turn = self.turn
        self.item_baseline_chars = count_characters(turn.text) if turn is not None else 0
        self._item_speech_began = turn is None

    def item_finished(self) -> None:
        """Speech still going on when an uninterruptible item ends is no longer speech over that item."""
        if self.turn is not None and self.turn.discardable and self._listening.vad.speaking:
            self.turn.discardable = False

    def barged_in(self, trigger: Trigger) -> None:
        if trigger in ("vad", "transcript") and self.turn is not None:
            self.turn.barged_in = True
            self.turn.discardable = False

    def resumed(self, *, backchannel: bool, now_ms: int) -> None:
        """A held item plays on: the backchannel's words went out with its event, noise had none, so that turn
        is over. Words of any other kind stay in the turn, which ends as a `user_speak` as usual: nothing the
        caller said is lost."""
        turn = self.turn
        if turn is not None and not self._listening.vad.speaking and (backchannel or not turn.text):
            self._close_utterance(None, now_ms)
            self.turn = None
            self._segment_start_ms = None

    # What the caller is doing, for the barge-in policy ------------------------------------------

    def activity(self) -> CallerActivity:
        turn = self.turn
        characters = 0
        if turn is not None and not self._item_speech_began:
            self.item_baseline_chars = max(self.item_baseline_chars, count_characters(turn.text))
        elif turn is not None:
            characters = max(0, count_characters(turn.text) - self.item_baseline_chars)
        return CallerActivity(speaking=self._listening.vad.speaking, characters=characters)

    def candidate(self, item: PlaybackItem, baseline_chars: int, since_ms: int, now_ms: int) -> Candidate:
        """The caller's activity over `item` since `baseline_chars` of the turn, as the judgement sees it;
        `since_ms`: when playback was held (`now_ms` when it plays on)."""
        turn = self.turn
        speaking = self._listening.vad.speaking
        recognizer = self._listening.recognizer
        return Candidate(
            text=self._new_text(baseline_chars),
            final=turn is not None and turn.final_text is not None,
            speaking=speaking,
            speech_ms=self._current_speech_ms(now_ms),
            silent_ms=now_ms - turn.last_activity_ms if turn is not None and not speaking else 0,
            paused_ms=now_ms - since_ms,
            played_ms=item.played_ms,
            strategy=item.barge_in.strategy,
            transcribing=recognizer is not None and recognizer.hearing,
            voiced_ms=turn.voiced_ms if turn is not None else 0,
            words_pending=self._words_pending(),
            words_language=self._words_language(),
        )

    def _words_language(self) -> str | None:
        recognizer = self._listening.recognizer
        return recognizer.language if recognizer is not None else None

    def want_words(self, now_ms: int) -> None:
        """A decision hangs on the open turn's words: have the recognizer decode them now."""
        recognizer = self._listening.recognizer
        if recognizer is None or self.turn is None:
            return
        was_decoding = recognizer.decoding
        self._listening.want_words(now_ms)
        if recognizer.decoding and not was_decoding:
            self._words_asked_ms = now_ms

    def _words_pending(self) -> bool:
        """Words are on the way, or would be: a decode is running, or none has yet heard the caller's last
        sound (so a verdict on "uh" waits for the "-huh")."""
        recognizer = self._listening.recognizer
        if recognizer is None or not recognizer.hearing:
            return False
        if recognizer.decoding:
            return True
        heard_until = self._words_asked_ms if self._words_asked_ms is not None else -1
        return (
            recognizer.turn_decoding and self._last_speech_end_ms is not None and heard_until < self._last_speech_end_ms
        )

    def _new_text(self, baseline_chars: int) -> str:
        """The caller's words since a baseline, for phrase matching."""
        turn = self.turn
        if turn is None:
            return ""
        skip = baseline_chars
        out = []
        for word in turn.text.split():
            if skip > 0:
                skip -= count_characters(word)
                continue
            out.append(word)
        return " ".join(out)

    def _current_speech_ms(self, now_ms: int) -> int:
        turn = self.turn
        done = turn.speech_ms if turn is not None else 0
        running = now_ms - self._segment_start_ms if self._segment_start_ms is not None else 0
        return done + running

    # Ending turns -------------------------------------------------------------------------------

    def tick(self, now_ms: int, *, held: bool) -> None:
        """Once per frame: the turn limit, the end of turn (never while playback is held on the caller) and
        overdue final words."""
        self._check_turn_limit(now_ms)
        if not held:
            self._maybe_end_turn(now_ms)
        if self._awaiting:
            self._stop_waiting(overdue_before_ms=now_ms - FINAL_WAIT_MS)

    def commit(self, now_ms: int) -> None:
        """The app ends the turn (`commit_user_turn`)."""
        if self.turn is not None:
            self._end_turn(now_ms)

    def close(self) -> None:
        """The call is over: turns still waiting for words go out with the words they have."""
        self._stop_waiting()
        self._awaiting.clear()

    def _check_turn_limit(self, now_ms: int) -> None:
        turn = self.turn
        limit = self.options.user_turn_limit
        if turn is None or turn.limit_reported or (limit.max_words is None and limit.max_duration is None):
            return
        count = len(words(turn.text))
        duration_ms = now_ms - turn.started_ms
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
        endpointing = self.options.endpointing
        if endpointing.mode == "dynamic" and self._learned_pause_ms is not None:
            low, high = self.end_of_turn_silence_ms, int(endpointing.max_delay * 1000)
            return int(min(max(self._learned_pause_ms, low), high))
        return self.end_of_turn_silence_ms

    def _learn_pause(self, pause_ms: int) -> None:
        """Dynamic endpointing: a moving average of this caller's pauses between bursts of speech.

        A pause that ended a turn counts too when the caller went on speaking soon after: that is exactly
        the pause the fixed delay got wrong.
        """
        if pause_ms <= 0 or pause_ms > self.options.endpointing.max_delay * 1000:
            return
        alpha = self.options.endpointing.alpha
        previous = self._learned_pause_ms
        self._learned_pause_ms = pause_ms if previous is None else alpha * previous + (1 - alpha) * pause_ms

    def _maybe_end_turn(self, now_ms: int) -> None:
        turn = self.turn
        if turn is None:
            return
        detection = self.options.turn_detection
        if detection == "manual":
            return
        speaking = self._listening.vad.speaking
        if detection == "stt" and turn.final_text is not None and not speaking:
            self._end_turn(now_ms)
            return
        if speaking:
            return
        silence_needed = self._end_of_turn_delay_ms()
        if detection == "stt":
            silence_needed = max(silence_needed, int(self.options.endpointing.max_delay * 1000))
        if now_ms - turn.last_activity_ms >= silence_needed:
            self._end_turn(now_ms)

    def _end_turn(self, now_ms: int) -> None:
        turn = self.turn
        assert turn is not None
        self._close_utterance(turn, now_ms)
        self.turn = None
        self._segment_start_ms = None
        if turn.final_text is None and any(t is turn for t in self._awaiting):
            turn.closed_ms = now_ms
            return
        self._deliver_turn(turn)

    def _close_utterance(self, turn: CallerTurn | None, now_ms: int) -> None:
        """End the recognizer's utterance; its words go to `turn` (None: they are not wanted)."""
        recognizer = self._listening.recognizer
        if recognizer is None:
            return
        if recognizer.turn_decoding:
            self._awaiting.append(turn)
            for transcript in recognizer.end_utterance(now_ms):
                self._on_decoded(transcript)
            return
        for transcript in recognizer.end_utterance(now_ms):
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
            self._log.warning("final words overdue; the turn goes out with the words it has")
            self._awaiting[i] = None
            turn.final_text = turn.text
            self._deliver_turn(turn)

    def _deliver_turn(self, turn: CallerTurn) -> None:
        text = turn.final_text if turn.final_text is not None else turn.text
        if turn.discardable:
            self._record({"event": "user_speech_discarded", "text": text})
            return
        if self._is_backchannel_over_speech(turn, text):
            self._emit(ev.UserBackchannel(session=self.session, text=text))
            return
        if text or turn.barged_in or self._listening.recognizer is None:
            self._emit(ev.UserSpeak(session=self.session, text=text, barged_in=True if turn.barged_in else None))

    def _is_backchannel_over_speech(self, turn: CallerTurn, text: str) -> bool:
        """Adaptive mode: "uh-huh" while the assistant talks is listening, not a turn for the app to answer."""
        options = self.options.interruption
        return (
            options.mode == "adaptive"
            and not turn.barged_in
            and self._current_item() is not None
            and classify_words(text, options, self._words_language()) == "backchannel"
        )
