"""RTP (RFC 3550) for one G.711 call: packets in through a small reordering buffer, RFC 4733 telephone
events as key presses, and the assistant's frames out, one packet per 20 ms tick.

Symmetric RTP: audio goes back to where the caller's audio comes from (latched on its first packet), not
only to the SDP address, so a caller behind a NAT hears us. Only the SDP's host and the SIP peer's host
may be latched onto, and once latched, packets from anywhere else are dropped: a stranger cannot take
the call's audio. Outbound the stream never pauses while the
call is not on hold: a tick with nothing to play sends a frame of silence, as a phone does.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import cast

from flowapp.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from flowapp.transports.sip.sdp import PCMA, PCMU

FRAME_BYTES = 160
TIMESTAMP_STEP = 160
REORDER_DEPTH = 3
"""Packets held while an earlier one is missing; past this the missing one is given up (heard as silence)."""
RESYNC_DISTANCE = 100
"""A sequence jump this large is a new stream (a restarted sender), not loss."""
MAX_RTP_BYTES = 1500
GRID_PACKETS = 50
"""Send lateness is measured against the earliest 20 ms grid the stream kept over this many packets (1 s), so
a deliberate move of the call's tick slot is forgotten within a second."""
STALL_SECONDS = 0.1
"""A packet sent this much after its slot marks a stall (ticks were skipped): the grid starts anew."""
_HEADER = struct.Struct("!BBHII")
_ULAW_SILENCE = b"\xff" * FRAME_BYTES
_DIGITS = "0123456789*#"

_ULAW_TO_ALAW = alaw_encode(ulaw_decode(bytes(range(256))))
_ALAW_TO_ULAW = ulaw_encode(alaw_decode(bytes(range(256))))


class RtpError(ValueError):
    pass


def parse_packet(data: bytes) -> tuple[int, bool, int, int, int, bytes]:
    """(payload type, marker, sequence, timestamp, ssrc, payload) of an RTP packet; raises RtpError."""
    if not 12 <= len(data) <= MAX_RTP_BYTES:
        raise RtpError("not an RTP packet size")
    first, second, seq, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise RtpError("not RTP version 2")
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < offset + 4:
            raise RtpError("truncated header extension")
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if first & 0x20:
        end -= data[-1]
    if offset > end:
        raise RtpError("header or padding longer than the packet")
    return second & 0x7F, bool(second & 0x80), seq, timestamp, ssrc, data[offset:end]


def build_packet(payload_type: int, marker: bool, seq: int, timestamp: int, ssrc: int, payload: bytes) -> bytes:
    return _HEADER.pack(0x80, payload_type | (0x80 if marker else 0), seq, timestamp, ssrc) + payload


def to_ulaw(codec: int, payload: bytes) -> bytes:
    return payload if codec == PCMU else payload.translate(_ALAW_TO_ULAW)


def from_ulaw(codec: int, ulaw: bytes) -> bytes:
    return ulaw if codec == PCMU else ulaw.translate(_ULAW_TO_ALAW)


class Reorder:
    """Puts packets back in sequence order; duplicates and packets older than what was released are dropped."""

    def __init__(self, depth: int = REORDER_DEPTH) -> None:
        self.depth = depth
        self.expected: int | None = None
        self.held: dict[int, bytes] = {}
        self.late = 0
        self.lost = 0

    def push(self, seq: int, payload: bytes) -> list[bytes]:
        if self.expected is None:
            self.expected = seq
        ahead = (seq - self.expected) & 0xFFFF
        if ahead >= 0x8000:
            self.late += 1
            return []
        if ahead > RESYNC_DISTANCE:
            self.held.clear()
            self.expected = seq
        self.held[seq] = payload
        out = self._release()
        if len(self.held) > self.depth:
            expected = self.expected
            nearest = min(self.held, key=lambda s: (s - expected) & 0xFFFF)
            self.lost += (nearest - expected) & 0xFFFF
            self.expected = nearest
            out += self._release()
        return out

    def _release(self) -> list[bytes]:
        out: list[bytes] = []
        assert self.expected is not None
        while self.expected in self.held:
            out.append(self.held.pop(self.expected))
            self.expected = (self.expected + 1) & 0xFFFF
        return out


