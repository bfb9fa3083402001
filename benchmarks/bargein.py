"""Barge-in benchmark (issue #3): `immediate` barge-in through the real CallEngine on real 8 kHz audio.

Speech: Debian's recordings (Asterisk prompts, librivox read speech, an A-law RTP capture) placed 1.0-2.5 s
into a call while the assistant speaks, in telephone line noise at 15, 20 and 25 dB SNR. Latency runs from
the clean clip's energy onset (to the sample) to the engine's `barge_in` record (the first assistant frame
not played). Non-speech: music-on-hold segments at telephone levels, steady line noise, clicks, short noise
bursts, door-slam-like transients and DTMF; a clip "triggers" if any barge-in fires. CPU is the process time
of the engine loop per simulated call-second, as a share of one core.

Voice sets: `tuning` (what the detectors were tuned on), `held-out` (other real speakers and prompts) and
`espeak` (synthetic voices and pitches), the last two through G.711 mu-law. Every detector runs on the same
cases in one run, so the default `cascade` is printed beside `cascade-v1`, the previous default.

    python -m benchmarks.bargein [--quick] [--seed N] [--detector cascade,cascade-v1,...] [--voices tuning,...]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from flowapp.audio import add_noise_at_snr, line_noise, split_frames
from flowapp.audio.frames import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, Pcm
from flowapp.audio.g711 import ulaw_decode, ulaw_encode
from flowapp.audio.vad import CascadeDetector, SpeechDetector, VadConfig, make_detector
from flowapp.engine.call import CallEngine, EngineConfig, Record, vad_timing
from flowapp.engine.render import Rendered
from flowapp.protocol.actions import BargeIn, Speak
from flowapp.simulation.run import SIMULATED_EPOCH_MS, SIMULATED_SESSION
from tests.media import (
    ASTERISK_SOUNDS,
    SPEECH_PROMPTS,
    asterisk_prompt,
    cmu_readers,
    espeak,
    librivox_audio,
    librivox_clips,
    moh_clip,
    moh_clips,
    pcap_speech_alaw,
)

TARGET_P50_MS = 40.0
TARGET_P95_MS = 100.0
TARGET_FALSE_TRIGGERS = 0.10
TARGET_CPU_PERCENT = 0.5
TARGET_MISSED = 0.05
"""Not in the issue: a detector that never fires would meet the false-trigger target, so recall is checked too."""

SNRS_DB = (15.0, 20.0, 25.0)
ONSET_DB_BELOW_PEAK = 25.0
ONSET_DB_ABOVE_FLOOR = 12.0
TAIL_MS = 600
NON_SPEECH_KINDS = ("music", "steady", "clicks", "bursts", "slam", "dtmf")
TARGETED_KINDS = ("music", "steady")
NEVER_KINDS = ("clicks", "bursts")
"""The issue's target for these is no trigger at all."""
VOICE_SETS = ("tuning", "held-out", "espeak")


@dataclass(frozen=True)
class DetectorSpec:
    label: str
    build: Callable[[], SpeechDetector]
    vad: VadConfig
    note: str


def detector_specs() -> dict[str, DetectorSpec]:
    """The engine's default first, then the baselines it is measured against, each at the engine's timing."""
    return {
        "cascade": DetectorSpec(
            "cascade",
            lambda: make_detector("cascade"),
            vad_timing("cascade"),
            "engine default: screen, then onset evidence or Silero on candidates",
        ),
        "cascade-v1": DetectorSpec(
            "cascade-v1",
            lambda: CascadeDetector(onset_evidence=None),
            vad_timing("cascade"),
            "the previous default: screen, then Silero alone confirms",
        ),
        "cascade-40": DetectorSpec(
            "cascade-40",
            lambda: make_detector("cascade"),
            VadConfig(onset_ms=40, hangover_ms=120),
            "the same with a 40 ms onset",
        ),
        "webrtc": DetectorSpec(
            "webrtc", lambda: make_detector("webrtc"), vad_timing("webrtc"), "webrtcvad + noise-floor gate"
        ),
        "webrtc-raw": DetectorSpec(
            "webrtc-raw", lambda: make_detector("webrtc", gate_db=None), vad_timing("webrtc"), "webrtcvad alone"
        ),
        "silero": DetectorSpec(
            "silero", lambda: make_detector("silero"), vad_timing("silero"), "Silero on every window"
        ),
    }


