"""SIP peers for the tests: a scripted user agent on plain sockets, and helpers that start a server with SIP on."""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass

from flowapp.app import FlowApp
from flowapp.settings import ServerSettings
from flowapp.transports.sip import message as sip
from flowapp.transports.sip.rtp import build_packet, parse_packet
from tests.conftest import LiveServer, StartServer


def free_udp_port() -> int:
    """A port free for UDP and for TCP (the SIP endpoint listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


@dataclass
class SipServer:
    http: LiveServer
    sip_port: int


def start_sip_server(live_server: StartServer, app: FlowApp, **settings: object) -> SipServer:
    """A real server on loopback answering SIP on a free UDP port (fast engine options: webrtc VAD, no STT)."""
    port = free_udp_port()
    options: dict[str, object] = {"recognizer": None, "vad_detector": "webrtc", "journal_dir": None}
    options.update(settings)
    server = live_server(app, ServerSettings(sip_port=port, **options))  # type: ignore[arg-type]
    return SipServer(server, port)


def offer(
    rtp_port: int, payload_types: str = "0 8 101", direction: str = "sendrecv", address: str = "127.0.0.1"
) -> bytes:
    lines = [
        "v=0",
        f"o=peer 1 1 IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {rtp_port} RTP/AVP {payload_types}",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


class Peer:
    """A caller on two UDP sockets (SIP and RTP) that writes its requests by hand, as a test wants them."""

    def __init__(self, server_port: int) -> None:
        self.server = ("127.0.0.1", server_port)
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.port = self.sip.getsockname()[1]
        self.rtp_port = self.rtp.getsockname()[1]
        self.call_id = f"{uuid.uuid4()}@test"
        self.tag = sip.new_tag()
        self.to_tag: str | None = None
        self.cseq = 0
        self.invite_branch = ""
        self.flowapp_rtp: tuple[str, int] | None = None
        self.seq = 1000
        self.timestamp = 5000

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def request(
        self,
        method: str,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        cseq: int | None = None,
        branch: str | None = None,
    ) -> bytes:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or sip.new_branch()
        if method == "INVITE" and self.to_tag is None:
            self.invite_branch = branch
        to = "<sip:+4930111@127.0.0.1>" + (f";tag={self.to_tag}" if self.to_tag else "")
        data = sip.render(
            f"{method} sip:+4930111@127.0.0.1:{self.server[1]} SIP/2.0",
            [
                ("via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport"),
                ("max-forwards", "70"),
                ("from", f'"Caller" <sip:+4915100000001@127.0.0.1>;tag={self.tag}'),
                ("to", to),
                ("call-id", self.call_id),
                ("cseq", f"{cseq} {method}"),
                ("contact", f"<sip:peer@127.0.0.1:{self.port}>"),
                *(headers or []),
            ],
            body,
        )
        self.send(data)
        return data

    def send(self, data: bytes) -> None:
        self.sip.sendto(data, self.server)

    def receive(self, timeout: float = 3.0) -> sip.SipMessage:
        self.sip.settimeout(timeout)
        data, _ = self.sip.recvfrom(65536)
        return sip.parse(data)

    def final(self, timeout: float = 5.0) -> sip.SipMessage:
        """The next final response (provisional ones skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(max(0.05, deadline - time.monotonic()))
            if not message.is_request and message.status >= 200:
                return message

    def invite(self, body: bytes | None = None) -> sip.SipMessage:
        self.request(
            "INVITE", body if body is not None else offer(self.rtp_port), [("content-type", "application/sdp")]
        )
        answer = self.final()
        if answer.status == 200:
            self.to_tag = answer.to_tag()
            port = int(
                next(line for line in answer.body.decode().splitlines() if line.startswith("m=audio")).split()[1]
            )
            self.flowapp_rtp = ("127.0.0.1", port)
            self.ack(answer)
        return answer

    def ack(self, answer: sip.SipMessage) -> None:
        self.request("ACK", cseq=answer.cseq[0], branch=sip.new_branch())

    def bye(self) -> sip.SipMessage:
        self.request("BYE")
        return self.final()

    def answer_request(self, request: sip.SipMessage, status: int = 200, reason: str = "OK") -> None:
        self.send(sip.response(request, status, reason))

    def next_request(self, method: str, timeout: float = 5.0) -> sip.SipMessage:
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(max(0.05, deadline - time.monotonic()))
            if message.is_request and message.method == method:
                return message

    def rtp_packets(
        self, count: int, timeout: float = 5.0
    ) -> list[tuple[float, tuple[int, bool, int, int, int, bytes]]]:
        """(arrival time, parsed packet) of the next `count` RTP packets."""
        self.rtp.settimeout(timeout)
        packets = []
        for _ in range(count):
            data, _ = self.rtp.recvfrom(2048)
            packets.append((time.monotonic(), parse_packet(data)))
        return packets

    def drain_rtp(self) -> None:
        self.rtp.settimeout(0.0)
        try:
            while True:
                self.rtp.recvfrom(2048)
        except (BlockingIOError, TimeoutError):
            pass

    def send_rtp(
        self, payload_type: int, payload: bytes, *, timestamp: int | None = None, marker: bool = False
    ) -> None:
        assert self.flowapp_rtp is not None
        self.seq = (self.seq + 1) & 0xFFFF
        ts = self.timestamp if timestamp is None else timestamp
        self.rtp.sendto(build_packet(payload_type, marker, self.seq, ts, 0x1234, payload), self.flowapp_rtp)
        if timestamp is None:
            self.timestamp += 160

    def key_press(self, event: int, timestamp: int) -> None:
        """An RFC 4733 key press as phones send it: three packets while held, three end packets."""
        for duration, end in ((160, False), (320, False), (480, False), (640, True), (640, True), (640, True)):
            flags = 0x80 if end else 0
            self.send_rtp(
                101,
                bytes([event, flags | 10]) + duration.to_bytes(2, "big"),
                timestamp=timestamp,
                marker=duration == 160,
            )
