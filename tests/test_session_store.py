"""The in-memory session store stays bounded: idle state expires, and past the cap the longest idle goes."""

from __future__ import annotations

import pytest

from flowapp.session import InMemorySessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_state_untouched_for_the_idle_time_is_dropped() -> None:
    clock = Clock()
    store = InMemorySessionStore(idle_seconds=60, clock=clock)
    (await store.load("never-ends"))["step"] = 1
    clock.now = 30
    await store.save("busy", {"step": 2})
    clock.now = 59
    assert await store.load("never-ends") == {"step": 1}, "a load counts as use"
    clock.now = 100
    await store.save("new", {})
    assert len(store) == 2
    assert await store.load("never-ends") == {"step": 1}
    clock.now = 200
    await store.save("new", {})
    assert len(store) == 1
    assert await store.load("busy") == {}, "expired state is gone; the call starts afresh"


async def test_past_the_cap_the_state_idle_longest_goes_first(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    store = InMemorySessionStore(max_sessions=3, clock=clock)
    for n in range(3):
        clock.now = n
        await store.save(f"s{n}", {"n": n})
    clock.now = 3
    await store.load("s0")
    clock.now = 4
    await store.save("s3", {"n": 3})
    assert len(store) == 3
    assert await store.load("s1") == {}, "s1 was idle longest"
    assert "session store full (3 sessions)" in caplog.text
    for n in range(1000):
        await store.save(f"flood-{n}", {})
    assert len(store) == 3


async def test_session_end_deletes_and_limits_are_checked() -> None:
    store = InMemorySessionStore()
    await store.save("s", {"a": 1})
    await store.delete("s")
    assert len(store) == 0
    with pytest.raises(ValueError, match="max_sessions"):
        InMemorySessionStore(max_sessions=0)
    with pytest.raises(ValueError, match="idle_seconds"):
        InMemorySessionStore(idle_seconds=0)
