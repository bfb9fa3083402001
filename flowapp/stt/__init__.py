"""Speech recognition: timed partial/final transcripts from 8 kHz call audio."""

from __future__ import annotations

from flowapp.stt.base import ScriptedRecognizer, StreamingRecognizer, Transcript, count_characters

__all__ = ["ScriptedRecognizer", "StreamingRecognizer", "Transcript", "count_characters", "make_recognizer"]

RECOGNIZERS = ("pocketsphinx",)


def make_recognizer(name: str | None) -> StreamingRecognizer | None:
    """Pick a recognizer by config name; engines are imported lazily since they are optional extras."""
    if name is None:
        return None
    if name == "pocketsphinx":
        from flowapp.stt.pocketsphinx import PocketsphinxRecognizer

        return PocketsphinxRecognizer()
    raise ValueError(f"unknown recognizer {name!r}; choose one of {list(RECOGNIZERS)} or None")
