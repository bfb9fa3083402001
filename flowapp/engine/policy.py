"""The barge-in and pause policy: from the item's barge-in config and the caller's activity, what to do now.

Pure: no clock, no audio, no I/O; times come in as numbers (how much of the item has played, how long the
caller has spoken or been quiet, how long playback has been held). The engine asks once per frame and
applies the decision. The protocol's rule (`bargein.automatic_trigger`) decides whether and from when an
item may be interrupted; the turn-handling options refine how: in `adaptive` mode, or with
`resume_false_interruption`, voice activity first pauses the item, and the judgement (`interruption.judge`)
then confirms the interruption or resumes playback.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowapp.engine.bargein import CallerActivity, Trigger, automatic_trigger, key_press_interrupts
from flowapp.engine.interruption import Candidate, Verdict, judge
from flowapp.engine.turns import InterruptionOptions
from flowapp.protocol.actions import BargeIn


@dataclass(frozen=True)
class Interrupt:
    """Stop the item now, for good, with the rest of its reply."""

    trigger: Trigger


@dataclass(frozen=True)
class Pause:
    """Hold the item: the caller may be interrupting, later frames confirm or resume."""

    trigger: Trigger


@dataclass(frozen=True)
class Confirm:
    """The held item was interrupted after all: stop it for good, as of the moment it was held."""

    trigger: Trigger
    at_ms: int


@dataclass(frozen=True)
class Resume:
    """The held item plays on: the caller was listening (`backchannel`, with its words) or it was noise."""

    backchannel: bool
    text: str


@dataclass(frozen=True)
class Hold:
    """Playback held on caller activity, waiting to learn whether it was a real interruption."""

    at_ms: int
    trigger: Trigger
    baseline_chars: int
    """Characters of the caller's turn said before the held item began: they are not the interruption's."""


def may_interrupt(barge_in: BargeIn, options: InterruptionOptions) -> bool:
    """The caller's voice may stop this item at all (some time after its `allow_after_ms`)."""
    return options.enabled and barge_in.strategy in ("immediate", "minimum_characters")


def weighs_words(barge_in: BargeIn, played_ms: int, options: InterruptionOptions) -> bool:
    """Adaptive mode judges what the caller says and how it sounds, once the item may be interrupted."""
    return options.mode == "adaptive" and may_interrupt(barge_in, options) and played_ms >= barge_in.allow_after_ms


def while_playing(
    barge_in: BargeIn,
    played_ms: int,
    caller: CallerActivity,
    options: InterruptionOptions,
    heard: Candidate | None = None,
) -> Interrupt | Pause | None:
    """What to do about an item that plays on.

    `heard` is the caller as the judgement sees it; it is needed exactly when `weighs_words` says so (the
    engine describes the caller only then), and ignored otherwise.
    """
    if not options.enabled:
        return None
    trigger = automatic_trigger(barge_in, played_ms, caller)
    if weighs_words(barge_in, played_ms, options):
        if heard is None:
            raise ValueError("adaptive mode needs the caller's words and sound to decide (`heard`)")
        verdict = judge(heard, options)
        if verdict == "interrupt" and trigger is None:
            trigger = "transcript"
        elif verdict == "backchannel" and trigger == "transcript":
            trigger = None
        elif verdict == "resume":
            trigger = None  # noise the judge has already ridden out, or fillers (see interruption.py)
    if trigger is None:
        return None
    if options.pauses_first and trigger == "vad":
        return Pause(trigger)
    return Interrupt(trigger)


def while_held(
    hold: Hold, heard: Candidate, options: InterruptionOptions, overrule: Verdict | None = None
) -> Confirm | Resume | None:
    """What to do about a held item: confirm the interruption, resume, or (None) keep waiting.

    `overrule` is the app's own verdict (its interruption hook), when it gave one.
    """
    verdict = overrule if overrule is not None else judge(heard, options)
    if verdict == "interrupt":
        return Confirm(hold.trigger, hold.at_ms)
    if verdict in ("backchannel", "resume"):
        return Resume(backchannel=verdict == "backchannel", text=heard.text)
    return None


def on_key_press(barge_in: BargeIn, played_ms: int, options: InterruptionOptions) -> Interrupt | None:
    if options.enabled and options.dtmf and key_press_interrupts(barge_in, played_ms):
        return Interrupt("dtmf")
    return None


def wants_words(barge_in: BargeIn, played_ms: int, options: InterruptionOptions, *, held: bool) -> bool:
    """A decision hangs on what the caller is saying: a held item, or an item only words can interrupt."""
    if not options.enabled:
        return False
    if held:
        return True
    if played_ms < barge_in.allow_after_ms:
        return False
    return barge_in.strategy == "minimum_characters" or weighs_words(barge_in, played_ms, options)
