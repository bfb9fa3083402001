"""Fits the cascade's onset-evidence weights (flowapp.audio.vad.ONSET_WEIGHTS) on the barge-in tuning voices.

Positives: frames the cascade is awake for in the first 160 ms after a tuning clip's true onset (Asterisk
prompts, librivox, the pcap, in line noise at 15-25 dB SNR). Negatives: every awake frame of music-on-hold
from three of the five music files, steady noise, clicks, bursts, slams and DTMF. The held-out voices and the
other two music files are left for `benchmarks.bargein` to judge. Prints the constants to paste into vad.py.

    python -m benchmarks.onset_model [--seed N]
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import numpy.typing as npt

from benchmarks.bargein import event_cases, music_cases, speech_cases, speech_clips
from flowapp.audio import split_frames
from flowapp.audio.frames import FRAME_MS, Pcm
from flowapp.audio.vad import ONSET_FEATURES, CascadeDetector
from tests.media import moh_clips

POSITIVE_MS = 160
TRAINING_MUSIC_FILES = 3
L2 = 1e-3
STEPS = 3000


def awake_features(detector: CascadeDetector, pcm: Pcm) -> tuple[npt.NDArray[np.float64], list[int]]:
    """The evidence features of every frame the cascade judged while awake (never confirming on them), and
    those frames' indices."""
    assert detector.evidence is not None
    detector.reset()
    rows, at = [], []
    for i, frame in enumerate(split_frames(pcm)):
        detector.speech_probability(frame)
        if detector.logit > -math.inf:
            rows.append(detector.evidence.features.copy())
            at.append(i)
    return np.array(rows).reshape(-1, len(ONSET_FEATURES)), at


def fit(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], float]:
    """Class-balanced L2 logistic regression by gradient descent on standardized features; raw-scale weights."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mu) / sd
    weight = np.where(y == 1, (y == 0).sum() / max((y == 1).sum(), 1), 1.0)
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(STEPS):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        g = (p - y) * weight
        w -= 0.1 * (z.T @ g / y.size + L2 * w)
        b -= 0.1 * float(g.mean())
    return w / sd, b - float((w / sd) @ mu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onset_model", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    detector = CascadeDetector(onset_evidence=math.inf)
    xs, ys = [], []
    for case in speech_cases(speech_clips(False), rng):
        x, at = awake_features(detector, case.pcm)
        first = int(case.onset_ms // FRAME_MS)
        keep = [k for k, i in enumerate(at) if first <= i < first + POSITIVE_MS // FRAME_MS]
        xs.append(x[keep])
        ys.append(np.ones(len(keep)))
    training_music = {p.stem for p in moh_clips()[:TRAINING_MUSIC_FILES]}
    non_speech = [c for c in music_cases(16, rng) if c.name.split("@")[0] in training_music] + event_cases(6, rng)
    for nc in non_speech:
        x, _ = awake_features(detector, nc.pcm)
        xs.append(x)
        ys.append(np.zeros(len(x)))
    weights, bias = fit(np.concatenate(xs), np.concatenate(ys))
    print(f"# {sum(int(y.sum()) for y in ys)} speech frames, {sum(int((y == 0).sum()) for y in ys)} others")
    print(f"ONSET_WEIGHTS = ({', '.join(f'{w:.3f}' for w in weights)})")
    print(f"ONSET_BIAS = {bias:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
