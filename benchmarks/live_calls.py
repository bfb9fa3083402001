"""Live-call benchmark: N simulated carriers stream real speech to one flowapp server on one core.

    python -m benchmarks.live_calls --calls 300 --seconds 20
    python -m benchmarks.live_calls --calls 50,150,300 --seconds 20
    python -m benchmarks.live_calls --calls 300 --vad cascade,webrtc --baseline main --recognizer none
    python -m benchmarks.live_calls --calls 300 --burst --recognizer none

`--vad` and `--baseline` compare in one run, on the same machine load: each detector, and the server of another
git revision (its tree exported to a temporary directory) beside this checkout's. `--recognizer none` keeps
Whisper, which otherwise decodes every utterance on the server's core, out of the media path's figures.

The server (`flowapp serve benchmarks.live_app:app`) runs in a subprocess pinned to CPU 0; the carriers
run in this process, pinned to CPU 1, as raw asyncio protocols (a full WebSocket library per connection
would make the client, not the server, the bottleneck). Each carrier streams real 8 kHz speech at real-time
pace, one 20 ms frame at its own phase, while the bot talks; every utterance barges in.

A few warm-up calls first have the bot's lines synthesized once (espeak-ng would otherwise run on the
server's core in the middle of the measurement).

Reported:
- server CPU (utime + stime from /proc over the steady window), in total and per call, and the system
  share of it (mostly loopback socket work);
- the carriers' own CPU and the p99 lag of their event loop (their timestamps are only as good as that),
  and the time the hypervisor stole from the server's core (on a shared host it decides the tail);
- lateness of outbound frames against their 20 ms schedule: within each run of bot audio (a run ends at
  `clear`), frame k is due at base + 20k ms, base being the run's earliest-arriving frame;
- barge-in latency on the wire, for onsets in the same steady window: from the known speech onset in the
  sent audio to `clear` received, next to the engine's own figure for the same audio (the same app and
  clip through `CallEngine` offline);
- server RSS growth per call.

With `--burst` every call connects at the same instant instead of over a ramp, and the window starts with
the burst: the figures then include the calls' set-up. The callers' speech keeps its spread (the programs
come in 3 s of phases), so a burst of arrivals is not also every caller speaking at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from benchmarks.live_app import WARM_UP_CALLERS
from flowapp.audio.frames import FRAME_SAMPLES, Pcm
from flowapp.audio.g711 import ulaw_encode
from tests.media import asterisk_prompt

FRAME_S = 0.02
CALLER_PROMPTS = ("please-try-again", "all-circuits-busy-now", "queue-thankyou", "vm-enter-num-to-call")
PAUSE_MS = 3000
"""Caller silence between utterances: time for the turn to end and the bot to start again."""
ONSET_LEVEL = 500
"""The known onset of an utterance: its first sample above this magnitude."""
PROGRAM_VARIANTS = 8
BURST_PHASES = 8
BURST_PHASE_MS = 375
"""Calls that arrive together still speak at their own moments: with `--burst` the programs come in this many
phases more, so the callers spread over 3 s as they would over a ramp."""
SERVER_CPU = 0
CLIENT_CPU = 1
ROOT = Path(__file__).resolve().parent.parent


# The caller's audio ------------------------------------------------------------------------------------------


@dataclass
class Program:
    """What one carrier sends: mu-law frames, and the sample where each utterance begins."""

    pcm: Pcm
    onsets: list[int]

    @property
    def frames(self) -> int:
        return len(self.pcm) // FRAME_SAMPLES


def program(variant: int, seconds: float) -> Program:
    """Variants from `PROGRAM_VARIANTS` on are the first ones again, starting `BURST_PHASE_MS` later per round."""
    total = int(seconds * 8000)
    base, phase = variant % PROGRAM_VARIANTS, variant // PROGRAM_VARIANTS
    lead = 8 * (1000 + 125 * base + BURST_PHASE_MS * phase)
    parts: list[Pcm] = [np.zeros(lead, dtype=np.int16)]
    onsets: list[int] = []
    position = lead
    k = base
    while position < total - 8 * 2500:
        clip = asterisk_prompt(CALLER_PROMPTS[k % len(CALLER_PROMPTS)])
        onsets.append(position + int(np.argmax(np.abs(clip.astype(np.int32)) > ONSET_LEVEL)))
        parts += [clip, np.zeros(8 * PAUSE_MS, dtype=np.int16)]
        position += len(clip) + 8 * PAUSE_MS
        k += 1
    pcm = np.concatenate(parts)[:total]
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME_SAMPLES, dtype=np.int16)])
    return Program(pcm, [o for o in onsets if o < len(pcm)])


def ws_frame(payload: bytes) -> bytes:
    """A client text frame. The mask key is zero, so the payload goes as it is (servers accept any key)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