@dataclass(frozen=True)
class SpeechCase:
    name: str
    pcm: Pcm
    onset_ms: float
    snr_db: float


@dataclass(frozen=True)
class NonSpeechCase:
    kind: str
    name: str
    pcm: Pcm


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    by_snr: dict[float, list[float]] = field(default_factory=dict)
    slowest: list[tuple[float, str]] = field(default_factory=list)
    """(latency, case) of every caught clip, and (inf, case) of every missed one."""
    early: int = 0
    missed: int = 0
    speech_cases: int = 0
    triggers: dict[str, list[bool]] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    call_s: dict[str, float] = field(default_factory=dict)

    def add_cpu(self, kind: str, cpu_s: float, call_s: float) -> None:
        self.cpu_s[kind] = self.cpu_s.get(kind, 0.0) + cpu_s
        self.call_s[kind] = self.call_s.get(kind, 0.0) + call_s

    def cpu_percent(self, kind: str | None = None) -> float:
        kinds = list(self.cpu_s) if kind is None else [kind]
        call_s = sum(self.call_s.get(k, 0.0) for k in kinds)
        return 100.0 * sum(self.cpu_s.get(k, 0.0) for k in kinds) / call_s if call_s else math.nan

    def false_trigger_rate(self, kind: str) -> float:
        hits = self.triggers.get(kind, [])
        return sum(hits) / len(hits) if hits else math.nan

    def percentile(self, q: float, snr_db: float | None = None) -> float:
        latencies = self.latencies_ms if snr_db is None else self.by_snr.get(snr_db, [])
        return float(np.percentile(latencies, q)) if latencies else math.nan

    @property
    def missed_share(self) -> float:
        return self.missed / self.speech_cases if self.speech_cases else math.nan

    def failures(self) -> list[str]:
        checks = [
            ("p50", self.percentile(50) <= TARGET_P50_MS),
            ("p95", self.percentile(95) <= TARGET_P95_MS),
            ("missed", self.missed_share <= TARGET_MISSED),
            *((kind, self.false_trigger_rate(kind) <= TARGET_FALSE_TRIGGERS) for kind in TARGETED_KINDS),
            *((kind, self.false_trigger_rate(kind) == 0) for kind in NEVER_KINDS),
            ("cpu", self.cpu_percent() <= TARGET_CPU_PERCENT),
        ]
        return [name for name, ok in checks if not ok]


def speech_onset_sample(clean: npt.NDArray[np.int16]) -> int:
    """First sample where the clip's voice-band (100-3400 Hz) power, over 10 ms centred on it, is active.

    Active: within 25 dB of the loudest 20 ms frame, but at least 12 dB over the clip's own floor (its
    10th-percentile frame), so room noise is not mistaken for the onset, and held on average over the
    next 50 ms, so a click is not either; the band limit keeps out handling rumble (the pcap opens with
    a second of it).
    """
    spectrum = np.fft.rfft(clean.astype(np.float64))
    freqs = np.fft.rfftfreq(clean.size, 1.0 / SAMPLE_RATE)
    spectrum[(freqs < 100.0) | (freqs > 3400.0)] = 0.0
    x = np.fft.irfft(spectrum, clean.size)
    n = x.size // FRAME_SAMPLES
    power = np.mean(x[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES) ** 2, axis=1)
    threshold = max(
        float(power.max()) * 10 ** (-ONSET_DB_BELOW_PEAK / 10),
        float(np.percentile(power, 10)) * 10 ** (ONSET_DB_ABOVE_FLOOR / 10),
    )
    half, sustain = SAMPLE_RATE // 200, SAMPLE_RATE // 20
    cum = np.concatenate([[0.0], np.cumsum(x * x)])
    at = np.arange(half, x.size - sustain)
    centred = (cum[at + half] - cum[at - half]) / (2 * half)
    ahead = (cum[at + sustain] - cum[at]) / sustain
    return int(at[int(np.argmax((centred >= threshold) & (ahead >= threshold)))])


def speech_clips(quick: bool) -> list[tuple[str, Pcm]]:
    """The issue's 12 prompts and the pcap, plus in a full run 36 more prompts of 1 s or longer and librivox.

    The extra prompts are a fixed draw, not the run's seed, so seeds vary noise and timing, not the clips.
    """
    names = list(SPEECH_PROMPTS) if quick else tuning_prompt_names()
    clips = [(name, asterisk_prompt(name)) for name in names]
    if quick:
        return [*clips, ("pcap-alaw", pcap_speech_alaw())]
    clips += [(f"librivox-{path.stem[-4:]}", librivox_audio(path)) for path, _ in librivox_clips()]
    clips.append(("pcap-alaw", pcap_speech_alaw()))
    return clips


