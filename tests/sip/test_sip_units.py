"""The SIP endpoint's pieces on their own: the message parser, SDP negotiation, RTP packets, the reorder
buffer, key presses, the allow-list and the INVITE rate limit."""

from __future__ import annotations

import socket

import pytest

from flowapp.cli import main
from flowapp.settings import ServerSettings, SettingsError
from flowapp.transports.sip import message as sip
from flowapp.transports.sip.guard import SourceGuard, parse_networks
from flowapp.transports.sip.rtp import KeyPresses, Reorder, RtpError, build_packet, from_ulaw, parse_packet, to_ulaw
from flowapp.transports.sip.sdp import PCMA, PCMU, SdpError, negotiate, parse_offer, render_answer
from tests.sip.peers import offer

INVITE = (
    b"INVITE sip:+4930111@192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKabc;rport\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKfirst\r\n"
    b'f: "Alice" <sip:+4915100000001@192.0.2.9>;tag=a1\r\n'
    b"To: <sip:+4930111@192.0.2.1>\r\n"
    b"Call-ID: c1@192.0.2.9\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Subject: folded\r\n  header\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n\r\nv=0\r\nEXTRA"
)


def test_a_request_is_parsed_with_compact_names_folding_and_the_body_cut_at_content_length() -> None:
    message = sip.parse(INVITE)
    assert (message.method, message.uri) == ("INVITE", "sip:+4930111@192.0.2.1")
    assert message.cseq == (7, "INVITE")
    assert message.branch == "z9hG4bKabc"
    assert message.from_tag() == "a1" and message.to_tag() is None
    assert sip.user_of(message.require("from")) == "+4915100000001"
    assert message.get("subject") == "folded header"
    assert message.body == b"v=0\r"


def test_a_response_copies_every_via_and_stamps_the_top_one_with_the_source() -> None:
    reply = sip.parse(sip.response(sip.parse(INVITE), 200, "OK", to_tag="t9", source=("198.51.100.4", 40000)))
    assert reply.status == 200
    vias = reply.all("via")
    assert len(vias) == 2 and "received=198.51.100.4" in vias[0] and "rport=40000" in vias[0]
    assert vias[1] == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKfirst"
    assert reply.to_tag() == "t9" and reply.call_id == "c1@192.0.2.9"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "blank line"),
        (b"HELLO\r\n\r\n", "start line"),
        (INVITE.replace(b"Call-ID: c1@192.0.2.9\r\n", b""), "call-id"),
        (INVITE.replace(b"CSeq: 7 INVITE", b"CSeq: x INVITE"), "CSeq"),
        (INVITE.replace(b"CSeq: 7 INVITE", b"CSeq: 7 BYE"), "CSeq method"),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: 4000"), "shorter"),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: -1"), "Content-Length"),
        (INVITE.replace(b"Alice", b"\xff\xfe"), "UTF-8"),
        (INVITE.replace(b"Subject: folded", b"Subject folded"), "header line"),
        (INVITE + b"x" * sip.MAX_MESSAGE_BYTES, "bytes"),
    ],
)
def test_a_malformed_message_is_refused_with_the_reason(data: bytes, why: str) -> None:
    with pytest.raises(sip.SipError, match=why):
        sip.parse(data)


def test_the_callers_first_g711_codec_and_telephone_events_are_chosen() -> None:
    answer = negotiate(parse_offer(offer(4000, "18 8 0 101")))
    assert (answer.codec, answer.telephone_event, answer.direction) == (PCMA, 101, "sendrecv")
    sdp = render_answer(answer, "192.0.2.1", 20000, 1, 1).decode()
    assert "m=audio 20000 RTP/AVP 8 101" in sdp and "a=ptime:20" in sdp and "a=rtpmap:8 PCMA/8000" in sdp


def test_hold_offers_are_recognised_and_answered_with_the_mirrored_direction() -> None:
    held = parse_offer(offer(4000, direction="sendonly"))
    assert held.on_hold and negotiate(held).direction == "recvonly"
    assert parse_offer(offer(4000, address="0.0.0.0")).on_hold
    assert not parse_offer(offer(4000)).on_hold


