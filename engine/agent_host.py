"""`AgentHostSession`: agents run outside the engine's process, on the engine's feed, as in it.

Why it exists: an agent can run away from the engine's event loop, in a remote process fed over
Kafka (`engine.kafka.remote`) or in a local worker process fed over a pipe (`engine.workers`).
Both hosts must make the agent emit exactly the signals it would emit inside the engine, so
both build the same session from the same engine classes: a replay clock, a feature store (the
configured one, or a private in-memory one for a worker), the engine's regime model, the agents
with ids derived from seed + name, their `AgentRunner`s and one `AgentSupervisor`, all on the
host's own bus.

The feed arrives as the engine's bus carries it: per step, its bars, macro observations, posts
and one watermark per source. `feed` collects a step until every source's watermark is in,
then does what the engine's replay does before publishing a step: the regime model observes
the step first (so every agent reads the same label the engine's stages read), the clock moves
to the step, and the step is published in one batch.

Trade-off: each host keeps its own regime model (computed from the same feed, so the labels
are identical) instead of receiving the engine's labels; that costs the host a little CPU and
keeps the feed the engine's plain market data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

from config import EngineConfig
from config.enums import OverflowPolicy
from contracts import AgentState, AgentStatus, Contract, Signal, Watermark, topics
from engine.agent import AgentContext
from engine.app import REPLAY_EPOCH, derive_ids
from engine.bus import MessageBus, Subscription
from engine.clock import ReplayClock
from engine.features.admin import build_store
from engine.features.store import FeatureStore
from engine.loader import LoadedAgent, instantiate
from engine.regime import RegimeReader, RegimeService
from engine.supervisor import AgentRunner, AgentSupervisor, StateListener
from engine.telemetry.logging import Logger, get_logger
from engine.telemetry.metrics import LatencyHistogram
from engine.telemetry.tracing import ChainTracer

SOURCE_WATERMARK_PREFIX = topics.ALL_SOURCE_WATERMARKS[:-1]


def agent_output_check(agents: Sequence[str]) -> Callable[[str, Contract], str | None]:
    """The engine's rule for what a host sends back: only its agents, only their own topics.
    Returns the reason a (bus topic, message) is refused, or None."""
    allowed = frozenset(agents)

    def check(bus_topic: str, message: Contract) -> str | None:
        if isinstance(message, Signal | AgentStatus):
            name = message.agent
        elif isinstance(message, Watermark):
            name = message.origin
            if bus_topic != topics.agent_watermark(name):
                return f"an agent host may only send agent watermarks, not {bus_topic!r}"
        else:
            return f"{type(message).__name__} is not accepted from an agent host"
        if name not in allowed:
            return (
                f"agent {name!r} is not hosted there "
                f"(hosted: {', '.join(sorted(allowed)) or 'none'})"
            )
        return None

    return check


def quarantined_status(agent: str, reason: str, *, trace_id: str, now: datetime) -> AgentStatus:
    """The status that tells the engine's blender to stop waiting for an agent whose host is
    gone (a remote agent gone silent, a worker process lost)."""
    return AgentStatus(
        trace_id=trace_id,
        ts_event=now,
        ts_init=now,
        agent=agent,
        state=AgentState.QUARANTINED,
        reason=reason[:2000],
    )


class AgentHostError(Exception):
    """The host cannot go on (an agent runner itself died)."""


class AgentHostSession:
    """One run of a host's agents: everything that starts fresh when a run starts.

    `handler_latency` (optional) gives each agent's handler-time histogram; `on_state` hears
    every agent state change; `on_crash` is told when a runner itself (not a hook) dies. With
    `lockstep`, `feed` returns after a step only once every live agent has handled it (the
    host is fed ahead of its agents; see `_wait_for_agents`).

    The regime labels always live in a private in-memory store: the engine writes the same
    labels to the configured store, and a host writing them there too could overwrite a newer
    label with an older one (a Redis write lands late) or, fed ahead, put future labels in front
    of the engine's readers. With ``shared_features = False`` the agents' own features stay in
    a private in-memory store too: a host running ahead of the engine must not show the
    engine's components values from the engine's future.
    """

    def __init__(
        self,
        config: EngineConfig,
        agents: Sequence[LoadedAgent],
        *,
        bus: MessageBus,
        log: Logger,
        on_crash: Callable[[BaseException], None],
        handler_latency: Callable[[str], LatencyHistogram | None] | None = None,
        on_state: StateListener | None = None,
        lockstep: bool = False,
        shared_features: bool = True,
    ) -> None:
        self.config = config
        self.agents = list(agents)
        self.bus = bus
        self.log = log
        self._on_crash = on_crash
        self._handler_latency = handler_latency
        self._on_state = on_state
        self.clock = ReplayClock(REPLAY_EPOCH)
        private = config.feature_store.model_copy(update={"backend": "memory"})
        self.features: FeatureStore = build_store(
            config.feature_store if shared_features else private
        )
        """The agents' store: the configured one, or a private in-memory one."""
        self._regime_store: FeatureStore | None = (
            build_store(private)
            if shared_features and config.feature_store.backend != "memory"
            else None
        )
        """A private store for the regime labels when `features` is shared (class docstring)."""
        self.regimes: RegimeService | None = None
        self.reader: RegimeReader | None = None
        self._sources = len(config.sources)
        self._step: list[tuple[str, object]] = []
        self._marks = 0
        self.steps = 0
        self.supervisor: AgentSupervisor | None = None
        self._lockstep = lockstep
        self._gate: Subscription | None = None
        self._live = {la.config.name for la in self.agents}
        self._agent_marks: dict[str, datetime] = {}
        self._crash: BaseException | None = None

    def _runner_crashed(self, exc: BaseException) -> None:
        self._crash = exc
        self._on_crash(exc)

    async def start(self) -> None:
        cfg = self.config
        await self.features.start()
        regime_store = self.features
        if self._regime_store is not None:
            await self._regime_store.start()
            regime_store = self._regime_store
        if cfg.regime.enabled:
            self.regimes = RegimeService(
                cfg.regime, regime_store, self.log.bind(subsystem="regime")
            )
            await self.regimes.start()
            self.reader = RegimeReader(regime_store)
        seed = cfg.engine.seed

        def context_for(name: str) -> AgentContext:
            return AgentContext(
                clock=self.clock,
                log=get_logger("agent"),
                ids=derive_ids(seed, name),
                features=self.features,
                regimes=self.reader,
            )

        if self._lockstep:
            names = [la.config.name for la in self.agents]
            self._gate = self.bus.subscribe(
                [topics.agent_watermark(n) for n in names]
                + [topics.agent_status(n) for n in names],
                name="agent-host.step-gate",
                capacity=4096,
                policy=OverflowPolicy.BLOCK,
            )
        agents = instantiate(self.agents, context_for)
        latency = self._handler_latency
        runners = [
            AgentRunner.from_config(
                agent,
                loaded.config,
                supervisor=cfg.supervisor,
                default_policy=cfg.bus.default_policy,
                sources=[s.name for s in cfg.sources],
                bus=self.bus,
                clock=self.clock,
                ids=derive_ids(seed, f"{loaded.config.name}.runtime"),
                handler_latency=latency(loaded.config.name) if latency is not None else None,
                chain=ChainTracer.disabled(),
                on_state=self._on_state,
            )
            for agent, loaded in zip(agents, self.agents, strict=True)
        ]
        self.supervisor = AgentSupervisor(
            runners, clock=self.clock, log=get_logger("supervisor"), on_crash=self._runner_crashed
        )
        await self.supervisor.start()

    async def feed(self, topic: str, message: object) -> None:
        """Collect a step; publish it whole once every source's watermark is in."""
        self._step.append((topic, message))
        if isinstance(message, Watermark) and topic.startswith(SOURCE_WATERMARK_PREFIX):
            self._marks += 1
            if self._marks >= self._sources:
                batch, self._step, self._marks = self._step, [], 0
                ts = message.ts_event
                if self.regimes is not None:
                    await self.regimes.observe_batch(ts, batch)
                if ts > self.clock.now():
                    self.clock.advance_to(ts)
                await self.bus.publish_batch(batch)
                self.steps += 1
                if self._gate is not None:
                    await self._wait_for_agents(ts)

    async def _wait_for_agents(self, ts: datetime) -> None:
        """Until every live agent has passed `ts` (lock-step). The engine's replay is lock-step
        too: the regime labels of the next step must not be written before every agent has
        read this step's, and a fed-ahead host gets steps faster than its agents handle them."""
        gate = self._gate
        assert gate is not None
        live = self._live
        marks = self._agent_marks
        while any((mark := marks.get(n)) is None or mark < ts for n in live):
            if self._crash is not None:
                raise AgentHostError(f"an agent runner crashed: {self._crash!r}")
            try:
                async with asyncio.timeout(0.5):  # re-checks for a crashed runner meanwhile
                    batch = await gate.get_batch(1024)
            except TimeoutError:
                continue
            for _topic, message in batch:
                if isinstance(message, Watermark):
                    previous = marks.get(message.origin)
                    if previous is None or message.ts_event > previous:
                        marks[message.origin] = message.ts_event
                elif isinstance(message, AgentStatus) and message.state in (
                    AgentState.QUARANTINED,
                    AgentState.STOPPED,
                ):
                    live.discard(message.agent)

    async def stop(self) -> None:
        if self._gate is not None:
            self._gate.close()
        if self.supervisor is not None:
            await self.supervisor.stop()
        await self.features.stop()
        if self._regime_store is not None:
            await self._regime_store.stop()


__all__ = [
    "SOURCE_WATERMARK_PREFIX",
    "AgentHostError",
    "AgentHostSession",
    "agent_output_check",
    "quarantined_status",
]
