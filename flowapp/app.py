"""`FlowApp`: decorated event handlers, and the dispatch that turns their results into actions."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from flowapp.engine.interruption import InterruptionHook
from flowapp.engine.turns import TurnHandling
from flowapp.logs import call_logger
from flowapp.protocol.actions import Action, Audio, BargeIn, Speak, foreign
from flowapp.protocol.events import NO_REPLY_EVENTS, Event, SessionInfo
from flowapp.session import InMemorySessionStore, Session, SessionRegistry, SessionStore

logger = logging.getLogger("flowapp.app")

ActionLike = Action | str
HandlerResult = ActionLike | Sequence[ActionLike] | None
Handler = Callable[..., HandlerResult | Awaitable[HandlerResult]]
H = TypeVar("H", bound=Handler)


def to_actions(result: HandlerResult) -> list[Action]:
    """What a handler may return: an action, a list of them, a plain string (spoken), or None."""
    if result is None:
        return []
    if isinstance(result, str):
        return [Speak(text=result)]
    if isinstance(result, Sequence):
        return [a for item in result for a in to_actions(item)]
    return [result]


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
    ) -> None:
        """`turn_handling`: app-wide interruption, endpointing and turn-limit options (see flowapp.engine.turns);
        a call can change its own with a `configure_turn_handling` action."""
        self.default_barge_in = default_barge_in or BargeIn.min_characters(3)
        self.fallback = fallback
        self.handler_timeout = handler_timeout
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
        return fn

    def handles(self, event_type: str) -> bool:
        return event_type in self._handlers

    # Dispatch -----------------------------------------------------------------------------------

    def session(self, info: SessionInfo) -> Session:
        call = self.calls.get(info.id)
        if call is None:
            return Session(info, self.store.load(info.id))

        async def push(actions: list[Action]) -> None:
            """Pushed actions get the same session id and default barge-in as replies."""
            await call.push(self.finish(actions, info.id))

        return Session(info, self.store.load(info.id), push)

    async def respond(self, event: Event) -> list[Action]:
        """Run the event's handler within the deadline; never raises."""
        log = call_logger(logger, event.session.id, event=event.type)
        handler = self._handlers.get(event.type)
        session = self.session(event.session)
        actions: list[Action] = []
        if handler is not None:
            actions = await self._run(handler, event, session, log)
        self.store.save(session.id, session.state)
        if event.type == "session_end":
            self.store.delete(session.id)
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
        task = asyncio.ensure_future(_invoke(handler, event, session))
        done, _ = await asyncio.wait({task}, timeout=self.handler_timeout)
        if not done:
            log.warning("handler exceeded its %.2f s deadline; answered with the fallback", self.handler_timeout)
            self._late_tasks.add(task)
            task.add_done_callback(lambda t: self._on_late_result(t, event, session, log))
            return to_actions(self.fallback)
        try:
            return to_actions(task.result())
        except Exception:
            log.exception("handler raised; answered with the fallback")
            return to_actions(self.fallback)

    def _on_late_result(
        self, task: asyncio.Future[Any], event: Event, session: Session, log: logging.LoggerAdapter[Any]
    ) -> None:
        """A late answer is still the app's answer: push it where the call has a live channel, else log it."""
        self._late_tasks.discard(task)
        if task.cancelled():
            log.warning("late handler was cancelled")
            return
        if task.exception() is not None:
            log.error("late handler raised: %r", task.exception())
            return
        try:
            actions = self.finish(_own_actions(to_actions(task.result()), session.id, log), session.id)
        except Exception as exc:
            log.error("late handler returned an invalid result: %r", exc)
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


def _arity(handler: Handler) -> int:
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return 2
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 2
    return min(len(positional), 2)


async def _invoke(handler: Handler, event: Event, session: Session) -> HandlerResult:
    args: tuple[Any, ...] = (event, session)[: _arity(handler)]
    if inspect.iscoroutinefunction(handler):
        result = await handler(*args)
    else:
        result = await asyncio.to_thread(handler, *args)
        if inspect.isawaitable(result):
            result = await result
    return result  # type: ignore[no-any-return]
