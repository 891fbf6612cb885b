"""Prometheus metrics of a running engine, in a registry the engine owns.

Why this module exists: an operator needs rates, latencies and the account's state without
reading logs, and tests need to build several engines in one process without them sharing a
global registry. Every metric is named ``tradeengine_*`` with its unit in the name (seconds,
messages, ratio); money is in the account currency, named by a ``currency`` label because
Prometheus has no base unit for it.

Trade-offs made:
- Counters and gauges are *read at scrape time* from the counters components already keep
  (bus, supervisor, blender, pipeline, broker, journal, health): the hot path pays nothing for
  them, and a scrape costs O(topics + subscriptions + agents). The price is that a component
  must expose its counters; every one of them does already, for the run summary.
- Latency histograms must be observed where the work happens. prometheus-client's `Histogram`
  takes a lock and walks every bucket per observation (~2 us); `LatencyHistogram` below is a
  bisect into a list (~0.2 us) with no lock, which is enough because observations and scrapes
  run on the one event-loop thread. It is exported through prometheus-client's
  `HistogramMetricFamily`, so the text format stays the library's.
- Buckets run from 5 us to 5 s: agent handlers take tens of microseconds, a pipeline step a
  millisecond, a journal flush or a stalled loop up to seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from contracts.enums import DenialReason, PositionEffect
from engine.telemetry.health import ComponentState

if TYPE_CHECKING:
    from engine.bus import MessageBus, SubscriptionStats
    from engine.execution.journal import Journal
    from engine.execution.model import PortfolioSnapshot
    from engine.execution.paper import PaperBroker
    from engine.features.drift import DriftMonitor, DriftResult
    from engine.features.store import FeatureStore
    from engine.kafka.bridge import KafkaBridge
    from engine.pipeline import TradingPipeline
    from engine.stages.blender import BlenderStage
    from engine.supervisor import AgentRunner, AgentSupervisor
    from engine.telemetry.health import HealthRegistry
    from engine.telemetry.tracing import Tracing
    from engine.workers.pool import AgentWorkerPool, WorkerAgent

PREFIX = "tradeengine"

LATENCY_BUCKETS: tuple[float, ...] = (
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Upper bounds (seconds) of the latency histograms; +Inf is implied."""

STAGES = ("blender", "features", "select", "risk", "execution", "pipeline_step")
"""Values of the ``stage`` label of ``tradeengine_stage_duration_seconds``."""


class LatencyHistogram:
    """A lock-free, bisect-based histogram for one label set (see the module docstring)."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self._bounds = tuple(bounds)
        self.counts = [0] * (len(self._bounds) + 1)
        """Non-cumulative counts; the last slot is (bounds[-1], +Inf)."""
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left puts a value equal to a bound into that bound's bucket: Prometheus' `le`.
        self.counts[bisect_left(self._bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float:
        """The q-quantile estimated as Prometheus' ``histogram_quantile`` does: linear
        interpolation inside the bucket holding it (the lowest bucket starts at 0; a quantile
        in the +Inf bucket is the highest finite bound). NaN without observations."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        total = self.count
        if total == 0:
            return math.nan
        rank = q * total
        running = 0
        lower = 0.0
        for bound, n in zip(self._bounds, self.counts, strict=False):
            if n and running + n >= rank:
                return lower + (bound - lower) * (rank - running) / n
            running += n
            lower = bound
        return self._bounds[-1]

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self._bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


