"""The in-memory session store stays bounded: idle state expires, and past the cap the longest idle goes."""

from __future__ import annotations

import pytest

from flowapp.session import InMemorySessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_state_untouched_for_the_idle_time_is_dropped() -> None:
    clock = Clock()
    store = InMemorySessionStore(idle_seconds=60, clock=clock)
    store.load("never-ends")["step"] = 1
    clock.now = 30
    store.save("busy", {"step": 2})
    clock.now = 59
    assert store.load("never-ends") == {"step": 1}, "a load counts as use"
    clock.now = 100
    store.save("new", {})
    assert len(store) == 2
    assert store.load("never-ends") == {"step": 1}
    clock.now = 200
    store.save("new", {})
    assert len(store) == 1
    assert store.load("busy") == {}, "expired state is gone; the call starts afresh"


def test_past_the_cap_the_state_idle_longest_goes_first(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    store = InMemorySessionStore(max_sessions=3, clock=clock)
    for n in range(3):
        clock.now = n
        store.save(f"s{n}", {"n": n})
    clock.now = 3
    store.load("s0")
    clock.now = 4
    store.save("s3", {"n": 3})
    assert len(store) == 3
    assert store.load("s1") == {}, "s1 was idle longest"
    assert "session store full (3 sessions)" in caplog.text
    for n in range(1000):
        store.save(f"flood-{n}", {})
    assert len(store) == 3


def test_session_end_deletes_and_limits_are_checked() -> None:
    store = InMemorySessionStore()
    store.save("s", {"a": 1})
    store.delete("s")
    assert len(store) == 0
    with pytest.raises(ValueError, match="max_sessions"):
        InMemorySessionStore(max_sessions=0)
    with pytest.raises(ValueError, match="idle_seconds"):
        InMemorySessionStore(idle_seconds=0)
