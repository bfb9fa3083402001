"""The barge-in rules of the protocol, as one pure function of the moment.

No clock, no audio, no I/O: the engine asks "may this item be interrupted now, and by what?" once per
frame. Because the question is asked every frame, a caller who is still speaking (or whose partial is
already long enough) when the `allow_after_ms` protection period ends interrupts at exactly that frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from flowapp.protocol.actions import BargeIn

Trigger = Literal["vad", "transcript", "manual", "dtmf"]


@dataclass(frozen=True)
class CallerActivity:
    """What the caller is doing at this moment, as far as this playback item is concerned."""

    speaking: bool
    """Voice activity right now (onset confirmed, not yet ended)."""
    characters: int
    """Non-space characters of the caller's partial transcript for speech that began during this item."""


def automatic_trigger(config: BargeIn, played_ms: int, caller: CallerActivity) -> Trigger | None:
    """The trigger that interrupts the item now, or None.

    `played_ms` is how much of the item has played; the protection period counts from the item's start.
    `manual` and `none` never trigger automatically: a `barge_in` action or the control API stops them.
    """
    if config.strategy in ("none", "manual"):
        return None
    if played_ms < config.allow_after_ms:
        return None
    if config.strategy == "immediate":
        if caller.speaking:
            return "vad"
        if caller.characters > 0:
            return "transcript"
        return None
    if caller.characters >= config.minimum_characters:
        return "transcript"
    return None


def key_press_interrupts(config: BargeIn, played_ms: int) -> bool:
    """A key press is the caller answering a menu: it stops what their voice may stop, from the same moment."""
    return config.strategy in ("immediate", "minimum_characters") and played_ms >= config.allow_after_ms
