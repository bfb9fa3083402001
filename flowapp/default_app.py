"""The default app `flowapp serve` runs: a small support line that uses every barge-in strategy.

It lives inside the package so that installing flowapp adds no top-level module a user's own code could collide with.

- greeting: `minimum_characters` with a protection period, so a "hello?" does not cut the welcome short;
- menu and re-prompts: `immediate`, so a caller who knows what they want is never kept waiting;
- a verification code: `none`, read to the end whatever the caller does;
- the terms read-out: `manual`, stopped only when the caller presses `*` (the app sends `barge_in`).
"""

from __future__ import annotations

import logging
import os

from flowapp import (
    BargeIn,
    BargeInNow,
    DtmfReceived,
    FlowApp,
    HandlerResult,
    Hangup,
    Session,
    SessionEnd,
    SessionStart,
    Speak,
    Transfer,
    UserInputTimeout,
    UserSpeak,
)

logger = logging.getLogger("flowapp.default_app")

SUPPORT_NUMBER = os.environ.get("FLOWAPP_SUPPORT_NUMBER", "+4921100000000")
MAX_SILENT_PROMPTS = 2

MENU = "Say billing, support or terms, or press 1, 2 or 3."

app = FlowApp()


def menu(prefix: str = "") -> Speak:
    return Speak(
        text=f"{prefix} {MENU}".strip(),
        barge_in=BargeIn.immediate(allow_after_ms=300),
        user_input_timeout_seconds=8,
    )


def goodbye() -> list[Speak | Hangup]:
    return [Speak(text="Thank you for calling. Goodbye!", barge_in=BargeIn.none()), Hangup()]


def choose(option: str, session: Session) -> HandlerResult:
    session["silent_prompts"] = 0
    if option == "billing":
        return [
            Speak(text="Your verification code is 4 7 1 1.", barge_in=BargeIn.none()),
            menu("Anything else?"),
        ]
    if option == "support":
        return [
            Speak(text="Connecting you to a support agent.", barge_in=BargeIn.none()),
            Transfer(target_phone_number=SUPPORT_NUMBER, caller_id_name="flowapp support", timeout=30),
        ]
    if option == "terms":
        return Speak(
            text=(
                "Our terms in short: calls may be recorded for quality, your data stays in the country, "
                "and you can cancel at any time. Press star to skip."
            ),
            barge_in=BargeIn.manual(),
        )
    return menu("Sorry, I did not get that.")


@app.on_session_start
def greet(event: SessionStart, session: Session) -> HandlerResult:
    session["silent_prompts"] = 0
    return [
        Speak(text="Welcome to the flowapp demo line.", barge_in=BargeIn.min_characters(5, allow_after_ms=1500)),
        menu(),
    ]


@app.on_user_speak
def route(event: UserSpeak, session: Session) -> HandlerResult:
    text = event.text.lower()
    if any(word in text for word in ("bye", "goodbye", "hang up")):
        return goodbye()
    for option in ("billing", "support", "terms"):
        if option in text:
            return choose(option, session)
    return choose("", session)


@app.on_dtmf
def keypad(event: DtmfReceived, session: Session) -> HandlerResult:
    if event.digit == "*":
        return [BargeInNow(), menu("Skipped.")]
    options = {"1": "billing", "2": "support", "3": "terms"}
    if event.digit in options:
        return choose(options[event.digit], session)
    if event.digit == "#":
        return menu()
    return None


@app.on_user_input_timeout
def nudge(event: UserInputTimeout, session: Session) -> HandlerResult:
    session["silent_prompts"] = session.get("silent_prompts", 0) + 1
    if session["silent_prompts"] > MAX_SILENT_PROMPTS:
        return goodbye()
    return menu("Are you still there?")


@app.on_session_end
def log_end(event: SessionEnd, session: Session) -> None:
    logger.info("call ended", extra={"session_id": session.id, "reason": event.reason})
