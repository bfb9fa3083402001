"""The suite's own guards: no test can hang CI, and the quick loop has something to leave out."""

from __future__ import annotations

import pytest


def test_every_test_runs_under_a_timeout(request: pytest.FixtureRequest) -> None:
    assert float(request.config.getini("timeout")) > 0, "pytest-timeout is configured in pyproject.toml"
    assert request.config.pluginmanager.hasplugin("timeout")


def test_the_slow_marker_is_declared(request: pytest.FixtureRequest) -> None:
    assert any(line.startswith("slow:") for line in request.config.getini("markers"))
