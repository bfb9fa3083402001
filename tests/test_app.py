"""`FlowApp` dispatch: handler forms, result forms, defaults, state, fallback and deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from flowapp import BargeIn, FlowApp, Hangup, Session, Speak, to_actions
from flowapp.app import ForeignSessionAction, InvalidHandlerResult
from flowapp.protocol import Action, parse_event
from flowapp.protocol.events import Event, SessionInfo, SessionStart, UserSpeak
from tests.live.calls import PushedCall


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
    call = PushedCall(SessionInfo(id="call-B"))
    app.calls.add(call)
    session = await app.session(SessionInfo(id="call-B"))
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
    assert "dtmf_received handler tests.test_app." in caplog.text and "<locals>.broken raised" in caplog.text


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


async def test_late_result_and_session_push_go_into_a_live_call() -> None:
    app = FlowApp(handler_timeout=0.1)
    call = PushedCall(SessionInfo(id="s-1"))
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


async def test_a_result_of_the_wrong_type_is_named_with_its_handler(caplog: pytest.LogCaptureFixture) -> None:
    app = FlowApp(fallback="Sorry.")

    @app.on_dtmf
    def count_keys() -> int:
        return 42

    @app.on_user_speak
    async def mixed() -> list[object]:
        return [Speak(text="fine"), {"type": "speak"}]

    assert speak_texts(await app.respond(event("dtmf_received", digit="1"))) == ["Sorry."]
    assert speak_texts(await app.respond(event("user_speak", text="hi"))) == ["Sorry."]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "dtmf_received handler tests.test_app." in m and "count_keys returned int (42)" in m for m in messages
    ), messages
    assert any("user_speak handler" in m and "mixed returned dict" in m for m in messages), messages
    assert "AttributeError" not in caplog.text and "Traceback" not in caplog.text


def test_an_invalid_fallback_is_refused_where_the_app_is_built() -> None:
    with pytest.raises(InvalidHandlerResult, match="the fallback returned float"):
        FlowApp(fallback=1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidHandlerResult, match="returned bytes"):
        to_actions(b"speak")  # type: ignore[arg-type]


async def test_past_max_concurrent_handlers_an_event_waits_for_a_slot_until_its_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FlowApp(fallback="Busy.", handler_timeout=0.4, max_concurrent_handlers=2)
    release = asyncio.Event()

    @app.on_user_speak
    async def waits() -> str:
        await release.wait()
        return "done"

    @app.on_session_end
    async def ended() -> None:
        return None

    running = [asyncio.create_task(app.respond(event("user_speak", f"s-{n}", text="x"))) for n in range(2)]
    await asyncio.sleep(0.05)
    started = time.monotonic()
    assert speak_texts(await app.respond(event("user_speak", "s-3", text="x"))) == ["Busy."]
    assert 0.3 < time.monotonic() - started < 2.0, "it waited for a slot, then its deadline ended the wait"
    assert await app.respond(event("session_end", "s-3", reason="hangup")) == []
    assert "2 handlers still running (max_concurrent_handlers) until the deadline; user_speak answered" in caplog.text
    release.set()
    assert [speak_texts(await task) for task in running] == [["Busy."], ["Busy."]]
    assert speak_texts(await app.respond(event("user_speak", "s-3", text="x"))) == ["done"]


async def test_a_burst_of_calls_past_max_concurrent_handlers_all_get_their_greeting_in_order() -> None:
    app = FlowApp(fallback="Busy.", handler_timeout=2.0, max_concurrent_handlers=4)
    started: list[str] = []

    @app.on_session_start
    async def greet(event: SessionStart) -> str:
        started.append(event.session.id)
        await asyncio.sleep(0.01)
        return "Hello."

    ids = [f"s-{n:03}" for n in range(100)]
    answers = await asyncio.gather(*(app.respond(event("session_start", i)) for i in ids))
    assert [speak_texts(a) for a in answers] == [["Hello."]] * 100
    assert started == ids, "waiting events get their slots in arrival order"


async def test_an_event_cancelled_while_waiting_for_a_slot_passes_it_on() -> None:
    app = FlowApp(fallback="Busy.", handler_timeout=2.0, max_concurrent_handlers=1)
    release = asyncio.Event()

    @app.on_user_speak
    async def waits(event: UserSpeak) -> str:
        if event.text == "first":
            await release.wait()
        return event.text

    first = asyncio.create_task(app.respond(event("user_speak", "s-1", text="first")))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(app.respond(event("user_speak", "s-2", text="gone")))
    later = asyncio.create_task(app.respond(event("user_speak", "s-3", text="later")))
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.sleep(0)
    gone.cancel()
    assert speak_texts(await first) == ["first"]
    started = time.monotonic()
    assert speak_texts(await later) == ["later"]
    assert time.monotonic() - started < 1.0, "the cancelled event's slot went to the next in line"


def test_handler_bounds_and_isolation_are_checked() -> None:
    with pytest.raises(ValueError, match="max_concurrent_handlers and max_handlers_per_call must be at least 1"):
        FlowApp(max_handlers_per_call=0)
    with pytest.raises(ValueError, match="handler_isolation must be 'none' or 'thread'"):
        FlowApp(handler_isolation="process")  # type: ignore[arg-type]


async def test_isolated_handlers_run_on_their_own_loop_and_can_push() -> None:
    app = FlowApp(handler_isolation="thread", handler_timeout=0.5)
    call = PushedCall(SessionInfo(id="s-1"))
    app.calls.add(call)
    loops: list[asyncio.AbstractEventLoop] = []

    @app.on_user_speak
    async def on_speak(e: UserSpeak, session: Session) -> str:
        loops.append(asyncio.get_running_loop())
        await session.push(Speak(text="pushed"))
        session["seen"] = e.text
        return "reply"

    @app.on_dtmf
    async def stuck() -> str:
        await asyncio.sleep(2)
        return "late"

    assert speak_texts(await app.respond(event("user_speak", text="hi"))) == ["reply"]
    assert loops and loops[0] is not asyncio.get_running_loop()
    assert speak_texts(call.pushed) == ["pushed"]
    assert await app.store.load("s-1") == {"seen": "hi"}
    assert await app.respond(event("dtmf_received", digit="1")) == []
