"""Whatever a carrier sends, the server and the other calls carry on: bad frames are dropped or closed on."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus

from flowapp import BargeIn, Speak
from flowapp.audio.g711 import ulaw_encode
from flowapp.settings import ServerSettings
from tests.conftest import StartServer
from tests.live.calls import BOTH_MEDIA_PATHS, CUSTOM, RecordingApp, wait_until
from tests.live.carrier import Carrier

GREETING = Speak(text="Hello there, this is a test of bad input.", barge_in=BargeIn.none())


def ulaw_silence(n_bytes: int) -> str:
    return base64.b64encode(ulaw_encode(np.zeros(n_bytes, dtype=np.int16))).decode("ascii")


@BOTH_MEDIA_PATHS
async def test_garbage_is_dropped_and_the_call_goes_on(live_server: StartServer, ws: object) -> None:
    rec = RecordingApp({"session_start": GREETING})
    server = live_server(rec.app, ws=ws)
    async with Carrier.connect(server.ws_url, CUSTOM, start=False) as carrier:
        await carrier.send({"event": "media", "media": {"payload": ulaw_silence(160)}})
        await carrier.start(CUSTOM)
        for garbage in ("{not json", "[1, 2]", '"text"', json.dumps({"event": "no_such_event"}), "\u00e9" * 10):
            await carrier.ws.send(garbage)
        await carrier.ws.send(b"\x00\x01binary")
        await carrier.send({"event": "media", "media": {"payload": "%%% not base64 %%%"}})
        await carrier.send({"event": "media", "media": {}})
        await carrier.send({"event": "media"})
        await carrier.send({"event": "dtmf", "dtmf": {"digit": "x"}})
        await carrier.send({"event": "mark", "mark": {"name": 5}})
        await carrier.send({"event": "mark", "mark": {"name": "flowapp-999999"}})
        await carrier.send({"event": "start", "start": {"streamSid": "again"}})
        for size in (100, 220, 1, 319):
            await carrier.send({"event": "media", "media": {"payload": ulaw_silence(size)}})
        await carrier.dtmf("7")
        await carrier.wait_for("media", count=20)
        await carrier.stop()
        await carrier.closed()
    assert carrier.close_code == 1000
    await wait_until(lambda: rec.of("session_end"))
    assert [e.digit for e in rec.of("dtmf_received")] == ["7"]
    assert [e.reason for e in rec.of("session_end")] == ["stream_stopped"]


@BOTH_MEDIA_PATHS
async def test_oversized_message_closes_only_that_call(live_server: StartServer, ws: object) -> None:
    rec = RecordingApp({"session_start": GREETING})
    server = live_server(rec.app, ServerSettings(max_media_message_bytes=4096), ws=ws)
    async with Carrier.connect(server.ws_url, CUSTOM) as good, Carrier.connect(server.ws_url, CUSTOM) as bad:
        await bad.send({"event": "media", "media": {"payload": ulaw_silence(8000)}})
        await bad.closed()
        assert bad.close_code == 1009
        await good.wait_for("media", count=30)
        await good.stop()
    await wait_until(lambda: len(rec.of("session_end")) >= 2)
    await asyncio.sleep(0.3)
    assert sorted(e.reason for e in rec.of("session_end")) == ["message exceeds 4096 bytes", "stream_stopped"]


@BOTH_MEDIA_PATHS
async def test_a_flood_faster_than_real_time_is_closed_with_a_reason(live_server: StartServer, ws: object) -> None:
    rec = RecordingApp({"session_start": GREETING})
    server = live_server(rec.app, ws=ws)
    async with Carrier.connect(server.ws_url, CUSTOM) as flood, Carrier.connect(server.ws_url, CUSTOM) as calm:
        calm_stream = asyncio.create_task(calm.silence(3))
        frame = json.dumps(flood.media_message(ulaw_encode(np.zeros(160, dtype=np.int16))))
        for _ in range(600):
            await flood.ws.send(frame)
        await flood.closed()
        assert flood.close_code == 1008 and flood.close_reason == "media faster than real time"
        await calm.wait_for("media", count=30)
        await calm.stop()
        calm_stream.cancel()
    await wait_until(lambda: len(rec.of("session_end")) >= 2)
    await asyncio.sleep(0.3)
    assert sorted(e.reason for e in rec.of("session_end")) == ["media faster than real time", "stream_stopped"]


async def test_unsupported_media_format_is_refused(live_server: StartServer) -> None:
    rec = RecordingApp({"session_start": GREETING})
    server = live_server(rec.app)
    async with Carrier.connect(server.ws_url, start=False) as carrier:
        start = {"streamSid": "MZ1", "mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}}
        await carrier.send({"event": "start", "start": start})
        await carrier.closed()
    assert carrier.close_code == 1003 and "unsupported media format" in (carrier.close_reason or "")
    assert not rec.events, "no call was started"


@pytest.mark.parametrize(
    "sids",
    [{"streamSid": "MZ" + "x" * 60_000}, {"streamSid": "MZ 1"}, {"streamSid": "MZ1", "callSid": "CA" + "x" * 200}],
    ids=["long-streamSid", "streamSid-with-space", "long-callSid"],
)
async def test_oversized_stream_ids_are_refused(live_server: StartServer, sids: dict[str, str]) -> None:
    rec = RecordingApp({"session_start": GREETING})
    server = live_server(rec.app)
    async with Carrier.connect(server.ws_url, start=False) as carrier:
        await carrier.send({"event": "start", "start": sids})
        await carrier.closed()
    assert carrier.close_code == 1008
    assert carrier.close_reason is not None and "must be 1-128 printable ASCII characters" in carrier.close_reason
    assert not rec.events, "no call was started"
    assert len(rec.app.calls) == 0


async def test_refused_without_the_api_token(live_server: StartServer) -> None:
    rec = RecordingApp({"session_start": GREETING})
    server = live_server(rec.app, ServerSettings(api_token="s3cret"))
    with pytest.raises(InvalidStatus):
        async with Carrier.connect(server.ws_url, CUSTOM):
            pass
    async with Carrier.connect(server.ws_url, CUSTOM, path="/media?token=s3cret") as carrier:
        await carrier.wait_for("media", count=5)
        await carrier.stop()
    assert len(rec.of("session_start")) == 1
