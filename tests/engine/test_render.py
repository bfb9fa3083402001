"""The renderer's bounds: items past a limit are skipped with a logged reason, and a server renders a few at once."""

from __future__ import annotations

import base64
import struct
import threading
import time

import numpy as np
import pytest

from flowapp.audio.tts import TtsRegistry
from flowapp.audio.wav import encode_wav
from flowapp.engine.render import RENDER_SLOTS, Renderer, check_renderable
from flowapp.protocol.actions import Action, Audio, Hangup, MixAudio, Speak


def one_hz_wav(samples: int = 20_000) -> str:
    body = struct.pack("<HHIIHH", 1, 1, 1, 1, 1, 8)
    data = b"WAVE" + struct.pack("<4sI", b"fmt ", 16) + body + struct.pack("<4sI", b"data", samples) + b"\x80" * samples
    return base64.b64encode(b"RIFF" + struct.pack("<I", len(data)) + data).decode()


def test_a_refused_item_is_skipped_with_its_reason_logged(caplog: pytest.LogCaptureFixture) -> None:
    rendered = Renderer().render_all(
        [Audio(session_id="s-1", audio=one_hz_wav()), Speak(session_id="s-1", text="Still here."), Hangup()]
    )
    assert rendered[0].pcm is None and rendered[0].problem is not None and "MIN_WAV_RATE" in rendered[0].problem
    assert rendered[1].pcm is not None and rendered[1].pcm.size > 2000
    assert rendered[2].pcm is None and rendered[2].problem is None
    assert "cannot render audio" in caplog.text and "1 Hz" in caplog.text and "the call goes on" in caplog.text


def test_check_renderable_refuses_what_rendering_would() -> None:
    with pytest.raises(ValueError, match="MIN_WAV_RATE"):
        check_renderable(MixAudio(audio=one_hz_wav()))
    with pytest.raises(ValueError, match="not valid base64"):
        check_renderable(Audio(audio="%%%"))
    check_renderable(Audio(audio=base64.b64encode(encode_wav(np.zeros(800, dtype=np.int16))).decode()))
    check_renderable(MixAudio(stop=True))
    check_renderable(Speak(text="Hello."))


def test_a_server_renders_at_most_its_slots_at_once() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    class SlowTts:
        def synthesize(self, text: str, *, voice: str | None = None, language: str | None = None) -> np.ndarray:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.05)
            with lock:
                running -= 1
            return np.zeros(160, dtype=np.int16)

    renderer = Renderer(TtsRegistry({"espeak": SlowTts()}))
    actions: list[Action] = [Speak(text=f"call {n}") for n in range(3)]
    threads = [threading.Thread(target=renderer.render_all, args=(actions,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == RENDER_SLOTS
    with pytest.raises(ValueError, match="slots"):
        Renderer(slots=0)


def test_a_reply_renders_at_most_its_audio_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowapp.engine import render as render_module

    synthesized: list[str] = []

    class OneSecond:
        def synthesize(self, text: str, *, voice: str | None = None, language: str | None = None) -> np.ndarray:
            synthesized.append(text)
            return np.zeros(8000, dtype=np.int16)

    monkeypatch.setattr(render_module, "MAX_REPLY_SECONDS", 2)
    reply: list[Action] = [Speak(text=str(n)) for n in range(4)]
    rendered = Renderer(TtsRegistry({"espeak": OneSecond()})).render_all([*reply, Hangup()])
    assert [r.pcm is not None for r in rendered] == [True, True, False, False, False]
    assert all("MAX_REPLY_SECONDS" in (r.problem or "") for r in rendered[2:4])
    assert rendered[4].action.type == "hangup" and rendered[4].problem is None
    assert synthesized == ["0", "1", "2"], "once past the budget, the rest is not even rendered"
