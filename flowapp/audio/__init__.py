"""Telephony audio for flowapp: 8 kHz int16 mono frames, G.711, WAV, resampling, mixing, VAD and TTS."""

from flowapp.audio.errors import AudioFormatError
from flowapp.audio.frames import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, duration_ms, silence, split_frames
from flowapp.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from flowapp.audio.mixer import LoopingSource, add_noise_at_snr, line_noise, mix, rms_dbfs
from flowapp.audio.resample import StreamResampler, resample
from flowapp.audio.tts import CachedTts, EspeakTts, TextToSpeech, TtsError, TtsRegistry, TtsSelection
from flowapp.audio.vad import (
    CascadeDetector,
    SileroDetector,
    SpeechDetector,
    VadConfig,
    VadEvent,
    VadTracker,
    WebRtcDetector,
    make_detector,
)
from flowapp.audio.wav import decode_base64_wav, decode_wav, encode_wav, read_wav

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioFormatError",
    "CachedTts",
    "CascadeDetector",
    "EspeakTts",
    "LoopingSource",
    "SileroDetector",
    "SpeechDetector",
    "StreamResampler",
    "TextToSpeech",
    "TtsError",
    "TtsRegistry",
    "TtsSelection",
    "VadConfig",
    "VadEvent",
    "VadTracker",
    "WebRtcDetector",
    "add_noise_at_snr",
    "alaw_decode",
    "alaw_encode",
    "decode_base64_wav",
    "decode_wav",
    "duration_ms",
    "encode_wav",
    "line_noise",
    "make_detector",
    "mix",
    "read_wav",
    "resample",
    "rms_dbfs",
    "silence",
    "split_frames",
    "ulaw_decode",
    "ulaw_encode",
]
