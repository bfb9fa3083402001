"""The wheel a user installs: typed, with nothing outside the `flowapp` namespace, and no deprecated metadata."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[zipfile.ZipFile, str]:
    """Builds the wheel from a copy of the checkout, so the build leaves nothing in the work tree."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "flowapp", source / "flowapp", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (path,) = out.glob("flowapp-*.whl")
    return zipfile.ZipFile(path), build.stdout + build.stderr


@pytest.mark.slow
def test_the_wheel_is_typed_and_installs_only_the_flowapp_package(wheel: tuple[zipfile.ZipFile, str]) -> None:
    names = wheel[0].namelist()
    assert "flowapp/py.typed" in names
    assert "flowapp/default_app.py" in names
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"flowapp"}


@pytest.mark.slow
def test_the_wheel_declares_an_spdx_licence_without_deprecation_warnings(wheel: tuple[zipfile.ZipFile, str]) -> None:
    archive, log = wheel
    metadata = archive.read("flowapp-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "flowapp-0.1.0.dist-info/licenses/LICENSE" in archive.namelist()
    assert "SetuptoolsDeprecationWarning" not in log
    assert "project.license" not in log

