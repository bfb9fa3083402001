"""Shared fixtures: `live_server` runs a real uvicorn server on loopback for end-to-end tests."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from starlette.routing import BaseRoute

from flowapp.app import FlowApp
from flowapp.server import create_server, uvicorn_config
from flowapp.settings import ServerSettings

os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="flowapp-tests-state-")
"""Servers keep their live-call journal in a state directory of this test run, never the user's."""
atexit.register(shutil.rmtree, os.environ["XDG_STATE_HOME"], True)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A command run in-process (`cli.main`) points the root logger at the stderr of its test, which pytest
    closes when the test ends: a thread that logs later would then fail to write."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@dataclass
class LiveServer:
    base_url: str
    ws_url: str


StartServer = Callable[..., LiveServer]


@pytest.fixture
def live_server() -> Iterator[StartServer]:
    """`live_server(app, settings=None, extra_routes=(), **uvicorn_options)` serves the app on a free loopback port
    until the test ends."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(
        app: FlowApp, settings: ServerSettings | None = None, extra_routes: Sequence[BaseRoute] = (), **options: Any
    ) -> LiveServer:
        settings = settings or ServerSettings()
        config = uvicorn_config(
            create_server(app, settings, extra_routes=extra_routes),
            settings,
            host="127.0.0.1",
            port=0,
            log_config=None,
            log_level="warning",
            **options,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        return LiveServer(base_url=f"http://127.0.0.1:{port}", ws_url=f"ws://127.0.0.1:{port}")

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)
