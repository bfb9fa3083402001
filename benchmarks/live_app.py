"""The bot of the live-call benchmark: it talks whenever it can, and anything the caller says interrupts it.

It speaks a few long sentences through the local TTS, whose cache renders each once: the benchmark measures
the media path and the engine, not the speech synthesizer. The offline engine figure uses the same app.
Each call goes through the lines in the same order (its own count, not a process-wide one), so a call's
timeline does not depend on how many calls came before: the live and offline figures pair utterance by
utterance. Only the benchmark's warm-up calls (from `WARM_UP_CALLERS`) open with another line, so that
every line is synthesized before the measured calls start.
"""

from __future__ import annotations

from flowapp import BargeIn, FlowApp, Speak
from flowapp.protocol.events import AssistantSpeechEnded, SessionStart, UserSpeak
from flowapp.session import Session

LINES = (
    "Thank you for calling. I can help you with your order, your invoice, or a new contract, and if you "
    "would rather talk to a person, just say so at any time and I will connect you right away.",
    "Let me look that up for you. Your last order was shipped on Monday and should arrive within two to "
    "three working days; you will get a message with the tracking number as soon as it is handed over.",
    "I am sorry, I did not quite get that. You can ask me about deliveries, payments, returns or opening "
    "hours, or you can press zero to speak to one of my colleagues in the customer service team.",
)
"""Each about 10 s: longer than the gap between two barge-ins, so the bot is talking when they come."""

WARM_UP_CALLERS = tuple(f"+49151000009{k:02d}" for k in range(len(LINES)))
"""A call from the k-th of these numbers opens with line k."""

app = FlowApp(default_barge_in=BargeIn.immediate())


def talk(session: Session) -> Speak:
    said = session.state.get("lines", 0)
    session["lines"] = said + 1
    return Speak(text=LINES[said % len(LINES)], barge_in=BargeIn.immediate())


@app.on_session_start
async def greet(event: SessionStart, session: Session) -> Speak:
    caller = event.session.from_phone_number
    session["lines"] = WARM_UP_CALLERS.index(caller) if caller in WARM_UP_CALLERS else 0
    return talk(session)


@app.on_user_speak
async def answer(event: UserSpeak, session: Session) -> Speak:
    return talk(session)


@app.on_assistant_speech_ended
async def go_on(event: AssistantSpeechEnded, session: Session) -> Speak | None:
    return None if event.interrupted else talk(session)
