"""The default app (`flowapp.default_app`) and the examples, through the test client as a developer would test them."""

from __future__ import annotations

import pytest

from examples.minimal import app as minimal_app
from examples.pizza import app as pizza_app
from flowapp import BargeIn, Hangup, Speak, Transfer
from flowapp.cli import build_parser
from flowapp.default_app import app as default_app
from flowapp.loader import load_app
from flowapp.testing import FlowTestClient


def test_serve_without_an_app_runs_the_packaged_default_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWAPP_APP", raising=False)
    args = build_parser().parse_args(["serve"])
    assert load_app(args.app) is default_app


def test_greeting_is_protected_and_the_menu_is_immediate() -> None:
    greeting, menu = FlowTestClient(default_app).session_start()
    assert isinstance(greeting, Speak) and isinstance(menu, Speak)
    assert greeting.barge_in == BargeIn.min_characters(5, allow_after_ms=1500)
    assert menu.barge_in is not None and menu.barge_in.strategy == "immediate"
    assert menu.user_input_timeout_seconds == 8


def test_each_strategy_is_in_use() -> None:
    client = FlowTestClient(default_app)
    client.session_start()
    code = client.user_speak("billing please")
    terms = client.user_speak("the terms")
    strategies = {a.barge_in.strategy for a in [*code, *terms] if isinstance(a, Speak) and a.barge_in}
    assert strategies == {"none", "immediate", "manual"}


def test_keypad_routes_and_star_interrupts_the_terms() -> None:
    client = FlowTestClient(default_app)
    client.session_start()
    support = client.dtmf("2")
    assert isinstance(support[-1], Transfer) and support[-1].timeout == 30
    skipped = client.dtmf("*")
    assert [a.type for a in skipped] == ["barge_in", "speak"]


def test_silence_twice_is_a_reprompt_then_goodbye() -> None:
    client = FlowTestClient(default_app)
    client.session_start()
    assert client.user_input_timeout()[0].text.startswith("Are you still there?")  # type: ignore[union-attr]
    client.user_input_timeout()
    goodbye = client.user_input_timeout()
    assert isinstance(goodbye[-1], Hangup)


def test_minimal_example_echoes() -> None:
    client = FlowTestClient(minimal_app)
    assert client.user_speak("hello").pop().text == "You said: hello"  # type: ignore[union-attr]


def test_pizza_example_keeps_the_order_per_call() -> None:
    client = FlowTestClient(pizza_app)
    client.session_start()
    client.user_speak("a large one")
    client.user_speak("mushroom and olive")
    done = client.user_speak("that's all")
    assert "large pizza with mushroom and olive" in done[0].text  # type: ignore[union-attr]
    assert isinstance(done[-1], Hangup)
    other = FlowTestClient(pizza_app, session={"id": "another-call"})
    other.session_start()
    assert "Which toppings" in other.user_speak("small").pop().text  # type: ignore[union-attr]
