"""The server internals flowapp's own protocols build on, and whether the installed versions still have them.

`DirectWebSocketProtocol` (direct.py) and `GuardedHttpProtocol` (connections.py) subclass uvicorn protocol
classes that are not public API, and drive websockets' sans-I/O connection from inside them. pyproject.toml
pins uvicorn below its next minor version; this check covers the installs that ignore the pin. When something
moved, the server warns and serves with uvicorn's stock protocols (plain ASGI media, no header deadline or
connection cap) rather than failing on its first connection.
"""

from __future__ import annotations

import importlib
from typing import Any

WS_MODULE = "uvicorn.protocols.websockets.websockets_sansio_impl"
HTTP_MODULE = "uvicorn.protocols.http.httptools_impl"

REQUIRED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        WS_MODULE,
        "WebSocketsSansIOProtocol",
        (
            "data_received",
            "handle_connect",
            "send_receive_event_to_app",
            "handle_close",
            "connection_lost",
            "conn",
            "queue",
            "frames",
            "curr_msg_data_type",
            "handshake_initiated",
            "scope",
            "transport",
            "loop",
            "close_sent",
            "close_timer",
            "close_timeout",
            "disconnected",
            "read_paused",
        ),
    ),
    (
        HTTP_MODULE,
        "HttpToolsProtocol",
        (
            "connection_made",
            "connection_lost",
            "on_message_begin",
            "on_headers_complete",
            "on_response_complete",
            "connections",
            "cycle",
            "transport",
            "server_state",
            "loop",
        ),
    ),
    ("websockets.protocol", "Protocol", ("max_message_size", "expect_continuation_frame", "state", "send_close")),
    ("websockets.server", "ServerProtocol", ("available_extensions", "data_to_send")),
)
"""(module, class, names): the methods flowapp overrides or calls and the attributes it reads or sets."""


def missing_internals() -> list[str]:
    """What flowapp's protocols use but the installed uvicorn or websockets lacks, as `module.Class.name`."""
    missing: list[str] = []
    for module, name, attributes in REQUIRED:
        cls = _find(module, name)
        if cls is None:
            missing.append(f"{module}.{name}")
            continue
        known = _names_used_by(cls)
        missing += [f"{module}.{name}.{a}" for a in attributes if not hasattr(cls, a) and a not in known]
    return missing


def base_class(module: str, name: str) -> type[Any]:
    """The named class, or an empty stand-in when it has moved: the subclass can still be defined (and imported),
    and `missing_internals` keeps it out of service."""
    cls = _find(module, name)
    return cls if cls is not None else type(name, (), {})


def _find(module: str, name: str) -> type[Any] | None:
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if isinstance(found, type) else None


def _names_used_by(cls: type[Any]) -> set[str]:
    """Every name the class's own methods use: instance attributes (set in `__init__` and elsewhere) among them."""
    names: set[str] = set()
    for klass in cls.__mro__[:-1]:
        for member in vars(klass).values():
            code = getattr(getattr(member, "__func__", member), "__code__", None)
            if code is not None:
                names.update(code.co_names)
    return names
