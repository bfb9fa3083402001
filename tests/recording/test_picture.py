"""`flowapp timeline`: a recording drawn as a picture of the expected size that is not blank."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from flowapp.cli import main
from flowapp.recording.picture import DPI, HEIGHT_INCHES, WIDTH_INCHES

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


@pytest.fixture
def recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["simulate", str(SCENARIOS / "pizza-app.json"), "--record", str(tmp_path / "rec")]) == 0
    capsys.readouterr()
    [folder] = (tmp_path / "rec").iterdir()
    return folder


def test_the_picture_renders_at_its_size_and_is_not_blank(recording: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    out = tmp_path / "call.png"
    assert main(["timeline", str(recording), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (int(WIDTH_INCHES * DPI), int(HEIGHT_INCHES * DPI))
    pixels = imread(out)[..., :3]
    colours = {tuple(p) for p in (pixels.reshape(-1, 3) * 255).astype(np.uint8)[::7]}
    assert len(colours) > 50, "waveforms, spans and text, not an empty frame"
    caller_blue = np.all(np.abs(pixels - np.array([0x1F, 0x77, 0xB4]) / 255) < 0.02, axis=-1)
    barge_in_red = np.all(np.abs(pixels - np.array([0xD6, 0x27, 0x28]) / 255) < 0.02, axis=-1)
    assert caller_blue.sum() > 1000 and barge_in_red.sum() > 100, "the caller's waveform and the barge-in mark"


def test_svg_too_and_bad_output_exits_2(recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "call.svg"
    assert main(["timeline", str(recording), "-o", str(out)]) == 0
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "barge-in (vad)" in svg
    assert main(["timeline", str(recording), "-o", str(tmp_path / "call.gif")]) == 2
    assert "-o must end in .png or .svg" in capsys.readouterr().err
    assert main(["timeline", str(tmp_path / "nothing"), "-o", str(out)]) == 2
    assert "recording not found" in capsys.readouterr().err
    assert main(["timeline", str(recording), "-o", str(tmp_path / "no" / "dir" / "call.png")]) == 2
    assert "cannot write" in capsys.readouterr().err
