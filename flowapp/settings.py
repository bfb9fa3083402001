"""Server settings: secrets and limits, from code, the environment or CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from flowapp.stt import check_recognizer

MIB = 1024 * 1024
KIB = 1024

_TRUE = {"1", "true", "yes", "on"}


class SettingsError(ValueError):
    """An environment variable holds a value flowapp cannot use."""


@dataclass
class ServerSettings:
    """What the HTTP/WebSocket server enforces. With no secret set, a transport accepts any caller."""

    api_token: str | None = None
    """Shared secret expected in the `X-API-TOKEN` header (webhook and WebSocket)."""
    webhook_secret: str | None = None
    """Key for the `x-sipgate-signature: sha256=<hex>` HMAC over the raw webhook body."""
    control_token: str | None = None
    """Bearer token for the `/v1` control API; without it the control API is off unless `insecure_control`."""
    insecure_control: bool = False
    """Serve the control API without a token (trusted networks only)."""
    max_body_bytes: int = 1 * MIB
    max_ws_message_bytes: int = 256 * KIB
    max_media_message_bytes: int = 64 * KIB
    """Largest carrier media-stream message; a 20 ms media frame is about 400 bytes."""
    media_jitter_frames: int = 5
    """Inbound 20 ms frames a media call buffers; beyond that the oldest are dropped (a stream ahead of time)."""
    recognizer: str | None = "local"
    """Speech recognizer for media calls: `local` (the built-in Whisper), `whisper:<model>`, `pocketsphinx`,
    or None for none."""
    recognizer_workers: int = 1
    """Threads that decode for all media calls together; each takes about one core while it decodes."""
    vad_detector: str | None = None
    """Speech detector for media calls (`webrtc`, `silero`, `cascade`); the engine's default when unset."""
    app_url: str | None = None
    """A remote app's webhook URL: media calls are answered by it instead of the in-process app."""
    app_api_token: str | None = None
    """`X-API-TOKEN` sent to the remote app."""
    app_webhook_secret: str | None = None
    """Key for the `x-sipgate-signature` flowapp puts on each event it posts to the remote app."""
    app_timeout_seconds: float = 1.0
    """Deadline for one remote-app answer; past it the call goes on with the fallback."""
    loop_stall_seconds: float = 0.25
    """The event loop not ticking for this long is logged, naming the handler that blocked it."""
    host: str = "127.0.0.1"
    port: int = 8000

    @property
    def control_enabled(self) -> bool:
        return self.control_token is not None or self.insecure_control

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Read the `FLOWAPP_*` variables; unset or empty variables keep the defaults."""
        env = os.environ if environ is None else environ
        defaults = cls()

        def text(name: str) -> str | None:
            return env.get(name) or None

        def number(name: str, default: int) -> int:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
            if value <= 0:
                raise SettingsError(f"{name} must be positive, got {value}")
            return value

        def seconds(name: str, default: float) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
            if not value > 0:
                raise SettingsError(f"{name} must be positive, got {value}")
            return value

        def recognizer(raw: str | None) -> str | None:
            try:
                return check_recognizer(raw)
            except ValueError as exc:
                raise SettingsError(f"FLOWAPP_RECOGNIZER: {exc}") from None

        return cls(
            api_token=text("FLOWAPP_API_TOKEN"),
            webhook_secret=text("FLOWAPP_WEBHOOK_SECRET"),
            control_token=text("FLOWAPP_CONTROL_TOKEN"),
            insecure_control=(text("FLOWAPP_INSECURE_CONTROL") or "").lower() in _TRUE,
            max_body_bytes=number("FLOWAPP_MAX_BODY_BYTES", defaults.max_body_bytes),
            max_ws_message_bytes=number("FLOWAPP_MAX_WS_MESSAGE_BYTES", defaults.max_ws_message_bytes),
            max_media_message_bytes=number("FLOWAPP_MAX_MEDIA_MESSAGE_BYTES", defaults.max_media_message_bytes),
            media_jitter_frames=number("FLOWAPP_MEDIA_JITTER_FRAMES", defaults.media_jitter_frames),
            recognizer=recognizer(text("FLOWAPP_RECOGNIZER") or defaults.recognizer),
            recognizer_workers=number("FLOWAPP_RECOGNIZER_WORKERS", defaults.recognizer_workers),
            vad_detector=text("FLOWAPP_VAD_DETECTOR"),
            app_url=text("FLOWAPP_APP_URL"),
            app_api_token=text("FLOWAPP_APP_API_TOKEN"),
            app_webhook_secret=text("FLOWAPP_APP_WEBHOOK_SECRET"),
            app_timeout_seconds=seconds("FLOWAPP_APP_TIMEOUT", defaults.app_timeout_seconds),
            loop_stall_seconds=seconds("FLOWAPP_LOOP_STALL_SECONDS", defaults.loop_stall_seconds),
            host=text("FLOWAPP_HOST") or defaults.host,
            port=number("FLOWAPP_PORT", defaults.port),
        )
