"""SDP offer/answer (RFC 3264) for one audio stream: G.711 (PCMU or PCMA) at 8000 Hz, ptime 20, and
RFC 4733 telephone events."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

MAX_SDP_BYTES = 8 * 1024
PCMU = 0
PCMA = 8
CODECS = {PCMU: "PCMU", PCMA: "PCMA"}
Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
_DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")
_ANSWER_DIRECTION: dict[Direction, Direction] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


class SdpError(ValueError):
    """An offer flowapp cannot answer (488 Not Acceptable Here); the message says why."""


@dataclass(frozen=True)
class Offer:
    """What the caller offers: where to send audio, in which payload types, and whether it wants any."""

    address: str
    port: int
    payload_types: tuple[int, ...]
    telephone_event: int | None
    direction: Direction

    @property
    def on_hold(self) -> bool:
        """The caller does not want our audio: `sendonly`/`inactive`, or the old `c=0.0.0.0` way."""
        return self.direction in ("sendonly", "inactive") or self.address in ("0.0.0.0", "::") or self.port == 0


@dataclass(frozen=True)
class Answer:
    codec: int
    telephone_event: int | None
    direction: Direction


def parse_offer(body: bytes) -> Offer:
    if len(body) > MAX_SDP_BYTES:
        raise SdpError(f"SDP over {MAX_SDP_BYTES} bytes")
    try:
        lines = body.decode("utf-8").replace("\r\n", "\n").split("\n")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    session_address: str | None = None
    media_address: str | None = None
    address: str | None
    audio: tuple[int, tuple[int, ...]] | None = None
    in_audio = False
    rtpmap: dict[int, str] = {}
    direction: Direction = "sendrecv"
    for line in lines:
        kind, _, value = line.strip().partition("=")
        if kind == "c":
            address = _connection_address(value)
            if audio is None and not in_audio:
                session_address = address
            elif in_audio:
                media_address = address
        elif kind == "m":
            in_audio = False
            parts = value.split()
            if len(parts) >= 4 and parts[0] == "audio" and audio is None:
                if parts[2] not in ("RTP/AVP", "RTP/AVPF"):
                    raise SdpError(f"unsupported media profile {parts[2][:20]}; plain RTP/AVP only")
                audio = (
                    _number(parts[1], 0, 65535, "media port"),
                    tuple(_number(p, 0, 127, "payload type") for p in parts[3:]),
                )
                in_audio = True
        elif kind == "a" and (in_audio or audio is None):
            name, _, rest = value.partition(":")
            if name == "rtpmap" and in_audio:
                pt, _, encoding = rest.partition(" ")
                if pt.isdigit():
                    rtpmap[int(pt)] = encoding.strip().lower()
            elif name in _DIRECTIONS:
                direction = _DIRECTIONS[_DIRECTIONS.index(name)]
    if audio is None:
        raise SdpError("no audio stream offered")
    port, payload_types = audio
    address = media_address or session_address
    if address is None:
        raise SdpError("no connection address")
    events = [pt for pt in payload_types if rtpmap.get(pt, "").startswith("telephone-event/8000")]
    usable = tuple(pt for pt in payload_types if _is_g711(pt, rtpmap))
    return Offer(address, port, usable, events[0] if events else None, direction)


def _is_g711(pt: int, rtpmap: dict[int, str]) -> bool:
    encoding = rtpmap.get(pt)
    if encoding is None:
        return pt in CODECS
    return pt in CODECS and encoding.startswith(CODECS[pt].lower() + "/8000")


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError("malformed c= line")
    address = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise SdpError("c= must give an IP address") from None
    return address


def _number(text: str, low: int, high: int, what: str) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise SdpError(f"bad {what} {text[:10]!r}")
    return int(text)


def negotiate(offer: Offer, current: int | None = None) -> Answer:
    """The caller's first G.711 codec (or the one in use, while still offered) and telephone events if offered."""
    if not offer.payload_types:
        raise SdpError("no common codec: PCMU or PCMA at 8000 Hz is required")
    codec = current if current in offer.payload_types else offer.payload_types[0]
    return Answer(codec, offer.telephone_event, _ANSWER_DIRECTION[offer.direction])


def render_answer(answer: Answer, address: str, port: int, session_id: int, version: int) -> bytes:
    family = "IP6" if ":" in address else "IP4"
    formats = [str(answer.codec)] + ([str(answer.telephone_event)] if answer.telephone_event is not None else [])
    lines = [
        "v=0",
        f"o=flowapp {session_id} {version} IN {family} {address}",
        "s=flowapp",
        f"c=IN {family} {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(formats)}",
        f"a=rtpmap:{answer.codec} {CODECS[answer.codec]}/8000",
    ]
    if answer.telephone_event is not None:
        lines += [f"a=rtpmap:{answer.telephone_event} telephone-event/8000", f"a=fmtp:{answer.telephone_event} 0-15"]
    lines += ["a=ptime:20", f"a={answer.direction}"]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
