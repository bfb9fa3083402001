"""Server settings: secrets and limits, from code, the environment or CLI flags, validated before the server starts."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars
from redis.asyncio.connection import parse_url

from flowapp.stt import check_recognizer

MIB = 1024 * 1024
KIB = 1024

ENV_PREFIX = "FLOWAPP_"
Detector = Literal["webrtc", "silero", "cascade"]
DETECTORS: tuple[str, ...] = get_args(Detector)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_OFF = {"off", "none", "0", "false", "no"}


def default_journal_dir() -> str:
    """`$XDG_STATE_HOME/flowapp/live-calls` (`~/.local/state/...` when unset): state that outlives a process."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "flowapp", "live-calls")


class SettingsError(ValueError):
    """A setting holds a value flowapp cannot use; `problems` maps each bad setting's field name to the reason."""

    def __init__(self, problems: Mapping[str, str], label: Callable[[str], str] | None = None) -> None:
        """`label(field)` names a setting as the user set it; the default is its environment variable."""
        self.problems = dict(problems)
        name = label or env_name
        super().__init__("; ".join(f"{name(field)}: {reason}" for field, reason in self.problems.items()))


def _strict_bool(value: object) -> object:
    """Only the usual spellings: `enabled` or `ture` in the environment is a mistake, not a silent false."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"must be one of true/false, 1/0, yes/no, on/off, got {value!r}")
    return value


def _origins(value: object) -> object:
    """Comma-separated in the environment; each entry an origin as browsers send it (`https://host[:port]`)."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple):
        return value
    listed = tuple(str(o).strip().rstrip("/").lower() for o in value if str(o).strip())
    for origin in listed:
        if not origin.startswith(("http://", "https://")):
            raise ValueError(f"{origin!r} is not an origin like https://host")
    return listed


def _folder_or_off(value: object) -> object:
    if isinstance(value, str):
        return None if value.strip().lower() in _OFF else os.path.expanduser(value)
    return value


def _journal(value: object) -> object:
    if isinstance(value, str):
        return None if value.strip().lower() in _OFF else os.path.expanduser(value)
    return value


