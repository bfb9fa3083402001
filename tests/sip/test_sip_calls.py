"""SIP calls against a real server on loopback, from a caller that writes its SIP by hand: the answer,
the outbound RTP stream, symmetric RTP, DTMF both ways it comes, CANCEL, hold, the control API, and the
guards (allow-list, INVITE rate limit)."""

from __future__ import annotations

import hashlib
import itertools
import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from flowapp import BargeIn, Hangup, Speak, Transfer
from flowapp.transports.sip import message as sip
from tests.conftest import StartServer
from tests.live.calls import LONG_TEXT, RecordingApp
from tests.sip.peers import Peer, offer, start_sip_server


def greeting_app() -> RecordingApp:
    return RecordingApp({"session_start": Speak(text=LONG_TEXT, barge_in=BargeIn.immediate())})


def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_options_are_answered_and_an_unknown_dialog_gets_481(live_server: StartServer) -> None:
    server = start_sip_server(live_server, greeting_app().app)
    peer = Peer(server.sip_port)
    try:
        peer.request("OPTIONS")
        reply = peer.final()
        assert reply.status == 200 and "INVITE" in (reply.get("allow") or "")
        peer.to_tag = "nosuchdialog"
        peer.request("BYE")
        assert peer.final().status == 481
    finally:
        peer.close()


def test_a_call_is_answered_and_paced_rtp_flows_until_the_caller_hangs_up(live_server: StartServer) -> None:
    recording = greeting_app()
    server = start_sip_server(live_server, recording.app)
    peer = Peer(server.sip_port)
    try:
        answer = peer.invite(offer(peer.rtp_port, "0 101"))
        assert answer.status == 200
        sdp = answer.body.decode()
        assert "m=audio" in sdp and " RTP/AVP 0 101" in sdp and "a=ptime:20" in sdp and "a=sendrecv" in sdp
        packets = peer.rtp_packets(60)
        arrivals = [t for t, _ in packets]
        headers = [p for _, p in packets]
        assert all(p[0] == 0 and len(p[5]) == 160 for p in headers)
        assert all((b[2] - a[2]) & 0xFFFF == 1 for a, b in itertools.pairwise(headers))
        assert all((b[3] - a[3]) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(headers))
        assert len({p[4] for p in headers}) == 1
        assert not any(p[1] for p in headers[1:]), "the marker bit only opens the stream"
        assert 0.8 < arrivals[-1] - arrivals[0] < 2.0, "paced at 20 ms, not sent in a burst"
        assert any(set(p[5]) != {0xFF} for p in headers), "the greeting is heard"
        assert peer.bye().status == 200
        wait_for(lambda: recording.of("session_end"))
        assert recording.of("session_end")[0].reason == "caller_hangup"
        session = recording.of("session_start")[0].session
        assert (session.from_phone_number, session.to_phone_number) == ("+4915100000001", "+4930111")
    finally:
        peer.close()


def test_audio_goes_back_to_where_the_callers_audio_comes_from(live_server: StartServer) -> None:
    server = start_sip_server(live_server, greeting_app().app)
    peer = Peer(server.sip_port)
    elsewhere = Peer(server.sip_port)
    try:
        assert peer.invite(offer(elsewhere.rtp_port)).status == 200, "the SDP names a port the caller does not use"
        elsewhere.rtp_packets(1)
        for _ in range(3):
            peer.send_rtp(0, b"\xff" * 160)
        peer.drain_rtp()
        assert len(peer.rtp_packets(10)) == 10, "latched onto the caller's real address"
        peer.bye()
    finally:
        peer.close()
        elsewhere.close()


def test_one_dtmf_event_per_key_press_from_rtp_and_from_sip_info(live_server: StartServer) -> None:
    recording = greeting_app()
    server = start_sip_server(live_server, recording.app)
    peer = Peer(server.sip_port)
    try:
        assert peer.invite().status == 200
        peer.send_rtp(0, b"\xff" * 160)
        peer.key_press(7, timestamp=8000)
        peer.key_press(11, timestamp=9600)
        wait_for(lambda: len(recording.of("dtmf_received")) >= 2)
        peer.request("INFO", b"Signal=4\r\nDuration=160\r\n", [("content-type", "application/dtmf-relay")])
        assert peer.final().status == 200
        wait_for(lambda: len(recording.of("dtmf_received")) >= 3)
        time.sleep(0.2)
        assert [e.digit for e in recording.of("dtmf_received")] == ["7", "#", "4"]
        peer.bye()
    finally:
        peer.close()


