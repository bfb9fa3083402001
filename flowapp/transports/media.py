"""`/media`: carrier media streams (Twilio Media Streams and the carriers that copy its protocol).

A carrier connects one WebSocket per call and sends JSON text frames: `connected`, `start` (stream and call
ids, custom parameters, media format), `media` (base64 mu-law, 20 ms), `dtmf`, `mark` echoes and `stop`.
flowapp answers with `media`, `mark` and `clear`. Each call runs in the engine, stepped in real time by the
shared ticker of `flowapp.engine.live`; events go to the app (in-process, or remote with `--app-url`).

flowapp extension, inbound: `{"event": "transcript", "transcript": {"text": "...", "final": true}}` delivers
a transcript made on the carrier side (a call without a recognizer gets a scripted one on first use).

Nothing a carrier sends can crash the server or another call: malformed frames are logged and dropped,
a message over `max_media_message_bytes` closes with 1009, a stream far faster than real time with 1008.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import re
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import ValidationError
from pydantic_core import from_json
from starlette.routing import WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketState

from flowapp.app import FlowApp
from flowapp.audio.vad import SILERO_POOL, silero_session
from flowapp.engine.call import EngineConfig
from flowapp.engine.live import LiveDriver
from flowapp.engine.render import Renderer
from flowapp.logs import call_logger
from flowapp.protocol.actions import Action
from flowapp.protocol.events import SessionInfo
from flowapp.protocol.ids import MAX_ID_LENGTH, is_valid_id
from flowapp.recording.store import record_call
from flowapp.responder import Responder
from flowapp.session import NotConnected, describe_call
from flowapp.settings import ServerSettings
from flowapp.stt import make_recognizer
from flowapp.transports.context import flow_app, server_settings
from flowapp.transports.direct import DirectChannel, open_direct
from flowapp.transports.events_ws import MESSAGE_TOO_BIG, POLICY_VIOLATION, websocket_authorized
from flowapp.transports.twilio import NORMAL_CLOSURE, CarrierOutlet
from flowapp.workers import SETUP

logger = logging.getLogger("flowapp.media")

UNSUPPORTED_DATA = 1003
INTERNAL_ERROR = 1011
START_TIMEOUT_SECONDS = 10.0
"""A connection that sends no `start` within this long is closed."""
HOLD_LIMIT = 1000
"""Messages held back while a call is being set up (reading pauses: only what was already read is held)."""
BACKLOG_LIMIT = 250
"""Messages (5 s of audio) waiting behind a send the peer does not take before the peer is given up."""
MAX_BAD_MESSAGES = 100
_DTMF = re.compile(r"^[0-9*#]$")
_LOGGED_BAD_MESSAGES = 5


class MediaSender(Protocol):
    """Sends from synchronous code (the shared ticker), in order, without ever blocking it."""

    open: bool

    def text(self, data: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class DirectSender:
    """Frames written straight to the transport (see `flowapp.transports.direct`)."""

    def __init__(self, channel: DirectChannel, on_broken: Callable[[str], None]) -> None:
        self.channel = channel
        self.open = True
        self._on_broken = on_broken

    def text(self, data: str) -> None:
        if self.open and not self.channel.text(data):
            self.open = False
            if self.channel.open:
                self._on_broken("the peer stopped reading")

    def close(self, code: int, reason: str) -> None:
        self.open = False
        self.channel.close(code, reason)


class AsgiSender:
    """Plain ASGI sends, for servers without the direct channel.

    An ASGI send is a coroutine, but uvicorn's completes without suspending unless the socket is backed up
    because the peer stopped reading. So each send is run right here to its end; one that does suspend is
    finished by a task while the messages after it wait in a bounded backlog. A peer that stops reading
    cannot stall the ticker (and every other call with it): it is given up once its backlog is full.
    """

    def __init__(self, websocket: WebSocket, on_broken: Callable[[str], None]) -> None:
        self.websocket = websocket
        self.open = True
        self._on_broken = on_broken
        self._backlog: deque[Message] = deque()
        self._flusher: asyncio.Task[None] | None = None

    def text(self, data: str) -> None:
        self._send({"type": "websocket.send", "text": data})

    def close(self, code: int, reason: str) -> None:
        self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})
        self.open = False

    def _send(self, message: Message) -> None:
        if not self.open:
            return
        if self._flusher is not None:
            if len(self._backlog) >= BACKLOG_LIMIT:
                self._broken("the peer stopped reading")
                return
            self._backlog.append(message)
            return
        coro = self.websocket.send(message)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self._broken(repr(exc))
            return
        self._flusher = asyncio.ensure_future(self._finish(coro, waiting))

    async def _finish(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        try:
            await _resume(coro, waiting)
            while self._backlog and self.open:
                await self.websocket.send(self._backlog.popleft())
        except Exception as exc:
            self._broken(repr(exc))
        finally:
            self._flusher = None

    def _broken(self, why: str) -> None:
        if self.open:
            self.open = False
            self._backlog.clear()
            self._on_broken(why)


async def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Finish a coroutine that was started by hand and suspended on `waiting` (a future, or None for a yield)."""
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait({waiting})
            try:
                waiting = coro.send(None)
            except StopIteration:
                return
    except BaseException:
        coro.close()
        raise


