"""What one rendered item (`speak`, `audio`, `mix_audio`) may cost.

A few kilobytes of action can declare hours of audio: a WAV that says 1 Hz, a `speak` of a whole book.
Rendering those would allocate gigabytes, so they are refused against what they declare, before any
sample is decoded or resampled, with an error that names the bound.
"""

from __future__ import annotations

from flowapp.audio.errors import AudioFormatError

MAX_ITEM_SECONDS = 600
"""Longest audio one item may render to (10 minutes, 9.6 MB at 8 kHz int16)."""

MAX_REPLY_SECONDS = 2 * MAX_ITEM_SECONDS
"""Longest audio one reply (or one push) may render to, all its items together: without it, a reply of
many maximal items would hold gigabytes until it is played."""

MAX_QUEUED_SECONDS = 2 * MAX_REPLY_SECONDS
"""Audio one call may hold waiting to play: each push within its bounds, many pushes would still add up."""

MIN_WAV_RATE = 4_000
MAX_WAV_RATE = 384_000
"""Sample rates a WAV may declare; outside them it is not telephone audio but a way to inflate the output."""


class LimitExceeded(AudioFormatError):
    """An item that would cost more than a bound allows; ``limit`` names the bound."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(f"{message} ({limit})")
        self.limit = limit


def check_wav_rate(rate: int) -> None:
    if not MIN_WAV_RATE <= rate <= MAX_WAV_RATE:
        raise LimitExceeded(
            f"WAV declares {rate} Hz; sample rates from {MIN_WAV_RATE} to {MAX_WAV_RATE} Hz are accepted",
            "MIN_WAV_RATE..MAX_WAV_RATE",
        )


def check_duration(seconds: float, what: str, max_seconds: float = MAX_ITEM_SECONDS) -> None:
    if seconds > max_seconds:
        raise LimitExceeded(
            f"{what} lasts {seconds:.0f} s; one item may last at most {max_seconds:g} s", "MAX_ITEM_SECONDS"
        )