class KeyPresses:
    """RFC 4733: every packet of one key press carries the same timestamp; the first one makes the digit."""

    def __init__(self) -> None:
        self._last: int | None = None

    def packet(self, timestamp: int, payload: bytes) -> str | None:
        if len(payload) < 4 or timestamp == self._last:
            return None
        self._last = timestamp
        event = payload[0]
        return _DIGITS[event] if event < len(_DIGITS) else None


class RtpStream(asyncio.DatagramProtocol):
    """One call's RTP socket. `on_audio` gets 20 ms mu-law payloads in order, `on_digit` each key press."""

    def __init__(
        self,
        remote: tuple[str, int],
        codec: int,
        telephone_event: int | None,
        hosts: frozenset[str],
        on_audio: Callable[[bytes], None],
        on_digit: Callable[[str], None],
        lateness: deque[float] | None = None,
    ) -> None:
        self.remote = remote
        self.codec = codec
        self.telephone_event = telephone_event
        self.sending = True
        self.latched = False
        self.packets_in = 0
        self.packets_out = 0
        self.bad_packets = 0
        self.stalls = 0
        self._hosts = hosts
        self._on_audio = on_audio
        self._on_digit = on_digit
        self._reorder = Reorder()
        self._keys = KeyPresses()
        self._transport: asyncio.DatagramTransport | None = None
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self._marker = True
        self._lateness = lateness
        self._grid: deque[tuple[int, float]] = deque()
        self._slot = 0

    # Socket --------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        host = str(addr[0])
        if self.latched and (host, addr[1]) != self.remote:
            return
        if host not in self._hosts:
            return
        try:
            payload_type, _marker, seq, timestamp, _ssrc, payload = parse_packet(data)
        except RtpError:
            self.bad_packets += 1
            return
        if payload_type == self.telephone_event:
            digit = self._keys.packet(timestamp, payload)
            if digit is not None:
                self._on_digit(digit)
        elif payload_type in (PCMU, PCMA):
            for frame in self._reorder.push(seq, payload):
                self._on_audio(to_ulaw(payload_type, frame))
        else:
            return
        self.packets_in += 1
        if not self.latched:
            self.latched = True
            self.remote = (host, addr[1])

    def error_received(self, exc: Exception) -> None:
        """An ICMP error from a peer that went away: the call ends by SIP or by its timers, not by this."""

    @property
    def port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # Sending -------------------------------------------------------------------------------------

    def send(self, ulaw: bytes | None) -> None:
        """One 20 ms frame (silence for None), unless the call is on hold."""
        if not self.sending or self._transport is None or self._transport.is_closing():
            return
        payload = from_ulaw(self.codec, _ULAW_SILENCE if ulaw is None else ulaw)
        packet = build_packet(self.codec, self._marker, self._seq, self._timestamp, self._ssrc, payload)
        self._transport.sendto(packet, self.remote)
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._timestamp = (self._timestamp + TIMESTAMP_STEP) & 0xFFFFFFFF
        self.packets_out += 1
        self._measure()

    def hold(self, on_hold: bool) -> None:
        """A re-INVITE put the call on hold (nothing is sent) or took it off (the next packet has the marker)."""
        if not on_hold and not self.sending:
            self._marker = True
            self._grid.clear()
        self.sending = not on_hold

    def _measure(self) -> None:
        """How late this packet left against the call's 20 ms grid (a sliding minimum over `GRID_PACKETS`)."""
        if self._lateness is None:
            return
        self._slot += 1
        offset = time.monotonic() - self._slot * 0.02
        grid = self._grid
        while grid and grid[-1][1] >= offset:
            grid.pop()
        grid.append((self._slot, offset))
        if grid[0][0] <= self._slot - GRID_PACKETS:
            grid.popleft()
        late = offset - grid[0][1]
        if late > STALL_SECONDS:
            self.stalls += 1
            grid.clear()
            grid.append((self._slot, offset))
        self._lateness.append(late)
