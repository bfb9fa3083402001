"""`FlowTestClient`: drive an app through its real webhook route and get typed actions back.

client = FlowTestClient(app)
actions = client.user_speak("billing")
assert actions[0].text == "Connecting you to billing."
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

import starlette.exceptions
from pydantic import BaseModel

from flowapp.app import FlowApp
from flowapp.protocol.actions import Action, parse_actions
from flowapp.protocol.events import SessionInfo
from flowapp.server import create_server
from flowapp.settings import ServerSettings
from flowapp.transports.auth import API_TOKEN_HEADER, SIGNATURE_HEADER, sign

_HTTPX2_NUDGE: type[Warning] | None = getattr(starlette.exceptions, "StarletteDeprecationWarning", None)
"""Starlette 1.x nudges TestClient users from httpx towards httpx2 (httpx is the client this project depends on);
older Starlette versions neither warn nor have the class."""

with warnings.catch_warnings():
    if _HTTPX2_NUDGE is not None:
        warnings.simplefilter("ignore", _HTTPX2_NUDGE)
    from starlette.testclient import TestClient

DEFAULT_SESSION = SessionInfo(
    id="test-session",
    account_id="test-account",
    phone_number="+4921100000000",
    direction="inbound",
    from_phone_number="+4915100000000",
    to_phone_number="+4921100000000",
)


class Response(Protocol):
    """What the test client answers: an httpx or httpx2 response, whichever Starlette's TestClient runs on."""

    status_code: int

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


class UnexpectedResponse(AssertionError):
    """The webhook answered something other than 200 or 204: the event or the app is broken."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"webhook answered {response.status_code}: {response.text}")
        self.response = response


class FlowTestClient:
    """Posts events to the app's `/webhook`, as the platform would, and parses the reply into actions.

    Events are JSON-serialized and validated on the way in, and the reply is validated on the way out, so a
    test sees exactly what the platform would. With `settings` carrying secrets, requests are authenticated.
    """

    def __init__(
        self,
        app: FlowApp,
        session: SessionInfo | Mapping[str, Any] | None = None,
        *,
        settings: ServerSettings | None = None,
    ) -> None:
        self.app = app
        if isinstance(session, Mapping):
            session = SessionInfo.model_validate(session)
        self.session = session or DEFAULT_SESSION
        self.settings = settings or ServerSettings()
        self.http = TestClient(create_server(app, self.settings))
        self.last_response: Response | None = None

    def send(self, event: BaseModel | Mapping[str, Any]) -> list[Action]:
        """Send any event (model or dict); a dict without `session` gets the client's session."""
        data = event.model_dump(mode="json", exclude_none=True) if isinstance(event, BaseModel) else dict(event)
        data.setdefault("session", self.session.model_dump(mode="json", exclude_none=True))
        body = json.dumps(data).encode("utf-8")
        response = self.http.post("/webhook", content=body, headers=self._headers(body))
        self.last_response = response
        if response.status_code == 204:
            return []
        if response.status_code != 200:
            raise UnexpectedResponse(response)
        return parse_actions(response.json())

    def session_start(self) -> list[Action]:
        return self.send({"type": "session_start"})

    def user_speak(self, text: str, barged_in: bool | None = None) -> list[Action]:
        return self.send(_without_none({"type": "user_speak", "text": text, "barged_in": barged_in}))

    def dtmf(self, digit: str) -> list[Action]:
        return self.send({"type": "dtmf_received", "digit": digit})

    def user_input_timeout(self) -> list[Action]:
        return self.send({"type": "user_input_timeout"})

    def assistant_speech_ended(
        self, *, interrupted: bool | None = None, played_ms: int | None = None, heard_text: str | None = None
    ) -> list[Action]:
        event = {"type": "assistant_speech_ended", "interrupted": interrupted, "played_ms": played_ms}
        return self.send(_without_none({**event, "heard_text": heard_text}))

    def session_end(self, reason: str | None = None) -> list[Action]:
        return self.send(_without_none({"type": "session_end", "reason": reason}))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> FlowTestClient:
        self.http.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.http.__exit__(exc_type, exc, traceback)

    def _headers(self, body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.settings.api_token:
            headers[API_TOKEN_HEADER] = self.settings.api_token
        if self.settings.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(body, self.settings.webhook_secret)
        return headers


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}