class MediaCall:
    """A `LiveCall` carried by a media stream: control acts on the live audio, pushes go to the engine."""

    transport = "media"

    def __init__(self, info: SessionInfo, driver: LiveDriver, stream_sid: str, call_sid: str | None) -> None:
        self.info = info
        self.driver = driver
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.connected_since = datetime.now(UTC)

    async def barge_in(self) -> bool:
        """Stop the playback now: the engine ends the item and `clear` empties the carrier's buffer."""
        if self.driver.ended:
            raise NotConnected("the media stream has ended")
        return self.driver.barge_in()

    async def push(self, actions: list[Action]) -> None:
        if self.driver.ended:
            raise NotConnected("the media stream has ended")
        await self.driver.push(actions)

    def describe(self) -> dict[str, Any]:
        return describe_call(self.info, self.transport, self.connected_since)


class StreamRefused(Exception):
    """The `start` message cannot begin a call; the message is the close reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def session_from_start(start: dict[str, Any]) -> SessionInfo:
    """Session fields from `start` and its custom parameters (the carrier passes the numbers there)."""
    params = start.get("customParameters")
    custom: dict[str, Any] = params if isinstance(params, dict) else {}

    def param(*names: str) -> str | None:
        for name in names:
            value = custom.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    session_id = param("session_id", "sessionId")
    try:
        session_id = str(uuid.UUID(session_id)) if session_id else str(uuid.uuid4())
    except ValueError:
        session_id = str(uuid.uuid4())
    raw_direction = (param("direction", "Direction") or "").lower()
    direction: Literal["inbound", "outbound"] | None = None
    if raw_direction:
        direction = "outbound" if raw_direction.startswith("outbound") else "inbound"
    from_number = param("from_phone_number", "from", "From", "caller")
    to_number = param("to_phone_number", "to", "To", "called")
    account = param("account_id", "accountId") or start.get("accountSid")
    return SessionInfo(
        id=session_id,
        account_id=account if isinstance(account, str) else None,
        phone_number=param("phone_number") or (from_number if direction == "outbound" else to_number),
        direction=direction,
        from_phone_number=from_number,
        to_phone_number=to_number,
    )


def check_media_format(start: dict[str, Any]) -> None:
    media_format = start.get("mediaFormat")
    if media_format is None:
        return
    if not isinstance(media_format, dict):
        raise StreamRefused(UNSUPPORTED_DATA, "mediaFormat must be an object")
    encoding = str(media_format.get("encoding", "audio/x-mulaw")).lower()
    rate = media_format.get("sampleRate", 8000)
    channels = media_format.get("channels", 1)
    if encoding not in ("audio/x-mulaw", "audio/pcmu") or rate != 8000 or channels != 1:
        raise StreamRefused(
            UNSUPPORTED_DATA, f"unsupported media format {encoding} {rate} Hz x{channels}; expected audio/x-mulaw 8000"
        )


class MediaConnection:
    """One carrier stream: take its messages, start the call on `start`, end it (once) however the stream ends.

    Messages arrive through `on_text`, called synchronously by the direct channel as they are parsed, or by
    a reader task on plain ASGI. While the call is being built (off the event loop), reading pauses; the
    messages already read are held back and replayed in order once the call runs.
    """

    def __init__(self, websocket: WebSocket, settings: ServerSettings, app: FlowApp, responder: Responder) -> None:
        self.websocket = websocket
        self.settings = settings
        self.app = app
        self.responder = responder
        self.sender: MediaSender = AsgiSender(websocket, self._broken)
        self.driver: LiveDriver | None = None
        self.outlet: CarrierOutlet | None = None
        self.call: MediaCall | None = None
        self._starting: tuple[SessionInfo, str, str | None] | None = None
        self._claimed: str | None = None
        self._held: list[str] = []
        self.end_reason = "connection_lost"
        self.bad_messages = 0
        self._early_media = 0
        self._unknown: set[str] = set()
        self._ended = asyncio.Event()
        self._start_or_end = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._channel: DirectChannel | None = None
        self.log = call_logger(logger, None, transport="media")

    async def run(self) -> None:
        channel = self._channel = open_direct(self.websocket.scope)
        reader: asyncio.Task[None] | None = None
        if channel is not None:
            self.sender = DirectSender(channel, self._broken)
            channel.receive_with(self)
        else:
            reader = asyncio.create_task(self._read_asgi(), name="flowapp-media-reader")
        try:
            await self._serve()
        except Exception:
            self.log.exception("media stream failed; closing it")
            self._refuse(INTERNAL_ERROR, "internal error")
        finally:
            if reader is not None:
                reader.cancel()
            await self._teardown()

    async def _serve(self) -> None:
        try:
            await asyncio.wait_for(self._start_or_end.wait(), START_TIMEOUT_SECONDS)
        except TimeoutError:
            self._refuse(POLICY_VIOLATION, f"no start message within {START_TIMEOUT_SECONDS:.0f} s")
            return
        if self._starting is not None and not self._ended.is_set():
            await self._launch()
            held, self._held = self._held, []
            for text in held:
                self.on_text(text)
            self._pause_reading(False)
        await self._ended.wait()

    def _pause_reading(self, pause: bool) -> None:
        if pause:
            self._reading.clear()
        else:
            self._reading.set()
        if self._channel is not None:
            if pause:
                self._channel.pause_reading()
            else:
                self._channel.resume_reading()

    async def _read_asgi(self) -> None:
        try:
            while not self._ended.is_set():
                await self._reading.wait()
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    self.on_closed()
                    return
                text = message.get("text")
                if text is not None:
                    self.on_text(text)
                else:
                    self.on_binary(message.get("bytes") or b"")
        except Exception as exc:
            self.log.warning("media stream read failed: %r", exc)
            self.on_closed()

    # Receiving -------------------------------------------------------------------------------------

    def on_text(self, text: str) -> None:
        if self._ended.is_set():
            return
        if self._starting is not None:
            if len(self._held) >= HOLD_LIMIT:
                self._refuse(POLICY_VIOLATION, "too many messages while the call was starting")
            else:
                self._held.append(text)
            return
        try:
            if not self._accept(text):
                self._end()
        except StreamRefused as exc:
            self._refuse(exc.code, str(exc))
        except Exception:
            self.log.exception("media message failed; closing the stream")
            self._refuse(INTERNAL_ERROR, "internal error")

    def on_binary(self, data: bytes) -> None:
        if not self._ended.is_set() and not self._bad("binary frame (send JSON text frames)"):
            self._end()

    def on_closed(self) -> None:
        self.sender.open = False
        self._end()

    def _accept(self, text: str) -> bool:
        """Handle one message; False once the stream is over."""
        limit = self.settings.max_media_message_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8")) > limit):
            self._refuse(MESSAGE_TOO_BIG, f"message exceeds {limit} bytes")
            return False
        try:
            data = from_json(text)  # pydantic-core's parser: a quarter of json.loads' time per media message
        except (ValueError, TypeError, RecursionError):
            return self._bad("malformed JSON")
        if not isinstance(data, dict):
            return self._bad("a message must be a JSON object")
        event = data.get("event")
        if event == "media":
            return self._media(data)
        if event == "mark":
            return self._mark(data)
        if event == "start":
            return self._start(data)
        if event == "stop":
            self.end_reason = "stream_stopped"
            return False
        if event == "dtmf":
            return self._dtmf(data)
        if event == "transcript":
            return self._transcript(data)
        if event == "connected":
            return True
        if isinstance(event, str) and event not in self._unknown and len(self._unknown) < 16:
            self._unknown.add(event)
            self.log.info("ignored media event of unknown type %r", event[:64])
        return True

    def _media(self, data: dict[str, Any]) -> bool:
        if self.driver is None:
            self._early_media += 1
            if self._early_media == 1:
                self.log.warning("media before start: dropped")
            return True
        media = data.get("media")
        if not isinstance(media, dict):
            return self._bad("media without a media object")
        if media.get("track", "inbound") not in ("inbound", "inbound_track"):
            return True
        try:
            payload = binascii.a2b_base64(media["payload"], strict_mode=True)
        except (KeyError, TypeError, ValueError):
            return self._bad("media payload is not base64")
        if not self.driver.feed(payload):
            self._refuse(POLICY_VIOLATION, "media faster than real time")
            return False
        return True

    def _mark(self, data: dict[str, Any]) -> bool:
        mark = data.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            return self._bad("mark without a name")
        if self.outlet is not None:
            self.outlet.mark_echoed(name)
        return True

    def _dtmf(self, data: dict[str, Any]) -> bool:
        dtmf = data.get("dtmf")
        digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
        if not isinstance(digit, str) or not _DTMF.match(digit):
            return self._bad("dtmf without a digit 0-9, * or #")
        if self.driver is not None:
            self.driver.dtmf(digit)
        return True

    def _transcript(self, data: dict[str, Any]) -> bool:
        transcript = data.get("transcript")
        if not isinstance(transcript, dict) or not isinstance(transcript.get("text"), str) or self.driver is None:
            return self._bad("transcript without text, or before start")
        try:
            self.driver.transcript(transcript["text"], bool(transcript.get("final", False)))
        except RuntimeError as exc:
            return self._bad(f"transcript refused: {exc}")
        return True

    def _start(self, data: dict[str, Any]) -> bool:
        if self.driver is not None or self._starting is not None:
            return self._bad("a second start on the same stream")
        start = data.get("start")
        if not isinstance(start, dict):
            raise StreamRefused(POLICY_VIOLATION, "start without a start object")
        check_media_format(start)
        stream_sid = start.get("streamSid") or data.get("streamSid")
        if not isinstance(stream_sid, str) or not stream_sid:
            raise StreamRefused(POLICY_VIOLATION, "start without a streamSid")
        call_sid = start.get("callSid") if isinstance(start.get("callSid"), str) else None
        for name, sid in (("streamSid", stream_sid), ("callSid", call_sid)):
            if sid is not None and not is_valid_id(sid):
                raise StreamRefused(POLICY_VIOLATION, f"{name} must be 1-{MAX_ID_LENGTH} printable ASCII characters")
        try:
            info = session_from_start(start)
        except ValidationError as exc:
            raise StreamRefused(POLICY_VIOLATION, f"invalid custom parameters: {exc.errors()[0]['msg']}") from None
        if not self.app.calls.claim(info.id, self):
            raise StreamRefused(POLICY_VIOLATION, "session_id belongs to another live call")
        self._claimed = info.id
        self._starting = (info, stream_sid, call_sid)
        self._pause_reading(True)
        self._start_or_end.set()
        return True

    async def _launch(self) -> None:
        """Build the call off the event loop (a neural VAD loads its model), on the set-up threads that nothing
        else uses (a new call never waits behind handlers or synthesis), then start it on the loop."""
        assert self._starting is not None
        info, stream_sid, call_sid = self._starting
        self.log = call_logger(logger, info.id, transport="media", stream_sid=stream_sid)
        config = engine_config(self.settings, self.responder)
        outlet = CarrierOutlet(self.sender, stream_sid)
        driver = await SETUP.run(
            LiveDriver,
            info,
            self.responder,
            _renderer(self.websocket),
            outlet,
            config=config,
            recognizer=make_recognizer(self.settings.recognizer, live=True, workers=self.settings.recognizer_workers),
            jitter_frames=self.settings.media_jitter_frames,
            on_end=self._engine_ended,
            recording=record_call(self.settings, info, config, "media"),
        )
        self._starting = None
        self.driver = driver
        self.outlet = outlet
        self.call = MediaCall(info, driver, stream_sid, call_sid)
        self.app.calls.add(self.call, owner=self)
        driver.start()
        self.log.info("media call started", extra={"call_sid": call_sid})

    # Errors and the end ----------------------------------------------------------------------------

    def _bad(self, why: str) -> bool:
        self.bad_messages += 1
        if self.bad_messages <= _LOGGED_BAD_MESSAGES:
            self.log.warning("media message dropped: %s", why)
        if self.bad_messages > MAX_BAD_MESSAGES:
            self._refuse(POLICY_VIOLATION, "too many invalid messages")
            return False
        return True

    def _refuse(self, code: int, reason: str) -> None:
        self.log.warning("closing the media stream: %s", reason)
        self.end_reason = reason
        self.sender.close(code, reason)
        self._end()

    def _end(self) -> None:
        self._ended.set()
        self._start_or_end.set()

    def _engine_ended(self, reason: str) -> None:
        self.end_reason = reason
        self._end()

    def _broken(self, why: str) -> None:
        if (self.driver is not None and self.driver.ended) or self.end_reason == "stream_stopped":
            # The carrier said `stop` and hung up at once: a send that fails after that is no broken line.
            self.log.debug("send after the call ended failed: %s", why)
            return
        self.log.warning("media stream broken: %s", why)
        self.end_reason = "connection_lost"
        self._end()

    async def _teardown(self) -> None:
        """The id stays claimed until `session_end` has been answered: no other stream can take it over before."""
        if self.driver is not None:
            await self.driver.stop(self.end_reason)
            self.log.info(
                "media call ended: %s",
                self.driver.engine.end_reason,
                extra={
                    "frames_in": self.driver.inbound.received,
                    "frames_dropped": self.driver.inbound.dropped,
                    "frames_trimmed": self.driver.inbound.trimmed,
                    "frames_missing": self.driver.silent_frames,
                    "steps": self.driver.steps,
                },
            )
        if self._claimed is not None:
            self.app.calls.remove(self._claimed, owner=self)
        if self.sender.open and self.websocket.client_state == WebSocketState.CONNECTED:
            self.sender.close(NORMAL_CLOSURE, self.end_reason)


SILERO_PREFILL = 8
"""Silero models loaded at startup when media calls use the plain Silero detector (the cascade shares one)."""


async def prepare(settings: ServerSettings) -> None:
    """Server startup: a Silero-based detector gets its model (the cascade's shared session, the plain Silero
    detector's first per-call models) before any call needs one, and the recognizer's model is loaded (and its
    weights checked) before the first caller speaks."""
    detector = engine_config(settings, None).detector
    if detector in ("cascade", "silero"):
        try:
            if detector == "cascade":
                await SETUP.run(silero_session)
            else:
                await SETUP.run(SILERO_POOL.prefill, SILERO_PREFILL)
        except ImportError as exc:
            logger.error("%s; media calls will fail until it is installed", exc)
    if settings.recognizer is not None:
        await SETUP.run(make_recognizer, settings.recognizer, live=True, workers=settings.recognizer_workers)
        logger.info("media calls are transcribed by the %s recognizer", settings.recognizer)


def engine_config(settings: ServerSettings, responder: Responder | None) -> EngineConfig:
    """The server's detector choice, and an in-process app's turn-handling options."""
    config = EngineConfig()
    if isinstance(responder, FlowApp):
        config.turn_handling = responder.turn_handling
    if settings.vad_detector is not None:
        config.detector = settings.vad_detector
    return config


def _renderer(websocket: WebSocket) -> Renderer:
    """One renderer per server, so its TTS cache is shared by all calls."""
    state = websocket.app.state
    renderer: Renderer | None = getattr(state, "media_renderer", None)
    if renderer is None:
        renderer = state.media_renderer = Renderer()
    return renderer


def _responder(websocket: WebSocket) -> Responder:
    responder: Responder | None = getattr(websocket.app.state, "responder", None)
    return responder if responder is not None else flow_app(websocket)


async def media_websocket(websocket: WebSocket) -> None:
    settings = server_settings(websocket)
    if not websocket_authorized(websocket, settings):
        logger.warning("refused a media stream without a valid token")
        await websocket.close(code=POLICY_VIOLATION)
        return
    await websocket.accept()
    await MediaConnection(websocket, settings, flow_app(websocket), _responder(websocket)).run()


routes = [WebSocketRoute("/media", media_websocket)]
