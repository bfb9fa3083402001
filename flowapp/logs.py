"""Structured logging: every line about a call carries its session id."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, MutableMapping
from typing import Any

# uvicorn adds `color_message`, a copy of the message with terminal colours.
_NOT_FIELDS = {"message", "asctime", "color_message"}
_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | _NOT_FIELDS


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def call_logger(logger: logging.Logger, session_id: str | None, **fields: Any) -> CallLogger:
    return CallLogger(logger, {"session_id": session_id, **fields})


class RepeatLimiter:
    """Caps how often one kind of line is logged, so a peer cannot turn its messages into a flood of logs.

    Each message format gets `burst` lines per `window_seconds`; what is held back after that is counted and
    reported in one line when the window ends or at `flush()` (a connection calls it when it closes).
    """

    def __init__(self, burst: int = 5, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.burst = burst
        self.window_seconds = window_seconds
        self._clock = clock
        self._windows: dict[str, list[Any]] = {}

    def log(self, log: logging.Logger | logging.LoggerAdapter[Any], level: int, msg: str, *args: Any) -> None:
        """Log `msg % args` unless `msg` has had its share; the format string (a constant) is the key."""
        now = self._clock()
        window = self._windows.get(msg)
        if window is None or now - window[0] >= self.window_seconds:
            if window is not None:
                self._report(log, level, msg, window[2])
            window = self._windows[msg] = [now, 0, 0]
        if window[1] < self.burst:
            window[1] += 1
            log.log(level, msg, *args)
        else:
            window[2] += 1

    def flush(self, log: logging.Logger | logging.LoggerAdapter[Any], level: int = logging.WARNING) -> None:
        for msg, window in self._windows.items():
            self._report(log, level, msg, window[2])
        self._windows.clear()

    @staticmethod
    def _report(log: logging.Logger | logging.LoggerAdapter[Any], level: int, msg: str, held: int) -> None:
        if held:
            log.log(level, "%d more lines like %r were not logged", held, msg)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    """`time level logger message key=value ...`: greppable by session id, readable by people."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [stamp, record.levelname.lower(), record.name, record.getMessage()]
        parts += [f"{k}={v}" for k, v in _fields(record).items() if v is not None]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in _fields(record).items() if v is not None})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


_SECRET_QUERY = re.compile(
    r"(?i)([?&][^=&#\s\"]*(?:token|secret|key|pass|pwd|sig|auth|credential)[^=&#\s\"]*=)[^&#\s\"]*"
)
REDACTED = "[redacted]"
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")
"""uvicorn logs each request's path with its query string: the access log, and WebSocket accepts and refusals."""


def redact_query(text: str) -> str:
    """`/media?token=s3cret&x=1` as `/media?token=[redacted]&x=1`: any parameter whose name looks secret."""
    return _SECRET_QUERY.sub(r"\1" + REDACTED, text) if "=" in text else text


class RedactQuerySecrets(logging.Filter):
    """A token in a URL (browsers cannot set headers on a WebSocket) must not end up in a log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_query(record.msg)
        return True


def redact_server_logs() -> None:
    """Put the filter on uvicorn's loggers, once; a logger's filters see only what is logged to it directly."""
    for name in SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQuerySecrets) for f in server_logger.filters):
            server_logger.addFilter(RedactQuerySecrets())


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
