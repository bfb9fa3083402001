"""RepeatLimiter: a burst of each kind of line per window, then one line that counts what was held back."""

from __future__ import annotations

import logging

import pytest

from flowapp.logs import RepeatLimiter


def test_a_burst_per_window_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limiter = RepeatLimiter(burst=3, window_seconds=10, clock=lambda: now[0])
    log = logging.getLogger("flowapp.test")
    caplog.set_level(logging.INFO, logger="flowapp.test")
    for n in range(50):
        limiter.log(log, logging.WARNING, "dropped %d", n)
        limiter.log(log, logging.INFO, "other")
    expected = ["dropped 0", "other", "dropped 1", "other", "dropped 2", "other"]
    assert [r.getMessage() for r in caplog.records] == expected
    caplog.clear()
    now[0] = 10
    limiter.log(log, logging.WARNING, "dropped %d", 50)
    assert [r.getMessage() for r in caplog.records] == ["47 more lines like 'dropped %d' were not logged", "dropped 50"]
    caplog.clear()
    limiter.flush(log)
    assert [r.getMessage() for r in caplog.records] == ["47 more lines like 'other' were not logged"]
    caplog.clear()
    limiter.flush(log)
    assert caplog.records == []
