"""Running one scenario through the real engine, faster than real time, with the same timeline every run."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES
from flowapp.audio.wav import encode_wav, read_wav
from flowapp.engine.call import CallEngine, EngineConfig, Record
from flowapp.engine.pump import EventPump
from flowapp.engine.render import Renderer
from flowapp.protocol.actions import Action, Audio, Speak
from flowapp.protocol.events import Event, SessionInfo
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


async def run_scenario(
    scenario: Scenario,
    base: Path,
    responder: Responder | None = None,
    *,
    renderer: Renderer | None = None,
    record_wav: Path | None = None,
) -> list[Record]:
    """The call's timeline: every event delivered to the app, plus barge-ins, hangups and transfers."""
    timeline: list[Record] = []
    config = EngineConfig(start_unix_ms=SIMULATED_EPOCH_MS)
    if scenario.end_of_turn_silence_ms is not None:
        config.end_of_turn_silence_ms = scenario.end_of_turn_silence_ms
    engine = CallEngine(SIMULATED_SESSION, config, recognizer=recognizer_for(scenario), on_record=timeline.append)
    if responder is None:
        responder = PlayOnce(assistant_action(scenario, base))
    pump = EventPump(engine, responder, renderer or Renderer())
    frames = scenario.duration_ms // FRAME_MS
    caller = caller_audio(scenario, base, frames)
    manual = sorted(scenario.barge_in_requests_ms)
    dtmf = sorted(scenario.dtmf, key=lambda d: d.at_ms)
    played: list[np.ndarray] = []

    engine.start()
    await pump.drain()
    for k in range(frames):
        while manual and manual[0] <= engine.now_ms:
            manual.pop(0)
            if not engine.barge_in_now("manual"):
                timeline.append({"t_ms": engine.now_ms, "event": "barge_in_ignored", "reason": "nothing playing"})
        while dtmf and dtmf[0].at_ms <= engine.now_ms:
            engine.dtmf(dtmf.pop(0).digit)
        await pump.drain()
        if engine.ended:
            break
        played.append(engine.step(caller[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES]))
        await pump.drain()
        if engine.ended:
            break
    if not engine.ended:
        engine.end("simulation_end")
        await pump.drain()
    if record_wav is not None:
        _write_call_audio(record_wav, caller, played)
    return sorted(timeline, key=lambda r: r["t_ms"])


def _write_call_audio(path: Path, caller: np.ndarray, played: list[np.ndarray]) -> None:
    """What a listener on the line would hear: both sides mixed, for checking a scenario by ear."""
    assistant = np.concatenate(played) if played else np.zeros(0, dtype=np.int16)
    n = len(assistant)
    mixed = caller[:n].astype(np.int32) + assistant.astype(np.int32)
    path.write_bytes(encode_wav(np.clip(mixed, -32768, 32767).astype(np.int16)))


def timeline_lines(timeline: list[dict[str, Any]]) -> list[str]:
    import json

    return [json.dumps(record, separators=(", ", ": ")) for record in timeline]
