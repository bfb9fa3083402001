"""Call recordings on disk: one folder per call, written by one thread off the audio path, oldest pruned.

The audio path only appends to in-memory buffers; every half second of call time they go to the writer
thread as one chunk. When the writer falls behind by `MAX_PENDING_CHUNKS` chunks, new chunks are dropped
and counted (the call's `call.json` says how many), so a slow disk never delays a frame.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import queue
import re
import shutil
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from flowapp.audio.frames import SAMPLE_RATE
from flowapp.engine.call import EngineConfig, Record
from flowapp.protocol.events import SessionInfo
from flowapp.recording.tap import FORMAT, CallRecording
from flowapp.settings import ServerSettings

logger = logging.getLogger("flowapp.recording")

CHUNK_OPS = 50
"""Plays and hears (half a second of call time) buffered before they go to the writer as one chunk."""
MAX_PENDING_CHUNKS = 2000
"""Chunks waiting for the disk, over all calls (about 16 MB of audio); beyond that new ones are dropped."""
CALL_FILE = "call.json"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RecordingError(ValueError):
    """A recording that cannot be read, or a folder recordings cannot be written to; the message says why."""


@dataclass
class _Chunk:
    call: int
    session_id: str
    caller: bytes = b""
    assistant: bytes = b""
    clock: str = ""
    timeline: list[Record] = field(default_factory=list)
    inputs: list[Record] = field(default_factory=list)
    meta: dict[str, Any] | None = None
    """Set on the call's last chunk: what goes into `call.json`."""
    dropped: int = 0


@dataclass
class _Open:
    folder: Path
    caller: wave.Wave_write
    assistant: wave.Wave_write
    clock: IO[str]
    timeline: IO[str]
    inputs: IO[str]


class FileSink:
    """Buffers one call's recording and hands it to the writer thread in chunks."""

    def __init__(self, recorder: Recorder, call: int, session_id: str) -> None:
        self._recorder = recorder
        self._call = call
        self._session_id = session_id
        self._chunk = _Chunk(call, session_id)
        self._caller = bytearray()
        self._assistant = bytearray()
        self._clock: list[str] = []
        self.dropped = 0

    def caller(self, frame: npt.NDArray[np.int16]) -> None:
        self._caller += frame.astype(np.int16, copy=False).tobytes()

    def assistant(self, frame: npt.NDArray[np.int16]) -> None:
        self._assistant += frame.astype(np.int16, copy=False).tobytes()

    def clock(self, op: str) -> None:
        self._clock.append(op)
        if len(self._clock) >= CHUNK_OPS:
            self._hand_over(last=False)

    def timeline(self, record: Record) -> None:
        self._chunk.timeline.append(record)

    def inputs(self, record: Record) -> None:
        self._chunk.inputs.append(record)

    def close(self, meta: dict[str, Any]) -> None:
        self._chunk.meta = meta
        self._hand_over(last=True)

    def _hand_over(self, *, last: bool) -> None:
        chunk = self._chunk
        chunk.caller, chunk.assistant, chunk.clock = bytes(self._caller), bytes(self._assistant), "".join(self._clock)
        self._caller.clear()
        self._assistant.clear()
        self._clock.clear()
        self._chunk = _Chunk(self._call, self._session_id)
        if last:
            chunk.dropped = self.dropped
        if not self._recorder.submit(chunk, last=last):
            self.dropped += 1


