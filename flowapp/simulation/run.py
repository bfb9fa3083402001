"""Running one scenario through the real engine, faster than real time, with the same timeline every run."""

from __future__ import annotations

import base64
import heapq
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES
from flowapp.audio.wav import encode_wav, read_wav
from flowapp.engine.call import CallEngine, EngineConfig, Record
from flowapp.engine.pump import EventPump
from flowapp.engine.render import Renderer
from flowapp.engine.turns import TurnHandling
from flowapp.protocol.actions import Action, Audio, Speak
from flowapp.protocol.events import Event, SessionInfo
from flowapp.recording.store import Recorder
from flowapp.recording.tap import CallRecording
from flowapp.responder import Responder
from flowapp.simulation.scenario import Scenario
from flowapp.stt import ScriptedRecognizer, StreamingRecognizer, Transcript, make_recognizer

SIMULATED_SESSION = SessionInfo(
    id="00000000-0000-4000-8000-000000000001",
    account_id="simulation",
    phone_number="+4921100000000",
    direction="inbound",
    from_phone_number="+4915100000000",
    to_phone_number="+4921100000000",
)
# A fixed epoch so `speech_started_at` is the same in every run: 2026-01-01T00:00:00Z.
SIMULATED_EPOCH_MS = 1_767_225_600_000


class PlayOnce:
    """The responder of a scenario without an app: it says the scenario's `assistant` once, at t=0."""

    def __init__(self, action: Action) -> None:
        self.action = action

    async def respond(self, event: Event) -> list[Action]:
        return [self.action] if event.type == "session_start" else []


def assistant_action(scenario: Scenario, base: Path) -> Action:
    spec = scenario.assistant
    assert spec is not None
    barge_in = spec.barge_in or EngineConfig().default_barge_in
    session_id = SIMULATED_SESSION.id
    if spec.audio is not None:
        data = base64.b64encode((base / spec.audio).read_bytes()).decode("ascii")
        return Audio(session_id=session_id, audio=data, barge_in=barge_in)
    return Speak(session_id=session_id, text=spec.text, ssml=spec.ssml, tts=spec.tts, barge_in=barge_in)


def caller_audio(scenario: Scenario, base: Path, frames: int) -> np.ndarray:
    pcm = np.zeros(frames * FRAME_SAMPLES, dtype=np.int16)
    if scenario.caller is not None:
        clip = read_wav(base / scenario.caller.audio)
        start = scenario.caller.offset_ms * 8
        end = min(len(pcm), start + len(clip))
        if end > start:
            pcm[start:end] = clip[: end - start]
    return pcm


def recognizer_for(scenario: Scenario) -> StreamingRecognizer | None:
    if scenario.transcripts is not None:
        return ScriptedRecognizer([Transcript(t.text, t.final, t.at_ms) for t in scenario.transcripts])
    return make_recognizer(scenario.recognizer)


