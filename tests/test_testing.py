"""`FlowTestClient`: three-line handler tests through the real webhook route."""

from __future__ import annotations

import pytest

from flowapp import FlowApp, Hangup, Session, Speak
from flowapp.protocol.events import AssistantSpeechEnded, DtmfReceived, SessionEnd, UserSpeak
from flowapp.settings import ServerSettings
from flowapp.testing import DEFAULT_SESSION, FlowTestClient, UnexpectedResponse


def make_app() -> FlowApp:
    app = FlowApp()

    @app.on_session_start
    def greet(event: object, session: Session) -> str:
        return f"Hello {session.info.from_phone_number}"

    @app.on_user_speak
    def route(event: UserSpeak) -> list[Speak | Hangup] | str:
        if "billing" in event.text:
            return [Speak(text="Connecting you to billing."), Hangup()]
        return f"barged_in={event.barged_in}"

    @app.on_dtmf
    def key(event: DtmfReceived) -> str:
        return f"key {event.digit}"

    @app.on_user_input_timeout
    def nudge() -> str:
        return "Are you still there?"

    @app.on_assistant_speech_ended
    def ended(event: AssistantSpeechEnded) -> str:
        return f"{event.interrupted} {event.played_ms} {event.heard_text}"

    @app.on_session_end
    def bye(event: SessionEnd, session: Session) -> None:
        session["reason"] = event.reason

    return app


def test_three_line_handler_test() -> None:
    client = FlowTestClient(make_app())
    actions = client.user_speak("billing please")
    assert actions[0].text == "Connecting you to billing."  # type: ignore[union-attr]
    assert [a.type for a in actions] == ["speak", "hangup"]
    assert actions[0].session_id == "test-session"


def test_convenience_methods_send_their_events() -> None:
    with FlowTestClient(make_app()) as client:
        assert client.session_start()[0].text == f"Hello {DEFAULT_SESSION.from_phone_number}"  # type: ignore[union-attr]
        assert client.user_speak("hi", barged_in=True)[0].text == "barged_in=True"  # type: ignore[union-attr]
        assert client.user_speak("hi")[0].text == "barged_in=None"  # type: ignore[union-attr]
        assert client.dtmf("#")[0].text == "key #"  # type: ignore[union-attr]
        assert client.user_input_timeout()[0].text == "Are you still there?"  # type: ignore[union-attr]
        ended = client.assistant_speech_ended(interrupted=True, played_ms=420, heard_text="Hel")
        assert ended[0].text == "True 420 Hel"  # type: ignore[union-attr]
        assert client.session_end("caller hung up") == []
        assert client.last_response is not None
        assert client.last_response.status_code == 204


def test_session_can_be_overridden_with_a_dict() -> None:
    client = FlowTestClient(make_app(), {"id": "other", "from_phone_number": "4930123"})
    actions = client.session_start()
    assert actions[0].session_id == "other"
    assert actions[0].text == "Hello +4930123"  # type: ignore[union-attr]


def test_send_takes_models_and_dicts() -> None:
    client = FlowTestClient(make_app())
    model = UserSpeak(session=DEFAULT_SESSION, text="billing")
    assert client.send(model)[1].type == "hangup"
    assert client.send({"type": "user_barge_in", "text": "x"})[0].text == "barged_in=True"  # type: ignore[union-attr]
    assert client.send({"type": "not_yet_invented"}) == []


def test_invalid_events_raise_with_the_webhook_answer() -> None:
    client = FlowTestClient(make_app())
    with pytest.raises(UnexpectedResponse) as error:
        client.dtmf("x")
    assert error.value.response.status_code == 422
    assert "digit" in str(error.value)


def test_configured_secrets_are_sent() -> None:
    settings = ServerSettings(api_token="t", webhook_secret="k")
    assert FlowTestClient(make_app(), settings=settings).dtmf("1")[0].text == "key 1"  # type: ignore[union-attr]
