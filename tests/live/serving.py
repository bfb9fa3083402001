"""A real `flowapp serve` in a subprocess, for the tests that kill an instance (SIGKILL) and start another."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServeProcess:
    """`flowapp serve APP` in `cwd` (where the test wrote the app), without a recognizer, with its own journal."""

    def __init__(self, cwd: Path, app: str, port: int, journal: Path, *args: str, **env: str) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"
        environment = {
            **os.environ,
            "FLOWAPP_JOURNAL": str(journal),
            "FLOWAPP_RECOGNIZER": "none",
            "EVENTS_FILE": str(cwd / "events.jsonl"),
            **env,
        }
        command = [sys.executable, "-m", "flowapp", "serve", app, "--port", str(port), *args]
        self.process = subprocess.Popen(
            command, cwd=cwd, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as http:
            while True:
                try:
                    await http.get(self.base + "/healthz", timeout=1)
                    return
                except httpx.TransportError:
                    assert self.process.poll() is None, self.process.communicate()[1]
                    assert time.monotonic() < deadline, "server did not come up"
                    await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> str:
        """Its log (stderr), once it has shut down."""
        if self.process.poll() is not None:
            return ""
        self.process.terminate()
        return self.process.communicate(timeout=15)[1]
