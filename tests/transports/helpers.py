"""Event payloads as the platform sends them, and the small app the transport tests serve."""

from __future__ import annotations

from typing import Any

from flowapp import FlowApp

SESSION = {
    "id": "3f1e0c9a-1b2c-4d5e-8f90-123456789abc",
    "account_id": "acc-1",
    "phone_number": "4921100000000",
    "direction": "inbound",
    "from_phone_number": "+4915100000000",
    "to_phone_number": "4921100000000",
}
SESSION_ID = SESSION["id"]


def event(event_type: str, session_id: str = SESSION_ID, **fields: Any) -> dict[str, Any]:
    return {"type": event_type, "session": {**SESSION, "id": session_id}, **fields}


def greeting_app() -> FlowApp:
    """Greets, and answers every turn: enough for a transport test to get replies."""
    app = FlowApp()

    @app.on_session_start
    def greet() -> str:
        return "Welcome!"

    @app.on_user_speak
    def answer() -> str:
        return "Heard you."

    return app
