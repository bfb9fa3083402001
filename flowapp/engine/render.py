"""Turning `speak` and `audio` actions into 8 kHz PCM before they reach the queue.

Rendering runs the TTS program, which takes tens of milliseconds: live drivers call it off the event loop,
then hand the finished `Rendered` actions to the engine, whose frame loop never waits on synthesis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flowapp.audio.errors import AudioFormatError
from flowapp.audio.frames import Pcm
from flowapp.audio.tts import TtsError, TtsRegistry
from flowapp.audio.wav import decode_base64_wav
from flowapp.logs import call_logger
from flowapp.protocol.actions import Action, Audio, MixAudio, Speak, TtsConfig

logger = logging.getLogger("flowapp.engine.render")


@dataclass(frozen=True)
class Rendered:
    action: Action
    pcm: Pcm | None = None
    """Audio for speak / audio / mix_audio actions; None when there is none or rendering failed."""
    problem: str | None = None


class Renderer:
    def __init__(self, tts: TtsRegistry | None = None) -> None:
        self.tts = tts or TtsRegistry()

    def render(self, action: Action) -> Rendered:
        log = call_logger(logger, action.session_id, action=action.type)
        try:
            if isinstance(action, Speak):
                return Rendered(action, self._speak(action, log))
            if isinstance(action, Audio):
                return Rendered(action, decode_base64_wav(action.audio))
            if isinstance(action, MixAudio) and action.audio and not action.stop:
                return Rendered(action, decode_base64_wav(action.audio))
        except (TtsError, AudioFormatError) as exc:
            log.error("cannot render %s: %s; the call goes on without it", action.type, exc)
            return Rendered(action, None, str(exc))
        return Rendered(action)

    def render_all(self, actions: list[Action]) -> list[Rendered]:
        return [self.render(action) for action in actions]

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
