"""SIP-call benchmark: SIPp places N concurrent calls of real G.711 speech to one flowapp server on one core.

    python -m benchmarks.sip_calls --calls 100,200 --window 10

The server (the live-call benchmark's bot, `benchmarks.live_app:app`, with the webrtc VAD and no recognizer)
runs in a subprocess pinned to CPU 0, SIPp on CPU 1. Each call plays sip-tester's 7 s PCMA speech capture
three times over the bot's talking, so every utterance barges in, then hangs up. Once all calls are up, the
server's CPU and the lateness of every RTP packet it sends (against the call's 20 ms grid, measured in the
server as the packet leaves; the grid is the earliest the call kept over the last second) are taken over
a steady window.

Reported: concurrent calls in the window, server CPU (share of one core), what else kept that core busy
(other processes and hypervisor steal: on a shared host it decides the tail), p50 / p99 / max RTP send
lateness, the stalls (a packet over 100 ms late: ticks were skipped), and SIPp's successful and failed calls.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SERVER_CPU = 0
CLIENT_CPU = 1
SIPP_MEDIA = Path("/usr/share/sip-tester")
LONG_CALL = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="three times the speech capture, then BYE">
  <send retrans="500"><![CDATA[
INVITE sip:+4930111@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:+4915100000001@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: <sip:+4930111@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [auto_media_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send><![CDATA[
ACK sip:+4930111@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:+4915100000001@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: <sip:+4930111@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <nop><action><exec play_pcap_audio="pcap/g711a.pcap"/></action></nop>
  <pause milliseconds="8000"/>
  <nop><action><exec play_pcap_audio="pcap/g711a.pcap"/></action></nop>
  <pause milliseconds="8000"/>
  <nop><action><exec play_pcap_audio="pcap/g711a.pcap"/></action></nop>
  <pause milliseconds="8000"/>
  <send retrans="500"><![CDATA[
BYE sip:+4930111@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:+4915100000001@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: <sip:+4930111@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
</scenario>
"""
CALL_SECONDS = 24


def serve(http_port: int, sip_port: int) -> None:
    """The server side, in its own process: the bot, SIP on, and a route that reports the RTP lateness."""
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from benchmarks.live_app import LINES, app
    from flowapp import Speak
    from flowapp.engine.render import Renderer
    from flowapp.server import create_server, uvicorn_config
    from flowapp.settings import ServerSettings

    settings = ServerSettings(
        port=http_port,
        sip_port=sip_port,
        vad_detector="webrtc",
        recognizer=None,
        journal_dir=None,
        sip_invite_rate=1000,
        sip_invite_burst=1000,
    )

    async def lateness(request: Request) -> JSONResponse:
        agent = request.app.state.sip_agent
        if request.method == "POST":
            agent.lateness.clear()
            for dialog in agent.dialogs.values():
                if dialog.rtp is not None:
                    dialog.rtp.stalls = 0
            return JSONResponse({})
        samples = sorted(agent.lateness)
        stalls = sum(d.rtp.stalls for d in agent.dialogs.values() if d.rtp is not None)

        def pick(q: float) -> float:
            return samples[min(len(samples) - 1, int(q * len(samples)))] * 1000 if samples else 0.0

        return JSONResponse(
            {
                "calls": len(agent.dialogs),
                "packets": len(samples),
                "p50": pick(0.5),
                "p99": pick(0.99),
                "max": pick(1.0),
                "stalls": stalls,
            }
        )

    server = create_server(app, settings, extra_routes=[Route("/bench/rtp", lateness, methods=["GET", "POST"])])
    renderer = server.state.media_renderer = Renderer()
    for line in LINES:
        renderer.render(Speak(text=line))
    uvicorn.Server(uvicorn_config(server, settings, log_level="warning")).run()


def _free_port() -> int:
    """Free for UDP and TCP alike: the SIP endpoint listens on both."""
    import socket

    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, socket.socket() as tcp:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _core_busy_seconds(cpu: int) -> float:
    """Time CPU `cpu` was busy (or stolen by the hypervisor), from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    raise SystemExit(f"no cpu{cpu} in /proc/stat")


def run(calls: int, rate: int, window: float, workdir: Path) -> dict[str, float]:
    http_port, sip_port = _free_port(), _free_port()
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(SERVER_CPU),
            sys.executable,
            "-m",
            "benchmarks.sip_calls",
            "--serve",
            str(http_port),
            str(sip_port),
        ],
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        sipp = subprocess.Popen(
            [
                "taskset",
                "-c",
                str(CLIENT_CPU),
                "sipp",
                "-sf",
                str(workdir / "long.xml"),
                f"127.0.0.1:{sip_port}",
                "-m",
                str(calls),
                "-l",
                str(calls),
                "-r",
                str(rate),
                "-i",
                "127.0.0.1",
                "-p",
                str(_free_port()),
                "-mp",
                "40000",
                "-nostdin",
                "-timeout",
                f"{CALL_SECONDS + calls / rate + 60:.0f}s",
                "-trace_stat",
                "-fd",
                "1",
            ],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(calls / rate + 2.0)
        httpx.post(base + "/bench/rtp", timeout=30)
        cpu_before, busy_before, t_before = _cpu_seconds(server.pid), _core_busy_seconds(SERVER_CPU), time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - t_before
        cpu = (_cpu_seconds(server.pid) - cpu_before) / elapsed
        others = (_core_busy_seconds(SERVER_CPU) - busy_before) / elapsed - cpu
        figures = httpx.get(base + "/bench/rtp", timeout=30).json()
        out, _ = sipp.communicate(timeout=CALL_SECONDS + calls / rate + 90)
        figures["cpu"] = cpu * 100
        figures["others"] = max(0.0, others * 100)
        figures["ok"], figures["failed"] = _sipp_counts(out)
        return figures
    finally:
        server.terminate()
        server.wait(10)


def _sipp_counts(output: str) -> tuple[int, int]:
    ok = failed = -1
    for line in output.splitlines():
        if line.strip().startswith("Successful call"):
            ok = int(line.split("|")[2].split()[0])
        elif line.strip().startswith("Failed call"):
            failed = int(line.split("|")[2].split()[0])
    return ok, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="100,200", help="comma-separated concurrent call counts")
    parser.add_argument("--rate", type=int, default=40, help="new calls per second while ramping up")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured once all calls are up")
    parser.add_argument("--serve", nargs=2, type=int, metavar=("HTTP_PORT", "SIP_PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "pcap").symlink_to(SIPP_MEDIA)
        (workdir / "long.xml").write_text(LONG_CALL)
        print(
            "calls  in window  server CPU  others on its core  RTP late p50 / p99 / max (ms)  packets  stalls"
            "  SIPp ok / failed"
        )
        for calls in (int(n) for n in args.calls.split(",")):
            f = run(calls, args.rate, args.window, workdir)
            print(
                f"{calls:5d}  {f['calls']:9d}  {f['cpu']:9.0f}%  {f['others']:17.0f}%"
                f"  {f['p50']:8.1f} / {f['p99']:5.1f} / {f['max']:6.1f}"
                f"        {f['packets']:7d}  {f['stalls']:4d}  {f['ok']:7d} / {f['failed']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