class SimulatedCall:
    """A call on simulated time: the engine, an app, and things scheduled to happen at given moments.

    Call time stands still while the app answers, so the timeline depends only on the inputs.
    """

    def __init__(
        self,
        responder: Responder,
        *,
        config: EngineConfig | None = None,
        recognizer: StreamingRecognizer | None = None,
        renderer: Renderer | None = None,
        session: SessionInfo = SIMULATED_SESSION,
        recording: CallRecording | None = None,
    ) -> None:
        self.timeline: list[Record] = []
        self.renderer = renderer or Renderer()
        config = config or EngineConfig(start_unix_ms=SIMULATED_EPOCH_MS)
        self.recording = recording
        if recording is not None:
            responder = recording.responder(responder)
        self.engine = CallEngine(
            session,
            config,
            recognizer=recognizer,
            on_record=self.timeline.append,
            interruption_hook=getattr(responder, "interruption_hook", None),
            tap=recording,
        )
        self.pump = EventPump(self.engine, responder, self.renderer)
        self.played: list[np.ndarray] = []
        self._schedule: list[tuple[int, int, Callable[[CallEngine], object]]] = []

    def at(self, t_ms: int, do: Callable[[CallEngine], object]) -> None:
        """Run `do(engine)` once call time reaches `t_ms`, before that frame is played."""
        heapq.heappush(self._schedule, (t_ms, len(self._schedule), do))

    def barge_in_at(self, t_ms: int) -> None:
        def request(engine: CallEngine) -> None:
            if not engine.barge_in_now("manual"):
                self.timeline.append({"t_ms": engine.now_ms, "event": "barge_in_ignored", "reason": "nothing playing"})

        self.at(t_ms, request)

    def push_at(self, t_ms: int, actions: list[Action]) -> None:
        """Actions that reach the call without an event, as the control API or a WebSocket push would send them."""
        self.at(t_ms, lambda engine: engine.apply(self.renderer.render_all(actions)))

    async def run(self, caller: np.ndarray, duration_ms: int) -> list[Record]:
        engine = self.engine
        frames = duration_ms // FRAME_MS
        caller = np.concatenate(
            [caller[: frames * FRAME_SAMPLES], np.zeros(max(0, frames * FRAME_SAMPLES - len(caller)), np.int16)]
        )
        engine.start()
        await self.pump.drain()
        for k in range(frames):
            while self._schedule and self._schedule[0][0] <= engine.now_ms:
                heapq.heappop(self._schedule)[2](engine)
            await self.pump.drain()
            if engine.ended:
                break
            self.played.append(engine.step(caller[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES]))
            await self.pump.drain()
            if engine.ended:
                break
        if not engine.ended:
            engine.end("simulation_end")
            await self.pump.drain()
        if self.recording is not None:
            self.recording.close()
        return sorted(self.timeline, key=lambda r: r["t_ms"])


async def run_scenario(
    scenario: Scenario,
    base: Path,
    responder: Responder | None = None,
    *,
    renderer: Renderer | None = None,
    recognizer: StreamingRecognizer | None = None,
    record_wav: Path | None = None,
    recorder: Recorder | None = None,
) -> list[Record]:
    """The call's timeline: every event delivered to the app, plus barge-ins, hangups and transfers.

    `recognizer`: one already made by `recognizer_for(scenario)`, so its load errors can be reported first.
    `recorder`: also write the call's recording (see flowapp.recording)."""
    config = EngineConfig(start_unix_ms=SIMULATED_EPOCH_MS)
    app_options = getattr(responder, "turn_handling", None)
    if scenario.turn_handling is not None:
        config.turn_handling = scenario.turn_handling
    elif isinstance(app_options, TurnHandling):
        config.turn_handling = app_options
    if scenario.end_of_turn_silence_ms is not None:
        config.turn_handling = config.turn_handling.updated(
            {"endpointing": {"min_delay": scenario.end_of_turn_silence_ms / 1000}}
        )
    recording = None
    if recorder is not None:
        recording = recorder.start(
            SIMULATED_SESSION, config, transport="simulation", recognizer_name=scenario.recognizer or None
        )
    call = SimulatedCall(
        responder or PlayOnce(assistant_action(scenario, base)),
        config=config,
        recognizer=recognizer or recognizer_for(scenario),
        renderer=renderer,
        recording=recording,
    )
    for t_ms in scenario.barge_in_requests_ms:
        call.barge_in_at(t_ms)
    for key in scenario.dtmf:
        call.at(key.at_ms, partial(CallEngine.dtmf, digit=key.digit))
    caller = caller_audio(scenario, base, scenario.duration_ms // FRAME_MS)
    timeline = await call.run(caller, scenario.duration_ms)
    if record_wav is not None:
        _write_call_audio(record_wav, caller, call.played)
    return timeline


def _write_call_audio(path: Path, caller: np.ndarray, played: list[np.ndarray]) -> None:
    """What a listener on the line would hear: both sides mixed, for checking a scenario by ear."""
    assistant = np.concatenate(played) if played else np.zeros(0, dtype=np.int16)
    n = len(assistant)
    mixed = caller[:n].astype(np.int32) + assistant.astype(np.int32)
    path.write_bytes(encode_wav(np.clip(mixed, -32768, 32767).astype(np.int16)))


def timeline_lines(timeline: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(record, separators=(", ", ": ")) for record in timeline]
