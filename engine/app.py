"""The composition root: builds every component of a run from an `EngineConfig`.

Nothing else in the engine constructs components or reads configuration; components receive
what they need (clock, bus, loggers, ids) as arguments. The life of a run has three phases:

- `prepare()` checks everything that bad input can break — data files, agent plugins, policy
  names — and writes nothing, so a bad file or a typo fails before a run directory exists;
- `start()` creates the run directory and journal and starts components consumers-first
  (journal, pipeline, blender, agents), so nothing published is missed;
- `run()` replays the configured sources in lock-step with the pipeline (or, with no replay
  source, waits for a stop request), and `stop()` stops components producers-first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config import EngineConfig
from config.enums import ClockKind, OverflowPolicy, TradingMode
from config.models import ReplaySourceConfig, secret_values
from contracts import AgentState, AgentStatus, IdGenerator, RunControl, topics
from engine.agent import Agent, AgentContext
from engine.bus import MessageBus
from engine.clock import Clock, LiveClock, ReplayClock
from engine.execution.costs import costs_from_config
from engine.execution.journal import Journal
from engine.execution.paper import PaperBroker
from engine.execution.portfolio import Portfolio
from engine.features.admin import build_store
from engine.features.drift import DriftMonitor, sampled_observer
from engine.features.market import MARKET
from engine.features.store import FeatureStore
from engine.lifecycle import AsyncService
from engine.loader import AgentLoadError, LoadedAgent, instantiate, load_agents
from engine.pipeline import TradingPipeline
from engine.regime import RegimeReader, RegimeService
from engine.rundir import RunDirError, create_run_dir
from engine.sources.replay import LoadedSource, ReplayDataError, ReplayFeed, load_source
from engine.stages.blender import BlenderStage, blend_policy_from_config
from engine.stages.risk import RiskStage
from engine.stages.selector import ReturnHistory, selection_policy_from_config
from engine.summary import RunSummary, baseline_from_prices, performance
from engine.supervisor import AgentRunner, AgentSupervisor
from engine.telemetry.health import ComponentState
from engine.telemetry.logging import Logger, get_logger
from engine.telemetry.metrics import LatencyHistogram
from engine.telemetry.runtime import Telemetry, TelemetrySetupError

if TYPE_CHECKING:
    from engine.kafka.bridge import KafkaBridge
    from engine.kafka.remote import RemoteAgentWatchdog
    from engine.workers.pool import AgentWorkerPool, WorkerAgent

# A replay clock starts here and is moved to the first event's time by the replay source.
REPLAY_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MODEL_VERSION_PREFIX = "tradeengine-v0"
FEATURE_STORE_COMPONENT = "feature_store"
KAFKA_COMPONENT = "kafka"

_AGENT_HEALTH = {
    AgentState.STARTING: ComponentState.STARTING,
    AgentState.RUNNING: ComponentState.RUNNING,
    AgentState.BACKING_OFF: ComponentState.DEGRADED,
    AgentState.QUARANTINED: ComponentState.FAULTED,
    AgentState.STOPPED: ComponentState.STOPPED,
}
"""Agents are non-critical components: a quarantined one (FAULTED) makes the engine DEGRADED."""

_STOPPED_WITH = {
    "blender": ("blender",),
    "pipeline": ("pipeline", "risk", "venue"),
    "journal": ("journal",),
    "feature_store": (FEATURE_STORE_COMPONENT,),
    "kafka": ("kafka",),
}
"""Health components that stop with each engine component (agents report their own)."""

_FAULT_COMPONENT = {"risk": "risk", "execution": "venue", "journal": "journal"}
"""Which health component a pipeline fault in each phase belongs to (else the pipeline)."""


def derive_ids(seed: int, component: str) -> IdGenerator:
    """A component's own id stream, derived from the run seed and its name, so adding a
    component does not change the ids (and so the journal bytes) of the others. A remote agent
    host derives the same streams, so its agent emits exactly what it would in process."""
    derived = int.from_bytes(hashlib.sha256(f"{seed}:{component}".encode()).digest()[:8])
    return IdGenerator(derived)


def _package_version() -> str:
    try:
        return version("tradeengine")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0+unknown"


class LiveTradingUnavailableError(RuntimeError):
    """`--live` was asked for but no live broker exists yet."""


class StartupError(Exception):
    """Bad input found before the run started; one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Per-run choices from the command line (not part of the config hash)."""

    start: date | None = None
    end: date | None = None
    run_dir: Path | None = None
    """Explicit run directory (must not exist or be empty); default: a new one under run_dir."""
    base_dir: Path = Path(".")
    """Directory relative data paths are resolved against (the config file's folder)."""


class Engine(AsyncService):
    """One engine run; see the module docstring for its phases."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        options: RunOptions | None = None,
        clock: Clock | None = None,
        log: Logger | None = None,
        span_exporter: Any = None,
    ) -> None:
        """`span_exporter`: an OpenTelemetry SDK SpanExporter to record spans into (tests);
        normally spans go to ``telemetry.tracing.otlp_endpoint``."""
        if config.engine.mode is TradingMode.LIVE:
            raise LiveTradingUnavailableError(
                "live trading is not available: no live broker is implemented yet; run with --paper"
            )
        self.config = config
        self.options = options or RunOptions()
        self.config_hash = config.config_hash()
        self.clock: Clock = clock or (
            ReplayClock(REPLAY_EPOCH) if config.engine.clock is ClockKind.REPLAY else LiveClock()
        )
        self.log = log or get_logger("engine")
        self.telemetry = Telemetry(
            config.telemetry,
            version=_package_version(),
            config_hash=self.config_hash,
            mode=config.engine.mode.value,
            span_exporter=span_exporter,
            secrets=secret_values(config),
        )
        self.health = self.telemetry.health
        self.bus = MessageBus(
            default_capacity=config.bus.default_capacity,
            default_policy=config.bus.default_policy,
        )
        self.run_dir: Path | None = None
        self.supervisor: AgentSupervisor | None = None
        self.blender: BlenderStage | None = None
        self.pipeline: TradingPipeline | None = None
        self.journal: Journal | None = None
        self.portfolio: Portfolio | None = None
        self.broker: PaperBroker | None = None
        self._loaded: Sequence[LoadedAgent] = ()
        self._sources: list[LoadedSource] = []
        self._prepared = False
        self._stopped = False
        self.features: FeatureStore | None = None
        self.drift: DriftMonitor | None = None
        self.regimes: RegimeService | None = None
        """The shared regime model (None with ``regime.enabled = false``)."""
        self._regime_reader: RegimeReader | None = None
        self._drift_task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self.kafka: KafkaBridge | None = None
        """The Kafka bridge (None with ``kafka.enabled = false``)."""
        self.run_id: str | None = None
        """This run's id on Kafka (RunControl, remote agents); set at start."""
        self._remote_watchdog: RemoteAgentWatchdog | None = None
        self.workers: AgentWorkerPool | None = None
        """The local agent worker processes (None when every agent runs in this process)."""
        self._control_ids = self.ids_for("run-control")
        self._started_at = 0.0
        self.steps_total: int | None = None
        """Steps the replay will run (known once `run()` built the feed), for progress bars."""

    # -- ids -----------------------------------------------------------------------------------

    def ids_for(self, component: str) -> IdGenerator:
        """A component's own id stream (see `derive_ids`)."""
        return derive_ids(self.config.engine.seed, component)

    def _context_for(self, name: str) -> AgentContext:
        return AgentContext(
            clock=self.clock,
            log=get_logger("agent"),
            ids=self.ids_for(name),
            features=self.features,
            regimes=self._regime_reader,
        )

    # -- phase 1: validate everything, write nothing --------------------------------------------

    def prepare(self) -> None:
        problems: list[str] = []
        try:
            self._loaded = load_agents(self.config.agents)
        except AgentLoadError as exc:
            problems.extend(exc.problems)
        for index, source in enumerate(self.config.sources):
            if not isinstance(source, ReplaySourceConfig):
                problems.append(
                    f"sources[{index}] ({source.name}): kind {source.kind!r} is not available "
                    "yet (replay only)"
                )
                continue
            try:
                self._sources.append(
                    load_source(
                        source,
                        base_dir=self.options.base_dir,
                        start=self.options.start,
                        end=self.options.end,
                    )
                )
            except (ReplayDataError, OSError) as exc:
                problems.append(f"sources[{index}] ({source.name}): {exc}")
        for what, build in (
            ("blender", lambda: blend_policy_from_config(self.config.blender, self.config.risk)),
            (
                "selector",
                lambda: selection_policy_from_config(self.config.selector, self.config.risk),
            ),
        ):
            try:
                build()
            except (NotImplementedError, ValueError) as exc:
                problems.append(f"{what}.policy: {exc}")
        currencies = {
            s.currency
            for s in self.config.sources
            if isinstance(s, ReplaySourceConfig) and s.data == "bars"
        }
        if len(currencies) > 1:
            problems.append(
                "sources: bar sources quote in several currencies "
                f"({', '.join(sorted(currencies))}); one instrument currency per run for now"
            )
        account = self.config.execution.account_currency
        for currency in sorted(currencies - {account, "USD"}):
            if self.config.execution.fx.series is None:
                problems.append(
                    f"sources: prices in {currency}, but execution.fx.rate is USD per {account}; "
                    f"configure execution.fx.series with {currency} per {account}"
                )
        fx_series = self.config.execution.fx.series
        if fx_series is not None and not problems:
            macro = {s for src in self._sources if src.kind == "macro" for s in src.symbols}
            if fx_series not in macro:
                problems.append(
                    f"execution.fx.series: {fx_series!r} is not published by any macro source "
                    f"(available: {', '.join(sorted(macro)) or 'none'})"
                )
        if self._sources and not isinstance(self.clock, ReplayClock):
            problems.append("engine.clock: replay sources need clock = 'replay'")
        if problems:
            raise StartupError(problems)
        self._prepared = True

    # -- phase 2: start ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything; if any part fails, whatever did start is stopped again (the port,
        the tracer, the journal) before the error propagates."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        if not self._prepared:
            self.prepare()
        cfg = self.config
        self._started_at = time.perf_counter()
        try:
            await self.telemetry.start()
        except TelemetrySetupError as exc:
            raise StartupError([str(exc)]) from exc
        metrics = self.telemetry.metrics
        metrics.sources.bus = self.bus
        metrics.sources.account_currency = cfg.execution.account_currency
        await self._start_feature_store()
        if self._sources:
            for name in ("replay", "journal", "pipeline", "risk", "venue", "blender"):
                if name == "journal" and not cfg.execution.journal.enabled:
                    continue
                self.health.register(name, critical=True)
            self.run_dir = create_run_dir(
                cfg.engine.run_dir,
                explicit=self.options.run_dir,
                label=f"seed{cfg.engine.seed}-{self.config_hash[:8]}",
                now=datetime.now(UTC),
            )
            self.log = self.log.bind(run_dir=str(self.run_dir))
            if cfg.execution.journal.enabled:
                self.journal = Journal(
                    self.run_dir / "journal.sqlite",
                    batch_size=cfg.execution.journal.batch_size,
                    flush_interval_s=cfg.execution.journal.flush_interval_s,
                    meta={
                        "config_hash": self.config_hash,
                        "seed": cfg.engine.seed,
                        "engine_name": cfg.engine.name,
                    },
                    write_latency=self._observed(metrics.journal_write.labels()),
                )
                await self.journal.start()
                self.health.set("journal", ComponentState.RUNNING)
                metrics.sources.journal = self.journal
            self._build_trading_path()
            assert self.pipeline is not None
            assert self.blender is not None
            await self.pipeline.start()
            for name in ("pipeline", "risk", "venue"):
                self.health.set(name, ComponentState.RUNNING)
            await self.blender.start()
            self.health.set("blender", ComponentState.RUNNING)
            metrics.sources.pipeline = self.pipeline
            metrics.sources.broker = self.broker
            metrics.sources.blender = self.blender
        for loaded in self._loaded:
            self.health.register(f"agent.{loaded.config.name}", critical=False)
        await self._start_kafka()
        await self._start_workers()
        local = [la for la in self._loaded if not la.config.remote and not la.config.worker]
        agents = instantiate(local, self._context_for)
        self.supervisor = self._build_supervisor(agents, local)
        metrics.sources.supervisor = self.supervisor
        await self.supervisor.start()
        self.log.info(
            "engine started",
            mode=cfg.engine.mode.value,
            clock=cfg.engine.clock.value,
            agents=self.supervisor.live_agents()
            + (self.workers.live_agents() if self.workers is not None else []),
            sources=[s.name for s in self._sources],
            config_hash=self.config_hash,
        )

    async def _start_workers(self) -> None:
        """The local worker processes of the agents configured with ``worker = k``. Started
        before the engine's own agents, so each step reaches the workers first."""
        placement: dict[int, list[str]] = {}
        for la in self._loaded:
            if la.config.worker and not la.config.remote:
                placement.setdefault(la.config.worker, []).append(la.config.name)
        if not placement:
            return
        from engine.workers.pool import AgentWorkerPool, WorkerStartError

        metrics = self.telemetry.metrics
        self.workers = AgentWorkerPool(
            self.config,
            placement,
            bus=self.bus,
            clock=self.clock,
            ids=self.ids_for("agent-workers"),
            log=self.log,
            handler_latency=lambda name: self._observed(metrics.agent_handler.labels(name)),
            on_state=self._on_agent_state,
            chain=self.telemetry.chain,
        )
        try:
            await self.workers.start()
        except WorkerStartError as exc:
            raise StartupError(exc.problems) from exc
        metrics.sources.workers = self.workers

    @property
    def remote_agents(self) -> list[str]:
        """Names of the enabled agents that run in their own process over Kafka."""
        return [la.config.name for la in self._loaded if la.config.remote]

    async def _start_kafka(self) -> None:
        """The Kafka bridge: configured routes, plus the remote agents' feed and output."""
        cfg = self.config.kafka
        if not cfg.enabled:
            return
        from engine.agent_host import agent_output_check
        from engine.kafka.admin import TopicAdmin, TopicsMissingError
        from engine.kafka.bridge import KafkaBridge, safe_name, spool_path
        from engine.kafka.egress import EgressRoute
        from engine.kafka.ingress import IngressRoute
        from engine.kafka.lvc import LastValueCache
        from engine.kafka.remote import FEED_PATTERNS, REMOTE_OUTPUT_TYPES

        remote = self.remote_agents
        log = get_logger("engine").bind(subsystem="kafka")
        # With remote agents the run cannot progress without Kafka: then it is critical.
        self.health.register(KAFKA_COMPONENT, critical=bool(remote))
        label = self.run_dir.name if self.run_dir is not None else f"seed{self.config.engine.seed}"
        self.run_id = f"{safe_name(label)[:100]}.{secrets.token_hex(4)}"
        try:
            async with TopicAdmin(cfg) as admin:
                created = await admin.ensure(self.config)
            for result in created:
                if result.outcome == "created":
                    log.info("kafka topic created", topic=result.name, detail=result.detail)
        except TopicsMissingError as exc:
            raise StartupError(exc.problems) from exc
        except Exception as exc:
            if remote:
                raise StartupError(
                    [
                        f"kafka: cannot reach {', '.join(cfg.bootstrap_servers)} and remote "
                        f"agents ({', '.join(remote)}) need it: {type(exc).__name__}: {exc}"
                    ]
                ) from exc
            # Trading goes on without Kafka: egress spools until the broker is back.
            log.warning(
                "kafka unreachable at start; topics not checked, egress spools meanwhile",
                error=f"{type(exc).__name__}: {exc}",
            )
        egress = [EgressRoute(r.bus_pattern, r.topic, r.on_full) for r in cfg.egress]
        ingress = [
            IngressRoute(r.topic, r.bus_prefix, frozenset(r.types) if r.types else None)
            for r in cfg.ingress
        ]
        if remote:
            feed = cfg.remote_agents.feed_topic
            egress += [EgressRoute(pattern, feed, "block") for pattern in FEED_PATTERNS]
            ingress.append(
                IngressRoute(
                    cfg.remote_agents.agents_topic,
                    types=REMOTE_OUTPUT_TYPES,
                    run_id=lambda: self.run_id,
                    check=agent_output_check(remote),  # only its remote agents' own outputs
                )
            )
        lvc = None
        if cfg.last_value_cache.enabled:
            lvc = LastValueCache(
                cfg.last_value_cache,
                self.config.feature_store.redis,
                log=log.bind(subsystem="kafka-lvc"),
            )
        self.kafka = KafkaBridge(
            cfg,
            bus=self.bus,
            log=log,
            egress_routes=egress,
            ingress_routes=ingress,
            spool_file=spool_path(Path(self.config.engine.run_dir), cfg.client_id),
            group_id=cfg.group_id,
            run_id=self.run_id,
            span_id_for=self.telemetry.span_id_for,
            on_state=self._on_kafka_state,
            last_value_cache=lvc,
        )
        await self.kafka.start()
        self.telemetry.metrics.sources.kafka = self.kafka
        if ingress and not remote:
            # Consumers positioned before the replay starts, so records already waiting are
            # ingested from its first steps; a broker that is down does not hold the run.
            wait_s = min(10.0, cfg.remote_agents.ready_timeout_s)
            if not await self.kafka.wait_ingress_ready(wait_s):
                log.warning("kafka ingress not ready; the run starts without it", waited_s=wait_s)

    def _on_kafka_state(self, healthy: bool, reason: str) -> None:
        self.health.set(
            KAFKA_COMPONENT, ComponentState.RUNNING if healthy else ComponentState.DEGRADED, reason
        )

    async def _join_remote_agents(self) -> None:
        """Announce the run until every remote agent has joined it (or time out)."""
        remote = self.remote_agents
        if not remote or self.kafka is None:
            return
        cfg = self.config.kafka.remote_agents
        assert self.run_id is not None
        if not await self.kafka.wait_ingress_ready(cfg.ready_timeout_s):
            raise StartupError(
                [
                    f"kafka: the ingress of {cfg.agents_topic!r} did not start within "
                    f"{cfg.ready_timeout_s:g} s ({self.kafka.reason})"
                ]
            )
        sub = self.bus.subscribe(
            [topics.agent_status(name) for name in remote],
            name="engine.remote-join",
            capacity=1024,
            policy=OverflowPolicy.DROP_OLDEST,
        )
        joined: set[str] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.ready_timeout_s
        try:
            while set(remote) - joined:
                if self._stop_requested.is_set():
                    return  # Ctrl-C while waiting: run() returns "interrupted"
                if loop.time() > deadline:
                    missing = sorted(set(remote) - joined)
                    raise StartupError(
                        [
                            f"remote agent {name!r} did not join run {self.run_id} within "
                            f"{cfg.ready_timeout_s:g} s: is `tradeengine agent run --config <file> "
                            f"--agent {name}` running against the same Kafka?"
                            for name in missing
                        ]
                    )
                now = self.clock.now()
                # Repeated until every agent answered: an agent that starts later still joins.
                await self.bus.publish(
                    topics.run_control(),
                    RunControl(
                        trace_id=self._control_ids.trace_id(),
                        ts_event=now,
                        ts_init=now,
                        run_id=self.run_id,
                        event="started",
                        engine=self.config.engine.name,
                        agents=tuple(remote),
                    ),
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        while set(remote) - joined:
                            _topic, message = await sub.get()
                            if (
                                isinstance(message, AgentStatus)
                                and message.state is AgentState.RUNNING
                            ):
                                joined.add(message.agent)
                                self.health.set(
                                    f"agent.{message.agent}",
                                    ComponentState.RUNNING,
                                    f"remote agent joined run {self.run_id}",
                                )
        finally:
            self.bus.unsubscribe(sub)
        self.log.info("remote agents joined the run", agents=remote, run_id=self.run_id)
        from engine.kafka.remote import RemoteAgentWatchdog

        self._remote_watchdog = RemoteAgentWatchdog(
            self.bus,
            remote,
            silence_timeout_s=cfg.silence_timeout_s,
            on_silent=self._remote_agent_lost,
            log=self.log,
        )
        await self._remote_watchdog.start()

    async def _remote_agent_lost(self, agent: str, reason: str) -> None:
        """Treat a silent remote agent like a quarantined local one: the blender stops waiting."""
        from engine.agent_host import quarantined_status

        self.health.set(f"agent.{agent}", ComponentState.FAULTED, reason)
        status = quarantined_status(
            agent, reason, trace_id=self._control_ids.trace_id(), now=self.clock.now()
        )
        await self.bus.publish(topics.agent_status(agent), status)

    async def _end_remote_run(self) -> None:
        if not self.remote_agents or self.kafka is None or self.run_id is None:
            return
        now = self.clock.now()
        ended = RunControl(
            trace_id=self._control_ids.trace_id(),
            ts_event=now,
            ts_init=now,
            run_id=self.run_id,
            event="ended",
            engine=self.config.engine.name,
            agents=tuple(self.remote_agents),
        )
        # Bounded: with the broker long gone and the egress queue full, a stop must not hang.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.bus.publish(topics.run_control(), ended), 5.0)

    async def _start_feature_store(self) -> None:
        """The one feature-store client of this engine (agents, pipeline, selector, risk)."""
        cfg = self.config.feature_store
        self.health.register(FEATURE_STORE_COMPONENT, critical=False)
        store = build_store(cfg, on_state=self._on_feature_store_state)
        metrics = self.telemetry.metrics
        if self.config.telemetry.metrics.enabled:
            store.read_latency = metrics.feature_read.labels(cfg.backend).observe
            store.write_latency = metrics.feature_write.labels(cfg.backend).observe
        try:
            await store.start()
        except Exception as exc:
            if cfg.backend == "redis":
                from engine.features.redis_store import FeatureStoreUnavailableError

                if isinstance(exc, FeatureStoreUnavailableError):
                    raise StartupError([f"feature_store.redis: {exc}"]) from exc
            raise
        self.features = store
        metrics.sources.features = store
        if store.state == "RUNNING":
            self.health.set(FEATURE_STORE_COMPONENT, ComponentState.RUNNING, cfg.backend)
        await store.register(MARKET)
        if self.config.regime.enabled:
            self.regimes = RegimeService(
                self.config.regime, store, get_logger("engine").bind(subsystem="regime")
            )
            await self.regimes.start()
            self._regime_reader = RegimeReader(store)
        if cfg.drift.enabled:
            self.drift = DriftMonitor(
                window=cfg.drift.window,
                psi_threshold=cfg.drift.psi_threshold,
                ks_threshold=cfg.drift.ks_threshold,
                log=get_logger("engine").bind(subsystem="drift"),
                min_samples=min(50, cfg.drift.window),
            )
            store.write_observer = sampled_observer(self.drift.observe, cfg.drift.sample_every)
            metrics.sources.drift = self.drift
            self._drift_task = asyncio.create_task(
                self.drift.run(cfg.drift.interval_s), name="feature-drift"
            )

    def _on_feature_store_state(self, state: str, reason: str) -> None:
        self.health.set(
            FEATURE_STORE_COMPONENT,
            ComponentState.DEGRADED if state == "DEGRADED" else ComponentState.RUNNING,
            reason,
        )

    def _build_trading_path(self) -> None:
        cfg = self.config
        currency = next(
            (s.currency for s in cfg.sources if isinstance(s, ReplaySourceConfig)), "USD"
        )
        fees, fx = costs_from_config(cfg.execution, currency)
        self.portfolio = Portfolio(initial_cash=cfg.execution.initial_cash, fx=fx)
        self.broker = PaperBroker(
            portfolio=self.portfolio,
            fees=fees,
            fx=fx,
            slippage_bps=cfg.execution.slippage_bps,
            ids=self.ids_for("broker"),
            clock=self.clock,
        )
        blend_policy = blend_policy_from_config(cfg.blender, cfg.risk)
        risk = RiskStage(
            config=cfg.risk,
            fees=fees,
            fx=fx,
            slippage_bps=cfg.execution.slippage_bps,
            ids=self.ids_for("risk"),
            config_hash=self.config_hash,
            model_version=f"{MODEL_VERSION_PREFIX}/{blend_policy.name}-{blend_policy.version}",
            instrument_currency=currency,
        )
        self.pipeline = TradingPipeline(
            bus=self.bus,
            clock=self.clock,
            ids=self.ids_for("pipeline"),
            log=get_logger("pipeline"),
            selector=selection_policy_from_config(cfg.selector, cfg.risk),
            history=ReturnHistory(cfg.selector.correlation_lookback),
            risk=risk,
            broker=self.broker,
            portfolio=self.portfolio,
            journal=self.journal,
            fx=fx,
            fx_series=cfg.execution.fx.series,
            fx_currency=currency,
            stage_latency=(
                {
                    s: self.telemetry.metrics.stage.labels(s)
                    for s in ("execution", "risk", "select", "pipeline_step", "features")
                }
                if cfg.telemetry.metrics.enabled
                else None
            ),
            chain=self.telemetry.chain,
            on_watermark=self._on_pipeline_watermark,
            on_fault=self._on_pipeline_fault,
            features=self.features,
            read_regimes=self.regimes is not None,
        )
        self.blender = BlenderStage(
            bus=self.bus,
            policy=blend_policy,
            agents=[la.config.name for la in self._loaded],
            clock=self.clock,
            ids=self.ids_for("blender"),
            log=get_logger("blender"),
            min_signals=cfg.blender.min_signals,
            on_crash=self._blender_failed,
            latency=self._observed(self.telemetry.metrics.stage.labels("blender")),
            chain=self.telemetry.chain,
            sources=[s.name for s in cfg.sources],
        )

    def _build_supervisor(
        self, agents: Sequence[Agent[Any]], loaded_agents: Sequence[LoadedAgent]
    ) -> AgentSupervisor:
        cfg = self.config
        source_names = [s.name for s in cfg.sources]
        runners = []
        for agent, loaded in zip(agents, loaded_agents, strict=True):
            agent_cfg = loaded.config
            runners.append(
                AgentRunner.from_config(
                    agent,
                    agent_cfg,
                    supervisor=cfg.supervisor,
                    default_policy=cfg.bus.default_policy,
                    sources=source_names,
                    bus=self.bus,
                    clock=self.clock,
                    ids=self.ids_for(f"{agent_cfg.name}.runtime"),
                    handler_latency=self._observed(
                        self.telemetry.metrics.agent_handler.labels(agent_cfg.name)
                    ),
                    chain=self.telemetry.chain,
                    on_state=self._on_agent_state,
                )
            )
        return AgentSupervisor(
            runners,
            clock=self.clock,
            log=get_logger("supervisor"),
            on_crash=self._component_failed,
        )

    def _observed(self, histogram: LatencyHistogram) -> LatencyHistogram | None:
        """The histogram to time into, or None with metrics off (then nothing reads clocks)."""
        return histogram if self.config.telemetry.metrics.enabled else None

    def _component_failed(self, exc: BaseException) -> None:
        """A component task died: fail the run instead of letting the replay wait forever."""
        if self.pipeline is not None:
            self.pipeline.fail(exc)

    def _blender_failed(self, exc: BaseException) -> None:
        self.health.set("blender", ComponentState.FAULTED, f"{type(exc).__name__}: {exc}")
        self._component_failed(exc)

    def _on_agent_state(self, agent: str, state: AgentState, reason: str) -> None:
        self.health.set(f"agent.{agent}", _AGENT_HEALTH[state], reason)

    def _on_pipeline_watermark(self, _ts: datetime) -> None:
        self.health.watermark_processed()

    def _on_pipeline_fault(self, phase: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        component = _FAULT_COMPONENT.get(phase)
        if component is not None:
            self.health.set(component, ComponentState.FAULTED, f"during {phase}: {reason}")
            reason = f"{component} failed during {phase}"
        self.health.set("pipeline", ComponentState.FAULTED, reason)

    # -- phase 3: run --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask a running `run()` to finish early (SIGINT/SIGTERM)."""
        self._stop_requested.set()

    async def run(self, on_step: Callable[[int, datetime], None] | None = None) -> bool:
        """Replay the sources to the end, or wait for a stop request when there are none.

        Returns True when the replay completed, False when it was interrupted.
        """
        await self._join_remote_agents()
        if self._stop_requested.is_set():
            return False
        if not self._sources:
            await self._stop_requested.wait()
            return False
        assert isinstance(self.clock, ReplayClock)
        assert self.pipeline is not None
        speed = next(
            (
                s.speed
                for s in self.config.sources
                if isinstance(s, ReplaySourceConfig) and s.speed is not None
            ),
            None,
        )
        feed = ReplayFeed(
            self._sources,
            bus=self.bus,
            clock=self.clock,
            ids=self.ids_for("replay"),
            speed=speed,
            step_done=self.pipeline.step_done,
            chain=self.telemetry.chain,
            before_publish=self.regimes.observe_batch if self.regimes is not None else None,
            prefetch=self.workers.feed if self.workers is not None else None,
            lookahead=self.workers.lookahead if self.workers is not None else 0,
        )
        self.steps_total = feed.steps_total
        self.health.set("replay", ComponentState.RUNNING, f"{feed.steps_total} steps to replay")
        replay = asyncio.create_task(feed.run(on_step), name="replay")
        stop = asyncio.create_task(self._stop_requested.wait(), name="stop-request")
        done, _ = await asyncio.wait({replay, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if replay in done:
            try:
                replay.result()  # re-raise a failure of the replay
            except Exception as exc:
                self.health.set("replay", ComponentState.FAULTED, f"{type(exc).__name__}: {exc}")
                raise
            if self.workers is not None:
                # The workers' counters as of the last step, before the caller reads metrics
                # (they report every few dozen steps otherwise, and finally when stopped).
                await self.workers.sync()
            self.health.set("replay", ComponentState.STOPPED, "replay complete")
            return True
        self.log.warning("replay interrupted by a stop request")
        self.health.set("replay", ComponentState.STOPPED, "interrupted by a stop request")
        replay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await replay
        return False

    # -- stop ----------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop producers first; every component is stopped even if another fails to.
        Idempotent: a second call (e.g. after a failed start) does nothing."""
        if self._stopped:
            return
        self._stopped = True
        if self._remote_watchdog is not None:
            await self._remote_watchdog.stop()
        if self.kafka is not None:
            await self._end_remote_run()
        for name, component in (
            ("agents", self.supervisor),
            ("agent_workers", self.workers),
            ("blender", self.blender),
            ("pipeline", self.pipeline),
            ("kafka", self.kafka),
            ("journal", self.journal),
            ("feature_store", self.features),
            ("telemetry", self.telemetry),
        ):
            if component is None:
                continue
            try:
                await component.stop()
            except Exception as exc:
                self.log.error("component failed to stop cleanly", component=name, exc_info=exc)
                continue
            for health_name in _STOPPED_WITH.get(name, ()):
                self._mark_stopped(health_name)
        if self._drift_task is not None:
            # A last evaluation: a run shorter than the interval still reports its drift.
            if self.drift is not None:
                try:
                    self.drift.evaluate()
                except Exception as exc:
                    self.log.error("final drift evaluation failed", exc_info=exc)
            self._drift_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drift_task
        self.log.info("engine stopped")

    def _mark_stopped(self, name: str) -> None:
        known = {c.name: c for c in self.health.components()}
        entry = known.get(name)
        # A fault stays visible after the stop: the last state is what a post-mortem reads.
        if entry is not None and entry.state is not ComponentState.FAULTED:
            self.health.set(name, ComponentState.STOPPED, "stopped")

    # -- summary -------------------------------------------------------------------------------

    def summary(
        self, *, completed: bool, baseline: dict[datetime, float] | None = None
    ) -> RunSummary:
        """Figures of the run so far (call after `stop()`)."""
        pipeline = self.pipeline
        snapshots = pipeline.snapshots if pipeline is not None else []
        first = snapshots[0].ts if snapshots else None
        last = snapshots[-1].ts if snapshots else None
        initial = self.config.execution.initial_cash
        perf = performance([s.equity for s in snapshots], first, last, initial)
        broker_stats = self.broker.stats if self.broker is not None else None
        years = (last - first).days / 365.25 if first and last and last > first else 0.0
        mean_equity = sum(s.equity for s in snapshots) / len(snapshots) if snapshots else initial
        traded = broker_stats.turnover if broker_stats is not None else 0.0
        agents: dict[str, dict[str, Any]] = {}
        signals = 0
        views: dict[str, AgentRunner | WorkerAgent] = {}
        if self.supervisor is not None:
            views.update(self.supervisor.runners)
        if self.workers is not None:
            views.update(self.workers.agents)
        for name in [la.config.name for la in self._loaded]:  # config order
            runner = views.get(name)
            if runner is not None:
                signals += runner.stats.signals
                agents[name] = {
                    "state": runner.state.value,
                    "signals": runner.stats.signals,
                    "failed": runner.stats.failed,
                    "restarts": runner.stats.restarts,
                    "overruns": runner.stats.overruns,
                }
        base = None
        if baseline:
            figures = baseline_from_prices(baseline, first, last)
            if figures is not None:
                base = {"name": "S&P 500 index (price only, buy and hold)", **figures}
        stats = pipeline.stats if pipeline is not None else None
        return RunSummary(
            run_dir=str(self.run_dir) if self.run_dir is not None else "",
            period_start=first.date().isoformat() if first else None,
            period_end=last.date().isoformat() if last else None,
            steps=stats.steps if stats else 0,
            bars=stats.bars if stats else 0,
            signals=signals,
            opportunities=stats.opportunities if stats else 0,
            intents=stats.intents if stats else 0,
            denials=stats.denials if stats else 0,
            orders=broker_stats.orders if broker_stats is not None else 0,
            fills=broker_stats.fills if broker_stats is not None else 0,
            fees_paid=broker_stats.fees_paid if broker_stats is not None else 0.0,
            turnover_per_year=(traded / mean_equity / years) if years > 0 and mean_equity else 0.0,
            account_currency=self.config.execution.account_currency,
            performance=perf,
            baseline=base,
            denial_reasons=dict(sorted(stats.denial_reasons.items())) if stats else {},
            agents=agents,
            seed=self.config.engine.seed,
            config_hash=self.config_hash,
            wall_seconds=time.perf_counter() - self._started_at,
            completed=completed,
        )


__all__ = [
    "Engine",
    "LiveTradingUnavailableError",
    "RunDirError",
    "RunOptions",
    "StartupError",
    "derive_ids",
]
