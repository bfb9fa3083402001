"""The SIP user agent: answers INVITEs over UDP and TCP and runs each call as a live call in the engine.

A call is the same live call a media stream makes (`LiveDriver`): the same app, barge-in on its audio,
listed in `GET /v1/sessions` with transport `sip`, steered by the control API. `hangup` sends BYE,
`transfer` sends REFER (then BYE once the far end took it).

flowapp's own small agent rather than a SIP library: every packet goes through the allow-list before it
is parsed, the parser is strict and bounded, the audio is paced by the engine's shared ticker, and none of
it can block the event loop. In-dialog requests and responses go back to the address the dialog's
requests come from, which is what a PBX or trunk behind a NAT needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from flowapp.app import FlowApp
from flowapp.engine.call import EngineConfig
from flowapp.engine.live import LiveDriver
from flowapp.engine.render import Renderer
from flowapp.logs import call_logger
from flowapp.protocol.actions import Action
from flowapp.protocol.events import SessionInfo
from flowapp.recording.store import record_call
from flowapp.responder import Responder
from flowapp.session import NotConnected, describe_call
from flowapp.settings import ServerSettings
from flowapp.stt import make_recognizer
from flowapp.transports.sip import message as sip
from flowapp.transports.sip.digest import DigestAuth
from flowapp.transports.sip.guard import SourceGuard, parse_networks
from flowapp.transports.sip.links import Link, TcpLink, UdpLink
from flowapp.transports.sip.rtp import RtpStream
from flowapp.transports.sip.sdp import Answer, Offer, SdpError, negotiate, parse_offer, render_answer
from flowapp.workers import SETUP

logger = logging.getLogger("flowapp.sip")

T1 = 0.5
T2 = 4.0
TRANSACTION_TIMEOUT = 64 * T1
"""RFC 3261 timers: retransmissions over UDP start at T1, double up to T2, give up after 64*T1."""
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY"
SERVER = "flowapp"
MAX_LOGGED_BAD = 20
LATENESS_SAMPLES = 100_000
"""RTP send-lateness samples kept across all calls (for the benchmark); the oldest are dropped."""
_SIPFRAG = re.compile(r"^\s*SIP/2\.0 ([1-6][0-9]{2})")
_INFO_DIGIT = re.compile(r"^\s*(?:Signal\s*=\s*)?([0-9*#])\s*$", re.IGNORECASE | re.MULTILINE)


class SipCall:
    """A `LiveCall` carried by SIP: control acts on the live audio, pushes go to the engine."""

    transport = "sip"

    def __init__(self, info: SessionInfo, driver: LiveDriver, call_id: str) -> None:
        self.info = info
        self.driver = driver
        self.call_id = call_id
        self.connected_since = datetime.now(UTC)

    async def barge_in(self) -> bool:
        if self.driver.ended:
            raise NotConnected("the SIP call has ended")
        return self.driver.barge_in()

    async def push(self, actions: list[Action]) -> None:
        if self.driver.ended:
            raise NotConnected("the SIP call has ended")
        await self.driver.push(actions)

    def describe(self) -> dict[str, Any]:
        return describe_call(self.info, self.transport, self.connected_since)


class RtpOutlet:
    """The engine's `Outlet` on RTP: frames leave as they are played, so nothing waits at the far end to be
    taken back on a barge-in (beyond its own short jitter buffer)."""

    def __init__(self, dialog: Dialog) -> None:
        self.dialog = dialog

    def send(self, ulaw: bytes | None, *, boundary: bool) -> None:
        if self.dialog.rtp is not None:
            self.dialog.rtp.send(ulaw)

    def drop_queued(self) -> None:
        """Nothing is queued: RTP is sent in real time."""

    def unheard_ms(self) -> int:
        return 0

    def close(self, reason: str) -> None:
        self.dialog.engine_ended(reason)


class Dialog:
    """One call: its INVITE, tags, route back, RTP stream and live driver."""

    def __init__(self, agent: SipAgent, invite: sip.SipMessage, link: Link) -> None:
        self.agent = agent
        self.invite = invite
        self.link = link
        self.source = link.peer
        self.call_id = invite.call_id
        self.remote_tag = invite.from_tag() or ""
        self.local_tag = sip.new_tag()
        self.key = (self.call_id, self.remote_tag)
        self.local_cseq = random.randint(1, 10_000)
        self.sdp_version = 1
        self.sdp_session = random.randint(1, 2**31)
        self.rtp: RtpStream | None = None
        self.rtp_transport: asyncio.DatagramTransport | None = None
        self.driver: LiveDriver | None = None
        self.call: SipCall | None = None
        self.info: SessionInfo | None = None
        self.codec = 0
        self.confirmed = False
        self.cancelled = False
        self.ended = False
        self.remote_ended = False
        self._transfer_outcome: asyncio.Future[int] | None = None
        self.last_invite_response: bytes | None = None
        self.invite_branch = invite.branch
        self._retransmit: asyncio.Task[None] | None = None
        self._teardown: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[int]] = {}
        self.log = call_logger(logger, None, transport="sip", call_id=self.call_id[:64])

    # Set-up --------------------------------------------------------------------------------------

    async def answer(self) -> None:
        agent = self.agent
        self.send_response(self.invite, 100, "Trying")
        try:
            offer = parse_offer(self.invite.body) if self.invite.body else None
            if offer is None:
                raise SdpError("an INVITE without an SDP offer is not supported")
            answer = negotiate(offer)
        except SdpError as exc:
            self.log.info("refused a call: %s", exc)
            self.final_response(488, "Not Acceptable Here", [("warning", f'399 flowapp "{exc}"')])
            return
        self.codec = answer.codec
        if not await self._open_rtp(offer):
            self.final_response(503, "Service Unavailable", [("retry-after", "5")])
            return
        info = self.agent.session_info(self.invite)
        if not agent.app.calls.claim(info.id, self):
            self.final_response(500, "Server Internal Error")
            return
        self.info = info
        self.log = call_logger(logger, info.id, transport="sip", call_id=self.call_id[:64])
        try:
            driver = await self._new_driver(info)
        except Exception:
            self.log.exception("setting up the call failed")
            self.final_response(500, "Server Internal Error")
            return
        if self.cancelled or self.ended:
            self._release()
            return
        self.driver = driver
        self.call = SipCall(info, driver, self.call_id)
        agent.app.calls.add(self.call, owner=self)
        body = self._sdp(answer)
        self.final_response(
            200, "OK", [("contact", agent.contact(self.link)), ("content-type", "application/sdp")], body
        )
        driver.start()
        if offer.on_hold and self.rtp is not None:
            self.rtp.hold(True)
        self.log.info("SIP call answered", extra={"codec": answer.codec, "peer": self.source[0]})

    async def _new_driver(self, info: SessionInfo) -> LiveDriver:
        """Built on the set-up threads, off the event loop: a neural VAD loads its model."""
        agent = self.agent
        settings = agent.settings
        config = agent.engine_config()
        return await SETUP.run(
            LiveDriver,
            info,
            agent.responder,
            agent.renderer,
            RtpOutlet(self),
            config=config,
            recognizer=make_recognizer(settings.recognizer, live=True, workers=settings.recognizer_workers),
            jitter_frames=settings.media_jitter_frames,
            recording=record_call(settings, info, config, "sip"),
        )

    async def _open_rtp(self, offer: Offer) -> bool:
        agent = self.agent
        low, high = agent.settings.rtp_ports
        ports = list(range(low - low % 2 + 2 if low % 2 else low, high + 1, 2))
        random.shuffle(ports)
        loop = asyncio.get_running_loop()
        for port in ports[:20]:
            stream = RtpStream(
                (offer.address, offer.port),
                self.codec,
                offer.telephone_event,
                frozenset({offer.address, self.source[0]}),
                self._audio,
                self._digit,
                agent.lateness,
            )
            try:
                transport, _ = await loop.create_datagram_endpoint(_factory(stream), local_addr=(agent.bind_host, port))
            except OSError:
                continue
            self.rtp = stream
            self.rtp_transport = transport
            return True
        self.log.error("no free RTP port in %d-%d", low, high)
        return False

    def _sdp(self, answer: Answer) -> bytes:
        assert self.rtp is not None
        return render_answer(
            answer, self.agent.advertised(self.source), self.rtp.port, self.sdp_session, self.sdp_version
        )

    # Media ---------------------------------------------------------------------------------------

    def _audio(self, ulaw: bytes) -> None:
        driver = self.driver
        if driver is None or driver.ended:
            return
        if not driver.feed(ulaw):
            self.log.warning("RTP faster than real time: the call is ended")
            driver.abort("media_flood")

    def _digit(self, digit: str) -> None:
        if self.driver is not None and not self.driver.ended:
            self.driver.dtmf(digit)

    # Requests in the dialog ----------------------------------------------------------------------

    def on_request(self, request: sip.SipMessage) -> None:
        method = request.method
        if method == "ACK":
            self.confirmed = True
            if self._retransmit is not None:
                self._retransmit.cancel()
            return
        if method == "BYE":
            self.send_response(request, 200, "OK")
            self.remote_ended = True
            self.end("caller_hangup")
        elif method == "CANCEL":
            self.send_response(request, 200, "OK")
            if self.driver is None and not self.ended:
                self.cancelled = True
                self.final_response(487, "Request Terminated")
                self.end("caller_cancelled")
        elif method == "INVITE":
            self._reinvite(request)
        elif method == "INFO":
            self._info(request)
        elif method == "NOTIFY":
            self.send_response(request, 200, "OK")
            self._transfer_progress(request)
        elif method == "OPTIONS":
            self.send_response(request, 200, "OK", [("allow", ALLOW)])
        else:
            self.send_response(request, 405, "Method Not Allowed", [("allow", ALLOW)])

    def _reinvite(self, request: sip.SipMessage) -> None:
        """Hold, resume or a codec change: a new offer in the dialog gets a new answer."""
        if self.driver is None or self.rtp is None:
            self.send_response(request, 491, "Request Pending")
            return
        try:
            offer = parse_offer(request.body)
            answer = negotiate(offer, current=self.codec)
        except SdpError as exc:
            self.send_response(request, 488, "Not Acceptable Here", [("warning", f'399 flowapp "{exc}"')])
            return
        self.codec = answer.codec
        self.rtp.codec = answer.codec
        self.rtp.telephone_event = answer.telephone_event
        if not offer.on_hold and not self.rtp.latched:
            self.rtp.remote = (offer.address, offer.port)
        self.rtp.hold(offer.on_hold)
        self.sdp_version += 1
        self.invite = request
        self.invite_branch = request.branch
        self.confirmed = False
        headers = [("contact", self.agent.contact(self.link)), ("content-type", "application/sdp")]
        self.final_response(200, "OK", headers, self._sdp(answer))
        self.log.info("re-INVITE: %s", "on hold" if offer.on_hold else "active")

    def _info(self, request: sip.SipMessage) -> None:
        """SIP INFO DTMF (`application/dtmf-relay` `Signal=5`, or `application/dtmf` `5`)."""
        kind = (request.get("content-type") or "").split(";")[0].strip().lower()
        if kind not in ("application/dtmf-relay", "application/dtmf"):
            self.send_response(request, 415, "Unsupported Media Type", [("accept", "application/dtmf-relay")])
            return
        match = _INFO_DIGIT.search(request.body.decode("utf-8", "replace"))
        self.send_response(request, 200, "OK")
        if match is not None:
            self._digit(match.group(1))

    # Responses -----------------------------------------------------------------------------------

    def send_response(
        self,
        request: sip.SipMessage,
        status: int,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> bytes:
        data = sip.response(
            request,
            status,
            reason,
            to_tag=self.local_tag if status > 100 else None,
            source=self.source,
            headers=[("server", SERVER), *(headers or [])],
            body=body,
        )
        self.link.send(data)
        if request.method == "INVITE":
            self.last_invite_response = data
        return data

    def final_response(
        self, status: int, reason: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> None:
        """A final INVITE response, retransmitted over UDP until the ACK comes (RFC 3261 17.2.1 and 13.3.1.4)."""
        data = self.send_response(self.invite, status, reason, headers, body)
        if self._retransmit is not None:
            self._retransmit.cancel()
        self._retransmit = asyncio.create_task(self._retransmit_until_ack(data, status), name="flowapp-sip-2xx")
        if status >= 300:
            self.end("refused")

    async def _retransmit_until_ack(self, data: bytes, status: int) -> None:
        interval = T1
        waited = 0.0
        while waited < TRANSACTION_TIMEOUT and not self.confirmed:
            await asyncio.sleep(interval)
            waited += interval
            if self.confirmed or (self.ended and status < 300):
                return
            if not self.link.reliable:
                self.link.send(data)
            interval = min(interval * 2, T2)
        if not self.confirmed and status < 300 and not self.ended:
            self.log.warning("no ACK for the 200 OK: the call is ended")
            self.hang_up("no_ack")

    def on_response(self, response: sip.SipMessage) -> None:
        waiting = self._pending.pop(response.branch, None)
        if waiting is not None and not waiting.done() and response.status >= 200:
            waiting.set_result(response.status)
        elif waiting is not None and response.status < 200:
            self._pending[response.branch] = waiting

    # Requests we send ----------------------------------------------------------------------------

    async def request(self, method: str, headers: list[tuple[str, str]] | None = None) -> int:
        """Send an in-dialog request (retransmitted over UDP) and wait for its final status; 408 on timeout."""
        self.local_cseq += 1
        branch = sip.new_branch()
        local_host, local_port = self.agent.advertised(self.source), self.agent.port
        remote = self.invite.require("from")
        local = self.invite.require("to")
        if sip.param(local, "tag") is None:
            local = f"{local};tag={self.local_tag}"
        contact = self.invite.get("contact")
        target = sip.uri_of(contact) if contact else sip.uri_of(remote)
        routes = [("route", route) for route in reversed(self.invite.all("record-route"))]
        data = sip.render(
            f"{method} {target} SIP/2.0",
            [
                ("via", f"SIP/2.0/{self.link.name} {_host_for_uri(local_host)}:{local_port};branch={branch};rport"),
                ("max-forwards", "70"),
                ("from", local),
                ("to", remote),
                ("call-id", self.call_id),
                ("cseq", f"{self.local_cseq} {method}"),
                *routes,
                ("contact", self.agent.contact(self.link)),
                ("user-agent", SERVER),
                *(headers or []),
            ],
        )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[branch] = future
        interval, waited = T1, 0.0
        self.link.send(data)
        while waited < TRANSACTION_TIMEOUT:
            try:
                return await asyncio.wait_for(asyncio.shield(future), interval)
            except TimeoutError:
                waited += interval
                if not self.link.reliable:
                    self.link.send(data)
                interval = min(interval * 2, T2)
        self._pending.pop(branch, None)
        return 408

    # The end -------------------------------------------------------------------------------------

    def engine_ended(self, reason: str) -> None:
        """The app hung up or transferred (or the call failed): tell the far end."""
        if self.ended:
            return
        transfer = self.driver.engine.transfer if self.driver is not None else None
        if reason == "transfer" and transfer is not None:
            target = self.agent.settings.sip_transfer_uri.format(
                target=transfer.target_phone_number, peer=_host_for_uri(self.source[0])
            )
            self.hang_up(reason, refer_to=target)
        else:
            self.hang_up(reason)

    def hang_up(self, reason: str, refer_to: str | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        self._teardown = asyncio.create_task(self._bye(reason, refer_to), name="flowapp-sip-bye")

    async def _bye(self, reason: str, refer_to: str | None) -> None:
        try:
            if refer_to is not None and not await self._transferred(refer_to) and not self.remote_ended:
                timeout = self.driver.engine.transfer.timeout if self.driver and self.driver.engine.transfer else None
                if timeout is not None and await self._resume():
                    return
            if not self.remote_ended:
                await self.request("BYE")
        finally:
            if self.ended:
                await self._close(reason)

    async def _transferred(self, target: str) -> bool:
        """REFER, then the NOTIFYs' sipfrag says how the transfer went (RFC 3515). Without a final NOTIFY
        within the action's `timeout` (or 32 s), an accepted REFER counts as done."""
        transfer = self.driver.engine.transfer if self.driver is not None else None
        self._transfer_outcome = asyncio.get_running_loop().create_future()
        status = await self.request(
            "REFER", [("refer-to", f"<{target}>"), ("referred-by", self.agent.contact(self.link))]
        )
        self.log.info("REFER to %s: %d", target, status)
        if not 200 <= status < 300:
            return False
        wait = transfer.timeout if transfer is not None and transfer.timeout else TRANSACTION_TIMEOUT
        try:
            outcome = await asyncio.wait_for(self._transfer_outcome, wait)
        except TimeoutError:
            return True
        self.log.info("transfer to %s: %d", target, outcome)
        return 200 <= outcome < 300

    def _transfer_progress(self, notify: sip.SipMessage) -> None:
        kind = (notify.get("content-type") or "").split(";")[0].strip().lower()
        match = _SIPFRAG.match(notify.body.decode("utf-8", "replace")) if kind == "message/sipfrag" else None
        outcome = self._transfer_outcome
        if match is not None and int(match.group(1)) >= 200 and outcome is not None and not outcome.done():
            outcome.set_result(int(match.group(1)))

    async def _resume(self) -> bool:
        """The protocol's rule for a failed transfer with a timeout: the call comes back to the app, with a
        new `session_start` for the same session."""
        assert self.driver is not None and self.info is not None
        await self.driver.stop("transfer")
        try:
            driver = await self._new_driver(self.info)
        except Exception:
            self.log.exception("taking the call back after a failed transfer failed")
            return False
        if self.remote_ended:
            return False
        self.ended = False
        self.driver = driver
        self.call = SipCall(self.info, driver, self.call_id)
        self.agent.app.calls.add(self.call, owner=self)
        driver.start()
        self.log.info("transfer failed: the call is back with the app")
        return True

    def end(self, reason: str) -> None:
        """The far end ended the call (BYE, CANCEL) or it never got going."""
        if self.ended:
            return
        self.ended = True
        self._teardown = asyncio.create_task(self._close(reason), name="flowapp-sip-end")

    def _release(self) -> None:
        if self.info is not None:
            self.agent.app.calls.remove(self.info.id, owner=self)
        if self.rtp_transport is not None:
            self.rtp_transport.close()

    async def _close(self, reason: str) -> None:
        try:
            if self.driver is not None:
                await self.driver.stop(reason)
                self.log.info(
                    "SIP call ended: %s",
                    self.driver.engine.end_reason,
                    extra={
                        "packets_in": self.rtp.packets_in if self.rtp else 0,
                        "packets_out": self.rtp.packets_out if self.rtp else 0,
                    },
                )
        finally:
            self._release()
            if self._retransmit is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._retransmit  # an error response keeps the dialog until its ACK absorbs it
            self.agent.forget(self)


