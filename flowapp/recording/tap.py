"""`CallRecording`: the engine's tap for one call, turning what the engine saw and decided into a recording.

A recording holds enough to run the call again exactly: the caller's frames as the engine heard them, one
per `hear`; the order of `play` and `hear` (the clock, one letter each); and every other input at its
position on that clock: the app's replies (with the event each answers), pushed actions, key presses,
barge-in requests, the transport's playout estimates, the app's interruption verdicts, and what the
recognizer returned (it decodes on another thread in a live call, so its answers are inputs too).
Alongside, for people: the timeline (every event, every decision, with VAD, transcript and echo details)
and the assistant's frames as played.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from flowapp.audio.frames import FRAME_MS
from flowapp.engine.bargein import Trigger
from flowapp.engine.call import EngineConfig, Record
from flowapp.engine.interruption import Verdict
from flowapp.engine.listening import Heard
from flowapp.engine.render import Rendered
from flowapp.protocol.actions import Action, Audio, MixAudio
from flowapp.protocol.events import EVENT_TYPES, Event, SessionInfo
from flowapp.responder import Responder
from flowapp.stt.base import StreamingRecognizer, Transcript

FORMAT = 1
EventKey = tuple[str, int]
"""An event by its type and how many of that type came before it in the call: `("user_speak", 2)`."""
_REMEMBERED_REPLIES = 64


class Sink(Protocol):
    """Where a recording goes: files written off the audio path, or memory (a replay)."""

    def caller(self, frame: npt.NDArray[np.int16]) -> None: ...

    def assistant(self, frame: npt.NDArray[np.int16]) -> None: ...

    def clock(self, op: str) -> None: ...

    def timeline(self, record: Record) -> None: ...

    def inputs(self, record: Record) -> None: ...

    def close(self, meta: dict[str, Any]) -> None: ...


class MemorySink:
    def __init__(self) -> None:
        self.timeline_records: list[Record] = []
        self.assistant_frames: list[npt.NDArray[np.int16]] = []

    def caller(self, frame: npt.NDArray[np.int16]) -> None:
        """A replay already has the caller's audio."""

    def assistant(self, frame: npt.NDArray[np.int16]) -> None:
        self.assistant_frames.append(frame)

    def clock(self, op: str) -> None:
        """A replay follows the recorded clock; it has no new one."""

    def timeline(self, record: Record) -> None:
        self.timeline_records.append(record)

    def inputs(self, record: Record) -> None:
        """A replay's inputs are the recording's."""

    def close(self, meta: dict[str, Any]) -> None:
        """Nothing to write."""


def config_to_json(config: EngineConfig) -> dict[str, Any]:
    vad = config.vad
    return {
        "detector": config.detector,
        "vad": None
        if vad is None
        else {
            "threshold": vad.threshold,
            "onset_ms": vad.onset_ms,
            "hangover_ms": vad.hangover_ms,
            "onset_gap_ms": vad.onset_gap_ms,
        },
        "default_barge_in": config.default_barge_in.model_dump(mode="json", exclude_none=True),
        "start_unix_ms": config.start_unix_ms,
        "turn_handling": config.turn_handling.model_dump(mode="json"),
    }


def action_summary(action: Action) -> dict[str, Any]:
    """An action for the timeline: its fields without the audio payload, which only the inputs keep."""
    wire = action.to_wire()
    if isinstance(action, Audio | MixAudio):
        wire.pop("audio", None)
    wire.pop("session_id", None)
    return wire


def _transcripts(items: list[Transcript]) -> list[list[Any]]:
    return [[t.text, t.final, t.t_ms] for t in items]