HELD_OUT_PROMPTS = ("vm-password", "vm-rec-name", "vm-incorrect", "auth-incorrect", "vm-reenterpassword")
"""Asterisk prompts the issue found slow (soft onsets in the same female voice), outside the tuning draw."""
HELD_OUT_EXTRA_PROMPTS = 19
ESPEAK_VOICES = (
    ("en+f3", 70),
    ("en+f4", 60),
    ("en-us+f2", 85),
    ("en+m3", 30),
    ("de+f3", 60),
    ("fr+m1", 40),
    ("es+f5", 65),
    ("en-gb-x-rp+m7", 45),
)
ESPEAK_TEXTS = (
    "password",
    "please record your name",
    "incorrect",
    "hello, is anyone there",
    "thank you, that is all",
    "forget it",
    "so what now",
    "can you repeat that",
)
"""Soft onsets, plosives and fricatives first."""


def tuning_prompt_names() -> list[str]:
    """The prompts a full tuning run uses: the issue's 12, then a fixed draw of others of 1 s or longer."""
    names = list(SPEECH_PROMPTS)
    others = sorted(p.stem for p in ASTERISK_SOUNDS.glob("*.wav") if p.stem not in names)
    for name in np.random.default_rng(0).permutation(others):
        if len(names) >= 48:
            break
        if asterisk_prompt(str(name)).size >= SAMPLE_RATE and str(name) not in HELD_OUT_PROMPTS:
            names.append(str(name))
    return names


def held_out_clips(quick: bool) -> list[tuple[str, Pcm]]:
    """Real speech the detectors were not tuned on: CMU readers, and Asterisk prompts outside the tuning draw
    (the same speaker as the tuning prompts, but the issue's slow soft onsets)."""
    tuned = set(tuning_prompt_names())
    rest = sorted(
        p.stem for p in ASTERISK_SOUNDS.glob("*.wav") if p.stem not in tuned and p.stem not in HELD_OUT_PROMPTS
    )
    extra = [str(n) for n in np.random.default_rng(1).permutation(rest) if asterisk_prompt(str(n)).size >= SAMPLE_RATE]
    prompts = [*HELD_OUT_PROMPTS, *extra[: 0 if quick else HELD_OUT_EXTRA_PROMPTS]]
    clips = [(name, asterisk_prompt(name)) for name in prompts]
    return clips + cmu_readers()


def espeak_clips(quick: bool) -> list[tuple[str, Pcm]]:
    """Synthetic voices the detectors were not tuned on: espeak-ng female and male voices at several pitches,
    in English, German, French and Spanish."""
    voices = ESPEAK_VOICES[::2] if quick else ESPEAK_VOICES
    texts = ESPEAK_TEXTS[:4] if quick else ESPEAK_TEXTS
    return [
        (f"espeak-{voice}-p{pitch}:{text.split()[0].strip(',')}", espeak(text, voice, pitch))
        for voice, pitch in voices
        for text in texts
    ]


