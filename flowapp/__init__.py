"""flowapp: phone-call voice apps in Python, with a local 8 kHz playback engine that enforces barge-in."""

from flowapp.app import FlowApp, HandlerResult, to_actions
from flowapp.protocol.actions import (
    Audio,
    BargeIn,
    BargeInNow,
    CommitUserTurn,
    ConfigureTranscription,
    ConfigureTurnHandling,
    Hangup,
    MixAudio,
    Speak,
    Transfer,
    TtsConfig,
    VadConfig,
)
from flowapp.protocol.events import (
    AssistantSpeak,
    AssistantSpeechEnded,
    AssistantSpeechPaused,
    AssistantSpeechResumed,
    DtmfReceived,
    SessionEnd,
    SessionInfo,
    SessionStart,
    UserBackchannel,
    UserInputTimeout,
    UserSpeak,
    UserSpeechStarted,
    UserTurnLimit,
)
from flowapp.session import Session

__version__ = "0.1.0"

__all__ = [
    "AssistantSpeak",
    "AssistantSpeechEnded",
    "AssistantSpeechPaused",
    "AssistantSpeechResumed",
    "Audio",
    "BargeIn",
    "BargeInNow",
    "CommitUserTurn",
    "ConfigureTranscription",
    "ConfigureTurnHandling",
    "DtmfReceived",
    "FlowApp",
    "HandlerResult",
    "Hangup",
    "MixAudio",
    "Session",
    "SessionEnd",
    "SessionInfo",
    "SessionStart",
    "Speak",
    "Transfer",
    "TtsConfig",
    "UserBackchannel",
    "UserInputTimeout",
    "UserSpeak",
    "UserSpeechStarted",
    "UserTurnLimit",
    "VadConfig",
    "__version__",
    "to_actions",
]