@dataclass(slots=True)
class HistogramFamily:
    """Histograms of one metric name, one per label values."""

    name: str
    documentation: str
    labelnames: tuple[str, ...]
    series: dict[tuple[str, ...], LatencyHistogram] = field(default_factory=dict)

    def labels(self, *values: str) -> LatencyHistogram:
        """The histogram for these label values; keep the reference on the hot path."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        hist = self.series.get(values)
        if hist is None:
            hist = self.series[values] = LatencyHistogram()
        return hist

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, hist in self.series.items():
            family.add_metric(list(values), hist.cumulative(), hist.total)
        return family


@dataclass(slots=True)
class MetricSources:
    """The components a scrape reads; any may be missing (e.g. no replay source)."""

    bus: MessageBus | None = None
    supervisor: AgentSupervisor | None = None
    workers: AgentWorkerPool | None = None
    """The local agent worker processes: their agents are reported like local ones."""
    blender: BlenderStage | None = None
    pipeline: TradingPipeline | None = None
    broker: PaperBroker | None = None
    journal: Journal | None = None
    health: HealthRegistry | None = None
    tracing: Tracing | None = None
    features: FeatureStore | None = None
    drift: DriftMonitor | None = None
    kafka: KafkaBridge | None = None
    account_currency: str = "EUR"
    replay_steps: Callable[[], int] | None = None


def _topic_kind(topic: str) -> str:
    return topic.split(".", 1)[0]


class EngineCollector(Collector):
    """Turns the components' own counters into Prometheus families at scrape time."""

    def __init__(
        self,
        sources: MetricSources,
        histograms: Iterable[HistogramFamily],
        *,
        version: str,
        config_hash: str,
        mode: str,
    ) -> None:
        self.sources = sources
        self._histograms = list(histograms)
        self._build = (version, config_hash, mode)
        self._subscriptions: dict[str, SubscriptionStats] = {}

    def describe(self) -> Iterable[Metric]:
        # Describing would run collect() at registration, before components exist.
        return []

    def collect(self) -> Iterator[Metric]:
        src = self.sources
        info = GaugeMetricFamily(
            f"{PREFIX}_build_info",
            "Version, config hash and mode of this engine; always 1.",
            labels=["version", "config_hash", "mode"],
        )
        info.add_metric(list(self._build), 1.0)
        yield info
        if src.bus is not None:
            yield from self._bus(src.bus)
        if src.supervisor is not None or src.workers is not None:
            yield from self._agents(src.supervisor, src.workers)
        if src.blender is not None:
            late = CounterMetricFamily(
                f"{PREFIX}_late_signals",
                "Signals that arrived after their step was closed (never blended).",
                labels=["agent"],
            )
            # Every known agent has a series from the start (Prometheus practice: a rate over
            # a series that appears late misses its first increase).
            late_by_agent = dict.fromkeys(src.blender.agents, 0)
            late_by_agent.update(src.blender.stats.late_by_agent)
            for agent, n in sorted(late_by_agent.items()):
                late.add_metric([agent], n)
            yield late
        if src.pipeline is not None:
            yield from self._pipeline(src.pipeline, src.account_currency)
        if src.broker is not None:
            yield from self._broker(src.broker, src.account_currency)
        if src.journal is not None:
            yield CounterMetricFamily(
                f"{PREFIX}_journal_rows",
                "Rows written to the run journal.",
                value=src.journal.rows_written,
            )
        if src.health is not None:
            yield from self._health(src.health)
        if src.tracing is not None:
            yield CounterMetricFamily(
                f"{PREFIX}_trace_spans_exported",
                "Spans handed to the OTLP exporter successfully.",
                value=src.tracing.spans_exported,
            )
            yield CounterMetricFamily(
                f"{PREFIX}_trace_export_failures",
                "Span export batches that failed (collector unreachable or rejecting).",
                value=src.tracing.export_failures,
            )
        if src.features is not None:
            yield from self._features(src.features)
        if src.drift is not None:
            results = src.drift.results()
            if src.workers is not None:  # the features of agents in worker processes
                results.update(src.workers.drift_results)
            yield from self._drift(results)
        if src.kafka is not None:
            yield from self._kafka(src.kafka)
        for family in self._histograms:
            yield family.collect()

    def _kafka(self, bridge: KafkaBridge) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            f"{PREFIX}_kafka_healthy",
            "1 while the Kafka bridge delivers directly and consumes, 0 while DEGRADED.",
            value=1.0 if bridge.healthy else 0.0,
        )
        egress = bridge.egress
        if egress is not None:
            e = egress.stats
            for name, doc, value in (
                ("delivered", "Egress records the broker acknowledged.", e.delivered),
                ("spooled", "Egress records that went to the outage spool.", e.spooled),
                (
                    "dropped",
                    "Egress records of drop routes dropped on a full spool.",
                    e.dropped_full,
                ),
                ("outages", "Times the egress turned DEGRADED.", e.outages),
                ("lost", "Egress records lost (stopped with no spool file).", e.lost_at_stop),
                (
                    "spool_file_errors",
                    "Spool file write failures (the spool went on in memory).",
                    e.spool_file_errors,
                ),
            ):
                yield CounterMetricFamily(f"{PREFIX}_kafka_egress_{name}", doc, value=value)
            yield GaugeMetricFamily(
                f"{PREFIX}_kafka_spool_depth",
                "Egress records waiting in the outage spool.",
                value=egress.spool_depth,
            )
        ingress = bridge.ingress
        if ingress is not None:
            i = ingress.stats
            yield CounterMetricFamily(
                f"{PREFIX}_kafka_ingress_accepted",
                "Ingress records published on the bus.",
                value=i.accepted,
            )
            yield CounterMetricFamily(
                f"{PREFIX}_kafka_ingress_duplicates",
                "Ingress records dropped as redeliveries (message id seen).",
                value=i.duplicates,
            )
            yield CounterMetricFamily(
                f"{PREFIX}_kafka_ingress_commit_failures",
                "Offset commits that failed (retried by the next commit).",
                value=i.commit_failures,
            )
            rejected = CounterMetricFamily(
                f"{PREFIX}_kafka_ingress_rejected",
                "Ingress records dead-lettered, by reason.",
                labels=["reason"],
            )
            for reason, n in sorted(i.rejected.items()):
                rejected.add_metric([reason], n)
            yield rejected

    def _features(self, store: FeatureStore) -> Iterator[Metric]:
        stats = store.stats
        backend = [store.backend]
        for name, doc, value in (
            ("reads", "get/get_many calls.", stats.reads),
            ("entities_read", "Entities requested by reads.", stats.entities_read),
            ("cache_hits", "Entities served from the near cache.", stats.hits),
            ("cache_misses", "Entities the near cache did not hold.", stats.misses),
            ("entities_written", "Entity rows written (queued).", stats.writes),
            ("entities_flushed", "Entity rows stored by the backend.", stats.flushed),
            ("invalidations", "Near-cache invalidations received.", stats.invalidations),
            (
                "corrupt_values",
                "Stored values that did not decode (treated as missing).",
                stats.corrupt,
            ),
            ("errors", "Backend errors (unreachable, timeouts).", stats.errors),
            (
                "dropped_writes",
                "Writes dropped because the write buffer overflowed.",
                stats.dropped_writes,
            ),
        ):
            fam = CounterMetricFamily(f"{PREFIX}_feature_store_{name}", doc, labels=["backend"])
            fam.add_metric(backend, value)
            yield fam
        degraded = GaugeMetricFamily(
            f"{PREFIX}_feature_store_degraded",
            "1 while the backend is unreachable (reads from the near cache, writes buffered).",
            labels=["backend"],
        )
        degraded.add_metric(backend, 1.0 if store.state == "DEGRADED" else 0.0)
        yield degraded
        pending = GaugeMetricFamily(
            f"{PREFIX}_feature_store_buffered_writes",
            "Writes queued for the backend.",
            labels=["backend"],
        )
        pending.add_metric(backend, float(store.buffered_writes))
        yield pending

    def _drift(self, results: dict[tuple[str, str], DriftResult]) -> Iterator[Metric]:
        labels = ["feature_set", "feature"]
        psi = GaugeMetricFamily(
            f"{PREFIX}_feature_drift_psi",
            "Population stability index of recent values against the reference.",
            labels=labels,
        )
        ks = GaugeMetricFamily(
            f"{PREFIX}_feature_drift_ks",
            "Two-sample Kolmogorov-Smirnov statistic, recent vs reference.",
            labels=labels,
        )
        drifted = GaugeMetricFamily(
            f"{PREFIX}_feature_drifted",
            "1 when PSI or KS is above its configured threshold.",
            labels=labels,
        )
        for (fs, feature), result in sorted(results.items()):
            psi.add_metric([fs, feature], result.psi)
            ks.add_metric([fs, feature], result.ks)
            drifted.add_metric([fs, feature], 1.0 if result.drifted else 0.0)
        yield psi
        yield ks
        yield drifted

    def _bus(self, bus: MessageBus) -> Iterator[Metric]:
        stats = bus.stats()
        published: dict[str, int] = {}
        unrouted: dict[str, int] = {}
        for topic, ts in stats.topics.items():
            kind = _topic_kind(topic)
            published[kind] = published.get(kind, 0) + ts.published
            unrouted[kind] = unrouted.get(kind, 0) + ts.unrouted
        if stats.untracked_published:
            published["untracked"] = stats.untracked_published
            unrouted["untracked"] = stats.untracked_unrouted
        for name, values, doc in (
            ("published", published, "Messages published on the bus, by topic kind."),
            ("unrouted", unrouted, "Published messages no subscription matched, by topic kind."),
        ):
            family = CounterMetricFamily(f"{PREFIX}_bus_{name}_messages", doc, labels=["kind"])
            for kind, n in sorted(values.items()):
                family.add_metric([kind], n)
            yield family
        # A closed subscription (a quarantined or stopped agent) keeps its last counters, so a
        # counter never vanishes or resets; its mailbox then counts as empty.
        for name, sub_stats in stats.subscriptions.items():
            self._subscriptions[name] = sub_stats
        subs = [
            s if s.name in stats.subscriptions else dataclasses.replace(s, depth=0)
            for s in sorted(self._subscriptions.values(), key=lambda s: s.name)
        ]
        for name, doc, getter, counter in (
            ("delivered_messages", "Messages handed to the subscriber.", "delivered", True),
            (
                "dropped_messages",
                "Accepted messages never delivered (evicted, conflated, discarded).",
                "dropped",
                True,
            ),
            (
                "conflated_messages",
                "Dropped messages replaced by a newer one with the same key.",
                "conflated",
                True,
            ),
            ("mailbox_depth_messages", "Messages waiting in the mailbox.", "depth", False),
            ("mailbox_capacity_messages", "Mailbox capacity.", "capacity", False),
        ):
            fam: CounterMetricFamily | GaugeMetricFamily
            if counter:
                fam = CounterMetricFamily(f"{PREFIX}_bus_{name}", doc, labels=["subscription"])
            else:
                fam = GaugeMetricFamily(f"{PREFIX}_bus_{name}", doc, labels=["subscription"])
            for sub in subs:
                fam.add_metric([sub.name], getattr(sub, getter))
            yield fam

    def _agents(
        self, supervisor: AgentSupervisor | None, workers: AgentWorkerPool | None
    ) -> Iterator[Metric]:
        views: dict[str, AgentRunner | WorkerAgent] = {}
        if supervisor is not None:
            views.update(supervisor.runners)
        if workers is not None:
            views.update(workers.agents)
        runners = sorted(views.items())
        for name, doc, getter in (
            ("signals", "Signals published, by agent.", "signals"),
            ("agent_events_handled", "Events handled by the agent's hooks.", "handled"),
            ("agent_failures", "Hook failures (exceptions and start failures).", "failed"),
            ("agent_restarts", "Restarts after a failure (after back-off).", "restarts"),
            ("agent_overruns", "Hook calls that overran their time budget.", "overruns"),
        ):
            fam = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["agent"])
            for agent, runner in runners:
                fam.add_metric([agent], getattr(runner.stats, getter))
            yield fam
        if workers is not None:
            yield CounterMetricFamily(
                f"{PREFIX}_agent_worker_rejected_messages",
                "Messages from agent worker processes refused (not their own agents' outputs).",
                value=workers.rejected,
            )
        quarantines = CounterMetricFamily(
            f"{PREFIX}_agent_quarantines",
            "Times the agent was quarantined (too many failures in the window).",
            labels=["agent"],
        )
        for agent, runner in runners:
            quarantines.add_metric([agent], runner.stats.quarantines)
        yield quarantines

    def _pipeline(self, pipeline: TradingPipeline, currency: str) -> Iterator[Metric]:
        stats = pipeline.stats
        yield CounterMetricFamily(
            f"{PREFIX}_opportunities", "Opportunities received.", value=stats.opportunities
        )
        yield CounterMetricFamily(
            f"{PREFIX}_replay_steps", "Steps completed by the trading pipeline.", value=stats.steps
        )
        intents = CounterMetricFamily(
            f"{PREFIX}_intents", "Intents sent to the venue, by effect.", labels=["effect"]
        )
        by_effect = dict.fromkeys((e.value for e in PositionEffect), 0)
        by_effect.update(stats.intents_by_effect)
        for effect, n in sorted(by_effect.items()):
            intents.add_metric([effect], n)
        yield intents
        denials = CounterMetricFamily(
            f"{PREFIX}_denials", "Risk denials, by reason.", labels=["reason"]
        )
        by_reason = dict.fromkeys((r.value for r in DenialReason), 0)
        by_reason.update(stats.denial_reasons)
        for reason, n in sorted(by_reason.items()):
            denials.add_metric([reason], n)
        yield denials
        last: PortfolioSnapshot | None = pipeline.snapshots[-1] if pipeline.snapshots else None
        if last is None:
            return
        for name, doc, value in (
            ("equity", "Account equity (cash + positions) at the last step.", last.equity),
            ("cash", "Cash at the last step.", last.cash),
            ("gross_exposure", "Sum of absolute position values.", last.gross_exposure),
        ):
            g = GaugeMetricFamily(f"{PREFIX}_portfolio_{name}", doc, labels=["currency"])
            g.add_metric([currency], value)
            yield g
        yield GaugeMetricFamily(
            f"{PREFIX}_portfolio_gross_exposure_ratio",
            "Gross exposure / equity.",
            value=last.gross_exposure / last.equity if last.equity > 0 else 0.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_portfolio_drawdown_ratio",
            "1 - equity / running peak equity.",
            value=last.drawdown,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_portfolio_open_positions", "Open positions.", value=last.n_positions
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_replay_event_time_seconds",
            "Event time of the last completed step (unix seconds).",
            value=last.ts.timestamp(),
        )

    def _broker(self, broker: PaperBroker, currency: str) -> Iterator[Metric]:
        stats = broker.stats
        yield CounterMetricFamily(f"{PREFIX}_orders", "Orders created.", value=stats.orders)
        yield CounterMetricFamily(
            f"{PREFIX}_orders_rejected", "Orders the venue rejected.", value=stats.rejected
        )
        yield CounterMetricFamily(f"{PREFIX}_fills", "Fills.", value=stats.fills)
        fees = CounterMetricFamily(f"{PREFIX}_fees_paid", "Fees paid.", labels=["currency"])
        fees.add_metric([currency], stats.fees_paid)
        yield fees

    def _health(self, health: HealthRegistry) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            f"{PREFIX}_component_state",
            "1 for the component's current state, 0 for the others.",
            labels=["component", "state"],
        )
        changes = CounterMetricFamily(
            f"{PREFIX}_component_state_changes",
            "State changes of the component.",
            labels=["component"],
        )
        for comp in health.components():
            for s in ComponentState:
                state.add_metric([comp.name, s.value], 1.0 if comp.state is s else 0.0)
            changes.add_metric([comp.name], comp.changes)
        yield state
        yield changes
        ready, _ = health.is_ready()
        yield GaugeMetricFamily(
            f"{PREFIX}_ready", "1 when /readyz answers 200.", value=1.0 if ready else 0.0
        )


