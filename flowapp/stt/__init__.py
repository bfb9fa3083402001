"""Speech recognition: timed partial/final transcripts from 8 kHz call audio."""

from __future__ import annotations

from flowapp.stt.base import FrameRecognizer, ScriptedRecognizer, StreamingRecognizer, Transcript, count_characters

__all__ = [
    "RECOGNIZERS",
    "FrameRecognizer",
    "ScriptedRecognizer",
    "StreamingRecognizer",
    "Transcript",
    "check_recognizer",
    "count_characters",
    "make_recognizer",
]

RECOGNIZERS = ("local", "whisper:<model>", "pocketsphinx", "none")
"""`local` is flowapp's best built-in recognizer (Whisper tiny.en, shipped weights); `whisper:<model>` names another
faster-whisper model (`small.en`, a hub repository, or a local directory); `none` turns recognition off."""


def check_recognizer(name: str | None) -> str | None:
    """The recognizer name as the engine uses it (None: off); a clear error for a name flowapp does not know."""
    if name is None or name == "none":
        return None
    if name in ("local", "pocketsphinx") or (name.startswith("whisper:") and len(name) > len("whisper:")):
        return name
    raise ValueError(f"unknown recognizer {name!r}; choose one of: {', '.join(RECOGNIZERS)}")


def make_recognizer(name: str | None, *, live: bool = False, workers: int = 1) -> StreamingRecognizer | None:
    """A recognizer for one call. `live`: decodes run on the process's shared pool at the pace of the call;
    otherwise they run inline on call time, so a simulation replays exactly."""
    name = check_recognizer(name)
    if name is None:
        return None
    if name == "pocketsphinx":
        from flowapp.stt.pocketsphinx import PocketsphinxRecognizer

        return PocketsphinxRecognizer()
    from flowapp.stt.local import InlineDecoder, LocalRecognizer, shared_pool
    from flowapp.stt.whisper import BUILTIN, shared_transcriber

    model = BUILTIN if name == "local" else name.removeprefix("whisper:")
    if live:
        return LocalRecognizer(shared_pool(model, workers))
    return LocalRecognizer(InlineDecoder(shared_transcriber(model)))