def media_frames(prog: Program) -> list[bytes]:
    out = []
    for k in range(prog.frames):
        payload = base64.b64encode(ulaw_encode(prog.pcm[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES])).decode()
        message = {"event": "media", "streamSid": "MZbench", "media": {"track": "inbound", "payload": payload}}
        out.append(ws_frame(json.dumps(message, separators=(",", ":")).encode()))
    return out


# One carrier connection ----------------------------------------------------------------------------------------


@dataclass
class CallStats:
    index: int
    variant: int
    frames: list[bytes]
    onsets_ms: list[float]
    start: float = 0.0
    sent: int = 0
    send_times: array = field(default_factory=lambda: array("d"))
    runs: list[array] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    closed: bool = False
    close_code: int | None = None


class CarrierLink(asyncio.Protocol):
    """A minimal WebSocket client: handshake, unmasked server frames, close and ping handling."""

    def __init__(self, call: CallStats, host: str) -> None:
        self.call = call
        self.host = host
        self.buffer = bytearray()
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /media HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.call.closed = True
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("closed during the handshake"))

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_json(self, message: dict[str, object]) -> None:
        self.send(ws_frame(json.dumps(message, separators=(",", ":")).encode()))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[:end]:
                self.handshake.set_exception(ConnectionError(buf[:end].decode(errors="replace")))
                return
            del buf[: end + 4]
            self.upgraded = True
            self.handshake.set_result(None)
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            length = buf[1] & 0x7F
            pos = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, pos = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, pos = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < pos + length:
                return
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            if opcode == 1:
                self.on_message(payload, now)
            elif opcode == 8:
                self.call.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.send(b"\x88\x80\x00\x00\x00\x00")
                if self.transport is not None:
                    self.transport.close()
            elif opcode == 9:
                self.send(bytes([0x8A, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload)

    def on_message(self, payload: bytes, now: float) -> None:
        call = self.call
        if payload.startswith(b'{"event":"media"'):
            if not call.runs:
                call.runs.append(array("d"))
            call.runs[-1].append(now)
            return
        message = json.loads(payload)
        event = message.get("event")
        if event == "mark":
            self.send_json({"event": "mark", "streamSid": "MZbench", "mark": message["mark"]})
        elif event == "clear":
            call.clears.append(now)
            call.runs.append(array("d"))


# Running the carriers ------------------------------------------------------------------------------------------


async def open_link(port: int, call: CallStats, caller: str) -> CarrierLink:
    """A carrier connection that has sent `connected` and `start` for a call from `caller`."""
    loop = asyncio.get_running_loop()
    _, link = await loop.create_connection(lambda: CarrierLink(call, f"127.0.0.1:{port}"), "127.0.0.1", port)
    await link.handshake
    link.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    start = {
        "streamSid": f"MZ{call.index:06d}",
        "callSid": f"CA{call.index:06d}",
        "customParameters": {"from": caller, "to": "+4921100000000", "direction": "inbound"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    link.send_json({"event": "start", "streamSid": start["streamSid"], "start": start})
    return link


async def run_carriers(
    port: int, calls: list[CallStats], ramp_s: float, on_steady: asyncio.Event, *, burst: bool = False
) -> None:
    """Calls connect one after another over `ramp_s`; with `burst`, all at the same instant, each streaming
    as soon as its own `start` is sent."""
    links: list[CarrierLink] = []
    sender = asyncio.create_task(_send_all(links, calls))
    if burst:
        on_steady.set()

        async def one(call: CallStats) -> None:
            link = await open_link(port, call, "+4915100000000")
            call.start = time.monotonic()
            links.append(link)

        await asyncio.gather(*(one(call) for call in calls))
    else:
        gap = ramp_s / max(1, len(calls))
        for call in calls:
            link = await open_link(port, call, "+4915100000000")
            call.start = time.monotonic()
            links.append(link)
            await asyncio.sleep(gap)
        on_steady.set()
    await sender
    await _stop(links, time.monotonic() + 10)


async def warm_up(port: int) -> None:
    """One short call per line of the bot, each opening with its line, so every line is synthesized once
    (espeak-ng runs on the server's core) before the measured calls start: the benchmark measures calls,
    not the TTS cache filling."""
    calls = [CallStats(-k - 1, 0, [], []) for k in range(len(WARM_UP_CALLERS))]
    links = [await open_link(port, call, caller) for call, caller in zip(calls, WARM_UP_CALLERS, strict=True)]
    deadline = time.monotonic() + 30
    while not all(c.runs and c.runs[0] for c in calls) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await _stop(links, deadline)


async def _stop(links: list[CarrierLink], deadline: float) -> None:
    for link in links:
        link.send_json({"event": "stop", "streamSid": "MZbench"})
    while not all(link.call.closed for link in links) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _send_all(links: list[CarrierLink], calls: list[CallStats]) -> None:
    """One task paces every stream: each frame goes out when its 20 ms slot (on the stream's own clock) starts."""
    while not links:
        await asyncio.sleep(0.005)
    while True:
        now = time.monotonic()
        pending = False
        for link in list(links):
            call = link.call
            n = len(call.frames)
            while call.sent < n and call.start + call.sent * FRAME_S <= now:
                link.send(call.frames[call.sent])
                call.send_times.append(now)
                call.sent += 1
            pending = pending or call.sent < n
        if not pending and len(links) == len(calls):
            return
        await asyncio.sleep(0.002)


# Server process ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """What runs the server: a detector, a recognizer, and the source tree (this checkout or a baseline's)."""

    label: str
    vad: str | None
    recognizer: str | None
    root: Path = ROOT


class ServerProcess:
    def __init__(self, port: int, log: Path, server: Server) -> None:
        self.port = port
        self.log_path = log
        env = {**os.environ, "PYTHONPATH": str(server.root)}
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flowapp",
                "serve",
                "benchmarks.live_app:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
                *(["--vad", server.vad] if server.vad else []),
                *(["--recognizer", server.recognizer] if server.recognizer else []),
            ],
            cwd=server.root,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU}),
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start; see {self.log_path}")

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU time: the system share is mostly the loopback socket work."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


# The engine's own figure ---------------------------------------------------------------------------------------


def engine_latencies(prog: Program, vad: str | None) -> list[float | None]:
    """Barge-in latency per utterance with the same app and audio, on the engine's simulated clock."""
    from benchmarks.live_app import app
    from flowapp.engine.call import CallEngine, EngineConfig
    from flowapp.engine.pump import EventPump
    from flowapp.engine.render import Renderer
    from flowapp.protocol.events import SessionInfo

    records: list[dict[str, object]] = []
    config = EngineConfig() if vad is None else EngineConfig(detector=vad)
    engine = CallEngine(SessionInfo(id=str(uuid.uuid4())), config, on_record=records.append)
    pump = EventPump(engine, app, Renderer())

    async def run() -> None:
        engine.start()
        await pump.drain()
        for k in range(prog.frames):
            engine.step(prog.pcm[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES])
            await pump.drain()

    asyncio.run(run())
    barge_ins = [float(r["t_ms"]) for r in records if r["event"] == "barge_in"]  # type: ignore[arg-type]
    return [_first_after(barge_ins, onset / 8, _next(prog.onsets, i) / 8) for i, onset in enumerate(prog.onsets)]


def _next(onsets: list[int], i: int) -> float:
    return onsets[i + 1] if i + 1 < len(onsets) else float("inf")


def _first_after(times: list[float], start: float, end: float) -> float | None:
    hit = next((t for t in times if start <= t < end), None)
    return None if hit is None else hit - start


# Figures -------------------------------------------------------------------------------------------------------


def lateness_ms(calls: list[CallStats], steady_from: float, steady_to: float) -> list[float]:
    out: list[float] = []
    for call in calls:
        for run in call.runs:
            if not run:
                continue
            offsets = [t - k * FRAME_S for k, t in enumerate(run)]
            base = min(offsets)
            out += [(o - base) * 1000 for o, t in zip(offsets, run, strict=True) if steady_from <= t <= steady_to]
    return out


def wire_latencies(call: CallStats, prog: Program, steady_from: float, steady_to: float) -> list[float | None]:
    """Per utterance, onset to `clear` in ms; None when no `clear` came, NaN for an onset outside the steady
    window. Onset wall time: the send time of the frame holding it, minus 20 ms (a frame leaves once captured)."""
    out: list[float | None] = []
    for i, onset in enumerate(prog.onsets):
        frame = onset // FRAME_SAMPLES
        if frame >= len(call.send_times):
            out.append(None)
            continue
        at = call.send_times[frame] - FRAME_S + (onset % FRAME_SAMPLES) / 8000
        if not steady_from <= at <= steady_to:
            out.append(float("nan"))
            continue
        nxt = _next(prog.onsets, i)
        until = call.send_times[int(nxt // FRAME_SAMPLES)] if nxt // FRAME_SAMPLES < len(call.send_times) else 1e18
        hit = _first_after(call.clears, at, until)
        out.append(None if hit is None else hit * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def run_one(
    n_calls: int,
    seconds: float,
    port: int,
    spec: Server,
    engine_figures: dict[int, list[float | None]],
    *,
    burst: bool = False,
) -> dict[str, float | str]:
    variants = len(engine_figures)
    programs = {v: program(v, seconds) for v in range(variants)}
    frames = {v: media_frames(p) for v, p in programs.items()}
    calls = [
        CallStats(i, v, frames[v], [o / 8 for o in programs[v].onsets])
        for i, v in ((i, i % variants) for i in range(n_calls))
    ]
    log = Path(tempfile.gettempdir()) / f"flowapp-bench-server-{n_calls}.log"
    server = ServerProcess(port, log, spec)
    try:
        server.wait_ready()
        _uvloop_run(warm_up(port))
        time.sleep(0.5)
        rss_idle = server.rss_bytes()
        ramp_s = min(3.0, n_calls / 100)
        figures: dict[str, float] = {}

        async def main() -> None:
            steady = asyncio.Event()
            carriers = asyncio.create_task(run_carriers(port, calls, ramp_s, steady, burst=burst))
            await steady.wait()
            if not burst:
                await asyncio.sleep(1.0)
            t0, c0, k0, s0, b0 = (
                time.monotonic(),
                server.cpu_seconds(),
                _own_cpu_seconds(),
                _stolen_seconds(),
                _core_busy_seconds(),
            )
            window = max(2.0, seconds - 3.0 if burst else seconds - ramp_s - 3.0)
            lags = await _loop_lags(window)
            t1, c1, k1, s1, b1 = (
                time.monotonic(),
                server.cpu_seconds(),
                _own_cpu_seconds(),
                _stolen_seconds(),
                _core_busy_seconds(),
            )
            span = t1 - t0
            cpu = (sum(c1) - sum(c0)) / span
            figures.update(
                steady_from=t0,
                steady_to=t1,
                cpu=cpu,
                sys=(c1[1] - c0[1]) / span,
                carriers=(k1 - k0) / span,
                carrier_lag_p99=pct(lags, 99),
                stolen=(s1 - s0) / span,
                others=max(0.0, (b1 - b0) / span - cpu),
                rss=server.rss_bytes(),
            )
            await carriers

        _uvloop_run(main())
    finally:
        server.stop()
    late = lateness_ms(calls, figures["steady_from"], figures["steady_to"])
    wire: list[float] = []
    paired: list[float] = []
    missed = 0
    for call in calls:
        prog = programs[call.variant]
        steady = wire_latencies(call, prog, figures["steady_from"], figures["steady_to"])
        for w, e in zip(steady, engine_figures[call.variant], strict=True):
            if w is not None and math.isnan(w):
                continue
            if w is None or e is None:
                missed += w is None and e is not None
                continue
            wire.append(w)
            paired.append(w - e)
    engine_all = [e for v in range(variants) for e in engine_figures[v] if e is not None]
    stalls = sum(1 for line in log.read_text().splitlines() if "event loop stalled" in line)
    return {
        "server": spec.label,
        "calls": n_calls,
        "cpu_pct": figures["cpu"] * 100,
        "sys_pct": figures["sys"] * 100,
        "carriers_pct": figures["carriers"] * 100,
        "carrier_lag_p99": figures["carrier_lag_p99"],
        "stolen_pct": figures["stolen"] * 100,
        "others_pct": figures["others"] * 100,
        "cpu_per_call_pct": figures["cpu"] * 100 / n_calls,
        "late_p50": pct(late, 50),
        "late_p99": pct(late, 99),
        "late_max": max(late) if late else float("nan"),
        "frames": len(late),
        "barge_ins": len(wire),
        "missed": missed,
        "wire_p50": pct(wire, 50),
        "wire_p99": pct(wire, 99),
        "engine_p50": pct(engine_all, 50),
        "engine_p99": pct(engine_all, 99),
        "delta_p50": pct(paired, 50),
        "delta_p99": pct(paired, 99),
        "rss_per_call_kib": (figures["rss"] - rss_idle) / n_calls / 1024,
        "stall_warnings": stalls,
        "closed_ok": sum(1 for c in calls if c.close_code == 1000),
    }


async def _loop_lags(seconds: float) -> list[float]:
    """How late the carriers' own event loop wakes (ms): their timestamps are only as good as this."""
    lags: list[float] = []
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        await asyncio.sleep(0.005)
        lags.append((time.monotonic() - now - 0.005) * 1000)
    return lags


def _stolen_seconds() -> float:
    """Time the hypervisor took CPU 0 away from this VM: on a shared host the server then falls behind."""
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{SERVER_CPU}" and len(fields) > 8:
            return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _core_busy_seconds() -> float:
    """Time CPU 0 was busy, or stolen, whoever ran: less the server's own, what else competed for its core."""
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{SERVER_CPU}" and len(fields) > 8:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _own_cpu_seconds() -> float:
    """The carriers' CPU time: near 100% their clock readings, not the server, would set the figures."""
    times = os.times()
    return times.user + times.system


def _uvloop_run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


COLUMNS = (
    ("server", "server", "{}"),
    ("calls", "calls", "{:.0f}"),
    ("cpu_pct", "server CPU %", "{:.1f}"),
    ("sys_pct", "of it sys %", "{:.1f}"),
    ("carriers_pct", "carriers CPU %", "{:.0f}"),
    ("carrier_lag_p99", "carrier lag p99 ms", "{:.1f}"),
    ("stolen_pct", "CPU0 stolen %", "{:.1f}"),
    ("others_pct", "CPU0 others %", "{:.0f}"),
    ("cpu_per_call_pct", "CPU/call %", "{:.3f}"),
    ("late_p50", "late p50 ms", "{:.1f}"),
    ("late_p99", "late p99 ms", "{:.1f}"),
    ("late_max", "late max ms", "{:.1f}"),
    ("barge_ins", "barge-ins", "{:.0f}"),
    ("missed", "missed", "{:.0f}"),
    ("wire_p50", "wire p50 ms", "{:.0f}"),
    ("wire_p99", "wire p99 ms", "{:.0f}"),
    ("engine_p50", "engine p50 ms", "{:.0f}"),
    ("engine_p99", "engine p99 ms", "{:.0f}"),
    ("delta_p50", "wire-engine p50", "{:.1f}"),
    ("delta_p99", "wire-engine p99", "{:.1f}"),
    ("rss_per_call_kib", "RSS/call KiB", "{:.0f}"),
    ("stall_warnings", "stalls", "{:.0f}"),
    ("closed_ok", "closed 1000", "{:.0f}"),
)


def print_table(rows: list[dict[str, float | str]]) -> None:
    widths = [max(len(title), 8, *(len(fmt.format(row[key])) for row in rows)) for key, title, fmt in COLUMNS]
    print("  ".join(title.rjust(w) for (_, title, _), w in zip(COLUMNS, widths, strict=True)))
    for row in rows:
        print("  ".join(fmt.format(row[key]).rjust(w) for (key, _, fmt), w in zip(COLUMNS, widths, strict=True)))


def export_tree(revision: str, into: Path) -> Path:
    """The source tree of `revision` of this repository, exported under `into` (the baseline server runs there)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=False)
    if archive.returncode != 0:
        raise ValueError(f"--baseline {revision!r}: {archive.stderr.decode(errors='replace').strip()}")
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


DETECTORS = ("webrtc", "silero", "cascade")


def _detectors(raw: str) -> list[str | None]:
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in DETECTORS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected detectors from {', '.join(DETECTORS)}, got {raw!r}")
    return list(names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="300", help="concurrent calls; several as 50,150,300")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each call")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--vad", type=_detectors, default=[None], help="the server's speech detector; several as cascade,webrtc"
    )
    parser.add_argument("--recognizer", help="the server's recognizer (default: the server's own, local Whisper)")
    parser.add_argument("--baseline", metavar="REV", help="also run the server of this git revision, for comparison")
    parser.add_argument(
        "--burst", action="store_true", help="all calls arrive at once (measured from the burst on), not over a ramp"
    )
    args = parser.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 CPUs; server and carriers share a core", file=sys.stderr)
    else:
        os.sched_setaffinity(0, {CLIENT_CPU})
    with tempfile.TemporaryDirectory(prefix="flowapp-baseline-") as tmp:
        servers: list[Server] = []
        for vad in args.vad:
            label = vad or "default"
            if args.baseline:
                try:
                    root = export_tree(args.baseline, Path(tmp) / label)
                except ValueError as exc:
                    parser.error(str(exc))
                servers.append(Server(f"{args.baseline}:{label}", vad, args.recognizer, root))
            servers.append(Server(label, vad, args.recognizer))
        variants = PROGRAM_VARIANTS * (BURST_PHASES if args.burst else 1)
        engine_figures = {
            vad: {v: engine_latencies(program(v, args.seconds), vad) for v in range(variants)} for vad in args.vad
        }
        rows = []
        for n in (int(x) for x in args.calls.split(",")):
            for server in servers:
                rows.append(run_one(n, args.seconds, args.port, server, engine_figures[server.vad], burst=args.burst))
                print_table(rows[-1:])
        print()
        print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
