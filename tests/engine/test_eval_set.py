"""The turn-taking evaluation set (benchmarks/turn_taking.py), a seeded third of it, through adaptive mode.

The benchmark's headline numbers with a margin for the smaller sample: a judge change that lets backchannels,
coughs, music or echo stop the assistant, misses real barge-ins, or pauses late fails here.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.turn_taking import ADAPTIVE, ADAPTIVE_AUDIO, Clip, Metrics, build_set, evaluate, measure, percentile
from flowapp.engine.interruption import Candidate, judge
from flowapp.engine.turns import InterruptionOptions

pytestmark = pytest.mark.slow  # 316 clips through the engine and the local recognizer


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    return build_set(seed=7, quick=True)


@pytest.fixture(scope="module")
def adaptive(clips: list[Clip]) -> Metrics:
    return measure(clips, evaluate(clips, [ADAPTIVE])[ADAPTIVE.name])


def test_the_set_covers_every_class(clips: list[Clip]) -> None:
    kinds = {clip.kind for clip in clips}
    assert kinds == {
        "barge_in_long",
        "barge_in_short",
        "barge_in_tts",
        "double_talk",
        "backchannel",
        "burst",
        "music",
        "noise",
        "echo",
    }
    assert len(clips) >= 100


def test_adaptive_hears_real_barge_ins(adaptive: Metrics) -> None:
    detected, total = adaptive.recall["all"]
    assert detected / total >= 0.95, adaptive.misses


def test_adaptive_ignores_backchannels_noise_and_echo(adaptive: Metrics) -> None:
    limits = {"backchannel": 0.15, "burst": 0.08, "music": 0.15, "noise": 0.17, "echo": 0.10}
    for kind, limit in limits.items():
        false, total = adaptive.false[kind]
        assert false / total <= limit, (kind, adaptive.false_alarms)


def test_adaptive_pauses_within_100_ms_and_confirms_within_a_second(adaptive: Metrics) -> None:
    p50, p95 = percentile(adaptive.pause_latency, 50), percentile(adaptive.pause_latency, 95)
    assert p50 is not None and p95 is not None
    assert p50 <= 60
    assert p95 <= 150  # the full set's p95 is under 100 ms; a third of it has fewer clips to average out
    confirm = percentile(adaptive.confirm_latency, 95)
    assert confirm is not None and confirm <= 1000


def test_without_a_recognizer_real_barge_ins_still_interrupt_and_noise_does_not(clips: list[Clip]) -> None:
    """Audio alone: voiced sound is speech, even one short word; coughs, clicks and echo have no pitch."""
    kinds = ("barge_in_short", "barge_in_long", "barge_in_tts", "burst", "echo")
    subset = [clip for clip in clips if clip.kind in kinds]
    audio_only = measure(subset, evaluate(subset, [ADAPTIVE_AUDIO])[ADAPTIVE_AUDIO.name])
    detected, total = audio_only.recall["all"]
    assert detected / total >= 0.95, audio_only.misses
    assert audio_only.false["burst"][0] == 0 and audio_only.false["echo"][0] == 0, audio_only.false_alarms


# The rules the set measured, one by one ------------------------------------------------------------------------


def _heard(
    text: str,
    *,
    speaking: bool,
    speech_ms: int,
    paused_ms: int,
    transcribing: bool = True,
    voiced_ms: int | None = None,
) -> Candidate:
    silent_ms = 0 if speaking else 400
    voiced = speech_ms if voiced_ms is None else voiced_ms
    return Candidate(text, False, speaking, speech_ms, silent_ms, paused_ms, 3000, "immediate", transcribing, voiced)


def test_a_long_wordless_sound_interrupts_only_without_a_recognizer_and_only_if_voiced() -> None:
    options = InterruptionOptions(mode="adaptive")
    assert judge(_heard("", speaking=True, speech_ms=1500, paused_ms=1400, transcribing=False), options) == "interrupt"
    assert judge(_heard("", speaking=True, speech_ms=1500, paused_ms=1400), options) == "resume"
    # A fan or a hiss the detector let through: long, with no vowel in it.
    hiss = _heard("", speaking=True, speech_ms=1500, paused_ms=1400, transcribing=False, voiced_ms=20)
    assert judge(hiss, options) == "resume"
    assert judge(replace(hiss, speech_ms=1600, paused_ms=0), options) == "resume"
    # Once resumed, the same sound does not pause playback again; words over it still would.
    assert judge(_heard("", speaking=True, speech_ms=1600, paused_ms=0), options) == "resume"
    assert judge(_heard("can you", speaking=True, speech_ms=1600, paused_ms=0), options) == "wait"


def test_fillers_alone_are_no_words() -> None:
    options = InterruptionOptions(mode="adaptive")
    # "the" written for a cough (no pitch) is no word; the same sound voiced is someone speaking.
    assert judge(_heard("the", speaking=False, speech_ms=200, paused_ms=600, voiced_ms=0), options) == "resume"
    assert judge(_heard("the", speaking=False, speech_ms=200, paused_ms=600), options) == "interrupt"
    assert judge(_heard("uh", speaking=False, speech_ms=200, paused_ms=0), options) == "resume"
    assert judge(_heard("uh wait", speaking=False, speech_ms=200, paused_ms=0), options) == "interrupt"
    assert judge(_heard("two", speaking=False, speech_ms=200, paused_ms=600), options) == "interrupt"