def test_a_cancelled_invite_gets_487_and_never_starts_a_session(live_server: StartServer) -> None:
    recording = greeting_app()
    server = start_sip_server(live_server, recording.app)
    peer = Peer(server.sip_port)
    try:
        peer.request("INVITE", offer(peer.rtp_port), [("content-type", "application/sdp")])
        peer.request("CANCEL", cseq=peer.cseq, branch=peer.invite_branch)
        statuses = {}
        for _ in range(2):
            reply = peer.final()
            statuses[reply.cseq[1]] = reply.status
        assert statuses == {"CANCEL": 200, "INVITE": 487}
        peer.request("ACK", cseq=1, branch=peer.invite_branch)
        time.sleep(0.5)
        assert not recording.of("session_start")
    finally:
        peer.close()


def test_a_reinvite_puts_the_call_on_hold_and_resumes_it_with_a_marker(live_server: StartServer) -> None:
    server = start_sip_server(live_server, greeting_app().app)
    peer = Peer(server.sip_port)
    try:
        assert peer.invite().status == 200
        peer.rtp_packets(3)
        peer.request("INVITE", offer(peer.rtp_port, direction="sendonly"), [("content-type", "application/sdp")])
        held = peer.final()
        assert held.status == 200 and "a=recvonly" in held.body.decode()
        peer.ack(held)
        time.sleep(0.1)
        peer.drain_rtp()
        with pytest.raises(TimeoutError):
            peer.rtp_packets(1, timeout=0.3)
        peer.request("INVITE", offer(peer.rtp_port), [("content-type", "application/sdp")])
        resumed = peer.final()
        assert resumed.status == 200 and "a=sendrecv" in resumed.body.decode()
        peer.ack(resumed)
        (_, first), *_ = peer.rtp_packets(2)
        assert first[1], "the resumed stream opens with the marker bit"
        peer.bye()
    finally:
        peer.close()


def test_the_control_api_lists_the_call_and_hangup_sends_bye(live_server: StartServer) -> None:
    recording = greeting_app()
    server = start_sip_server(live_server, recording.app, insecure_control=True)
    peer = Peer(server.sip_port)
    try:
        assert peer.invite().status == 200
        wait_for(lambda: recording.of("assistant_speak"))  # playing: the barge-in stops it, the hangup runs next
        sessions = httpx.get(server.http.base_url + "/v1/sessions").json()["sessions"]
        assert [(s["transport"], s["to_phone_number"]) for s in sessions] == [("sip", "+4930111")]
        session_id = sessions[0]["session_id"]
        reply = httpx.post(
            f"{server.http.base_url}/v1/sessions/{session_id}/actions", json=[{"type": "barge_in"}, {"type": "hangup"}]
        )
        assert reply.status_code == 202
        bye = peer.next_request("BYE")
        peer.answer_request(bye)
        wait_for(lambda: recording.of("session_end"))
        assert recording.of("session_end")[0].reason == "hangup"
        wait_for(lambda: not httpx.get(server.http.base_url + "/v1/sessions").json()["sessions"])
    finally:
        peer.close()


def _notify_transfer(peer: Peer, status_line: str) -> None:
    sipfrag = [("event", "refer"), ("subscription-state", "terminated"), ("content-type", "message/sipfrag")]
    peer.request("NOTIFY", status_line.encode() + b"\r\n", sipfrag)


def test_transfer_sends_refer_to_the_target_then_bye_once_the_target_answered(live_server: StartServer) -> None:
    recording = RecordingApp({"dtmf_received": Transfer(target_phone_number="+4930999")})
    server = start_sip_server(live_server, recording.app)
    peer = Peer(server.sip_port)
    try:
        assert peer.invite().status == 200
        peer.send_rtp(0, b"\xff" * 160)
        peer.key_press(1, timestamp=8000)
        refer = peer.next_request("REFER")
        assert refer.get("refer-to") == "<sip:+4930999@127.0.0.1>"
        assert refer.to_tag() == peer.tag and refer.call_id == peer.call_id
        peer.answer_request(refer, 202, "Accepted")
        _notify_transfer(peer, "SIP/2.0 200 OK")
        peer.answer_request(peer.next_request("BYE"))
        wait_for(lambda: recording.of("session_end"))
        assert recording.of("session_end")[0].reason == "transfer"
        assert len(recording.of("session_start")) == 1
    finally:
        peer.close()


