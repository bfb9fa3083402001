"""`scripts/install` (which `scripts/serve` and `scripts/test` run first) skips pip when nothing changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout whose .venv already holds flowapp, editable, from it; pip and python3 are stand-ins that log."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install", root / "scripts" / "install")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "flowapp").mkdir()
    (root / "flowapp" / "__init__.py").write_text("")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")], check=True, timeout=60)
    site = next((root / ".venv" / "lib").glob("python*/site-packages"))
    (site / "flowapp-editable.pth").write_text(str(root) + "\n")
    log = tmp_path / "calls.log"
    stand_in = f'#!/bin/sh\necho "$(basename "$0") $*" >> {log}\n'
    for name in ("pip", "flowapp"):
        (root / ".venv" / "bin" / name).write_text(stand_in)
        (root / ".venv" / "bin" / name).chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("python3", "dpkg"):
        (tools / name).write_text(stand_in)
        (tools / name).chmod(0o755)
    return root


def install(root: Path, *args: str) -> list[str]:
    log = root.parent / "calls.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{root.parent / 'tools'}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(root / "scripts" / "install"), *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    return [call for call in calls if not call.startswith("dpkg")]


def test_pip_runs_once_then_is_skipped_until_pyproject_changes(checkout: Path) -> None:
    assert install(checkout) == ["python3 -m venv .venv", "pip install -q --upgrade pip", "pip install -q -e ."]
    assert install(checkout) == []
    with (checkout / "pyproject.toml").open("a") as f:
        f.write("\n# a new dependency\n")
    assert install(checkout)[-1] == "pip install -q -e ."
    assert install(checkout) == []


def test_test_extras_install_once_and_cover_a_plain_install(checkout: Path) -> None:
    install(checkout)
    assert install(checkout, "--test")[-1] == "pip install -q -e .[test]"
    assert install(checkout, "--test") == []
    assert install(checkout) == []


def test_a_venv_holding_flowapp_from_another_checkout_is_reinstalled(checkout: Path, tmp_path: Path) -> None:
    install(checkout)
    site = next((checkout / ".venv" / "lib").glob("python*/site-packages"))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "flowapp").mkdir(parents=True)
    (elsewhere / "flowapp" / "__init__.py").write_text("")
    (site / "flowapp-editable.pth").write_text(str(elsewhere) + "\n")
    assert install(checkout)[-1] == "pip install -q -e ."