def check_sip_port(settings: ServerSettings) -> None:
    """Raise OSError, saying where, when the SIP port cannot be bound for UDP and TCP (taken, or no such interface)."""
    host = settings.sip_host or settings.host
    assert settings.sip_port is not None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, settings.sip_port))
            except OSError as exc:
                proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
                raise OSError(f"cannot listen on {proto} {host}:{settings.sip_port}: {exc.strerror or exc}") from None


def _factory(stream: RtpStream) -> Callable[[], RtpStream]:
    return lambda: stream


def _host_for_uri(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class SipAgent(asyncio.DatagramProtocol):
    """The SIP endpoint on one UDP socket and a TCP listener on the same port; `start` binds them, `stop`
    hangs up every call and closes them."""

    def __init__(
        self,
        settings: ServerSettings,
        app: FlowApp,
        responder: Responder,
        renderer: Renderer,
        engine_config: Callable[[], EngineConfig],
    ) -> None:
        self.settings = settings
        self.app = app
        self.responder = responder
        self.renderer = renderer
        self.engine_config = engine_config
        self.bind_host = settings.sip_host or settings.host
        self.port = settings.sip_port or 0
        self.guard = SourceGuard(
            parse_networks(settings.sip_allow), settings.sip_invite_rate, settings.sip_invite_burst
        )
        self.auth = (
            DigestAuth(settings.sip_username, settings.sip_password, settings.sip_realm)
            if settings.sip_username and settings.sip_password
            else None
        )
        self.dialogs: dict[tuple[str, str], Dialog] = {}
        self.lateness: deque[float] = deque(maxlen=LATENESS_SAMPLES)
        self.bad_messages = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.bind_host, self.port))
        self.port = int(transport.get_extra_info("sockname")[1])
        self._tcp = await loop.create_server(
            lambda: TcpLink(self.guard.allowed, self.receive, self._carries_a_call), self.bind_host, self.port
        )
        logger.info(
            "SIP endpoint on udp and tcp %s:%d, RTP ports %d-%d, callers from %s",
            self.bind_host,
            self.port,
            *self.settings.rtp_ports,
            ", ".join(self.settings.sip_allow),
        )

    async def stop(self) -> None:
        for dialog in list(self.dialogs.values()):
            dialog.hang_up("server_shutdown")
        tasks = [d._teardown for d in list(self.dialogs.values()) if d._teardown is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._transport is not None:
            self._transport.close()
        if self._tcp is not None:
            self._tcp.close()

    def _carries_a_call(self, link: TcpLink) -> bool:
        return any(dialog.link is link for dialog in self.dialogs.values())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def error_received(self, exc: Exception) -> None:
        """ICMP port unreachable from a peer that left: the transaction timers deal with it."""

    def _udp(self) -> asyncio.DatagramTransport | None:
        return self._transport

    # Addresses -----------------------------------------------------------------------------------

    def advertised(self, peer: tuple[str, int]) -> str:
        """The address callers reach us at: the configured public one, the bound one, or the interface the
        route to `peer` leaves by."""
        if self.settings.sip_public_address:
            return self.settings.sip_public_address
        if self.bind_host not in ("0.0.0.0", "::", ""):
            return self.bind_host
        family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((peer[0], peer[1] or 5060))
                return str(probe.getsockname()[0])
            except OSError:
                return "127.0.0.1"

    def contact(self, link: Link) -> str:
        transport = ";transport=tcp" if link.name == "TCP" else ""
        return f"<sip:flowapp@{_host_for_uri(self.advertised(link.peer))}:{self.port}{transport}>"

    # Receiving -----------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        source = (str(addr[0]), int(addr[1]))
        if not self.guard.allowed(source[0]):
            return
        if len(data) <= 4 and not data.strip():
            return  # a keep-alive (CRLF ping)
        self.receive(data, UdpLink(self._udp, source))

    def receive(self, data: bytes, link: Link) -> None:
        try:
            message = sip.parse(data)
            self._dispatch(message, link)
        except sip.SipError as exc:
            self._bad(data, link, str(exc))
        except Exception:
            logger.exception("a SIP message failed; it is dropped, the calls go on")

    def _bad(self, data: bytes, link: Link, why: str) -> None:
        """Answer 400 when enough of the request is readable to address a response; drop it otherwise."""
        self.bad_messages += 1
        if self.bad_messages <= MAX_LOGGED_BAD:
            logger.warning("malformed SIP from %s: %s", link.peer[0], why)
        try:
            loose = _loose_parse(data)
        except sip.SipError:
            return
        if loose.is_request and loose.method != "ACK":
            warning = [("warning", f'399 flowapp "{why[:80]}"')]
            link.send(sip.response(loose, 400, "Bad Request", source=link.peer, headers=warning))

    def _dispatch(self, message: sip.SipMessage, link: Link) -> None:
        if not message.is_request:
            key = (message.call_id, message.to_tag() or "")
            dialog = self.dialogs.get(key)
            if dialog is not None:
                dialog.on_response(message)
            return
        key = (message.call_id, message.from_tag() or "")
        dialog = self.dialogs.get(key)
        method = message.method
        if dialog is not None:
            if method == "INVITE" and message.to_tag() is None:
                if dialog.last_invite_response is not None and message.branch == dialog.invite_branch:
                    link.send(dialog.last_invite_response)
                return
            dialog.on_request(message)
            return
        if method == "INVITE" and message.to_tag() is None:
            self._new_call(message, link)
        elif method == "OPTIONS":
            self._stateless(message, link, 200, "OK", [("allow", ALLOW), ("accept", "application/sdp")])
        elif method == "ACK":
            return
        elif method in ("BYE", "CANCEL", "INFO", "INVITE", "NOTIFY"):
            self._stateless(message, link, 481, "Call/Transaction Does Not Exist")
        else:
            self._stateless(message, link, 405, "Method Not Allowed", [("allow", ALLOW)])

    def _stateless(
        self,
        request: sip.SipMessage,
        link: Link,
        status: int,
        reason: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        tag = sip.new_tag() if request.to_tag() is None else None
        extra = [("server", SERVER), *(headers or [])]
        link.send(sip.response(request, status, reason, to_tag=tag, source=link.peer, headers=extra))

    def _new_call(self, invite: sip.SipMessage, link: Link) -> None:
        if not self.guard.invite_allowed(link.peer[0]):
            self._stateless(invite, link, 503, "Service Unavailable", [("retry-after", "10")])
            return
        if self.auth is not None and not self.auth.verify(invite.get("authorization"), "INVITE"):
            challenges = [("www-authenticate", value) for value in self.auth.challenges()]
            self._stateless(invite, link, 401, "Unauthorized", challenges)
            return
        if len(self.dialogs) >= self.settings.sip_max_calls:
            self._stateless(invite, link, 503, "Service Unavailable", [("retry-after", "5")])
            return
        dialog = Dialog(self, invite, link)
        self.dialogs[dialog.key] = dialog
        task = asyncio.create_task(self._answer(dialog), name="flowapp-sip-answer")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, dialog: Dialog) -> None:
        try:
            await dialog.answer()
        except Exception:
            dialog.log.exception("answering the call failed")
            if not dialog.ended:
                dialog.final_response(500, "Server Internal Error")

    def forget(self, dialog: Dialog) -> None:
        if self.dialogs.get(dialog.key) is dialog:
            del self.dialogs[dialog.key]

    # Session fields ------------------------------------------------------------------------------

    def session_info(self, invite: sip.SipMessage) -> SessionInfo:
        """Caller from P-Asserted-Identity (else From), callee from To or the Request-URI (`sip_called_number`)."""
        asserted = invite.get("p-asserted-identity")
        caller = sip.user_of(asserted) if asserted else None
        caller = caller or sip.user_of(invite.require("from"))
        to, uri = sip.user_of(invite.require("to")), sip.user_of(invite.uri)
        callee = (uri or to) if self.settings.sip_called_number == "request-uri" else (to or uri)
        return SessionInfo(
            id=str(uuid.uuid4()),
            direction="inbound",
            from_phone_number=_printable(caller),
            to_phone_number=_printable(callee),
            phone_number=_printable(callee),
        )


def _printable(value: str | None) -> str | None:
    if value is None:
        return None
    value = value[:64]
    return value if value.isprintable() else None


def _loose_parse(data: bytes) -> sip.SipMessage:
    """Enough of a malformed request to address a 400: the headers a response copies, nothing else."""
    head = data[: sip.MAX_MESSAGE_BYTES].split(b"\r\n\r\n", 1)[0]
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        raise sip.SipError("not UTF-8") from None
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[0].isalpha():
        raise sip.SipError("no request line")
    message = sip.SipMessage(method=parts[0].upper(), uri=parts[1])
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = sip._COMPACT.get(name.strip().lower(), name.strip().lower())
        if colon and name in ("via", "from", "to", "call-id", "cseq") and value.strip().isprintable():
            message.headers.append((name, value.strip()))
    for name in ("via", "from", "to", "call-id", "cseq"):
        message.require(name)
    return message