@pytest.mark.parametrize("failure", ["refer-declined", "target-busy"])
def test_a_failed_transfer_with_a_timeout_brings_the_call_back_with_a_new_session_start(
    live_server: StartServer, failure: str
) -> None:
    recording = RecordingApp({"dtmf_received": Transfer(target_phone_number="+4930999", timeout=10)})
    server = start_sip_server(live_server, recording.app)
    peer = Peer(server.sip_port)
    try:
        assert peer.invite().status == 200
        peer.send_rtp(0, b"\xff" * 160)
        peer.key_press(1, timestamp=8000)
        refer = peer.next_request("REFER")
        if failure == "refer-declined":
            peer.answer_request(refer, 603, "Decline")
        else:
            peer.answer_request(refer, 202, "Accepted")
            _notify_transfer(peer, "SIP/2.0 486 Busy Here")
        wait_for(lambda: len(recording.of("session_start")) == 2)
        first, second = recording.of("session_start")
        assert first.session.id == second.session.id
        peer.drain_rtp()
        assert len(peer.rtp_packets(5)) == 5, "the call's audio goes on"
        assert peer.bye().status == 200
        wait_for(lambda: len(recording.of("session_end")) == 2)
        assert [e.reason for e in recording.of("session_end")] == ["transfer", "caller_hangup"]
    finally:
        peer.close()


def test_the_app_hanging_up_sends_bye_and_the_call_is_released(live_server: StartServer) -> None:
    recording = RecordingApp({"session_start": [Speak(text="Goodbye."), Hangup()]})
    server = start_sip_server(live_server, recording.app)
    peer = Peer(server.sip_port)
    try:
        assert peer.invite().status == 200
        bye = peer.next_request("BYE", timeout=8)
        peer.answer_request(bye)
        wait_for(lambda: recording.of("session_end"))
    finally:
        peer.close()


def test_a_source_outside_the_allow_list_gets_no_answer_at_all(live_server: StartServer) -> None:
    recording = greeting_app()
    server = start_sip_server(live_server, recording.app, sip_allow=("10.0.0.0/8",))
    peer = Peer(server.sip_port)
    try:
        peer.request("OPTIONS")
        peer.request("INVITE", offer(peer.rtp_port), [("content-type", "application/sdp")])
        with pytest.raises(TimeoutError):
            peer.receive(timeout=1.0)
        assert not recording.of("session_start")
    finally:
        peer.close()


def test_invites_beyond_the_rate_limit_get_503(live_server: StartServer) -> None:
    server = start_sip_server(live_server, greeting_app().app, sip_invite_burst=2, sip_invite_rate=0.01)
    peers = [Peer(server.sip_port) for _ in range(3)]
    try:
        statuses = [p.invite().status for p in peers]
        assert statuses == [200, 200, 503]
        for peer in peers[:2]:
            peer.bye()
    finally:
        for peer in peers:
            peer.close()


def test_rtp_ports_come_from_the_configured_range(live_server: StartServer) -> None:
    server = start_sip_server(live_server, greeting_app().app, rtp_ports=(31000, 31003))
    peer = Peer(server.sip_port)
    try:
        assert peer.invite().status == 200
        assert peer.flowapp_rtp is not None and peer.flowapp_rtp[1] in (31000, 31002)
        peer.bye()
    finally:
        peer.close()


