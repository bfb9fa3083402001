"""The barge-in and pause policy: from the item's barge-in config and the caller's activity, what to do now.

Pure: no clock, no audio, no I/O; times come in as numbers (how much of the item has played, how long the
caller has spoken or been quiet, how long playback has been held). The engine applies the decisions.
"""

from __future__ import annotations

from flowapp.engine.turns import InterruptionOptions
from flowapp.protocol.actions import BargeIn


def may_interrupt(barge_in: BargeIn, options: InterruptionOptions) -> bool:
    """The caller's voice may stop this item at all (some time after its `allow_after_ms`)."""
    return options.enabled and barge_in.strategy in ("immediate", "minimum_characters")
