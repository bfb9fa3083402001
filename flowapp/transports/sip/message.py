"""SIP messages (RFC 3261): a small, strict parser and the builders a user agent server needs.

Strict so that nothing half-understood drives a dialog: a message that breaks the grammar this module
relies on raises `SipError` and is answered 400 (when it can be) or dropped, never guessed at.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 16 * 1024
"""Largest SIP message taken; an INVITE with an SDP offer is about 1 KB."""
MAX_HEADERS = 100
_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "r": "refer-to",
    "b": "referred-by",
    "e": "content-encoding",
    "o": "event",
}
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_STATUS = re.compile(r"^SIP/2\.0 ([1-6][0-9]{2}) (.*)$")
_REQUEST = re.compile(r"^([A-Za-z0-9.!%*_+`'~-]+) (\S+) SIP/2\.0$")
_CSEQ = re.compile(r"^([0-9]{1,10})\s+([A-Za-z0-9.!%*_+`'~-]+)$")
_URI_IN_BRACKETS = re.compile(r"<([^<>]*)>")
_SIP_URI = re.compile(r"^sips?:(?:([^@;?]*)@)?([^;?]+)", re.IGNORECASE)
_CANONICAL = {"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate"}


class SipError(ValueError):
    """The bytes are not a SIP message this agent can act on; the message says what is wrong."""


@dataclass
class SipMessage:
    """A request (`method`, `uri`) or a response (`status`, `reason`); header names are lower-case."""

    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None or not value.strip():
            raise SipError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        return self.require("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        match = _CSEQ.match(self.require("cseq").strip())
        if match is None:
            raise SipError("malformed CSeq header")
        return int(match.group(1)), match.group(2).upper()

    @property
    def branch(self) -> str:
        return param(self.require("via"), "branch") or ""

    def from_tag(self) -> str | None:
        return param(self.require("from"), "tag")

    def to_tag(self) -> str | None:
        return param(self.require("to"), "tag")


def parse(data: bytes) -> SipMessage:
    """One SIP message from a datagram (or a stream's framed bytes); raises SipError."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipError(f"message over {MAX_MESSAGE_BYTES} bytes")
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise SipError("no blank line after the headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipError("headers are not UTF-8") from None
    lines = text.split("\r\n")
    message = _start_line(lines[0])
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not message.headers:
                raise SipError("continuation line before any header")
            name, value = message.headers[-1]
            message.headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not _TOKEN.match(name):
            raise SipError(f"malformed header line {line[:40]!r}")
        if any(ord(ch) < 32 and ch != "\t" for ch in value):
            raise SipError(f"control character in the {name} header")
        message.headers.append((_COMPACT.get(name, name), value.strip()))
        if len(message.headers) > MAX_HEADERS:
            raise SipError(f"more than {MAX_HEADERS} headers")
    length = message.get("content-length")
    if length is not None:
        if not length.isdigit() or len(length) > 6:
            raise SipError("malformed Content-Length")
        if int(length) > len(body):
            raise SipError("body shorter than Content-Length")
        body = body[: int(length)]
    message.body = body
    for name in ("via", "from", "to", "call-id", "cseq"):
        message.require(name)
    if message.is_request and message.cseq[1] != message.method and message.method != "ACK":
        raise SipError("CSeq method differs from the request method")
    return message


def _start_line(line: str) -> SipMessage:
    status = _STATUS.match(line)
    if status is not None:
        return SipMessage(status=int(status.group(1)), reason=status.group(2))
    request = _REQUEST.match(line)
    if request is None:
        raise SipError("malformed start line")
    return SipMessage(method=request.group(1).upper(), uri=request.group(2))


def param(header: str, name: str) -> str | None:
    """A `;name=value` parameter of a header, outside its `<...>` URI (tags, branches)."""
    outside = _URI_IN_BRACKETS.sub("", header)
    for part in outside.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


def uri_of(header: str) -> str:
    """The URI of a name-addr (`"Bob" <sip:bob@host>;tag=1`) or addr-spec (`sip:bob@host;tag=1`)."""
    bracketed = _URI_IN_BRACKETS.search(header)
    if bracketed is not None:
        return bracketed.group(1).strip()
    return header.split(";")[0].strip()


def user_of(header: str) -> str | None:
    """The user part of the header's SIP or tel URI (`+4930123` of `<sip:+4930123@trunk>`)."""
    uri = uri_of(header)
    if uri.lower().startswith("tel:"):
        return uri[4:].split(";")[0] or None
    match = _SIP_URI.match(uri)
    return match.group(1) or None if match is not None else None


def host_port(uri: str) -> tuple[str, int | None]:
    """Host and port of a SIP URI."""
    match = _SIP_URI.match(uri)
    if match is None:
        raise SipError(f"not a SIP URI: {uri[:60]!r}")
    hostport = match.group(2)
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = hostport.partition(":")
    if port and not port.isdigit():
        raise SipError(f"bad port in {uri[:60]!r}")
    return host, int(port) if port else None


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def render(start_line: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start_line]
    lines.extend(f"{_header_name(name)}: {value}" for name, value in headers)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def _header_name(name: str) -> str:
    return _CANONICAL.get(name) or "-".join(part.capitalize() for part in name.split("-"))


def response(
    request: SipMessage,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    source: tuple[str, int] | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> bytes:
    """A response to `request`: its Vias (the top one stamped with where it came from), From, To (with our
    tag), Call-ID and CSeq, then `headers`."""
    vias = request.all("via")
    if source is not None and vias:
        vias[0] = _stamp_via(vias[0], source)
    to = request.require("to")
    if to_tag is not None and param(to, "tag") is None:
        to = f"{to};tag={to_tag}"
    copied = [("via", via) for via in vias]
    copied += [("from", request.require("from")), ("to", to), ("call-id", request.call_id)]
    copied.append(("cseq", request.require("cseq")))
    return render(f"SIP/2.0 {status} {reason}", copied + (headers or []), body)


def _stamp_via(via: str, source: tuple[str, int]) -> str:
    """RFC 3581: `received` and a filled-in `rport`, so the response finds its way back through a NAT."""
    first, comma, rest = via.partition(",")
    sent_by, *params = (part.strip() for part in first.split(";"))
    names = [param.split("=")[0].lower() for param in params]
    kept = [param for param, name in zip(params, names, strict=True) if name not in ("rport", "received")]
    stamped = [sent_by, *kept, f"received={source[0]}"]
    if "rport" in names:
        stamped.append(f"rport={source[1]}")
    return ";".join(stamped) + comma + rest
