"""Half-open connections against `flowapp serve` under a small open-file limit: how long until the server
closes them, whether a call in progress keeps being answered, and when `/healthz` answers again.

    .venv/bin/python -m benchmarks.half_open [--connections 3000] [--fd-limit 1024]

Half of the connections stop inside their headers, half send `Content-Length: 100` and 10 bytes; the server
runs with its default header (10 s) and body (30 s) timeouts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import httpx
from websockets.sync.client import ClientConnection, connect

PARTIAL_HEADERS = b"POST /webhook HTTP/1.1\r\nHost: x\r\n"
SHORT_BODY = b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def healthz(base: str) -> str:
    try:
        return str(httpx.get(base + "/healthz", timeout=3).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def answered(ws: ClientConnection, text: str) -> bool:
    ws.send(json.dumps({"type": "user_speak", "text": text, "session": {"id": "live-1"}}))
    try:
        return bool(ws.recv(timeout=5))
    except TimeoutError:
        return False


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096, socket.MSG_DONTWAIT) is not None
    except BlockingIOError:
        return False
    except OSError:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--fd-limit", type=int, default=1024)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FLOWAPP_RECOGNIZER": "none", "FLOWAPP_VAD_DETECTOR": "webrtc"}
    serve = f"ulimit -n {args.fd_limit} && exec {sys.executable} -m flowapp serve examples.minimal:app --port {port}"
    server = subprocess.Popen(
        ["bash", "-c", serve + " --log-level warning"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while healthz(base) != "200":
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send(json.dumps({"type": "session_start", "session": {"id": "live-1"}}))
            ws.recv(timeout=5)
            started = time.monotonic()
            sockets = []
            for k in range(args.connections):
                sock = socket.socket()
                sock.settimeout(5)
                try:
                    sock.connect(("127.0.0.1", port))
                    sock.sendall(SHORT_BODY if k % 2 else PARTIAL_HEADERS)
                except OSError:
                    pass
                sockets.append(sock)
            print(f"opened {args.connections} half-open connections in {time.monotonic() - started:.1f} s")
            print(f"/healthz while they are open: {healthz(base)}")
            print(f"live /ws call answered while they are open: {answered(ws, 'still there?')}")
            while (still_open := sum(not closed_by_server(s) for s in sockets)) and time.monotonic() - started < 120:
                time.sleep(0.5)
            print(f"open after {time.monotonic() - started:.1f} s: {still_open} of {args.connections}")
            print(f"/healthz after: {healthz(base)}")
            print(f"live /ws call answered after: {answered(ws, 'and now?')}")
            for sock in sockets:
                sock.close()
    finally:
        server.terminate()
        stderr = server.communicate(timeout=10)[1]
    print(f"server log: {len(stderr.splitlines())} lines, {stderr.count('Traceback')} tracebacks")


if __name__ == "__main__":
    main()
