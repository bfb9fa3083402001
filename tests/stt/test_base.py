import dataclasses

import numpy as np
import pytest

from flowapp.stt import ScriptedRecognizer, StreamingRecognizer, Transcript, count_characters, make_recognizer

FRAME = np.zeros(160, dtype=np.int16)


def partial(text: str, t_ms: int) -> Transcript:
    return Transcript(text=text, final=False, t_ms=t_ms)


def final(text: str, t_ms: int) -> Transcript:
    return Transcript(text=text, final=True, t_ms=t_ms)


def run(rec: ScriptedRecognizer, until_ms: int, start_ms: int = 0) -> list[Transcript]:
    out: list[Transcript] = []
    for t in range(start_ms, until_ms + 1, 20):
        out += rec.feed(FRAME, t)
    return out


def test_transcript_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        partial("x", 0).text = "y"  # type: ignore[misc]


def test_recognizers_satisfy_protocol() -> None:
    assert isinstance(ScriptedRecognizer(), StreamingRecognizer)


def test_releases_in_time_order_each_once() -> None:
    script = [partial("wait", 300), final("wait a sec", 700), partial("wai", 100), partial("wait a", 500)]
    rec = ScriptedRecognizer(script)
    assert rec.feed(FRAME, 80) == []
    assert rec.feed(FRAME, 100) == [partial("wai", 100)]
    assert rec.feed(FRAME, 120) == []
    assert rec.feed(FRAME, 600) == [partial("wait", 300), partial("wait a", 500)]
    assert rec.feed(FRAME, 600) == []
    assert rec.feed(FRAME, 1000) == [final("wait a sec", 700)]
    assert run(rec, 5000, start_ms=1000) == []
    assert rec.pending == ()


def test_equal_times_keep_script_order() -> None:
    script = [partial("a", 100), partial("a b", 100), final("a b c", 100)]
    assert ScriptedRecognizer(script).feed(FRAME, 100) == script


def test_end_utterance_synthesizes_final_from_last_partial() -> None:
    rec = ScriptedRecognizer([partial("wai", 100), partial("wait", 300)])
    run(rec, 400)
    assert rec.end_utterance(420) == [final("wait", 420)]
    assert rec.end_utterance(440) == []


def test_end_utterance_releases_due_results_first() -> None:
    rec = ScriptedRecognizer([partial("wai", 100), partial("wait", 300)])
    assert rec.end_utterance(300) == [partial("wai", 100), partial("wait", 300), final("wait", 300)]


def test_end_utterance_keeps_scripted_final() -> None:
    rec = ScriptedRecognizer([partial("wai", 100), final("wait", 300)])
    run(rec, 400)
    assert rec.end_utterance(420) == []


def test_end_utterance_brings_forward_pending_final_instead_of_duplicating() -> None:
    rec = ScriptedRecognizer([partial("wai", 100), final("wait a sec", 900), partial("hel", 2000)])
    run(rec, 400)
    assert rec.end_utterance(420) == [final("wait a sec", 420)]
    assert run(rec, 1900, start_ms=440) == []
    assert rec.feed(FRAME, 2000) == [partial("hel", 2000)]


def test_end_utterance_without_speech_returns_nothing() -> None:
    rec = ScriptedRecognizer([final("later", 900)])
    assert rec.end_utterance(100) == []
    assert rec.feed(FRAME, 900) == [final("later", 900)]


def test_push_adds_results_at_run_time() -> None:
    rec = ScriptedRecognizer()
    assert rec.feed(FRAME, 100) == []
    rec.push(partial("late", 60))
    rec.push(partial("next", 200))
    assert rec.feed(FRAME, 120) == [partial("late", 60)]
    assert rec.feed(FRAME, 200) == [partial("next", 200)]
    assert rec.end_utterance(220) == [final("next", 220)]


def test_reset_forgets_open_utterance_but_keeps_future_script() -> None:
    rec = ScriptedRecognizer([partial("noise", 100), partial("hello", 800)])
    run(rec, 200)
    rec.reset()
    assert rec.end_utterance(220) == []
    assert run(rec, 800, start_ms=240) == [partial("hello", 800)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("   ", 0), ("wait", 4), ("wait a sec", 8), (" a\tb\nc ", 3), ("ça va", 4)],
)
def test_count_characters_ignores_whitespace(text: str, expected: int) -> None:
    assert count_characters(text) == expected


def test_make_recognizer() -> None:
    assert make_recognizer(None) is None
    with pytest.raises(ValueError, match="unknown recognizer"):
        make_recognizer("whisper")
