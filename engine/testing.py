"""Test kit for plugin authors and the engine's own tests.

`AgentHarness` runs one agent exactly as the engine does (real bus, real supervisor, replay
clock, source watermarks) and collects what it emits, so a plugin's tests exercise the same code
path as production instead of calling hooks by hand. `make_bar` builds valid bars tersely.

Example::

    async with AgentHarness(MyAgent, params={"lookback": 20}) as harness:
        signals = await harness.feed(bars)
    assert signals[-1].mu > 0
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from config import RegimeConfig
from contracts import (
    AgentState,
    AgentStatus,
    Bar,
    Contract,
    IdGenerator,
    MacroObservation,
    Signal,
    SocialPost,
    Watermark,
    topics,
)
from engine.agent import Agent, AgentContext
from engine.bus import MessageBus, Subscription, SubscriptionClosed
from engine.clock import ReplayClock
from engine.features.store import MemoryFeatureStore
from engine.lifecycle import AsyncService
from engine.regime import RegimeReader, RegimeService
from engine.supervisor import AgentRunner, AgentStats, AgentSupervisor, SupervisionPolicy
from engine.telemetry.logging import get_logger

HARNESS_SOURCE = "harness"
_ids = itertools.count(1)


def make_bar(
    symbol: str,
    ts: datetime,
    close: float,
    *,
    open: float | None = None,
    high: float | None = None,
    low: float | None = None,
    volume: float | None = None,
    trace_id: str | None = None,
) -> Bar:
    """A valid Bar with a fresh trace id (close-only unless OHLC given)."""
    return Bar(
        trace_id=trace_id or f"{next(_ids):032x}",
        ts_event=ts,
        ts_init=ts,
        symbol=symbol,
        open=open,
        high=high,
        low=low,
        close=close,
        volume=volume,
    )


def daily_bars(symbol: str, closes: Iterable[float], start: datetime | None = None) -> list[Bar]:
    """Close-only daily bars on consecutive days starting at `start` (default 2020-01-01)."""
    t0 = start or datetime(2020, 1, 1, 21, tzinfo=UTC)
    return [make_bar(symbol, t0 + timedelta(days=i), c) for i, c in enumerate(closes)]


class AgentHarness(AsyncService):
    """Runs one agent under the real supervisor and collects its signals."""

    def __init__(
        self,
        agent_cls: type[Agent[Any]],
        *,
        name: str = "agent_under_test",
        params: Mapping[str, Any] | BaseModel | None = None,
        seed: int = 0,
        policy: SupervisionPolicy | None = None,
        start: datetime = datetime(1970, 1, 1, tzinfo=UTC),
        regime: RegimeConfig | None = None,
    ) -> None:
        model = agent_cls.params_model
        parsed = params if isinstance(params, BaseModel) else model.model_validate(params or {})
        self.clock = ReplayClock(start)
        self.ids = IdGenerator(seed)
        self.bus = MessageBus(default_capacity=1024)
        self.features = MemoryFeatureStore(namespace="test")
        """The harness' feature store: assert on what the agent wrote with ``get``."""
        self.regimes = RegimeService(regime or RegimeConfig(), self.features)
        """The shared regime model, run on each step's bars before the agent sees them, as
        the engine does."""
        self.agent = agent_cls(
            name,
            parsed,
            AgentContext(
                clock=self.clock,
                log=get_logger("agent"),
                ids=self.ids,
                features=self.features,
                regimes=RegimeReader(self.features),
            ),
        )
        self.runner = AgentRunner(
            self.agent,
            bus=self.bus,
            clock=self.clock,
            ids=IdGenerator(seed + 1),
            log=get_logger("supervisor"),
            policy=policy or SupervisionPolicy(backoff_initial_s=0.001, backoff_max_s=0.01),
            expected_sources=[HARNESS_SOURCE],
        )
        self.supervisor = AgentSupervisor(
            [self.runner], clock=self.clock, log=get_logger("supervisor")
        )
        self.signals: list[Signal] = []
        self.watermarks: list[Watermark] = []
        self.statuses: list[AgentStatus] = []
        self.received: list[Contract] = []
        """Everything the agent put on the bus, in the order a downstream stage sees it."""
        self._progress = asyncio.Condition()
        self._out: Subscription | None = None
        self._collector: asyncio.Task[None] | None = None

    @property
    def stats(self) -> AgentStats:
        return self.runner.stats

    @property
    def state(self) -> AgentState:
        return self.runner.state

    async def start(self) -> None:
        await self.regimes.start()
        name = self.agent.name
        self._out = self.bus.subscribe(
            [topics.signals_of(name), topics.agent_watermark(name), topics.agent_status(name)],
            name="harness.collector",
            capacity=4096,
        )
        self._collector = asyncio.create_task(self._collect(self._out), name="harness.collector")
        await self.supervisor.start()

    async def stop(self) -> None:
        await self.supervisor.stop()
        if self._out is not None:
            self._out.close()
        if self._collector is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector

    async def feed(self, events: Iterable[Bar | MacroObservation | SocialPost]) -> list[Signal]:
        """Publish events step by step (grouped by ts_event, each step closed by a watermark)
        and wait until the agent has handled each step. Returns the signals of this call."""
        first = len(self.signals)
        by_ts: dict[datetime, list[Contract]] = {}
        for event in events:
            by_ts.setdefault(event.ts_event, []).append(event)
        for ts in sorted(by_ts):
            self.clock.advance_to(ts)
            batch = [(self._topic_of(e), e) for e in by_ts[ts]]
            wm = Watermark(
                trace_id=self.ids.trace_id(), ts_event=ts, ts_init=ts, origin=HARNESS_SOURCE
            )
            batch.append((topics.source_watermark(HARNESS_SOURCE), wm))
            await self.regimes.observe_batch(ts, batch)
            await self.bus.publish_batch(batch)
            await self._wait_for_step(ts)
        return self.signals[first:]

    @staticmethod
    def _topic_of(event: Contract) -> str:
        if isinstance(event, Bar):
            return topics.bar(event.symbol)
        if isinstance(event, MacroObservation):
            return topics.macro(event.series)
        if isinstance(event, SocialPost):
            return topics.post(event.source)
        raise TypeError(f"cannot feed {type(event).__name__}")

    async def _wait_for_step(self, ts: datetime) -> None:
        async with self._progress:
            await self._progress.wait_for(
                lambda: (
                    (self.watermarks and self.watermarks[-1].ts_event >= ts)
                    or self.runner.state is AgentState.QUARANTINED
                )
            )

    async def _collect(self, sub: Subscription) -> None:
        while True:
            try:
                batch = await sub.get_batch(256)
            except SubscriptionClosed:
                return
            for _topic, message in batch:
                if isinstance(message, Contract):
                    self.received.append(message)
                if isinstance(message, Signal):
                    self.signals.append(message)
                elif isinstance(message, Watermark):
                    self.watermarks.append(message)
                elif isinstance(message, AgentStatus):
                    self.statuses.append(message)
            async with self._progress:
                self._progress.notify_all()
