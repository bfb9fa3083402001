"""`FlowApp` dispatch: handler forms, result forms, defaults, state, fallback and deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from flowapp import BargeIn, FlowApp, Hangup, Session, Speak
from flowapp.app import ForeignSessionAction
from flowapp.protocol import Action, parse_event
from flowapp.protocol.events import Event, SessionInfo, UserSpeak


def event(event_type: str, session_id: str = "s-1", **fields: Any) -> Event:
    return parse_event({"type": event_type, "session": {"id": session_id}, **fields})


def speak_texts(actions: list[Action]) -> list[str | None]:
    return [a.text if isinstance(a, Speak) else a.type for a in actions]


async def test_decorators_register_handlers_for_their_event_types() -> None:
    app = FlowApp()
    registrations = {
        "session_start": app.on_session_start,
        "user_speak": app.on_user_speak,
        "user_speech_started": app.on_user_speech_started,
        "assistant_speak": app.on_assistant_speak,
        "assistant_speech_ended": app.on_assistant_speech_ended,
        "user_input_timeout": app.on_user_input_timeout,
        "dtmf_received": app.on_dtmf,
        "session_end": app.on_session_end,
    }
    for event_type, decorator in registrations.items():
        assert not app.handles(event_type)

        def handler() -> None:
            return None

        assert decorator(handler) is handler
        assert app.handles(event_type)


@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize("arity", [0, 1, 2])
async def test_sync_and_async_handlers_with_zero_one_or_two_arguments(asynchronous: bool, arity: int) -> None:
    app = FlowApp()
    seen: list[Any] = []

    def body(*args: Any) -> str:
        seen.extend(args)
        return "ok"

    handlers: dict[tuple[bool, int], Any] = {
        (False, 0): lambda: body(),
        (False, 1): lambda e: body(e),
        (False, 2): lambda e, s: body(e, s),
    }

    async def a0() -> str:
        return body()

    async def a1(e: Event) -> str:
        return body(e)

    async def a2(e: Event, s: Session) -> str:
        return body(e, s)

    handlers.update({(True, 0): a0, (True, 1): a1, (True, 2): a2})
    app.on_user_speak(handlers[(asynchronous, arity)])

    actions = await app.respond(event("user_speak", text="hi"))
    assert speak_texts(actions) == ["ok"]
    assert len(seen) == arity
    if arity >= 1:
        assert isinstance(seen[0], UserSpeak)
    if arity == 2:
        assert isinstance(seen[1], Session)
        assert seen[1].id == "s-1"


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (Speak(text="one"), ["one"]),
        ([Speak(text="a"), Hangup()], ["a", "hangup"]),
        ("plain text", ["plain text"]),
        (["x", Speak(text="y")], ["x", "y"]),
        (None, []),
        ([], []),
    ],
)
async def test_return_forms(result: Any, expected: list[str]) -> None:
    app = FlowApp()
    app.on_session_start(lambda: result)
    assert speak_texts(await app.respond(event("session_start"))) == expected


async def test_default_barge_in_and_session_id_are_filled_in() -> None:
    app = FlowApp(default_barge_in=BargeIn.immediate(allow_after_ms=200))

    @app.on_session_start
    def greet() -> list[Speak | Hangup]:
        return [Speak(text="a"), Speak(text="b", barge_in=BargeIn.none()), Hangup(session_id="call-7")]

    first, second, third = await app.respond(event("session_start", session_id="call-7"))
    assert isinstance(first, Speak) and isinstance(second, Speak)
    assert first.barge_in == BargeIn.immediate(allow_after_ms=200)
    assert first.session_id == "call-7"
    assert second.barge_in == BargeIn.none()
    assert third.session_id == "call-7"


async def test_reply_actions_naming_another_call_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    app = FlowApp()
    app.on_session_start(lambda: [Speak(text="mine"), Hangup(session_id="call-A")])

    actions = await app.respond(event("session_start", session_id="call-B"))
    assert [(a.type, a.session_id) for a in actions] == [("speak", "call-B")]
    assert "dropped a hangup action naming another session ('call-A')" in caplog.text


async def test_session_push_of_an_action_naming_another_call_raises() -> None:
    app = FlowApp()
    call = RecordingCall("call-B")
    app.calls.add(call)
    session = app.session(SessionInfo(id="call-B"))
    with pytest.raises(ForeignSessionAction, match="names session 'call-A' but was sent into 'call-B'"):
        await session.push(Hangup(session_id="call-A"))
    await session.push(Hangup(session_id="call-B"), Speak(text="ok"))
    assert [(a.type, a.session_id) for a in call.pushed] == [("hangup", "call-B"), ("speak", "call-B")]


async def test_out_of_the_box_default_barge_in_is_three_characters() -> None:
    app = FlowApp()
    app.on_session_start(lambda: "hi")
    (speak,) = await app.respond(event("session_start"))
    assert isinstance(speak, Speak)
    assert speak.barge_in == BargeIn.min_characters(3)


async def test_state_is_kept_per_call_and_cleared_after_session_end() -> None:
    app = FlowApp()

    @app.on_user_speak
    def count(e: UserSpeak, session: Session) -> str:
        session["turns"] = session.get("turns", 0) + 1
        return f"turn {session['turns']}"

    assert speak_texts(await app.respond(event("user_speak", text="a"))) == ["turn 1"]
    assert speak_texts(await app.respond(event("user_speak", text="b"))) == ["turn 2"]
    assert speak_texts(await app.respond(event("user_speak", "other", text="c"))) == ["turn 1"]
    assert await app.respond(event("session_end")) == []
    assert speak_texts(await app.respond(event("user_speak", text="d"))) == ["turn 1"]


async def test_raising_handler_gives_the_fallback(caplog: pytest.LogCaptureFixture) -> None:
    quiet = FlowApp()
    configured = FlowApp(fallback=[Speak(text="Sorry."), Hangup()])
    for app in (quiet, configured):

        @app.on_dtmf
        def broken() -> None:
            raise KeyError("boom")

    assert await quiet.respond(event("dtmf_received", digit="1")) == []
    actions = await configured.respond(event("dtmf_received", digit="1"))
    assert speak_texts(actions) == ["Sorry.", "hangup"]
    assert all(a.session_id == "s-1" for a in actions)
    assert "handler raised" in caplog.text


async def test_slow_handler_gives_the_fallback_and_the_late_result_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FlowApp(fallback="One moment.", handler_timeout=0.1)

    @app.on_user_speak
    async def slow() -> str:
        await asyncio.sleep(0.3)
        return "late answer"

    started = time.monotonic()
    assert speak_texts(await app.respond(event("user_speak", text="x"))) == ["One moment."]
    assert time.monotonic() - started < 0.25
    await asyncio.sleep(0.4)
    assert "deadline" in caplog.text
    assert "late answer" in caplog.text
    assert "not delivered" in caplog.text


class RecordingCall:
    transport = "test"

    def __init__(self, session_id: str) -> None:
        self.info = SessionInfo(id=session_id)
        self.pushed: list[Action] = []

    async def barge_in(self) -> bool:
        return True

    async def push(self, actions: list[Action]) -> None:
        self.pushed.extend(actions)

    def describe(self) -> dict[str, Any]:
        return {"session_id": self.info.id}


async def test_late_result_and_session_push_go_into_a_live_call() -> None:
    app = FlowApp(handler_timeout=0.1)
    call = RecordingCall("s-1")
    app.calls.add(call)

    @app.on_user_speak
    async def slow(e: UserSpeak, session: Session) -> str:
        await session.push(Speak(text="right away"))
        await asyncio.sleep(0.2)
        return "late answer"

    assert await app.respond(event("user_speak", text="x")) == []
    await asyncio.sleep(0.3)
    assert speak_texts(call.pushed) == ["right away", "late answer"]
    assert all(a.session_id == "s-1" for a in call.pushed)
    assert all(isinstance(a, Speak) and a.barge_in == BargeIn.min_characters(3) for a in call.pushed)


async def test_reply_to_user_speech_started_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    app = FlowApp()
    ran: list[bool] = []

    @app.on_user_speech_started
    def started() -> str:
        ran.append(True)
        return "should not be spoken"

    with caplog.at_level(logging.INFO, logger="flowapp.app"):
        assert await app.respond(event("user_speech_started")) == []
    assert ran == [True]
    assert "ignored" in caplog.text
