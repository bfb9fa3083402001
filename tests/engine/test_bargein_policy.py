"""The pure barge-in rule, case by case: no audio, no clock, just the moment."""

import pytest

from flowapp.engine.bargein import CallerActivity, automatic_trigger
from flowapp.protocol.actions import BargeIn

QUIET = CallerActivity(speaking=False, characters=0)
SPEAKING = CallerActivity(speaking=True, characters=0)


def words(n: int, speaking: bool = True) -> CallerActivity:
    return CallerActivity(speaking=speaking, characters=n)


@pytest.mark.parametrize("activity", [QUIET, SPEAKING, words(100)])
def test_none_and_manual_never_trigger_automatically(activity: CallerActivity) -> None:
    for config in (BargeIn.none(), BargeIn.manual()):
        for played in (0, 500, 10_000):
            assert automatic_trigger(config, played, activity) is None


def test_immediate_triggers_on_voice_activity_without_text() -> None:
    assert automatic_trigger(BargeIn.immediate(), 0, SPEAKING) == "vad"
    assert automatic_trigger(BargeIn.immediate(), 0, QUIET) is None


def test_immediate_also_triggers_on_a_first_partial_when_no_vad_is_available() -> None:
    assert automatic_trigger(BargeIn.immediate(), 0, words(1, speaking=False)) == "transcript"


@pytest.mark.parametrize(("played", "expected"), [(0, None), (499, None), (500, "vad"), (3000, "vad")])
def test_immediate_respects_the_protection_period(played: int, expected: str | None) -> None:
    assert automatic_trigger(BargeIn.immediate(allow_after_ms=500), played, SPEAKING) == expected


@pytest.mark.parametrize(("characters", "expected"), [(0, None), (2, None), (3, "transcript"), (30, "transcript")])
def test_minimum_characters_counts_partial_text(characters: int, expected: str | None) -> None:
    assert automatic_trigger(BargeIn.min_characters(3), 0, words(characters)) == expected


def test_minimum_characters_ignores_voice_activity_alone() -> None:
    assert automatic_trigger(BargeIn.min_characters(1), 1000, SPEAKING) is None


def test_minimum_characters_with_protection_fires_once_the_period_is_over() -> None:
    config = BargeIn.min_characters(5, allow_after_ms=2000)
    assert automatic_trigger(config, 1980, words(12)) is None
    assert automatic_trigger(config, 2000, words(12)) == "transcript"
