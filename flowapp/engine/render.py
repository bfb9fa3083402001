"""Turning `speak` and `audio` actions into 8 kHz PCM before they reach the queue.

Rendering runs the TTS program, which takes tens of milliseconds: live drivers call it off the event loop,
then hand the finished `Rendered` actions to the engine, whose frame loop never waits on synthesis.
Each item is bounded (flowapp.audio.limits) and a server renders at most `RENDER_SLOTS` items at once, so
however many calls ask, rendering memory stays within a few times one item's bound.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from flowapp.audio.errors import AudioFormatError
from flowapp.audio.frames import SAMPLE_RATE, Pcm
from flowapp.audio.limits import MAX_REPLY_SECONDS
from flowapp.audio.tts import TtsError, TtsRegistry
from flowapp.audio.wav import check_base64_wav, decode_base64_wav
from flowapp.logs import call_logger
from flowapp.protocol.actions import Action, Audio, MixAudio, Speak, TtsConfig

logger = logging.getLogger("flowapp.engine.render")

RENDER_SLOTS = 2
"""Items one Renderer (one per server) renders at the same time; the others wait their turn."""


@dataclass(frozen=True)
class Rendered:
    action: Action
    pcm: Pcm | None = None
    """Audio for speak / audio / mix_audio actions; None when there is none or rendering failed."""
    problem: str | None = None


def _wav_of(action: Action) -> str | None:
    """The base64 WAV an action asks to play, if any."""
    if isinstance(action, Audio):
        return action.audio
    if isinstance(action, MixAudio) and not action.stop:
        return action.audio
    return None


def check_renderable(action: Action) -> None:
    """Raise AudioFormatError now for audio that rendering would refuse, so its sender can be told at once."""
    wav = _wav_of(action)
    if wav is not None:
        check_base64_wav(wav)


class Renderer:
    def __init__(self, tts: TtsRegistry | None = None, slots: int = RENDER_SLOTS) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.tts = tts or TtsRegistry()
        self._slots = threading.BoundedSemaphore(slots)

    def render(self, action: Action) -> Rendered:
        log = call_logger(logger, action.session_id, action=action.type)
        try:
            if isinstance(action, Speak):
                with self._slots:
                    return Rendered(action, self._speak(action, log))
            wav = _wav_of(action)
            if wav:
                with self._slots:
                    return Rendered(action, decode_base64_wav(wav))
        except (TtsError, AudioFormatError) as exc:
            log.error("cannot render %s: %s; the call goes on without it", action.type, exc)
            return Rendered(action, None, str(exc))
        return Rendered(action)

    def render_all(self, actions: list[Action]) -> list[Rendered]:
        """One reply's actions. Audio past MAX_REPLY_SECONDS in all is skipped (and not rendered once the
        reply is past it); the engine logs each skipped item. Control actions still run."""
        rendered: list[Rendered] = []
        budget = MAX_REPLY_SECONDS * SAMPLE_RATE
        problem = f"the reply's audio runs past {MAX_REPLY_SECONDS} s (MAX_REPLY_SECONDS)"
        for action in actions:
            if budget < 0 and (isinstance(action, Speak) or _wav_of(action)):
                rendered.append(Rendered(action, None, problem))
                continue
            item = self.render(action)
            if item.pcm is not None:
                budget -= len(item.pcm)
                if budget < 0:
                    item = Rendered(action, None, problem)
            rendered.append(item)
        return rendered

    def _speak(self, action: Speak, log: logging.LoggerAdapter[logging.Logger]) -> Pcm:
        """Speak with what was asked for where possible; otherwise log why and use the local default voice."""
        tts_config = action.tts or TtsConfig()
        text = action.ssml if action.ssml is not None else (action.text or "")
        try:
            selection = self.tts.select(tts_config.provider)
        except TtsError as exc:
            log.error("%s; speaking with the default voice instead", exc)
            return self.tts.get(None).synthesize(text)
        if selection.fallback_message:
            log.warning(selection.fallback_message)
            return selection.tts.synthesize(text, language=tts_config.language)
        try:
            return selection.tts.synthesize(text, voice=tts_config.voice, language=tts_config.language)
        except TtsError as exc:
            if tts_config.voice is None and tts_config.language is None:
                raise
            log.error("%s; speaking with the default voice instead", exc)
            return selection.tts.synthesize(text)