StrictFlag = Annotated[bool, BeforeValidator(_strict_bool)]
Positive = Annotated[int, Field(gt=0)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ServerSettings(BaseSettings):
    """What the HTTP/WebSocket server enforces. With no secret set, a transport accepts any caller.

    `ServerSettings(...)` takes exactly what the code passes (the environment is read only by `from_env`), and
    every value is checked on construction and on assignment, so a bad setting stops the server before it starts.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        validate_assignment=True,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
    )

    api_token: str | None = None
    """Shared secret expected in the `X-API-TOKEN` header (webhook and WebSocket)."""
    webhook_secret: str | None = None
    """Key for the `x-sipgate-signature: sha256=<hex>` HMAC over the raw webhook body."""
    control_token: str | None = None
    """Bearer token for the `/v1` control API; without it the control API is off unless `insecure_control`."""
    insecure_control: StrictFlag = False
    """Serve the control API without a token (trusted networks only)."""
    max_body_bytes: Positive = 1 * MIB
    max_ws_message_bytes: Positive = 256 * KIB
    max_media_message_bytes: Positive = 64 * KIB
    """Largest carrier media-stream message; a 20 ms media frame is about 400 bytes."""
    media_jitter_frames: Positive = 5
    """Inbound 20 ms frames a media call buffers; beyond that the oldest are dropped (a stream ahead of time)."""
    recognizer: str | None = "local"
    """Speech recognizer for media calls: `local` (the built-in Whisper), `whisper:<model>`, `pocketsphinx`,
    or None for none."""
    recognizer_workers: Positive = 1
    """Threads that decode for all media calls together; each takes about one core while it decodes."""
    vad_detector: Detector | None = None
    """Speech detector for media calls (`webrtc`, `silero`, `cascade`); the engine's default when unset."""
    app_url: str | None = None
    """A remote app's webhook URL: media calls are answered by it instead of the in-process app."""
    app_api_token: str | None = None
    """`X-API-TOKEN` sent to the remote app."""
    app_webhook_secret: str | None = None
    """Key for the `x-sipgate-signature` flowapp puts on each event it posts to the remote app."""
    app_timeout_seconds: Seconds = Field(
        default=1.0, validation_alias=AliasChoices("app_timeout_seconds", ENV_PREFIX + "APP_TIMEOUT")
    )
    """Deadline for one remote-app answer; past it the call goes on with the fallback."""
    loop_stall_seconds: Seconds = 0.25
    """The event loop not ticking for this long is logged, naming the handler that blocked it."""
    header_timeout_seconds: Seconds = Field(
        default=10.0, validation_alias=AliasChoices("header_timeout_seconds", ENV_PREFIX + "HEADER_TIMEOUT")
    )
    """Time a connection has to deliver a request's headers (from connecting, or from its first byte on a
    kept-alive connection); past it the connection is closed."""
    body_timeout_seconds: Seconds = Field(
        default=30.0, validation_alias=AliasChoices("body_timeout_seconds", ENV_PREFIX + "BODY_TIMEOUT")
    )
    """Time a request's body has to arrive once the app reads it; past it the answer is 408."""
    allowed_origins: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_origins)] = ()
    """Browser origins (`https://console.example.com`) that may post and open WebSockets; a request carrying
    any other `Origin` header, or `Sec-Fetch-Site: cross-site`, is refused."""
    journal_dir: Annotated[str | None, BeforeValidator(_journal)] = Field(
        default_factory=default_journal_dir, validation_alias=AliasChoices("journal_dir", ENV_PREFIX + "JOURNAL")
    )
    """Where the live-call journal lives, so a restarted instance can end the calls a killed one lost;
    None (`off`) turns it off. Instances on the same host and port share one deployment's journal."""
    redis_url: str | None = None
    """`redis://[:password@]host:6379/0` (or `rediss://`, `unix://`): instances sharing it share webhook calls'
    session state, list each other's live calls and route control to the instance holding a call."""
    max_connections: Positive = 1000
    """Open connections (HTTP and WebSocket) beyond which new ones get 503 and are closed; calls in progress
    go on. Lowered at startup to fit the open-file limit."""
    record_dir: Annotated[str | None, BeforeValidator(_folder_or_off)] = None
    """Record every media call into this folder (one folder per call: the caller's voice, the assistant's
    audio, the timeline and the settings); None (the default, or `off`) records nothing."""
    record_keep: Annotated[int, Field(gt=0, le=1_000_000)] = 100
    """Recordings kept in `record_dir`; the oldest are deleted when a new call starts."""
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=1, le=65535)

    @property
    def control_enabled(self) -> bool:
        return self.control_token is not None or self.insecure_control

    @field_validator("recognizer", mode="before")
    @classmethod
    def _known_recognizer(cls, value: object) -> object:
        """A known name, whose optional package is installed: else every media call would fail, not the start."""
        if value is not None and not isinstance(value, str):
            return value
        name = check_recognizer(value)
        if name == "pocketsphinx":
            try:
                importlib.import_module("pocketsphinx")
            except ImportError:
                raise ValueError(
                    "recognizer 'pocketsphinx' needs the pocketsphinx package: pip install 'flowapp[pocketsphinx]'"
                ) from None
        return name

    @field_validator("app_url")
    @classmethod
    def _app_url_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError(f"must start with http://, https://, ws:// or wss://, got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must start with redis://, rediss:// or unix://, got {redact_url(value)!r}")
        try:
            parse_url(value)
        except ValueError as exc:
            raise ValueError(f"{exc} in {redact_url(value)!r}") from None
        return value

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_problems(exc)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise SettingsError(_problems(exc)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Read the `FLOWAPP_*` variables (unset or empty ones keep the defaults); `overrides` win over them."""
        found = _EnvironSource(cls, os.environ if environ is None else environ)()
        values = {_FIELD_BY_KEY.get(key, key): value for key, value in found.items()}
        return cls(**{**values, **overrides})


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping, so tests and callers need not touch `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


_ENV_NAMES = {
    "app_timeout_seconds": ENV_PREFIX + "APP_TIMEOUT",
    "header_timeout_seconds": ENV_PREFIX + "HEADER_TIMEOUT",
    "body_timeout_seconds": ENV_PREFIX + "BODY_TIMEOUT",
    "journal_dir": ENV_PREFIX + "JOURNAL",
}
_FIELD_BY_KEY = {alias: field for field, alias in _ENV_NAMES.items()} | {
    alias.lower(): field for field, alias in _ENV_NAMES.items()
}


def redact_url(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}://{user + ':' if user else ':'}***@{host}"


def env_name(field: str) -> str:
    """The environment variable that sets a `ServerSettings` field."""
    return _ENV_NAMES.get(field, ENV_PREFIX + field.upper())


def _problems(exc: ValidationError) -> dict[str, str]:
    problems: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        key = str(error["loc"][0]) if error["loc"] else "settings"
        field = _FIELD_BY_KEY.get(key, key)
        if error["type"] == "value_error":
            reason = str(error["msg"]).removeprefix("Value error, ")
        else:
            reason = f"{str(error['msg']).lower()}, got {error['input']!r}"
        problems.setdefault(field, reason)
    return problems
