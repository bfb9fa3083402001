import importlib
import itertools
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from flowapp.audio import split_frames
from flowapp.stt import StreamingRecognizer, Transcript, make_recognizer
from flowapp.stt.pocketsphinx import PocketsphinxRecognizer
from tests.media import asterisk_prompt, librivox_audio, librivox_clips

INTERVAL_MS = 200
TAIL_MS = 300


@dataclass
class Run:
    results: list[Transcript]
    audio_ms: int
    end_ms: int

    @property
    def partials(self) -> list[Transcript]:
        return [t for t in self.results if not t.final]

    @property
    def finals(self) -> list[Transcript]:
        return [t for t in self.results if t.final]


def decode(rec: StreamingRecognizer, pcm: np.ndarray) -> Run:
    """Play the clip in real 20 ms frames, then end the turn a little after the audio stops."""
    results: list[Transcript] = []
    frames = split_frames(pcm)
    for i, frame in enumerate(frames):
        results += rec.feed(frame, i * 20)
    audio_ms = len(frames) * 20
    end_ms = audio_ms + TAIL_MS
    results += rec.end_utterance(end_ms)
    return Run(results, audio_ms, end_ms)


def words(text: str) -> list[str]:
    return text.lower().replace("'", "").split()


def overlap(hyp: str, ref: str) -> float:
    ref_words = set(words(ref))
    return len(ref_words & set(words(hyp))) / len(ref_words)


@pytest.fixture(scope="module")
def recognizer() -> PocketsphinxRecognizer:
    return PocketsphinxRecognizer(partial_interval_ms=INTERVAL_MS)


@pytest.fixture(scope="module")
def librivox_run(recognizer: PocketsphinxRecognizer) -> tuple[Run, str]:
    path, reference = next(c for c in librivox_clips() if c[0].stem.endswith("0870"))
    return decode(recognizer, librivox_audio(path, rate=8000)), reference


def test_is_a_streaming_recognizer(recognizer: PocketsphinxRecognizer) -> None:
    assert isinstance(recognizer, StreamingRecognizer)


def test_partials_arrive_while_audio_plays(librivox_run: tuple[Run, str]) -> None:
    run, _ = librivox_run
    assert len(run.partials) >= 5
    assert run.partials[0].t_ms < run.audio_ms / 3
    assert all(p.t_ms < run.audio_ms for p in run.partials)


def test_partials_are_rate_limited_and_change(librivox_run: tuple[Run, str]) -> None:
    run, _ = librivox_run
    times = [p.t_ms for p in run.partials]
    assert all(b - a >= INTERVAL_MS for a, b in itertools.pairwise(times))
    texts = [p.text for p in run.partials]
    assert all(a != b for a, b in itertools.pairwise(texts))


def test_partials_are_cumulative(librivox_run: tuple[Run, str]) -> None:
    run, reference = librivox_run
    counts = [len(words(p.text)) for p in run.partials]
    assert all(b >= a - 2 for a, b in itertools.pairwise(counts)), counts
    assert counts[-1] >= 0.6 * len(words(reference))
    assert len(words(run.finals[0].text)) >= counts[-1] - 3


def test_final_on_end_utterance_resembles_reference(librivox_run: tuple[Run, str]) -> None:
    run, reference = librivox_run
    assert len(run.finals) == 1
    assert run.results[-1] == run.finals[0]
    assert run.finals[0].t_ms == run.end_ms
    assert overlap(run.finals[0].text, reference) >= 0.25, (run.finals[0].text, reference)


def test_timestamps_increase(librivox_run: tuple[Run, str]) -> None:
    run, _ = librivox_run
    times = [t.t_ms for t in run.results]
    assert times == sorted(times)
    assert len(set(times)) == len(times)


def test_asterisk_prompt(recognizer: PocketsphinxRecognizer) -> None:
    run = decode(recognizer, asterisk_prompt("pbx-invalid"))
    assert run.partials and run.partials[0].t_ms < run.audio_ms / 2
    assert len(run.finals) == 1 and run.finals[0].text
    assert overlap(run.finals[0].text, "i'm sorry but that's not a valid extension please try again") >= 0.3


def test_silence_is_not_decoded(recognizer: PocketsphinxRecognizer) -> None:
    quiet = np.random.default_rng(0).normal(0, 30, 8000 * 5).astype(np.int16)
    run = decode(recognizer, quiet)
    assert run.results == []


def test_reset_discards_utterance(recognizer: PocketsphinxRecognizer) -> None:
    prompt = asterisk_prompt("pbx-invalid")
    for i, frame in enumerate(split_frames(prompt[: prompt.size // 2])):
        recognizer.feed(frame, i * 20)
    recognizer.reset()
    assert recognizer.end_utterance(5000) == []
    assert decode(recognizer, prompt).finals


def test_pooled_decoder_starts_each_call_afresh() -> None:
    with PocketsphinxRecognizer() as first_call:
        first = decode(first_call, asterisk_prompt("queue-thankyou")).finals
        decode(first_call, asterisk_prompt("pbx-invalid"))
    with PocketsphinxRecognizer() as second_call:
        assert decode(second_call, asterisk_prompt("queue-thankyou")).finals == first


def test_closed_decoder_is_reused_from_pool() -> None:
    with PocketsphinxRecognizer() as rec:
        decoder = rec._decoder
    with pytest.raises(RuntimeError, match="closed"):
        rec.feed(np.zeros(160, dtype=np.int16), 0)
    rec.close()
    again = PocketsphinxRecognizer()
    assert again._decoder is decoder
    again.close()


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="partial_interval_ms"):
        PocketsphinxRecognizer(partial_interval_ms=0)
    with pytest.raises(ValueError, match="no pocketsphinx model"):
        PocketsphinxRecognizer(language="xx-yy")


def test_factory_builds_pocketsphinx() -> None:
    rec = make_recognizer("pocketsphinx")
    assert isinstance(rec, PocketsphinxRecognizer)
    rec.close()


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    monkeypatch.delitem(sys.modules, "flowapp.stt.pocketsphinx")
    with pytest.raises(ImportError, match=r"pip install 'flowapp\[pocketsphinx\]'"):
        importlib.import_module("flowapp.stt.pocketsphinx")
