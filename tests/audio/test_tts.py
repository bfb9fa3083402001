import subprocess

import numpy as np
import pytest

from flowapp.audio import CachedTts, EspeakTts, TtsError, TtsRegistry, VadTracker, WebRtcDetector, split_frames
from flowapp.audio import tts as tts_module


@pytest.fixture
def espeak_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real_popen = subprocess.Popen

    def counting_popen(cmd, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(list(cmd))
        return real_popen(cmd, *args, **kwargs)

    monkeypatch.setattr(tts_module.subprocess, "Popen", counting_popen)
    return calls


def test_espeak_produces_plausible_8k_speech() -> None:
    text = "Thank you for calling. Please say the name of the person you want to reach."
    pcm = EspeakTts().synthesize(text)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    seconds = pcm.size / 8000
    words = len(text.split())
    assert 0.6 * words / (175 / 60) < seconds < 1.6 * words / (175 / 60)
    tracker = VadTracker(WebRtcDetector())
    events = [e for i, f in enumerate(split_frames(pcm)) for e in tracker.process(f, i * 20)]
    assert events and events[0].kind == "start"


def test_rate_changes_duration() -> None:
    slow = EspeakTts(rate_wpm=120).synthesize("one two three four five six")
    fast = EspeakTts(rate_wpm=240).synthesize("one two three four five six")
    assert fast.size < 0.75 * slow.size


def test_language_maps_to_voice() -> None:
    tts = EspeakTts()
    assert tts.voice_for_language("de-DE") == "de"
    assert tts.voice_for_language("en-US") == "en-us"
    assert tts.voice_for_language("pt_BR") == "pt-br"
    assert tts.synthesize("Guten Tag", language="de-DE").size > 4000
    with pytest.raises(TtsError, match="no voice for language 'xx-YY'"):
        tts.synthesize("hi", language="xx-YY")


def test_unknown_voice_raises() -> None:
    with pytest.raises(TtsError, match="no voice 'zz-nonexistent'"):
        EspeakTts().synthesize("hello", voice="zz-nonexistent")


def test_missing_program_says_what_to_install() -> None:
    with pytest.raises(TtsError, match="install espeak-ng"):
        EspeakTts(program="espeak-ng-not-installed").synthesize("hello")


def test_ssml_is_passed_as_markup(espeak_calls: list[list[str]]) -> None:
    pcm = EspeakTts().synthesize('<speak>Hello <break time="800ms"/> world</speak>')
    assert "-m" in espeak_calls[-1]
    plain = EspeakTts().synthesize("Hello world")
    assert "-m" not in espeak_calls[-1]
    assert pcm.size > plain.size + 0.5 * 8000


def test_cache_hit_skips_the_program(espeak_calls: list[list[str]]) -> None:
    cached = CachedTts(EspeakTts(), max_items=2)
    first = cached.synthesize("Please hold.")
    runs = len(espeak_calls)
    second = cached.synthesize("Please hold.")
    assert len(espeak_calls) == runs
    assert second is first and not second.flags.writeable
    cached.synthesize("Please hold.", voice="en-gb")
    assert len(espeak_calls) == runs + 1
    cached.synthesize("Goodbye.")  # evicts the least recently used entry: the en-us "Please hold."
    cached.synthesize("Goodbye.")
    cached.synthesize("Please hold.")
    assert cached.hits == 2 and cached.misses == 4
    assert len(espeak_calls) == runs + 3


def test_registry_defaults_and_fallback() -> None:
    registry = TtsRegistry()
    assert registry.get(None) is registry.get("espeak")
    selection = registry.select("azure")
    assert selection.is_fallback and selection.provider == "espeak" and selection.requested == "azure"
    assert selection.fallback_message == "tts provider 'azure' is not available locally; using espeak"
    assert registry.get("eleven_labs") is registry.get("espeak")
    assert not registry.select("espeak").is_fallback
    with pytest.raises(TtsError, match="unknown tts provider 'polly'"):
        registry.get("polly")


def test_registry_prefers_a_registered_provider() -> None:
    class Fake:
        def synthesize(self, text: str, *, voice: str | None = None, language: str | None = None) -> np.ndarray:
            return np.zeros(80, dtype=np.int16)

    registry = TtsRegistry()
    registry.register("azure", Fake())
    assert not registry.select("azure").is_fallback
    assert registry.get("azure").synthesize("x").size == 80


def test_speech_past_the_item_bound_is_cut_off_and_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowapp.audio.limits import LimitExceeded

    monkeypatch.setattr(tts_module, "MAX_ITEM_SECONDS", 1)
    with pytest.raises(LimitExceeded, match=r"past 1 s \(MAX_ITEM_SECONDS\)"):
        EspeakTts().synthesize("This sentence takes a good deal longer than one second to say aloud.")
    assert EspeakTts().synthesize("Hi.").size < 8000


def test_cache_memory_is_bounded_in_bytes() -> None:
    class Silence:
        def synthesize(self, text: str, *, voice: str | None = None, language: str | None = None) -> np.ndarray:
            return np.zeros(int(text), dtype=np.int16)

    cached = CachedTts(Silence(), max_items=100, max_bytes=10_000)
    for samples in ("2000", "2001", "2002"):
        cached.synthesize(samples)
    assert cached.bytes == 4002 + 4004, "two items fit, the third evicts the least recently used"
    cached.synthesize("6000")
    assert cached.bytes == 4002 + 4004, "an item bigger than the whole cache is not kept"
    assert cached.synthesize("2002") is cached.synthesize("2002")
    cached.clear()
    assert cached.bytes == 0
