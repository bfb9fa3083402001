"""`FlowApp`: decorated event handlers, and the dispatch that turns their results into actions."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import CodeType
from typing import Any, Literal, TypeVar

from flowapp.engine.interruption import InterruptionHook
from flowapp.engine.turns import TurnHandling
from flowapp.isolation import HandlerLoop
from flowapp.logs import call_logger
from flowapp.protocol.actions import ACTION_TYPES, Action, Audio, BargeIn, Speak, foreign
from flowapp.protocol.events import NO_REPLY_EVENTS, Event, SessionInfo
from flowapp.session import InMemorySessionStore, Session, SessionRegistry, SessionStore
from flowapp.workers import WorkerPool

logger = logging.getLogger("flowapp.app")

ActionLike = Action | str
HandlerResult = ActionLike | Sequence[ActionLike] | None
Handler = Callable[..., HandlerResult | Awaitable[HandlerResult]]
H = TypeVar("H", bound=Handler)
Isolation = Literal["none", "thread"]


class InvalidHandlerResult(TypeError):
    """A handler returned something that is not an action, a list of actions, a string or None."""


class HandlerExit(Exception):
    """A handler raised `SystemExit` or `KeyboardInterrupt`: an error of that handler, not a server shutdown."""


_ACTION_CLASSES = tuple(ACTION_TYPES.values())


def to_actions(result: HandlerResult, source: str = "the handler") -> list[Action]:
    """What a handler may return: an action, a list of them, a plain string (spoken), or None.

    Anything else raises `InvalidHandlerResult` naming `source` and the type, not an error deep in dispatch.
    """
    if result is None:
        return []
    if isinstance(result, str):
        return [Speak(text=result)]
    if isinstance(result, _ACTION_CLASSES):
        return [result]
    if isinstance(result, Sequence) and not isinstance(result, bytes | bytearray | memoryview):
        return [a for item in result for a in to_actions(item, source)]
    shown = repr(result)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise InvalidHandlerResult(
        f"{source} returned {type(result).__name__} ({shown}); "
        "return an action, a list of actions, a string to speak, or None"
    )


class FlowApp:
    """A voice app: register handlers with the `on_*` decorators, serve it with `flowapp serve`."""

    def __init__(
        self,
        *,
        default_barge_in: BargeIn | None = None,
        fallback: HandlerResult = None,
        handler_timeout: float = 1.0,
        session_store: SessionStore | None = None,
        turn_handling: TurnHandling | dict[str, Any] | None = None,
        max_concurrent_handlers: int = 128,
        max_handlers_per_call: int = 4,
        handler_isolation: Isolation = "none",
    ) -> None:
        """`turn_handling`: app-wide interruption, endpointing and turn-limit options (see flowapp.engine.turns);
        a call can change its own with a `configure_turn_handling` action.

        `max_concurrent_handlers` / `max_handlers_per_call`: handlers running at once (late ones included,
        `session_end` exempt). An event beyond the first waits for a free slot within its deadline (a burst of
        calls all get their greetings); one beyond its call's bound gets the fallback at once. Sync handlers run on
        a pool of `max_concurrent_handlers` threads of their own, so they never take the threads of call
        set-up or speech synthesis. `handler_isolation="thread"` runs the handlers on their own thread and
        event loop, so a handler that blocks cannot stop the calls' audio (see flowapp.isolation).
        """
        if max_concurrent_handlers < 1 or max_handlers_per_call < 1:
            raise ValueError(
                "max_concurrent_handlers and max_handlers_per_call must be at least 1, got "
                f"{max_concurrent_handlers} and {max_handlers_per_call}"
            )
        if handler_isolation not in ("none", "thread"):
            raise ValueError(f"handler_isolation must be 'none' or 'thread', got {handler_isolation!r}")
        self.default_barge_in = default_barge_in or BargeIn.min_characters(3)
        to_actions(fallback, "the fallback")
        self.fallback = fallback
        self.handler_timeout = handler_timeout
        self.max_concurrent_handlers = max_concurrent_handlers
        self.max_handlers_per_call = max_handlers_per_call
        self.handler_isolation = handler_isolation
        self._handler_pool = WorkerPool("handler", max_concurrent_handlers)
        self._isolation = HandlerLoop(self.handler_names) if handler_isolation == "thread" else None
        self._running: dict[str, int] = {}
        self._running_total = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._handler_codes: dict[CodeType, str] = {}
        self.store: SessionStore = session_store if session_store is not None else InMemorySessionStore()
        if not isinstance(turn_handling, TurnHandling):
            turn_handling = TurnHandling.model_validate(turn_handling or {})
        self.turn_handling = turn_handling
        self.interruption_hook: InterruptionHook | None = None
        self.calls = SessionRegistry()
        self._handlers: dict[str, Handler] = {}
        self._late_tasks: set[asyncio.Future[Any]] = set()

    # Registration -------------------------------------------------------------------------------

    def on(self, event_type: str) -> Callable[[H], H]:
        def register(fn: H) -> H:
            self._handlers[event_type] = fn
            self._name_code(fn, _describe(fn, event_type))
            return fn

        return register

    def on_session_start(self, fn: H) -> H:
        return self.on("session_start")(fn)

    def on_user_speak(self, fn: H) -> H:
        return self.on("user_speak")(fn)

    def on_user_speech_started(self, fn: H) -> H:
        return self.on("user_speech_started")(fn)

    def on_assistant_speak(self, fn: H) -> H:
        return self.on("assistant_speak")(fn)

    def on_assistant_speech_ended(self, fn: H) -> H:
        return self.on("assistant_speech_ended")(fn)

    def on_user_input_timeout(self, fn: H) -> H:
        return self.on("user_input_timeout")(fn)

    def on_dtmf(self, fn: H) -> H:
        return self.on("dtmf_received")(fn)

    def on_session_end(self, fn: H) -> H:
        return self.on("session_end")(fn)

    def on_assistant_speech_paused(self, fn: H) -> H:
        return self.on("assistant_speech_paused")(fn)

    def on_assistant_speech_resumed(self, fn: H) -> H:
        return self.on("assistant_speech_resumed")(fn)

    def on_user_backchannel(self, fn: H) -> H:
        return self.on("user_backchannel")(fn)

    def on_user_turn_limit(self, fn: H) -> H:
        return self.on("user_turn_limit")(fn)

    def judge_interruptions(self, fn: InterruptionHook) -> InterruptionHook:
        """Register a custom judge for paused interruptions: return a verdict, or None for the built-in one.

        It runs inside the audio loop, once per 20 ms frame while playback is paused: keep it fast and pure.
        """
        self.interruption_hook = fn
        self._name_code(fn, f"the interruption judge {_qualified(fn)}")
        return fn

    def handles(self, event_type: str) -> bool:
        return event_type in self._handlers

    def handler_names(self) -> dict[CodeType, str]:
        """The code of each registered handler, with its name: how the loop watchdog names a blocker."""
        return dict(self._handler_codes)

    def _name_code(self, fn: Callable[..., Any], name: str) -> None:
        code = _code_of(fn)
        if code is not None:
            self._handler_codes[code] = name

    # Dispatch -----------------------------------------------------------------------------------

    async def session(self, info: SessionInfo) -> Session:
        call = self.calls.get(info.id)
        if call is None:
            return Session(info, await self.store.load(info.id))

        async def push(actions: list[Action]) -> None:
            """Pushed actions get the same session id and default barge-in as replies."""
            await call.push(self.finish(actions, info.id))

        return Session(info, await self.store.load(info.id), push)

    async def respond(self, event: Event) -> list[Action]:
        """Run the event's handler within the deadline; raises only `StoreUnavailable` (nothing was handled)."""
        log = call_logger(logger, event.session.id, event=event.type)
        handler = self._handlers.get(event.type)
        session = await self.session(event.session)
        actions: list[Action] = []
        if handler is not None:
            actions = await self._run(handler, event, session, log)
        if event.type == "session_end":
            await self.store.delete(session.id)
        else:
            await self.store.save(session.id, session.state)
        if actions and event.type in NO_REPLY_EVENTS:
            log.info("reply to %s ignored (the platform executes no actions for it)", event.type)
            return []
        return self.finish(_own_actions(actions, session.id, log), session.id)

    def finish(self, actions: list[Action], session_id: str) -> list[Action]:
        """Fill in what the developer may leave out: the session id and the app's default barge-in.

        An action naming another call is a mistake that must not act on this one: ForeignSessionAction.
        """
        if strays := foreign(actions, session_id):
            raise ForeignSessionAction(strays[0], session_id)
        finished: list[Action] = []
        for action in actions:
            update: dict[str, Any] = {}
            if action.session_id is None:
                update["session_id"] = session_id
            if isinstance(action, Speak | Audio) and action.barge_in is None:
                update["barge_in"] = self.default_barge_in
            finished.append(action.model_copy(update=update) if update else action)
        return finished

    def fallback_actions(self, session_id: str) -> list[Action]:
        return self.finish(to_actions(self.fallback), session_id)

    async def _run(
        self, handler: Handler, event: Event, session: Session, log: logging.LoggerAdapter[Any]
    ) -> list[Action]:
        source = _describe(handler, event.type)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.handler_timeout
        if not await self._admit(session.id, event.type, deadline, log):
            return to_actions(self.fallback)
        task: asyncio.Future[HandlerResult]
        if self._isolation is not None:
            task = self._isolation.submit(_invoke(handler, event, self._isolation.bridge(session), self._handler_pool))
        else:
            task = asyncio.ensure_future(_invoke(handler, event, session, self._handler_pool))
        self._hold(session.id, task)
        done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        if not done:
            log.warning("%s exceeded its %.2f s deadline; answered with the fallback", source, self.handler_timeout)
            self._late_tasks.add(task)
            task.add_done_callback(lambda t: self._on_late_result(t, event, session, source, log))
            return to_actions(self.fallback)
        try:
            return to_actions(task.result(), source)
        except InvalidHandlerResult as exc:
            log.error("%s; answered with the fallback", exc)
        except Exception:
            log.exception("%s raised; answered with the fallback", source)
        return to_actions(self.fallback)

    async def _admit(self, session_id: str, event_type: str, deadline: float, log: logging.LoggerAdapter[Any]) -> bool:
        """Within the handler bounds? `session_end` always is: the app hears of every call's end. A full app is
        waited for until the event's deadline, in arrival order: a burst's handlers are quick, they only all
        start at once. A call over its own bound is answered at once (it is flooding, not queueing)."""
        if event_type == "session_end":
            return True
        loop = asyncio.get_running_loop()
        woken = False
        while True:
            running = self._running.get(session_id, 0)
            if running >= self.max_handlers_per_call:
                log.warning(
                    "%d handlers of this call still running (max_handlers_per_call); %s answered with the fallback",
                    running,
                    event_type,
                )
                if woken:
                    self._wake_next()  # it was woken for a slot it cannot take: the next in line may
                return False
            if self._running_total < self.max_concurrent_handlers:
                return True
            freed: asyncio.Future[None] = loop.create_future()
            if woken:
                self._slot_waiters.appendleft(freed)
            else:
                self._slot_waiters.append(freed)
            try:
                await asyncio.wait({freed}, timeout=max(0.0, deadline - loop.time()))
            except asyncio.CancelledError:
                if freed.done():
                    self._wake_next()  # the slot it was woken for goes to the next in line
                raise
            finally:
                if freed in self._slot_waiters:
                    self._slot_waiters.remove(freed)
            if not freed.done():
                freed.cancel()
                log.warning(
                    "%d handlers still running (max_concurrent_handlers) until the deadline; %s answered with "
                    "the fallback",
                    self._running_total,
                    event_type,
                )
                return False
            woken = True

    def _wake_next(self) -> None:
        """A slot is free (or a woken event did not take it): the longest-waiting event may have it."""
        while self._slot_waiters:
            freed = self._slot_waiters.popleft()
            if not freed.done():
                freed.set_result(None)
                return

    def _hold(self, session_id: str, task: asyncio.Future[Any]) -> None:
        self._running[session_id] = self._running.get(session_id, 0) + 1
        self._running_total += 1

        def release(_: asyncio.Future[Any]) -> None:
            self._running_total -= 1
            self._wake_next()
            left = self._running[session_id] - 1
            if left:
                self._running[session_id] = left
            else:
                del self._running[session_id]

        task.add_done_callback(release)

    def _on_late_result(
        self,
        task: asyncio.Future[Any],
        event: Event,
        session: Session,
        source: str,
        log: logging.LoggerAdapter[Any],
    ) -> None:
        """A late answer is still the app's answer: push it where the call has a live channel, else log it."""
        self._late_tasks.discard(task)
        if task.cancelled():
            log.warning("late %s was cancelled", source)
            return
        if task.exception() is not None:
            log.error("late %s raised: %r", source, task.exception())
            return
        try:
            actions = self.finish(_own_actions(to_actions(task.result(), source), session.id, log), session.id)
        except Exception as exc:
            log.error("late handler result refused: %s", exc)
            return
        call = self.calls.get(session.id)
        if actions and call is not None and event.type not in NO_REPLY_EVENTS:
            log.warning("late handler result pushed into the live call: %s", [a.type for a in actions])
            pushed = asyncio.ensure_future(call.push(actions))
            self._late_tasks.add(pushed)
            pushed.add_done_callback(self._late_tasks.discard)
        else:
            log.warning("late handler result not delivered (no live channel): %s", [a.to_wire() for a in actions])


