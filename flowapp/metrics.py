"""Process-wide metrics in Prometheus text format, served at `GET /metrics` behind the control token.

Counters are moved by small hooks on the paths that already see the facts (the live driver's engine
records, the call registry, the ticker, the recorder); nothing here runs per audio frame except a
dictionary look-up on engine records, which come a few times per turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from flowapp.engine.call import Record
from flowapp.protocol.actions import Action
from flowapp.protocol.events import Event
from flowapp.responder import Responder
from flowapp.session import LiveCall

REGISTRY = CollectorRegistry(auto_describe=True)

LIVE_CALLS = Gauge("flowapp_live_calls", "Calls live right now.", ["transport"], registry=REGISTRY)
CALLS = Counter("flowapp_calls", "Calls that went live.", ["transport"], registry=REGISTRY)
BARGE_INS = Counter("flowapp_barge_ins", "Items the caller interrupted.", ["strategy", "trigger"], registry=REGISTRY)
PAUSES = Counter("flowapp_pauses", "Items held while an interruption was judged.", registry=REGISTRY)
RESUMES = Counter("flowapp_resumes", "Held items that played on.", registry=REGISTRY)
BACKCHANNELS = Counter("flowapp_backchannels", "Caller backchannels ('uh-huh') over the assistant.", registry=REGISTRY)
ANSWER_SECONDS = Histogram(
    "flowapp_app_answer_seconds",
    "Time the app took to answer one event of a live call (handler: in-process, remote: webhook or WebSocket).",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
AUDIO_CPU = Counter(
    "flowapp_input_cpu_seconds",
    "Time ended live calls' input stage computed on the event loop, by stage: vad, and recognizer (its "
    "per-frame work; decodes on the recognizer pool are not included).",
    ["stage"],
    registry=REGISTRY,
)
LOOP_LAG = Histogram(
    "flowapp_event_loop_lag_seconds",
    "How late the event loop woke a 100 ms timer: a stall delays every call's audio.",
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)

_COUNTED = {
    "assistant_speech_paused": PAUSES,
    "assistant_speech_resumed": RESUMES,
    "user_backchannel": BACKCHANNELS,
}


def engine_record(record: Record) -> None:
    """One record of a live call's engine (see `CallEngine.on_record`)."""
    kind = record.get("event")
    if kind == "barge_in":
        BARGE_INS.labels(str(record.get("strategy")), str(record.get("trigger"))).inc()
        return
    counter = _COUNTED.get(str(kind))
    if counter is not None:
        counter.inc()


def input_cpu(vad_seconds: float, recognizer_seconds: float) -> None:
    """A live call's input-stage CPU time, added when the call ends."""
    AUDIO_CPU.labels("vad").inc(vad_seconds)
    AUDIO_CPU.labels("recognizer").inc(recognizer_seconds)


class CallCounter:
    """Watches a server's call registry (see `SessionRegistry.watch`)."""

    def __init__(self) -> None:
        self._transports: dict[str, str] = {}

    def call_started(self, call: LiveCall) -> None:
        transport = call.transport
        self._transports[call.info.id] = transport
        CALLS.labels(transport).inc()
        LIVE_CALLS.labels(transport).inc()

    def call_ended(self, session_id: str) -> None:
        transport = self._transports.pop(session_id, None)
        if transport is not None:
            LIVE_CALLS.labels(transport).dec()


class TimedResponder:
    """The app of a live call, with the time of each answer observed."""

    def __init__(self, inner: Responder, kind: str) -> None:
        self._inner = inner
        self._histogram = ANSWER_SECONDS.labels(kind)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def respond(self, event: Event) -> list[Action]:
        started = time.perf_counter()
        try:
            return await self._inner.respond(event)
        finally:
            self._histogram.observe(time.perf_counter() - started)


def timed(responder: Responder) -> Responder:
    from flowapp.app import FlowApp

    return TimedResponder(responder, "handler" if isinstance(responder, FlowApp) else "remote")


async def watch_event_loop(period: float = 0.1) -> None:
    """Runs for the server's lifetime: each wake-up's delay past its timer is one observation."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period
        await asyncio.sleep(period)
        LOOP_LAG.observe(max(0.0, loop.time() - due))


class _Polled(Collector):
    """Figures other parts already count, read when scraped: the tickers' late and skipped ticks, what the
    recorders wrote and dropped, and the recognizer pool's decodes and their CPU time."""

    def collect(self) -> Iterable[Metric]:
        from flowapp.engine.live import Ticker
        from flowapp.recording.store import recorders
        from flowapp.stt.local import pool_stats

        late = CounterMetricFamily(
            "flowapp_ticks_late", "Playout ticks that ran more than 20 ms late (frames sent late)."
        )
        skipped = CounterMetricFamily(
            "flowapp_ticks_skipped", "Playout ticks skipped after an event-loop stall (the caller heard a gap)."
        )
        tickers = list(Ticker._by_loop.values())
        late.add_metric([], sum(t.late_ticks for t in tickers))
        skipped.add_metric([], sum(t.skipped_ticks for t in tickers))
        written = CounterMetricFamily("flowapp_recordings_written", "Call recordings completed on disk.")
        dropped = CounterMetricFamily(
            "flowapp_recording_chunks_dropped", "Recording chunks dropped because the disk fell behind."
        )
        all_recorders = recorders()
        written.add_metric([], sum(r.written for r in all_recorders))
        dropped.add_metric([], sum(r.dropped_chunks for r in all_recorders))
        decode_cpu = CounterMetricFamily(
            "flowapp_recognizer_decode_cpu_seconds", "CPU time the recognizer's decode pool spent on live calls."
        )
        decodes = CounterMetricFamily("flowapp_recognizer_decodes", "Decodes of live calls' speech.", labels=["result"])
        pools = pool_stats()
        decode_cpu.add_metric([], sum(p.cpu_s for p in pools))
        decodes.add_metric(["done"], sum(p.decodes for p in pools))
        decodes.add_metric(["refused"], sum(p.refused for p in pools))
        decodes.add_metric(["failed"], sum(p.failed for p in pools))
        yield from (late, skipped, written, dropped, decode_cpu, decodes)

    def describe(self) -> Iterator[Metric]:
        return iter(())


REGISTRY.register(_Polled())
