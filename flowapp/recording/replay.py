"""Running a recorded call again through the engine, faster than real time, with the same or other settings.

The recorded clock is followed op by op: each `play` and `hear` happens in the order it did, and every
input arrives at its recorded position. The app's replies are tied to the event they answered and come the
same number of ops after that event, so with the call's own settings the engine makes the same decisions;
with others (a different barge-in rule, detector, or recognizer) the replies follow the events as they now
happen. The recognizer's recorded answers stand in for it unless another one is asked for.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from flowapp.audio.frames import FRAME_SAMPLES
from flowapp.audio.vad import VadConfig
from flowapp.engine.call import CallEngine, EngineConfig, Record
from flowapp.engine.interruption import Candidate, InterruptionHook, Verdict
from flowapp.engine.render import Rendered, Renderer
from flowapp.engine.turns import TurnHandling
from flowapp.protocol.actions import Action, Audio, BargeIn, Speak, parse_action
from flowapp.protocol.events import CALLER_TURN_EVENTS, NO_REPLY_EVENTS, SessionInfo
from flowapp.recording.store import Recording, RecordingError
from flowapp.recording.tap import CallRecording, EventKey, MemorySink
from flowapp.responder import Responder
from flowapp.stt import make_recognizer
from flowapp.stt.base import StreamingRecognizer, Transcript

TRACE_EVENTS = frozenset({"vad_start", "vad_end", "transcript", "echo", "pause", "actions"})
"""Timeline records only a recording keeps; the rest are the decisions `flowapp simulate` prints too."""


@dataclass
class ReplayOptions:
    turn_handling: dict[str, Any] | None = None
    """Changes merged over the recorded turn-handling options."""
    barge_in: BargeIn | None = None
    """Replaces the barge-in rule of every recorded speak and audio, and the default."""
    detector: str | None = None
    recognizer: str | None = None
    """A recognizer to run on the recorded audio instead of the recorded transcripts."""
    app: Responder | None = None
    """A live app to answer the events instead of the recorded replies."""


@dataclass
class Replayed:
    timeline: list[Record]
    """The decisions, as `flowapp simulate` prints them."""
    trace: list[Record]
    """Everything, with VAD, transcript and echo details (what a recording's timeline.jsonl holds)."""
    assistant: npt.NDArray[np.int16]


def decisions(timeline: list[Record]) -> list[Record]:
    """The decisions in call-time order (a recording keeps them in the order they were made: a barge-in
    after a pause is dated back to the pause)."""
    return sorted((r for r in timeline if r.get("event") not in TRACE_EVENTS), key=lambda r: int(r["t_ms"]))


def recorded_config(meta: dict[str, Any], options: ReplayOptions) -> EngineConfig:
    try:
        saved = meta["config"]
        vad = saved.get("vad")
        config = EngineConfig(
            detector=saved["detector"],
            vad=None if vad is None else VadConfig(**vad),
            default_barge_in=BargeIn.model_validate(saved["default_barge_in"]),
            start_unix_ms=int(saved["start_unix_ms"]),
            turn_handling=TurnHandling.model_validate(saved["turn_handling"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordingError(f"call.json: config cannot be used: {exc}") from None
    if options.turn_handling is not None:
        config.turn_handling = config.turn_handling.updated(options.turn_handling)
    if options.barge_in is not None:
        config.default_barge_in = options.barge_in
    if options.detector is not None:
        config.detector = options.detector
    return config


class ReplayedRecognizer:
    """The recorded recognizer's answers, given back at the same clock positions (a what-if replay gets
    them at the same call times)."""

    def __init__(
        self, inputs: list[Record], turn_decoding: bool, position: CallRecording, language: str | None = None
    ) -> None:
        self.language = language
        self._position = position
        self._feed: dict[int, list[Transcript]] = {}
        self._ends: deque[list[Transcript]] = deque()
        self._states: dict[str, list[tuple[tuple[int, int], bool]]] = {"decoding": [], "hearing": []}
        self._reads: dict[str, tuple[int, int]] = {}
        self._turn_decoding = turn_decoding
        for record in inputs:
            kind = record.get("kind")
            if kind == "feed":
                self._feed[int(record["t_ms"])] = _transcripts(record["transcripts"])
            elif kind == "end_utterance":
                self._ends.append(_transcripts(record["transcripts"]))
            elif kind == "state" and record.get("name") in self._states:
                self._states[record["name"]].append(((int(record["op"]), int(record["read"])), bool(record["value"])))

    def feed(self, frame: npt.NDArray[np.int16], t_ms: int) -> list[Transcript]:
        return self._feed.pop(t_ms, [])

    def end_utterance(self, t_ms: int) -> list[Transcript]:
        return self._ends.popleft() if self._ends else []

    def reset(self) -> None:
        """The recorded answers already reflect any reset."""

    def speech_started(self, t_ms: int) -> None:
        """The recorded answers already reflect it."""

    def want_words(self, t_ms: int) -> None:
        """The recorded answers already reflect it."""

    @property
    def turn_decoding(self) -> bool:
        return self._turn_decoding

    @property
    def decoding(self) -> bool:
        return self._state("decoding", False)

    @property
    def hearing(self) -> bool:
        return self._state("hearing", True)

    def _state(self, name: str, default: bool) -> bool:
        op = self._position.ops
        last_op, n = self._reads.get(name, (op, -1))
        n = n + 1 if last_op == op else 0
        self._reads[name] = (op, n)
        changes = self._states[name]
        index = bisect.bisect_right(changes, (op, n), key=lambda change: change[0])
        return changes[index - 1][1] if index else default


def _transcripts(items: list[list[Any]]) -> list[Transcript]:
    return [Transcript(str(text), bool(final), int(t_ms)) for text, final, t_ms in items]


class _RecordedVerdicts:
    """The app's recorded interruption verdicts, by the call time each was given at."""

    def __init__(self, inputs: list[Record]) -> None:
        self._by_time: dict[int, Verdict | None] = {
            int(r["t_ms"]): r.get("verdict") for r in inputs if r.get("kind") == "verdict"
        }
        self.engine: CallEngine | None = None

    def __call__(self, candidate: Candidate) -> Verdict | None:
        return self._by_time.get(self.engine.now_ms) if self.engine is not None else None


class CallReplay:
    def __init__(self, recording: Recording, options: ReplayOptions | None = None) -> None:
        self.recording = recording
        self.options = options = options or ReplayOptions()
        meta = recording.meta
        try:
            self.session = SessionInfo.model_validate(meta["session"])
        except (KeyError, ValueError) as exc:
            raise RecordingError(f"call.json: session cannot be used: {exc}") from None
        config = recorded_config(meta, options)
        self.sink = MemorySink()
        self.tap = CallRecording(self.sink, self.session, config, transport="replay")
        self.timeline: list[Record] = []
        self.renderer = Renderer()
        inputs = recording.inputs
        recognizer: StreamingRecognizer | None
        if options.recognizer is not None:
            recognizer = make_recognizer(options.recognizer)
        elif meta.get("recognizer", {}).get("name") is None and not any(
            r.get("kind") in ("feed", "end_utterance", "state") for r in inputs
        ):
            recognizer = None
        else:
            recorded = meta.get("recognizer", {})
            language = recorded.get("language")
            recognizer = ReplayedRecognizer(
                inputs,
                bool(recorded.get("turn_decoding")),
                self.tap,
                language if isinstance(language, str) else None,
            )
        hook: InterruptionHook | None = getattr(options.app, "interruption_hook", None)
        self._verdicts: _RecordedVerdicts | None = None
        if options.app is None and any(r.get("kind") == "verdict" for r in inputs):
            hook = self._verdicts = _RecordedVerdicts(inputs)
        self._unheard = deque(int(r["ms"]) for r in inputs if r.get("kind") == "unheard")
        self.engine = CallEngine(
            self.session,
            config,
            recognizer=recognizer,
            on_record=self.timeline.append,
            unheard_ms=None if meta.get("transport") == "simulation" else self._next_unheard,
            interruption_hook=hook,
            tap=self.tap,
        )
        if self._verdicts is not None:
            self._verdicts.engine = self.engine
        self._external: dict[int, list[Record]] = {}
        self._replies: dict[EventKey, Record] = {}
        for record in inputs:
            kind = record.get("kind")
            if kind in ("push", "dtmf", "barge_in", "reply"):
                self._external.setdefault(int(record["op"]), []).append(record)
            if kind == "reply":
                type_, n = record["answers"]
                self._replies[(str(type_), int(n))] = record
        self._due: list[tuple[int, int, EventKey, list[Rendered], int]] = []
        self._counts: dict[str, int] = {}
        self._turns = 0

    def _next_unheard(self) -> int:
        return self._unheard.popleft() if self._unheard else 0

    async def run(self) -> Replayed:
        engine = self.engine
        clock = self.recording.clock
        caller = self.recording.caller
        engine.start()
        await self._collect()
        heard = 0
        for position, op in enumerate(clock):
            await self._inputs_at(position)
            if engine.ended:
                break
            if op == "p":
                engine.play()
            else:
                frame = caller[heard * FRAME_SAMPLES : (heard + 1) * FRAME_SAMPLES]
                heard += 1
                engine.hear(frame if len(frame) == FRAME_SAMPLES else None)
            await self._collect()
        else:
            await self._inputs_at(len(clock))
        if not engine.ended:
            engine.end(str(self.recording.meta.get("end_reason") or "replay_end"))
            await self._collect()
        frames = self.sink.assistant_frames
        return Replayed(
            sorted(self.timeline, key=lambda r: r["t_ms"]),
            sorted(self.sink.timeline_records, key=lambda r: r["t_ms"]),
            np.concatenate(frames) if frames else np.zeros(0, np.int16),
        )

    async def _inputs_at(self, position: int) -> None:
        """The recorded inputs at this clock position, in their order, then replies now due."""
        for record in self._external.pop(position, []):
            kind = record["kind"]
            if kind == "reply":
                type_, n = record["answers"]
                self._apply_due(position, key=(str(type_), int(n)))
            elif kind == "push":
                self.engine.apply(self._render(record["actions"]))
            elif kind == "dtmf":
                self.engine.dtmf(str(record["digit"]))
            elif kind == "barge_in":
                self.engine.barge_in_now(record.get("trigger", "manual"))
            await self._collect()
        self._apply_due(position)
        await self._collect()

    def _apply_due(self, position: int, key: EventKey | None = None) -> None:
        if key is not None:
            for i, (due, _, due_key, rendered, turn) in enumerate(self._due):
                if due_key == key and due <= position:
                    del self._due[i]
                    heapq.heapify(self._due)
                    self.engine.apply(rendered, turn=turn)
                    return
            return
        while self._due and self._due[0][0] <= position:
            _, _, _, rendered, turn = heapq.heappop(self._due)
            self.engine.apply(rendered, turn=turn)

    async def _collect(self) -> None:
        """Events the engine raised: answered by the app at once, or by the recorded reply in due time."""
        while self.engine.outbox:
            for event in self.engine.take_events():
                n = self._counts.get(event.type, 0)
                self._counts[event.type] = n + 1
                if event.type in CALLER_TURN_EVENTS:
                    self._turns += 1
                app = self.options.app
                if app is not None:
                    actions = await app.respond(event)
                    if actions and event.type not in NO_REPLY_EVENTS:
                        self.engine.apply(self.renderer.render_all(actions), turn=self._turns)
                    continue
                reply = self._replies.pop((event.type, n), None)
                emitted = self.tap.emitted_at((event.type, n))
                if reply is None or emitted is None:
                    continue
                due = emitted + int(reply.get("after_ops", 0))
                heapq.heappush(
                    self._due, (due, len(self._due), (event.type, n), self._render(reply["actions"]), self._turns)
                )

    def _render(self, wires: list[dict[str, Any]]) -> list[Rendered]:
        try:
            actions = [self._override(parse_action(wire)) for wire in wires]
        except (TypeError, ValueError) as exc:
            raise RecordingError(f"inputs.jsonl: a recorded action cannot be read: {exc}") from None
        return self.renderer.render_all(actions)

    def _override(self, action: Action) -> Action:
        barge_in = self.options.barge_in
        if barge_in is not None and isinstance(action, Speak | Audio):
            return action.model_copy(update={"barge_in": barge_in})
        return action


async def replay(recording: Recording, options: ReplayOptions | None = None) -> Replayed:
    return await CallReplay(recording, options).run()


# Comparing ----------------------------------------------------------------------------------------------------


def _barge_ins(timeline: list[Record]) -> list[tuple[int, str]]:
    return [(int(r["t_ms"]), str(r.get("trigger"))) for r in timeline if r.get("event") == "barge_in"]


def _endings(timeline: list[Record]) -> list[Record]:
    return [r for r in timeline if r.get("event") == "assistant_speech_ended"]


def _seconds(t_ms: int) -> str:
    return f"{t_ms / 1000:.2f} s"


def compare(original: list[Record], new: list[Record]) -> list[str]:
    """A few lines for people: are the decisions the same, and if not, what changed for the caller."""
    before, after = decisions(original), decisions(new)
    if before == after:
        return [f"same decisions as the recording ({len(after)} records)"]
    lines = [f"decisions differ from the recording ({len(before)} records before, {len(after)} now)"]
    old_barge, new_barge = _barge_ins(before), _barge_ins(after)
    gone = [b for b in old_barge if b not in new_barge]
    added = [b for b in new_barge if b not in old_barge]
    lines.append(
        f"barge-ins: {len(old_barge)} before, {len(new_barge)} now"
        + "".join(f"; gone: {trigger} at {_seconds(t)}" for t, trigger in gone)
        + "".join(f"; added: {trigger} at {_seconds(t)}" for t, trigger in added)
    )
    old_end, new_end = _endings(before), _endings(after)
    for i in range(max(len(old_end), len(new_end))):
        was = old_end[i] if i < len(old_end) else None
        now = new_end[i] if i < len(new_end) else None
        if was is not None and now is not None and _ending(was) == _ending(now):
            continue
        lines.append(f"item {i + 1}: {_describe(was)} -> {_describe(now)}")
    return lines


def _ending(record: Record) -> tuple[Any, ...]:
    return (record.get("t_ms"), record.get("interrupted"), record.get("played_ms"), record.get("heard_text"))


def _describe(record: Record | None) -> str:
    if record is None:
        return "not played"
    how = "interrupted" if record.get("interrupted") else "played out"
    heard = record.get("heard_text")
    said = f', caller heard "{heard}"' if heard else ""
    return f"{how} at {_seconds(int(record['t_ms']))} after {record.get('played_ms')} ms{said}"
