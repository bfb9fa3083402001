"""Errors raised by the audio layer."""


class AudioFormatError(ValueError):
    """Audio bytes that cannot be turned into 8 kHz PCM; the message names the offending field."""
