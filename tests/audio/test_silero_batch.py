"""Silero windows of many streams scored in one inference: the same scores as each stream alone."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from flowapp.audio import split_frames
from flowapp.audio.vad import SILERO_BATCH, CascadeDetector, SileroBatch, SileroStream
from tests.media import SPEECH_PROMPTS, asterisk_prompt, moh_clip

WINDOW = 256


def windows(pcm: np.ndarray) -> list[np.ndarray]:
    x = pcm.astype(np.float32) / 32768.0
    return [x[k : k + WINDOW] for k in range(0, x.size - WINDOW + 1, WINDOW)]


def clips() -> list[np.ndarray]:
    return [asterisk_prompt(name)[:8000] for name in SPEECH_PROMPTS[:5]] + [moh_clip(ms=1000)]


def test_batched_scores_equal_each_stream_alone() -> None:
    audio = [windows(pcm) for pcm in clips()]
    alone = []
    for stream_windows in audio:
        stream = SileroStream()
        alone.append([stream.process(w) for w in stream_windows])
    streams = [SileroStream() for _ in audio]
    batched: list[list[float]] = [[] for _ in audio]
    batch = SileroBatch()
    for step in range(max(len(a) for a in audio)):
        jobs = [k for k, a in enumerate(audio) if step < len(a)]
        batch.run(jobs, lambda k, step=step: batched[k].append(streams[k].process(audio[k][step])), _raise)
    assert batch.inferences < sum(len(a) for a in audio), "windows were scored together"
    assert batch.windows == sum(len(a) for a in audio)
    for a, b in zip(alone, batched, strict=True):
        assert np.allclose(a, b, atol=1e-4), "each stream keeps its own state through the batch"
    assert max(max(a) for a in alone) > 0.8, "the clips hold speech: the scores are worth comparing"


def test_a_job_that_needs_windows_in_turn_gets_them_all_while_the_others_go_on() -> None:
    """A waking cascade scores its whole pre-roll window after window; one-window jobs batch with its first."""
    pcm = asterisk_prompt(SPEECH_PROMPTS[0])[:8000]
    wins = windows(pcm)
    alone = SileroStream()
    expected = [alone.process(w) for w in wins]
    long_stream, short_streams = SileroStream(), [SileroStream() for _ in range(3)]
    got: dict[str, list[float]] = {"long": [], "short": []}

    def work(job: str) -> None:
        if job == "long":
            got["long"] = [long_stream.process(w) for w in wins]
        else:
            got["short"].append(short_streams[int(job)].process(wins[0]))

    batch = SileroBatch()
    batch.run(["0", "long", "1", "2"], work, _raise)
    assert np.allclose(got["long"], expected, atol=1e-4)
    assert np.allclose(got["short"], [expected[0]] * 3, atol=1e-4)
    assert batch.inferences == len(wins), "the three one-window jobs rode along with the first window"


def test_a_failing_job_is_reported_and_the_rest_finish() -> None:
    streams = [SileroStream() for _ in range(3)]
    window = windows(asterisk_prompt(SPEECH_PROMPTS[0]))[10]
    done: list[int] = []
    failed: list[tuple[int, str]] = []

    def work(k: int) -> None:
        streams[k].process(window)
        if k == 1:
            raise ValueError("boom")
        done.append(k)

    SileroBatch().run([0, 1, 2], work, lambda k, exc: failed.append((k, str(exc))))
    assert done == [0, 2] and failed == [(1, "boom")]


def test_cascades_judge_the_same_in_a_batch_as_alone() -> None:
    """The live ticker's path: whole cascades, frame by frame, in one batch per frame."""
    audio = [split_frames(pcm) for pcm in clips()]
    alone_detectors = [CascadeDetector() for _ in audio]
    alone = [[d.speech_probability(f) for f in frames] for d, frames in zip(alone_detectors, audio, strict=True)]
    batched_detectors = [CascadeDetector() for _ in audio]
    batched: list[list[float]] = [[] for _ in audio]
    for step in range(max(len(a) for a in audio)):
        jobs = [k for k, a in enumerate(audio) if step < len(a)]
        SILERO_BATCH.run(
            jobs,
            lambda k, step=step: batched[k].append(batched_detectors[k].speech_probability(audio[k][step])),
            _raise,
        )
    assert batched == alone
    assert sum(d.windows_scored for d in batched_detectors) > 50, "Silero was awake for much of it"


def _raise(job: object, exc: Exception) -> None:
    pytest.fail(f"{job} raised {exc!r}")


def test_batches_on_two_threads_keep_their_jobs_apart() -> None:
    """Each server thread's event loop batches its own calls: no job may run on another thread's batch (the
    jobs sleep, so the other thread's batch runs while one is half done)."""
    window = windows(asterisk_prompt(SPEECH_PROMPTS[0]))[10]
    ran: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def serve() -> None:
        me = threading.get_ident()
        streams = [SileroStream() for _ in range(4)]
        try:
            for _ in range(30):
                SILERO_BATCH.run(
                    [(me, s) for s in streams],
                    lambda job: (
                        time.sleep(0.0005),
                        job[1].process(window),
                        ran.append((job[0], threading.get_ident())),
                    ),
                    _raise,
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=serve) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(ran) == 2 * 30 * 4
    assert all(owner == runner for owner, runner in ran)
