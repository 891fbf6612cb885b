"""The composition root: builds every component of a run from an `EngineConfig`.

Nothing else in the engine constructs components or reads configuration; components receive
what they need (clock, bus, loggers, ids) as arguments. Construction does no I/O: `start()` does,
and `stop()` undoes it in reverse order, so the engine is an async context manager like every
other resource.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from config import EngineConfig
from config.enums import ClockKind, TradingMode
from contracts import IdGenerator
from engine.agent import Agent, AgentContext
from engine.bus import MessageBus
from engine.clock import Clock, LiveClock, ReplayClock
from engine.lifecycle import AsyncService
from engine.loader import LoadedAgent, instantiate, load_agents
from engine.supervisor import AgentRunner, AgentSupervisor, MailboxSpec, SupervisionPolicy
from engine.telemetry.logging import Logger, get_logger

# A replay clock starts here and is moved to the first event's time by the replay source.
REPLAY_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LiveTradingUnavailableError(RuntimeError):
    """`--live` was asked for but no live broker exists yet."""


class Engine(AsyncService):
    """One engine run: bus, clock, ids, agents under supervision (stages join in later issues)."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        clock: Clock | None = None,
        log: Logger | None = None,
    ) -> None:
        if config.engine.mode is TradingMode.LIVE:
            raise LiveTradingUnavailableError(
                "live trading is not available: no live broker is implemented yet; run with --paper"
            )
        self.config = config
        self.config_hash = config.config_hash()
        self.clock: Clock = clock or (
            ReplayClock(REPLAY_EPOCH) if config.engine.clock is ClockKind.REPLAY else LiveClock()
        )
        self.ids = IdGenerator(config.engine.seed)
        self.log = log or get_logger("engine")
        self.bus = MessageBus(
            default_capacity=config.bus.default_capacity,
            default_policy=config.bus.default_policy,
        )
        self._loaded: Sequence[LoadedAgent] = ()
        self.supervisor: AgentSupervisor | None = None

    def _context_for(self, name: str) -> AgentContext:
        # Each agent gets its own id stream, derived from the run seed and its name, so adding an
        # agent does not change the ids (and so the DecisionLog bytes) of the others.
        seed = self.config.engine.seed
        derived = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")
        return AgentContext(clock=self.clock, log=get_logger("agent"), ids=IdGenerator(derived))

    def build_agents(self) -> list[Agent[Any]]:
        """Load and construct the configured agents; raises AgentLoadError listing problems."""
        self._loaded = load_agents(self.config.agents)
        return instantiate(self._loaded, self._context_for)

    async def start(self) -> None:
        agents = self.build_agents()
        sup_cfg = self.config.supervisor
        source_names = [s.name for s in self.config.sources]
        runners = []
        for agent, loaded in zip(agents, self._loaded, strict=True):
            cfg = loaded.config
            runners.append(
                AgentRunner(
                    agent,
                    bus=self.bus,
                    clock=self.clock,
                    ids=self._context_for(f"{cfg.name}.runtime").ids,
                    log=get_logger("supervisor"),
                    policy=SupervisionPolicy.from_config(sup_cfg, cfg),
                    mailbox=MailboxSpec(
                        capacity=cfg.mailbox_capacity,
                        policy=cfg.mailbox_policy or self.config.bus.default_policy,
                    ),
                    patterns=cfg.subscriptions,
                    expected_sources=source_names,
                )
            )
        self.supervisor = AgentSupervisor(runners, clock=self.clock, log=get_logger("supervisor"))
        await self.supervisor.start()
        self.log.info(
            "engine started",
            mode=self.config.engine.mode.value,
            clock=self.config.engine.clock.value,
            agents=self.supervisor.live_agents(),
            config_hash=self.config_hash,
        )

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
        self.log.info("engine stopped")