def test_an_offer_without_g711_or_audio_is_not_acceptable() -> None:
    with pytest.raises(SdpError, match="no common codec"):
        negotiate(parse_offer(offer(4000, "9 101")))
    with pytest.raises(SdpError, match="no audio"):
        parse_offer(b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 4000 RTP/AVP 96\r\n")
    with pytest.raises(SdpError, match="profile"):
        parse_offer(offer(4000).replace(b"RTP/AVP", b"RTP/SAVP"))


def test_rtp_packets_round_trip_and_bad_ones_are_refused() -> None:
    packet = build_packet(PCMU, True, 65535, 2**32 - 1, 42, b"\x01" * 160)
    assert parse_packet(packet) == (PCMU, True, 65535, 2**32 - 1, 42, b"\x01" * 160)
    padded = bytes([0xA0]) + packet[1:] + b"\x00\x00\x03"
    assert parse_packet(padded)[5] == b"\x01" * 160
    for bad in (
        b"\x80" * 11,
        b"\x40" + packet[1:],
        bytes([0x8F]) + packet[1:20],
        bytes([0xA0]) + packet[1:12] + b"\xff",
    ):
        with pytest.raises(RtpError):
            parse_packet(bad)


def test_pcma_is_transcoded_to_and_from_mu_law_losslessly_enough() -> None:
    ulaw = bytes(range(256))
    assert to_ulaw(PCMU, ulaw) == ulaw
    back = to_ulaw(PCMA, from_ulaw(PCMA, ulaw))
    assert sum(a != b for a, b in zip(back, ulaw, strict=True)) < 40


def test_packets_come_out_in_sequence_order_late_ones_are_dropped_and_a_gap_is_given_up() -> None:
    reorder = Reorder(depth=3)
    assert reorder.push(65534, b"a") == [b"a"]
    assert reorder.push(0, b"c") == []
    assert reorder.push(65535, b"b") == [b"b", b"c"]
    assert reorder.push(65535, b"b") == [] and reorder.late == 1
    assert [reorder.push(s, bytes([s])) for s in (2, 3, 4)] == [[], [], []]
    assert reorder.push(5, b"\x05") == [b"\x02", b"\x03", b"\x04", b"\x05"] and reorder.lost == 1


def test_one_digit_per_key_press_however_many_packets_carry_it() -> None:
    keys = KeyPresses()
    digits = [keys.packet(ts, bytes([event, 0x80, 0, 160])) for ts, event in [(1, 5)] * 6 + [(2, 11)] * 4 + [(3, 10)]]
    assert [d for d in digits if d] == ["5", "#", "*"]
    assert keys.packet(4, b"\x01") is None and keys.packet(5, bytes([16, 0, 0, 0])) is None


def test_sources_outside_the_allow_list_are_refused() -> None:
    guard = SourceGuard(parse_networks(["10.0.0.0/8", "2001:db8::/32"]), 1.0, 1)
    assert guard.allowed("10.1.2.3") and guard.allowed("2001:db8::1") and guard.allowed("::ffff:10.0.0.1")
    assert not guard.allowed("192.0.2.1") and not guard.allowed("not-an-ip")


def test_invites_beyond_the_burst_wait_for_the_rate() -> None:
    now = [0.0]
    guard = SourceGuard((), invites_per_second=2.0, burst=3, clock=lambda: now[0])
    assert [guard.invite_allowed("192.0.2.1") for _ in range(4)] == [True, True, True, False]
    assert guard.invite_allowed("192.0.2.2"), "another source has its own bucket"
    now[0] = 0.5
    assert guard.invite_allowed("192.0.2.1") and not guard.invite_allowed("192.0.2.1")


def test_sip_settings_are_validated() -> None:
    settings = ServerSettings.from_env(
        {"FLOWAPP_RTP_PORTS": "30000-30100", "FLOWAPP_SIP_ALLOW": "10.0.0.0/8,192.0.2.7"}
    )
    assert settings.rtp_ports == (30000, 30100) and settings.sip_allow == ("10.0.0.0/8", "192.0.2.7/32")
    for env, field in (
        ({"FLOWAPP_RTP_PORTS": "30000"}, "FLOWAPP_RTP_PORTS"),
        ({"FLOWAPP_RTP_PORTS": "200-100"}, "FLOWAPP_RTP_PORTS"),
        ({"FLOWAPP_SIP_ALLOW": "10.0.0.0/33"}, "FLOWAPP_SIP_ALLOW"),
        ({"FLOWAPP_SIP_PORT": "70000"}, "FLOWAPP_SIP_PORT"),
        ({"FLOWAPP_SIP_TRANSFER_URI": "sip:{nope}"}, "FLOWAPP_SIP_TRANSFER_URI"),
        ({"FLOWAPP_SIP_INVITE_RATE": "0"}, "FLOWAPP_SIP_INVITE_RATE"),
    ):
        with pytest.raises(SettingsError, match=field):
            ServerSettings.from_env(env)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sip-port", "0"], "--sip-port: input should be greater than or equal to 1"),
        (["--sip-port", "5060", "--rtp-ports", "20000"], "--rtp-ports: must be a port range like 20000-20999"),
        (["--sip-port", "5060", "--sip-allow", "10.0.0.0/8,everyone"], "--sip-allow: 'everyone' is not a network"),
    ],
)
def test_bad_sip_flags_exit_2_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWAPP_SIP_PORT", raising=False)
    assert main(["serve", *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_sip_port_that_is_taken_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        assert main(["serve", "--sip-port", str(port), "--recognizer", "none"]) == 2
    assert f"--sip-port: cannot listen on udp 127.0.0.1:{port}" in capsys.readouterr().err