class EngineMetrics:
    """The engine's registry and the histograms components observe into."""

    def __init__(self, *, version: str, config_hash: str, mode: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.agent_handler = HistogramFamily(
            f"{PREFIX}_agent_handler_duration_seconds",
            "Time an agent's hook took for one event.",
            ("agent",),
        )
        self.stage = HistogramFamily(
            f"{PREFIX}_stage_duration_seconds",
            "Time a stage took per step (pipeline_step = the whole step).",
            ("stage",),
        )
        self.journal_write = HistogramFamily(
            f"{PREFIX}_journal_write_duration_seconds",
            "Time one journal batch took to write and commit.",
            (),
        )
        self.loop_lag = HistogramFamily(
            f"{PREFIX}_event_loop_lag_seconds",
            "How late the event loop ran a timer: time it was blocked by other work.",
            (),
        )
        self.feature_read = HistogramFamily(
            f"{PREFIX}_feature_store_read_duration_seconds",
            "Time one get/get_many took (one round trip on Redis).",
            ("backend",),
        )
        self.feature_write = HistogramFamily(
            f"{PREFIX}_feature_store_write_duration_seconds",
            "Time one batch of writes took to reach the backend.",
            ("backend",),
        )
        for stage in STAGES:
            self.stage.labels(stage)
        self.sources = MetricSources()
        self.collector = EngineCollector(
            self.sources,
            (
                self.agent_handler,
                self.stage,
                self.journal_write,
                self.loop_lag,
                self.feature_read,
                self.feature_write,
            ),
            version=version,
            config_hash=config_hash,
            mode=mode,
        )
        self.registry.register(self.collector)


class LoopLagProbe:
    """Measures event-loop lag: a timer that should fire every `interval_s` and how late it is.

    Uses the monotonic clock directly: lag is telemetry about this process, never an input to
    a trading decision, and it must be real time even in a replay.
    """

    def __init__(self, histogram: LatencyHistogram, *, interval_s: float) -> None:
        self._histogram = histogram
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telemetry:loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        interval = self._interval
        observe = self._histogram.observe
        while True:
            due = time.monotonic() + interval
            await asyncio.sleep(interval)
            observe(max(0.0, time.monotonic() - due))


__all__ = [
    "LATENCY_BUCKETS",
    "STAGES",
    "EngineCollector",
    "EngineMetrics",
    "HistogramFamily",
    "LatencyHistogram",
    "LoopLagProbe",
    "MetricSources",
]