class ForeignSessionAction(ValueError):
    """An action for one call names another call's session id."""

    def __init__(self, action: Action, session_id: str) -> None:
        super().__init__(f"a {action.type} action names session {action.session_id!r} but was sent into {session_id!r}")


def _own_actions(actions: list[Action], session_id: str, log: logging.LoggerAdapter[Any]) -> list[Action]:
    """A handler's reply without the actions that name another call (each logged: it is a bug in the app)."""
    strays = foreign(actions, session_id)
    for action in strays:
        log.error("dropped a %s action naming another session (%r)", action.type, action.session_id)
    return [a for a in actions if a.session_id in (None, session_id)] if strays else actions


def _qualified(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else name


def _describe(handler: Handler, event_type: str) -> str:
    return f"the {event_type} handler {_qualified(handler)}"


def _code_of(fn: Callable[..., Any]) -> CodeType | None:
    fn = inspect.unwrap(fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        code = getattr(inspect.getattr_static(type(fn), "__call__", None), "__code__", None)
    return code if isinstance(code, CodeType) else None


def _arity(handler: Handler) -> int:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return 2
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 2
    return min(len(positional), 2)


async def _invoke(handler: Handler, event: Event, session: Session, pool: WorkerPool) -> HandlerResult:
    """Sync handlers run on the app's own threads. `SystemExit` and `KeyboardInterrupt` from a handler are
    its errors like any other: let through, they would stop the event loop and the server with it."""
    args: tuple[Any, ...] = (event, session)[: _arity(handler)]
    try:
        if inspect.iscoroutinefunction(handler):
            result = await handler(*args)
        else:
            result = await pool.run(handler, *args)
            if inspect.isawaitable(result):
                result = await result
    except (SystemExit, KeyboardInterrupt) as exc:
        raise HandlerExit(f"the handler raised {type(exc).__name__}({exc})") from exc
    return result  # type: ignore[no-any-return]
