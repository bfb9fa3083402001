"""The built-in local recognizer: shipped Whisper weights, checked hashes, turn decodes on a bounded pool."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from benchmarks.wer import normalize
from flowapp.audio.frames import FRAME_MS, split_frames
from flowapp.stt import Transcript, check_recognizer, make_recognizer
from flowapp.stt.local import SIMULATED_LATENCY_MS, DecodePool, InlineDecoder, LocalRecognizer
from flowapp.stt.whisper import ModelError, builtin_model_dir, shared_transcriber, verify_weights
from tests.media import asterisk_prompt


def phone(name: str) -> np.ndarray:
    """A real prompt as a phone line delivers it: G.711 mu-law, with quiet line noise."""
    from benchmarks.turn_taking import g711, line_noise

    rng = np.random.default_rng(7)
    speech = asterisk_prompt(name).astype(np.float64)
    padded = np.concatenate([np.zeros(1600), speech, np.zeros(1600)])
    return g711(padded + line_noise(len(padded), -55.0, rng))


def test_the_shipped_weights_pass_their_hashes_and_a_changed_file_does_not(tmp_path: Path) -> None:
    shipped = builtin_model_dir()
    verify_weights(shipped)
    copy = tmp_path / "model"
    shutil.copytree(shipped, copy)
    (copy / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"config\.json has SHA-256"):
        verify_weights(copy)
    (copy / "config.json").unlink()
    with pytest.raises(ModelError, match="missing"):
        verify_weights(copy)


def test_a_model_name_that_cannot_be_loaded_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot load Whisper model"):
        shared_transcriber(str(tmp_path))


def test_recognizer_names_are_checked() -> None:
    assert check_recognizer("local") == "local"
    assert check_recognizer("none") is None
    assert check_recognizer("whisper:small.en") == "whisper:small.en"
    for bad in ("whisper:", "bogus", "Local"):
        with pytest.raises(ValueError, match="unknown recognizer"):
            check_recognizer(bad)


@pytest.mark.parametrize(
    "prompt",
    ["please-try-again", "all-circuits-busy-now", "conf-getpin", "vm-enter-num-to-call", "hello", "goodbye"],
)
def test_phone_speech_is_transcribed_word_for_word(prompt: str) -> None:
    from benchmarks.turn_taking import asterisk_texts

    heard = shared_transcriber().transcribe(phone(prompt))
    assert normalize(heard) == normalize(asterisk_texts()[prompt])


def test_line_noise_alone_gives_no_words() -> None:
    from benchmarks.turn_taking import g711, line_noise

    hiss = g711(line_noise(8000 * 2, -50.0, np.random.default_rng(3)))
    assert shared_transcriber().transcribe(hiss) == ""


def feed_all(recognizer: LocalRecognizer, pcm: np.ndarray, start_ms: int = 0) -> tuple[list, int]:
    out = []
    t = start_ms
    for frame in split_frames(pcm):
        t += FRAME_MS
        out += recognizer.feed(frame, t)
    return out, t


def test_a_turn_is_decoded_once_when_it_ends_and_its_words_come_after_the_decode() -> None:
    recognizer = LocalRecognizer(InlineDecoder(shared_transcriber()))
    speech = phone("please-try-again")
    recognizer.speech_started(0)
    heard, t = feed_all(recognizer, speech)
    assert heard == [], "no words before they are asked for or the turn ends"
    assert recognizer.end_utterance(t) == []
    silence = np.zeros(160 * (SIMULATED_LATENCY_MS // FRAME_MS), dtype=np.int16)
    later, _ = feed_all(recognizer, silence, t)
    assert [(r.text, r.final, r.t_ms) for r in later] == [("Please try again.", True, t + SIMULATED_LATENCY_MS)]


def test_early_words_come_when_a_decision_asks_for_them() -> None:
    recognizer = LocalRecognizer(InlineDecoder(shared_transcriber(), latency_ms=100))
    speech = phone("please-try-again")
    recognizer.speech_started(0)
    _, t = feed_all(recognizer, speech)
    recognizer.want_words(t)
    assert recognizer.decoding
    partial, _ = feed_all(recognizer, np.zeros(160 * 5, dtype=np.int16), t)
    assert [(r.text, r.final) for r in partial] == [("Please try again.", False)]
    assert not recognizer.decoding


def test_every_ended_utterance_gets_exactly_one_final_even_an_empty_one() -> None:
    recognizer = LocalRecognizer(InlineDecoder(shared_transcriber(), latency_ms=0))
    finals = recognizer.end_utterance(1000)
    assert [(r.text, r.final) for r in finals] == [("", True)]


class _Blocking:
    """A transcriber that waits until released: a busy pool, made on purpose."""

    language = "en"

    def __init__(self) -> None:
        self.release = threading.Event()

    def transcribe(self, pcm: np.ndarray) -> str:
        self.release.wait(5)
        return "done"


def test_a_full_pool_refuses_and_the_call_judges_by_sound_alone() -> None:
    blocking = _Blocking()
    pool = DecodePool(blocking, workers=1, max_pending=1)  # type: ignore[arg-type]
    try:
        first = LocalRecognizer(pool)
        second = LocalRecognizer(pool)
        speech = np.zeros(160 * 20, dtype=np.int16)
        for recognizer in (first, second):
            recognizer.speech_started(0)
            feed_all(recognizer, speech)
        assert first.end_utterance(400) == []
        assert second.end_utterance(400) == [Transcript("", True, 400)], "refused: the turn ends without words"
        assert not second.hearing and first.hearing
        assert pool.stats.refused >= 1
        blocking.release.set()
        for _ in range(100):
            got = first.feed(speech[:160], 500)
            if got:
                assert [(r.text, r.final) for r in got] == [("done", True)]
                break
            threading.Event().wait(0.02)
        else:
            pytest.fail("the decode never finished")
    finally:
        blocking.release.set()
        pool.close()


def test_make_recognizer_gives_the_local_recognizer_by_name() -> None:
    assert isinstance(make_recognizer("local"), LocalRecognizer)
    assert make_recognizer("none") is None
