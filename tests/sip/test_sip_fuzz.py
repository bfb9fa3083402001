"""Malformed SIP and RTP never crash the endpoint or disturb a call: the parsers raise only their own
errors on arbitrary input, and a live call on a real server goes on while its ports are sprayed."""

from __future__ import annotations

import contextlib
import logging
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowapp import BargeIn, Speak
from flowapp.transports.sip import message as sip
from flowapp.transports.sip.rtp import RtpError, parse_packet
from flowapp.transports.sip.sdp import SdpError, negotiate, parse_offer
from tests.conftest import StartServer
from tests.live.calls import LONG_TEXT, RecordingApp
from tests.sip.peers import Peer, offer, start_sip_server
from tests.sip.test_sip_units import INVITE

FUZZ = settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mutations(seed_message: bytes) -> st.SearchStrategy[bytes]:
    def mutate(draw_data: tuple[int, int, bytes]) -> bytes:
        position, length, insert = draw_data
        position %= len(seed_message) + 1
        return seed_message[:position] + insert + seed_message[position + length :]

    return st.tuples(st.integers(0, 10_000), st.integers(0, 64), st.binary(max_size=64)).map(mutate)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), _mutations(INVITE)))
def test_the_sip_parser_raises_only_sip_errors(data: bytes) -> None:
    try:
        message = sip.parse(data)
    except sip.SipError:
        return
    for header in (message.require("from"), message.require("to")):
        sip.user_of(header)
        sip.param(header, "tag")


@FUZZ
@given(st.one_of(st.binary(max_size=1024), _mutations(offer(4000))))
def test_the_sdp_parser_raises_only_sdp_errors(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        negotiate(parse_offer(data))


@FUZZ
@given(st.binary(max_size=1600))
def test_the_rtp_parser_raises_only_rtp_errors(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        parse_packet(data)


@pytest.mark.slow
def test_a_call_goes_on_while_its_sip_and_rtp_ports_are_sprayed_with_garbage(
    live_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    recording = RecordingApp({"session_start": Speak(text=LONG_TEXT, barge_in=BargeIn.immediate())})
    server = start_sip_server(live_server, recording.app)
    caller = Peer(server.sip_port)
    attacker = Peer(server.sip_port)
    try:
        assert caller.invite().status == 200
        assert caller.flowapp_rtp is not None
        caller.send_rtp(0, b"\xff" * 160)
        before = caller.rtp_packets(5)
        rng = random.Random(13)
        valid = caller.request("OPTIONS")
        caller.final()
        for k in range(300):
            cut = rng.randrange(len(valid))
            attacker.send(valid[:cut] + rng.randbytes(rng.randrange(40)) + valid[cut + rng.randrange(30) :])
            attacker.sip.sendto(rng.randbytes(rng.randrange(1, 300)), caller.flowapp_rtp)
            if k % 50 == 0:
                attacker.sip.sendto(b"\x80\x00" + rng.randbytes(200), caller.flowapp_rtp)
        after = caller.rtp_packets(50)
        seqs = [p[2] for _, p in before + after]
        assert seqs[-1] - seqs[0] >= 54 or seqs[-1] < seqs[0], "the call kept sending"
        caller.request("OPTIONS")
        assert caller.final().status == 200, "the endpoint still answers"
        assert caller.bye().status == 200
    finally:
        caller.close()
        attacker.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no failure was logged"