class CallRecording:
    """Implements `flowapp.engine.call.CallTap`."""

    def __init__(
        self,
        sink: Sink,
        session: SessionInfo,
        config: EngineConfig,
        *,
        transport: str,
        recognizer_name: str | None = None,
    ) -> None:
        self.sink = sink
        self.ops = 0
        """Plays and hears so far: the position of every input on the recorded clock."""
        self.hears = 0
        self.records = 0
        self._echo = False
        self._counts: dict[str, int] = {}
        self._emitted_at: dict[EventKey, int] = {}
        self._replies: OrderedDict[int, tuple[Action, EventKey]] = OrderedDict()
        self._closed = False
        self._config = config
        self.meta: dict[str, Any] = {
            "format": FORMAT,
            "session": session.model_dump(mode="json", exclude_none=True),
            "transport": transport,
            "recognizer": {"name": recognizer_name, "turn_decoding": False, "language": None},
        }

    # Wrapping what the engine is given ------------------------------------------------------------

    def recognizer(self, recognizer: StreamingRecognizer | None) -> StreamingRecognizer | None:
        if recognizer is None:
            return None
        self.meta["recognizer"]["turn_decoding"] = bool(recognizer.turn_decoding)
        self.meta["recognizer"]["language"] = recognizer.language
        return RecordingRecognizer(recognizer, self)

    def responder(self, responder: Responder) -> Responder:
        """The app, seen through a wrapper that notes which event each reply answers."""
        return _NotingResponder(responder, self._noted)

    def _noted(self, key: EventKey, actions: list[Action]) -> None:
        for action in actions:
            self._replies[id(action)] = (action, key)
        while len(self._replies) > _REMEMBERED_REPLIES:
            self._replies.popitem(last=False)

    # CallTap --------------------------------------------------------------------------------------

    def played(self, frame: npt.NDArray[np.int16]) -> None:
        self.sink.assistant(frame)
        self.sink.clock("p")
        self.ops += 1

    def heard(self, frame: npt.NDArray[np.int16], heard: Heard, echo: bool) -> None:
        t_ms = self.hears * FRAME_MS
        self.sink.caller(frame)
        self.sink.clock("h")
        self.ops += 1
        self.hears += 1
        for vad_event in heard.vad:
            self.sink.timeline({"t_ms": vad_event.t_ms, "event": f"vad_{vad_event.kind}"})
        for transcript in heard.transcripts:
            self.sink.timeline(
                {"t_ms": transcript.t_ms, "event": "transcript", "text": transcript.text, "final": transcript.final}
            )
        if echo != self._echo:
            self._echo = echo
            self.sink.timeline({"t_ms": t_ms, "event": "echo", "echo": echo})

    def applied(self, rendered: list[Rendered], turn: int | None) -> None:
        actions = [r.action for r in rendered]
        noted = self._replies.pop(id(actions[0]), None)
        key = noted[1] if noted is not None and noted[0] is actions[0] else None
        for action in actions[1:]:
            self._replies.pop(id(action), None)
        record: Record = {"op": self.ops, "kind": "push" if key is None else "reply", "turn": turn}
        if key is not None:
            record["answers"] = list(key)
            record["after_ops"] = self.ops - self._emitted_at.get(key, self.ops)
        record["actions"] = [a.to_wire() for a in actions]
        self.sink.inputs(record)
        self.sink.timeline(
            {
                "t_ms": self.hears * FRAME_MS,
                "event": "actions",
                "answers": key[0] if key is not None else None,
                "actions": [action_summary(a) for a in actions],
            }
        )

    def dtmf(self, digit: str) -> None:
        self.sink.inputs({"op": self.ops, "kind": "dtmf", "digit": digit})

    def barge_in_requested(self, trigger: Trigger) -> None:
        self.sink.inputs({"op": self.ops, "kind": "barge_in", "trigger": trigger})

    def unheard(self, ms: int) -> None:
        self.sink.inputs({"op": self.ops, "kind": "unheard", "ms": ms})

    def verdict(self, verdict: Verdict | None) -> None:
        self.sink.inputs({"op": self.ops, "kind": "verdict", "t_ms": self.hears * FRAME_MS, "verdict": verdict})

    def record(self, record: Record) -> None:
        kind = record.get("event")
        if isinstance(kind, str) and kind in EVENT_TYPES:
            n = self._counts.get(kind, 0)
            self._counts[kind] = n + 1
            self._emitted_at[(kind, n)] = self.ops
            if kind == "session_end":
                self.meta["end_reason"] = record.get("reason")
        self.records += 1
        self.sink.timeline(record)

    def emitted_at(self, key: EventKey) -> int | None:
        return self._emitted_at.get(key)

    # The end --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Once, when the call is over: the rest is written and the call's settings and figures saved."""
        if self._closed:
            return
        self._closed = True
        self.meta["config"] = config_to_json(self._config)
        self.meta["frames"] = {"heard": self.hears, "played": self.ops - self.hears}
        self.sink.close(self.meta)


class RecordingRecognizer:
    """A recognizer that notes every answer it gives the engine, at the engine's position on the clock."""

    def __init__(self, inner: StreamingRecognizer, recording: CallRecording) -> None:
        self.inner = inner
        self._recording = recording
        self._last: dict[str, bool] = {}
        self._reads: dict[str, tuple[int, int]] = {}

    def feed(self, frame: npt.NDArray[np.int16], t_ms: int) -> list[Transcript]:
        out = self.inner.feed(frame, t_ms)
        if out:
            self._note({"kind": "feed", "t_ms": t_ms, "transcripts": _transcripts(out)})
        return out

    def end_utterance(self, t_ms: int) -> list[Transcript]:
        out = self.inner.end_utterance(t_ms)
        self._note({"kind": "end_utterance", "t_ms": t_ms, "transcripts": _transcripts(out)})
        return out

    def reset(self) -> None:
        self.inner.reset()

    def speech_started(self, t_ms: int) -> None:
        self.inner.speech_started(t_ms)

    def want_words(self, t_ms: int) -> None:
        self.inner.want_words(t_ms)

    def push(self, transcript: Transcript) -> None:
        push: Callable[[Transcript], None] | None = getattr(self.inner, "push", None)
        if push is None:
            raise RuntimeError("this call's recognizer does not accept pushed transcripts")
        push(transcript)

    @property
    def turn_decoding(self) -> bool:
        return self.inner.turn_decoding

    @property
    def decoding(self) -> bool:
        return self._read("decoding", self.inner.decoding)

    @property
    def hearing(self) -> bool:
        return self._read("hearing", self.inner.hearing)

    @property
    def language(self) -> str | None:
        return self.inner.language

    def _read(self, name: str, value: bool) -> bool:
        """A state the engine reads is noted when it changes, with which read at this clock position it was."""
        op = self._recording.ops
        last_op, n = self._reads.get(name, (op, -1))
        n = n + 1 if last_op == op else 0
        self._reads[name] = (op, n)
        if self._last.get(name) != value:
            self._last[name] = value
            self._note({"kind": "state", "name": name, "read": n, "value": value})
        return value

    def _note(self, record: Record) -> None:
        self._recording.sink.inputs({"op": self._recording.ops, **record})


class _NotingResponder:
    """Forwards to the app and tells the recording which event each reply answers."""

    def __init__(self, inner: Responder, noted: Callable[[EventKey, list[Action]], None]) -> None:
        self._inner = inner
        self._noted = noted
        self._counts: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def respond(self, event: Event) -> list[Action]:
        n = self._counts.get(event.type, 0)
        self._counts[event.type] = n + 1
        actions = await self._inner.respond(event)
        if actions:
            self._noted((event.type, n), actions)
        return actions
