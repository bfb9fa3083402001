"""The wire form of a reply: one action as an object, several as an array, none as nothing."""

from __future__ import annotations

from typing import Any

from flowapp.protocol.actions import Action


def reply_body(actions: list[Action]) -> dict[str, Any] | list[dict[str, Any]] | None:
    if not actions:
        return None
    wire = [action.to_wire() for action in actions]
    return wire[0] if len(wire) == 1 else wire