def _digest_response(challenge: str, user: str, password: str, uri: str) -> str:
    """RFC 2617 with MD5 and qop=auth, written out independently of flowapp's implementation."""
    fields = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge))
    cnonce, nc = "0a4f113b", "00000001"
    ha1 = hashlib.md5(f"{user}:{fields['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"INVITE:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{fields['nonce']}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{user}", realm="{fields["realm"]}", nonce="{fields["nonce"]}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


def test_with_credentials_set_an_invite_must_answer_the_digest_challenge(live_server: StartServer) -> None:
    recording = greeting_app()
    server = start_sip_server(live_server, recording.app, sip_username="pbx", sip_password="s3cret")
    peer = Peer(server.sip_port)
    uri = f"sip:+4930111@127.0.0.1:{server.sip_port}"
    sdp = [("content-type", "application/sdp")]
    try:
        assert peer.invite().status == 401
        peer.request("INVITE", offer(peer.rtp_port), sdp)
        challenged = peer.final()
        (md5,) = challenged.all("www-authenticate")
        assert challenged.status == 401 and "algorithm=MD5" in md5 and 'qop="auth"' in md5
        wrong = _digest_response(md5, "pbx", "guess", uri)
        peer.request("INVITE", offer(peer.rtp_port), [*sdp, ("authorization", wrong)])
        assert peer.final().status == 401, "a wrong password is challenged again"
        assert not recording.of("session_start")
        right = _digest_response(md5, "pbx", "s3cret", uri)
        peer.request("INVITE", offer(peer.rtp_port), [*sdp, ("authorization", right)])
        answer = peer.final()
        assert answer.status == 200
        peer.to_tag = answer.to_tag()
        peer.ack(answer)
        wait_for(lambda: recording.of("session_start"))
        assert peer.bye().status == 200
    finally:
        peer.close()


class TcpCaller:
    """The scripted caller's SIP over one TCP connection."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.stream = socket.create_connection(peer.server, timeout=5)
        peer.send = self.stream.sendall  # type: ignore[method-assign]
        self._buffer = b""

    def receive(self, timeout: float = 5.0) -> sip.SipMessage:
        self.stream.settimeout(timeout)
        while True:
            head, sep, rest = self._buffer.partition(b"\r\n\r\n")
            if sep:
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
                if len(rest) >= length:
                    self._buffer = rest[length:]
                    return sip.parse(head + sep + rest[:length])
            data = self.stream.recv(65536)
            if not data:
                raise ConnectionError("closed by flowapp")
            self._buffer += data


def test_sip_over_tcp_is_framed_by_content_length_and_bye_comes_back_on_the_connection(
    live_server: StartServer,
) -> None:
    recording = RecordingApp({"session_start": [Speak(text="Goodbye."), Hangup()]})
    server = start_sip_server(live_server, recording.app)
    peer = Peer(server.sip_port)
    caller = TcpCaller(peer)
    try:
        peer.receive = caller.receive  # type: ignore[method-assign]
        options = peer.request("OPTIONS")
        caller.stream.sendall(b"\r\n\r\n" + options[:30])
        time.sleep(0.05)
        caller.stream.sendall(options[30:])
        assert peer.final().status == 200 and peer.final().status == 200, "two OPTIONS, one split across writes"
        answer = peer.invite()
        assert answer.status == 200 and ";transport=tcp" in (answer.get("contact") or "")
        bye = peer.next_request("BYE", timeout=8)
        assert bye.require("via").startswith("SIP/2.0/TCP")
        caller.stream.sendall(sip.response(bye, 200, "OK"))
        wait_for(lambda: recording.of("session_end"))
    finally:
        caller.stream.close()
        peer.close()


@pytest.mark.parametrize(
    "garbage",
    [b"INVITE sip:x SIP/2.0\r\nVia: x\r\n\r\n", b"A" * (sip.MAX_MESSAGE_BYTES + 10)],
    ids=["no-content-length", "endless-headers"],
)
def test_a_tcp_stream_that_cannot_be_framed_is_closed(live_server: StartServer, garbage: bytes) -> None:
    server = start_sip_server(live_server, greeting_app().app)
    with socket.create_connection(("127.0.0.1", server.sip_port), timeout=5) as stream:
        stream.sendall(garbage)
        assert stream.recv(100) == b"", "flowapp closed the connection"


def test_a_tcp_connection_from_outside_the_allow_list_is_dropped(live_server: StartServer) -> None:
    server = start_sip_server(live_server, greeting_app().app, sip_allow=("10.0.0.0/8",))
    with socket.create_connection(("127.0.0.1", server.sip_port), timeout=5) as stream:
        try:  # closed or reset, depending on whether the close beat the request: never answered, never held
            stream.sendall(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
            answer = stream.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            answer = b""
    assert answer == b""


def test_with_a_record_dir_a_sip_call_is_recorded(live_server: StartServer, tmp_path: Path) -> None:
    recording = greeting_app()
    server = start_sip_server(live_server, recording.app, record_dir=str(tmp_path))
    peer = Peer(server.sip_port)
    try:
        assert peer.invite().status == 200
        for _ in range(10):
            peer.send_rtp(0, b"\xff" * 160)
        assert peer.bye().status == 200
        wait_for(lambda: recording.of("session_end"))
    finally:
        peer.close()
    session_id = recording.of("session_start")[0].session.id
    wait_for(lambda: any(session_id in str(path) for path in tmp_path.rglob("*")))