class Recorder:
    """Writes the recordings of all calls of a process under `root`, keeping the newest `keep`."""

    def __init__(self, root: str | Path, keep: int) -> None:
        self.root = Path(root)
        self.keep = keep
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self.root / ".flowapp-write-check"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RecordingError(f"cannot write recordings to {self.root}: {exc.strerror or exc}") from None
        self._queue: queue.SimpleQueue[_Chunk | threading.Event] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._calls = 0
        self._open: dict[int, _Open] = {}
        self._failed: set[int] = set()
        self.written = 0
        """Recordings completed."""
        self.dropped_chunks = 0
        self._thread = threading.Thread(target=self._run, name="flowapp-recorder", daemon=True)
        self._thread.start()
        atexit.register(self.flush, 5.0)

    def start(
        self, session: SessionInfo, config: EngineConfig, *, transport: str, recognizer_name: str | None
    ) -> CallRecording:
        with self._lock:
            self._calls += 1
            call = self._calls
        recording = CallRecording(
            FileSink(self, call, session.id), session, config, transport=transport, recognizer_name=recognizer_name
        )
        recording.meta["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return recording

    def submit(self, chunk: _Chunk, *, last: bool) -> bool:
        """Queue a chunk without waiting; False (and counted) when the writer is too far behind. A call's
        last chunk always goes, so its files are closed."""
        with self._lock:
            if not last and self._pending >= MAX_PENDING_CHUNKS:
                self.dropped_chunks += 1
                return False
            self._pending += 1
        self._queue.put(chunk)
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is on disk."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    # The writer thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            with self._lock:
                self._pending -= 1
            try:
                self._write(item)
            except OSError as exc:
                if item.call not in self._failed:
                    logger.error("recording a call failed: %s; the call goes on unrecorded", exc)
                self._failed.add(item.call)
                self._discard(item.call)
            except Exception:
                logger.exception("recording a call failed; the call goes on unrecorded")
                self._failed.add(item.call)
                self._discard(item.call)
            if item.meta is not None:
                self._failed.discard(item.call)

    def _write(self, chunk: _Chunk) -> None:
        if chunk.call in self._failed:
            return
        files = self._open.get(chunk.call)
        if files is None:
            files = self._open[chunk.call] = self._create(chunk.session_id)
        files.caller.writeframes(chunk.caller)
        files.assistant.writeframes(chunk.assistant)
        files.clock.write(chunk.clock)
        for record in chunk.timeline:
            files.timeline.write(json.dumps(record, separators=(",", ":")) + "\n")
        for record in chunk.inputs:
            files.inputs.write(json.dumps(record, separators=(",", ":")) + "\n")
        if chunk.meta is not None:
            meta = {**chunk.meta, "dropped_chunks": chunk.dropped}
            self._close(chunk.call)
            (files.folder / CALL_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            self.written += 1

    def _create(self, session_id: str) -> _Open:
        self._prune()
        name = (
            session_id
            if _SAFE_NAME.match(session_id)
            else "call-" + hashlib.sha256(session_id.encode()).hexdigest()[:16]
        )
        folder = self.root / name
        n = 1
        while folder.exists():
            n += 1
            folder = self.root / f"{name}-{n}"
        folder.mkdir(mode=0o700, parents=True)
        (folder / CALL_FILE).write_text(json.dumps({"format": FORMAT, "session": {"id": session_id}}) + "\n")
        return _Open(
            folder,
            _wav_writer(folder / "caller.wav"),
            _wav_writer(folder / "assistant.wav"),
            open(folder / "clock.txt", "w", encoding="ascii"),
            open(folder / "timeline.jsonl", "w", encoding="utf-8"),
            open(folder / "inputs.jsonl", "w", encoding="utf-8"),
        )

    def _close(self, call: int) -> None:
        files = self._open.pop(call, None)
        if files is None:
            return
        for closing in (files.caller, files.assistant, files.clock, files.timeline, files.inputs):
            closing.close()

    def _discard(self, call: int) -> None:
        try:
            self._close(call)
        except OSError:
            self._open.pop(call, None)

    def _prune(self) -> None:
        """Keep room for one more: the oldest finished recordings beyond `keep - 1` are deleted."""
        busy = {files.folder for files in self._open.values()}
        folders = [p for p in self.root.iterdir() if p.is_dir() and (p / CALL_FILE).is_file() and p not in busy]
        folders.sort(key=lambda p: (p / CALL_FILE).stat().st_mtime)
        for old in folders[: max(0, len(folders) - (self.keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)


def _wav_writer(path: Path) -> wave.Wave_write:
    writer = wave.open(str(path), "wb")  # noqa: SIM115 (closed with the call)
    writer.setnchannels(1)
    writer.setsampwidth(2)
    writer.setframerate(SAMPLE_RATE)
    return writer


_RECORDERS: dict[tuple[str, int], Recorder] = {}
_RECORDERS_LOCK = threading.Lock()


def recorders() -> list[Recorder]:
    with _RECORDERS_LOCK:
        return list(_RECORDERS.values())


def recorder_for(root: str, keep: int) -> Recorder:
    """One recorder (one writer thread) per folder in a process, however many servers use it."""
    key = (str(Path(root).expanduser().resolve()), keep)
    with _RECORDERS_LOCK:
        recorder = _RECORDERS.get(key)
        if recorder is None:
            recorder = _RECORDERS[key] = Recorder(key[0], keep)
        return recorder


def record_call(
    settings: ServerSettings, info: SessionInfo, config: EngineConfig, transport: str
) -> CallRecording | None:
    """The recording of one live call when the server records (`record_dir`); a folder that has become
    unusable is logged and the call goes on unrecorded."""
    if settings.record_dir is None:
        return None
    try:
        recorder = recorder_for(settings.record_dir, settings.record_keep)
    except RecordingError as exc:
        logger.error("%s; the call goes on unrecorded", exc)
        return None
    return recorder.start(info, config, transport=transport, recognizer_name=settings.recognizer)


@dataclass
class Recording:
    """A recording read back: what `flowapp replay` and `flowapp timeline` work on."""

    folder: Path
    meta: dict[str, Any]
    caller: npt.NDArray[np.int16]
    assistant: npt.NDArray[np.int16]
    clock: str
    inputs: list[Record]
    timeline: list[Record]


def load_recording(path: str | Path) -> Recording:
    """Read a call's folder (or its call.json); raises RecordingError naming what is missing or broken."""
    folder = Path(path)
    if folder.name == CALL_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise RecordingError(f"recording not found: {folder} (a call's folder, with {CALL_FILE} in it)")
    meta = _json_file(folder / CALL_FILE)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RecordingError(f"{folder / CALL_FILE}: not a flowapp recording of format {FORMAT}")
    if "frames" not in meta:
        raise RecordingError(f"{folder}: the recording is incomplete (its call never ended, or is still going on)")
    return Recording(
        folder,
        meta,
        _wav_file(folder / "caller.wav"),
        _wav_file(folder / "assistant.wav"),
        _text_file(folder / "clock.txt"),
        _json_lines(folder / "inputs.jsonl"),
        _json_lines(folder / "timeline.jsonl"),
    )


def _text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordingError(f"{path.parent}: {path.name} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordingError(f"{path}: cannot be read: {exc}") from None


def _json_file(path: Path) -> Any:
    try:
        return json.loads(_text_file(path))
    except json.JSONDecodeError as exc:
        raise RecordingError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


def _json_lines(path: Path) -> list[Record]:
    records = []
    for number, line in enumerate(_text_file(path).splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordingError(f"{path}: line {number}: invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise RecordingError(f"{path}: line {number}: not a JSON object")
        records.append(record)
    return records


def _wav_file(path: Path) -> npt.NDArray[np.int16]:
    try:
        with wave.open(str(path), "rb") as reader:
            if (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) != (1, 2, SAMPLE_RATE):
                raise RecordingError(f"{path}: not 8 kHz 16-bit mono")
            return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").astype(np.int16)
    except FileNotFoundError:
        raise RecordingError(f"{path.parent}: {path.name} is missing") from None
    except (OSError, EOFError, wave.Error) as exc:
        raise RecordingError(f"{path}: not a readable WAV: {exc}") from None
