"""A recorded call as one picture: both legs on one time axis, with what the engine heard and decided.

Top: the caller, with the VAD's speech shaded and the transcripts at the time they arrived (finals in bold).
Bottom: the assistant, with each item's span, what the caller heard of it, and how it ended. Across both,
marks for barge-ins (with their trigger), pauses, resumes, key presses and the caller's turns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from flowapp.audio.frames import SAMPLE_RATE
from flowapp.engine.call import Record
from flowapp.recording.store import Recording

WIDTH_INCHES = 12.0
HEIGHT_INCHES = 5.6
DPI = 100
FORMATS = (".png", ".svg")
_BIN = SAMPLE_RATE // 100
"""Samples per envelope point: 10 ms."""
_CALLER = "#1f77b4"
_ASSISTANT = "#2ca02c"
_Style = Literal["-", "--", ":"]
_MARKS: dict[str, tuple[str, _Style, str]] = {
    "barge_in": ("#d62728", "-", "barge-in"),
    "assistant_speech_paused": ("#ff7f0e", "--", "pause"),
    "assistant_speech_resumed": ("#17becf", "--", "resume"),
    "dtmf_received": ("#7f7f7f", ":", "key"),
}


def _envelope(pcm: npt.NDArray[np.int16]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Peak level per 10 ms, scaled to 0..1: a waveform that stays legible at any call length."""
    n = len(pcm) // _BIN
    if n == 0:
        return np.zeros(1), np.zeros(1)
    peaks = np.abs(pcm[: n * _BIN].astype(np.float64)).reshape(n, _BIN).max(axis=1) / 32768.0
    return np.arange(n) * _BIN / SAMPLE_RATE, peaks


def _spans(timeline: list[Record], start: str, end: str) -> list[tuple[float, float]]:
    spans, opened = [], None
    for record in timeline:
        if record.get("event") == start and opened is None:
            opened = record["t_ms"] / 1000
        elif record.get("event") == end and opened is not None:
            spans.append((opened, record["t_ms"] / 1000))
            opened = None
    if opened is not None:
        spans.append((opened, timeline[-1]["t_ms"] / 1000 if timeline else opened))
    return spans


def _short(text: str, limit: int = 38) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def draw(recording: Recording, out: str | Path) -> None:
    """Write the picture to `out` (.png or .svg); matplotlib is imported only here."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    timeline = sorted(recording.timeline, key=lambda r: r["t_ms"])
    end_s = max(len(recording.caller), len(recording.assistant)) / SAMPLE_RATE
    end_s = max(end_s, timeline[-1]["t_ms"] / 1000 if timeline else 0.0, 0.1)

    figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI, layout="constrained")
    caller_ax, assistant_ax = figure.subplots(2, 1, sharex=True, height_ratios=[1, 1])
    session = recording.meta.get("session", {}).get("id", recording.folder.name)
    figure.suptitle(f"call {session} ({recording.meta.get('transport', '?')})", fontsize=10)

    t, peaks = _envelope(recording.caller)
    caller_ax.fill_between(t, -peaks, peaks, color=_CALLER, linewidth=0)
    for start, stop in _spans(timeline, "vad_start", "vad_end"):
        caller_ax.axvspan(start, stop, color=_CALLER, alpha=0.12, linewidth=0)
    transcripts = [r for r in timeline if r.get("event") == "transcript"]
    for i, record in enumerate(transcripts):
        caller_ax.annotate(
            _short(str(record.get("text", ""))),
            (record["t_ms"] / 1000, 1.05 - 0.25 * (i % 4)),
            fontsize=7,
            fontweight="bold" if record.get("final") else "normal",
            color="black" if record.get("final") else "#555555",
            va="top",
        )
    for record in timeline:
        if record.get("event") == "user_speak":
            caller_ax.annotate(
                f"user_speak: {_short(str(record.get('text', '')), 30)}",
                (record["t_ms"] / 1000, -1.05),
                fontsize=7,
                color="#9467bd",
                va="bottom",
            )
            caller_ax.axvline(record["t_ms"] / 1000, color="#9467bd", linestyle=":", linewidth=1)
    caller_ax.set_ylim(-1.1, 1.1)
    caller_ax.set_ylabel("caller")
    caller_ax.set_yticks([])

    t, peaks = _envelope(recording.assistant)
    assistant_ax.fill_between(t, -peaks, peaks, color=_ASSISTANT, linewidth=0)
    _draw_items(assistant_ax, timeline)
    assistant_ax.set_ylim(-1.1, 1.1)
    assistant_ax.set_ylabel("assistant")
    assistant_ax.set_yticks([])
    assistant_ax.set_xlabel("call time (s)")
    assistant_ax.set_xlim(0, end_s)

    pause_triggers = {r["t_ms"]: r.get("trigger") for r in timeline if r.get("event") == "pause"}
    labelled: list[float] = []
    for record in timeline:
        mark = _MARKS.get(str(record.get("event")))
        if mark is None:
            continue
        color, style, label = mark
        x = record["t_ms"] / 1000
        for ax in (caller_ax, assistant_ax):
            ax.axvline(x, color=color, linestyle=style, linewidth=1.4)
        if record.get("event") == "barge_in":
            label = f"barge-in ({record.get('trigger')})"
        elif record.get("event") == "assistant_speech_paused" and record["t_ms"] in pause_triggers:
            label = f"pause ({pause_triggers[record['t_ms']]})"
        elif record.get("event") == "dtmf_received":
            label = f"key {record.get('digit')}"
        crowded = sum(1 for other in labelled if abs(other - x) < end_s / 25)
        labelled.append(x)
        assistant_ax.annotate(label, (x, 1.08 - 0.13 * crowded), fontsize=7, color=color, va="top", ha="left")

    legend: list[Any] = [
        Patch(color=_CALLER, alpha=0.25, label="caller speaking (VAD)"),
        Patch(color=_ASSISTANT, alpha=0.3, label="assistant item (heard part darker)"),
        Line2D([], [], color="#9467bd", linestyle=":", label="user_speak"),
    ] + [Line2D([], [], color=c, linestyle=s, label=name) for c, s, name in _MARKS.values()]
    figure.legend(handles=legend, loc="outside lower center", ncol=len(legend), fontsize=7, frameon=False)
    figure.savefig(out, dpi=DPI)


def _draw_items(ax: Any, timeline: list[Record]) -> None:
    """Each assistant item as a band: the part played before it ended, labelled with what the caller heard."""
    started: Record | None = None
    row = 0
    for record in timeline:
        kind = record.get("event")
        if kind == "assistant_speak":
            started = record
        elif kind == "assistant_speech_ended" and started is not None:
            begin = started["t_ms"] / 1000
            played = int(record.get("played_ms", 0)) / 1000
            planned = begin + int(started.get("duration_ms", 0)) / 1000
            y = -0.95 + 0.22 * (row % 2)
            ax.barh(y, planned - begin, left=begin, height=0.18, color=_ASSISTANT, alpha=0.18, linewidth=0)
            ax.barh(y, played, left=begin, height=0.18, color=_ASSISTANT, alpha=0.45, linewidth=0)
            how = "interrupted" if record.get("interrupted") else "played"
            heard = _short(str(record.get("heard_text") or started.get("text") or ""), 44)
            ax.annotate(f'{how}: "{heard}"', (begin, y + 0.11), fontsize=7, va="bottom")
            started = None
            row += 1