def with_lead(pcm: npt.NDArray[np.float64], rng: np.random.Generator) -> tuple[npt.NDArray[np.float64], int]:
    """``pcm`` placed 1.0-2.5 s into the call (to the sample), with a short tail."""
    lead = int(rng.integers(SAMPLE_RATE, SAMPLE_RATE * 5 // 2))
    out = np.zeros(lead + pcm.size + SAMPLE_RATE * TAIL_MS // 1000)
    out[lead : lead + pcm.size] = pcm
    return out, lead


def to_pcm(x: npt.NDArray[np.float64]) -> Pcm:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def speech_cases(clips: list[tuple[str, Pcm]], rng: np.random.Generator, *, ulaw: bool = False) -> list[SpeechCase]:
    """Each clip in line noise at each SNR; ``ulaw``: then through a G.711 mu-law round trip, as a carrier sends it."""
    cases = []
    for name, clean in clips:
        onset = speech_onset_sample(clean)
        for snr in SNRS_DB:
            placed, lead = with_lead(clean.astype(np.float64), rng)
            noise = line_noise(placed.size * 1000 // SAMPLE_RATE + FRAME_MS, -40.0, rng)
            noisy = add_noise_at_snr(to_pcm(placed), noise, snr, rng)
            if ulaw:
                noisy = ulaw_decode(ulaw_encode(noisy))
            cases.append(SpeechCase(f"{name}@{snr:.0f}dB", noisy, (lead + onset) * 1000 / SAMPLE_RATE, snr))
    return cases


def floor_noise(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    level = rng.uniform(-65.0, -50.0)
    return line_noise(n * 1000 // SAMPLE_RATE + FRAME_MS, level, rng)[:n].astype(np.float64)


def at_level(x: npt.NDArray[np.float64], dbfs: float) -> npt.NDArray[np.float64]:
    rms = math.sqrt(float(np.mean(x * x))) or 1.0
    return x * (32768.0 * 10 ** (dbfs / 20) / rms)


def music_cases(per_clip: int, rng: np.random.Generator) -> list[NonSpeechCase]:
    """Segments of 4-8 s of each music-on-hold file at -35..-20 dBFS, after a line-noise lead."""
    cases = []
    for path in moh_clips():
        music = moh_clip(path.stem).astype(np.float64)
        for _ in range(per_clip):
            n = int(rng.integers(4 * SAMPLE_RATE, 8 * SAMPLE_RATE))
            start = int(rng.integers(0, music.size - n))
            placed, _ = with_lead(at_level(music[start : start + n], rng.uniform(-35.0, -20.0)), rng)
            cases.append(
                NonSpeechCase(
                    "music", f"{path.stem}@{start // SAMPLE_RATE}s", to_pcm(placed + floor_noise(placed.size, rng))
                )
            )
    return cases


def event_cases(count: int, rng: np.random.Generator) -> list[NonSpeechCase]:
    """Steady line noise at several levels, and short non-speech events on a quiet line."""
    cases = []
    n = 6 * SAMPLE_RATE
    for level in (-60.0, -50.0, -40.0, -30.0, -20.0)[: max(2, count)]:
        for _ in range(max(1, count // 3)):
            steady = line_noise(6000, level, rng)
            cases.append(NonSpeechCase("steady", f"line-noise@{level:.0f}dBFS", steady))
    for i in range(count):
        x = floor_noise(n, rng)
        for at in np.sort(rng.integers(SAMPLE_RATE, n - SAMPLE_RATE // 2, size=6)):
            width = int(rng.integers(2, 24))
            x[at : at + width] += rng.choice([-1.0, 1.0]) * 32768 * 10 ** (rng.uniform(-12.0, -1.0) / 20)
        cases.append(NonSpeechCase("clicks", f"clicks-{i}", to_pcm(x)))
    for i in range(count):
        x = floor_noise(n, rng)
        for at in (SAMPLE_RATE * 3 // 2, SAMPLE_RATE * 3, SAMPLE_RATE * 9 // 2):
            width = int(rng.integers(50, 151)) * SAMPLE_RATE // 1000
            x[at : at + width] += at_level(rng.standard_normal(width), rng.uniform(-30.0, -10.0))
        cases.append(NonSpeechCase("bursts", f"bursts-{i}", to_pcm(x)))
    for i in range(count):
        x = floor_noise(n, rng)
        width = SAMPLE_RATE * 2 // 5
        t = np.arange(width) / SAMPLE_RATE
        thud = np.cumsum(rng.standard_normal(width)) * 0.2 + rng.standard_normal(width)
        slam = at_level(thud * np.exp(-t / rng.uniform(0.03, 0.08)), rng.uniform(-12.0, -3.0))
        at = int(rng.integers(SAMPLE_RATE, n - width))
        x[at : at + width] += slam
        cases.append(NonSpeechCase("slam", f"slam-{i}", to_pcm(x)))
    digits = [(697, 1209), (770, 1336), (852, 1477), (941, 1336)]
    for i in range(max(1, count // 2)):
        x = floor_noise(n, rng)
        t = np.arange(SAMPLE_RATE // 10) / SAMPLE_RATE
        for k, at in enumerate(range(SAMPLE_RATE * 3 // 2, n - SAMPLE_RATE // 2, SAMPLE_RATE // 5)):
            low, high = digits[(i + k) % len(digits)]
            tone = np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)
            x[at : at + t.size] += at_level(tone, -18.0)
        cases.append(NonSpeechCase("dtmf", f"dtmf-{i}", to_pcm(x)))
    return cases


def run_call(detector: SpeechDetector, vad: VadConfig, caller: Pcm) -> tuple[int | None, float, float]:
    """One call through the real engine: (first barge-in t_ms or None, engine CPU seconds, call seconds).

    The assistant plays one `immediate` item longer than the call; the caller channel carries only ``caller``.
    The call runs to the end of the clip after a barge-in too, so CPU covers whole caller utterances.
    """
    detector.reset()
    records: list[Record] = []
    config = EngineConfig(vad=vad, start_unix_ms=SIMULATED_EPOCH_MS)
    engine = CallEngine(SIMULATED_SESSION, config, detector=detector, on_record=records.append)
    engine.start()
    speak = Speak(
        session_id=SIMULATED_SESSION.id, text="Please hold while I look that up.", barge_in=BargeIn.immediate()
    )
    engine.apply([Rendered(speak, np.zeros(caller.size + SAMPLE_RATE, dtype=np.int16))])
    engine.take_events()
    frames = split_frames(caller)
    t0 = time.process_time()
    for frame in frames:
        engine.step(frame)
        engine.take_events()
    cpu = time.process_time() - t0
    barge_in = next((int(r["t_ms"]) for r in records if r["event"] == "barge_in"), None)
    return barge_in, cpu, len(frames) * FRAME_MS / 1000


def evaluate(spec: DetectorSpec, speech: list[SpeechCase], non_speech: list[NonSpeechCase]) -> Result:
    """Latency on ``speech`` and false triggers on ``non_speech`` for one detector."""
    detector = spec.build()
    result = Result()
    for case in speech:
        barge_in, cpu, call_s = run_call(detector, spec.vad, case.pcm)
        result.add_cpu("speech", cpu, call_s)
        result.speech_cases += 1
        if barge_in is None:
            result.missed += 1
            result.slowest.append((math.inf, case.name))
        elif barge_in < case.onset_ms:
            result.early += 1
        else:
            latency = barge_in - case.onset_ms
            result.latencies_ms.append(latency)
            result.by_snr.setdefault(case.snr_db, []).append(latency)
            result.slowest.append((latency, case.name))
    for nc in non_speech:
        barge_in, cpu, call_s = run_call(detector, spec.vad, nc.pcm)
        result.add_cpu(nc.kind, cpu, call_s)
        result.triggers.setdefault(nc.kind, []).append(barge_in is not None)
    return result


def pct(x: float) -> str:
    return "  n/a" if math.isnan(x) else f"{100 * x:4.0f}%"


def speech_table(results: dict[str, dict[str, Result]], specs: dict[str, DetectorSpec]) -> list[str]:
    """Latency per detector and voice set, overall and at each SNR."""
    head = f"{'detector':<11} {'voices':<9} {'onset':>5} {'p50':>5} {'p95':>5} {'miss':>5} {'early':>5}  " + "  ".join(
        f"{f'{snr:.0f} dB p50/p95':>16}" for snr in SNRS_DB
    )
    lines = [head, "-" * len(head)]
    for name, by_set in results.items():
        for voices, r in by_set.items():
            lines.append(
                f"{name:<11} {voices:<9} {specs[name].vad.onset_ms:>5} {r.percentile(50):>5.0f} "
                f"{r.percentile(95):>5.0f} {pct(r.missed_share):>5} {pct(r.early / max(r.speech_cases, 1)):>5}  "
                + "  ".join(f"{f'{r.percentile(50, snr):.0f} / {r.percentile(95, snr):.0f}':>16}" for snr in SNRS_DB)
            )
    return lines


def non_speech_table(results: dict[str, dict[str, Result]], non_speech: dict[str, Result]) -> list[str]:
    """False triggers and CPU per detector, and the verdict on every target over all voice sets."""
    head = (
        f"{'detector':<11} "
        + " ".join(f"{k:>6}" for k in NON_SPEECH_KINDS)
        + f" {'cpu%':>6} {'cpu% music':>10}  verdict"
    )
    lines = [head, "-" * len(head)]
    for name, r in non_speech.items():
        failures = [
            f"{check} ({voices})" if check in ("p50", "p95", "missed") else check
            for voices, sr in results[name].items()
            for check in speech_failures(sr)
        ] + [check for check in r.failures() if check not in ("p50", "p95", "missed")]
        verdict = "MEETS all" if not failures else "fails: " + ", ".join(dict.fromkeys(failures))
        lines.append(
            f"{name:<11} "
            + " ".join(f"{pct(r.false_trigger_rate(k)):>6}" for k in NON_SPEECH_KINDS)
            + f" {r.cpu_percent():>6.3f} {r.cpu_percent('music'):>10.3f}  {verdict}"
        )
    return lines


def speech_failures(r: Result) -> list[str]:
    return [check for check in r.failures() if check in ("p50", "p95", "missed")]


def main(argv: list[str] | None = None) -> int:
    specs = detector_specs()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bargein", description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default=",".join(specs), help=f"comma-separated, from: {', '.join(specs)}")
    parser.add_argument(
        "--voices",
        default=",".join(VOICE_SETS),
        help="comma-separated voice sets: 'tuning' (Asterisk prompts, librivox, the pcap: what the detectors "
        "were tuned on), 'held-out' (real speech: CMU readers, other Asterisk prompts) and 'espeak' (espeak-ng "
        "voices and pitches); the last two through mu-law",
    )
    parser.add_argument("--quick", action="store_true", help="fewer clips of each kind (< 1 min)")
    parser.add_argument("--seed", type=int, default=3, help="noise, offsets and segment choice")
    parser.add_argument("--details", type=int, default=0, metavar="N", help="list each detector's N slowest clips")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.detector.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in specs]
    if unknown:
        parser.error(f"unknown detector(s) {unknown}; choose from {list(specs)}")
    voice_sets = [name.strip() for name in args.voices.split(",") if name.strip()]
    if not voice_sets or any(v not in VOICE_SETS for v in voice_sets):
        parser.error(f"--voices: expected a comma-separated choice from {list(VOICE_SETS)}, got {args.voices!r}")

    rng = np.random.default_rng(args.seed)
    builders = {
        "tuning": lambda: speech_cases(speech_clips(args.quick), rng),
        "held-out": lambda: speech_cases(held_out_clips(args.quick), np.random.default_rng(args.seed + 1), ulaw=True),
        "espeak": lambda: speech_cases(espeak_clips(args.quick), np.random.default_rng(args.seed + 2), ulaw=True),
    }
    speech = {voices: builders[voices]() for voices in voice_sets}
    non_speech = music_cases(2 if args.quick else 16, rng) + event_cases(2 if args.quick else 6, rng)
    counts = {k: sum(c.kind == k for c in non_speech) for k in NON_SPEECH_KINDS}
    snrs = ", ".join(f"{s:.0f}" for s in SNRS_DB)
    for voices in voice_sets:
        print(f"{voices}: {len(speech[voices]) // len(SNRS_DB)} speech clips x SNR {snrs} dB")
    print(f"non-speech: {', '.join(f'{k} {n}' for k, n in counts.items())}; seed {args.seed}", flush=True)
    results: dict[str, dict[str, Result]] = {}
    others: dict[str, Result] = {}
    for name in chosen:
        t0 = time.perf_counter()
        results[name] = {voices: evaluate(specs[name], speech[voices], []) for voices in voice_sets}
        others[name] = evaluate(specs[name], [], non_speech)
        print(f"  {name}: {time.perf_counter() - t0:.1f} s ({specs[name].note})", flush=True)
    print()
    print("\n".join(speech_table(results, specs)))
    print()
    print("\n".join(non_speech_table(results, others)))
    for name in chosen if args.details else []:
        slowest = sorted((c for r in results[name].values() for c in r.slowest), reverse=True)[: args.details]
        print(f"\n{name} slowest: " + ", ".join(f"{case} {latency:.0f}" for latency, case in slowest))
    print(
        f"\nlatency: true onset -> barge_in t_ms, ms, over caught clips; miss: no barge-in at all; early: barge-in "
        f"before the onset (a false trigger in the lead-in).\nfalse triggers: share of clips with any barge-in. "
        f"cpu%: engine loop per call-second, % of one core (non-speech clips; 'cpu% music' alone).\n"
        f"targets: p50 <= {TARGET_P50_MS:.0f}, p95 <= {TARGET_P95_MS:.0f} on every voice set, music and steady <= "
        f"{100 * TARGET_FALSE_TRIGGERS:.0f}%, clicks and bursts 0, cpu <= {TARGET_CPU_PERCENT}%, "
        f"and (ours) miss <= {100 * TARGET_MISSED:.0f}%."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
