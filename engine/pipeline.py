"""The trading pipeline of one step: fills, marks, exits, selection, risk, orders, snapshot.

Why one task runs these in a fixed order instead of each stage being its own bus consumer:
within a step they form a strict chain (risk must see the fills of this bar before it sizes,
the venue must have this step's intents before the next bar arrives), and a fixed order is what
makes a replay reproduce byte for byte. The stages stay separate objects with small interfaces
(selector policy, risk stage, broker, portfolio), each testable and replaceable alone; only
their sequencing lives here. The blender, which waits on many agents, stays its own task.

Per step t, once the blender's watermark passes t:
  1. the venue fills orders pending from earlier steps at this step's bars, triggers stops;
  2. the portfolio is marked to this step's closes, the return history updated;
  3. risk closes positions whose horizon elapsed;
  4. the selector picks a diversified slate from this step's opportunities;
  5. risk sizes the slate (or denies, with a reason) -> intents -> orders for the next bar;
  6. the portfolio snapshot, decisions, orders and fills go to the journal and the bus;
  7. `watermark.stage.pipeline` t is published and `step_done(t)` waiters are released.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from contracts import (
    Bar,
    DecisionKind,
    DecisionLog,
    Fill,
    IdGenerator,
    MacroObservation,
    Opportunity,
    Order,
    Watermark,
    topics,
)
from engine.bus import MessageBus, OverflowPolicy, Subscription, SubscriptionClosed
from engine.clock import Clock
from engine.execution.costs import FxConverter
from engine.execution.journal import Journal
from engine.execution.model import PortfolioSnapshot
from engine.execution.paper import PaperBroker
from engine.execution.portfolio import Portfolio
from engine.features.market import MARKET, realized_vols
from engine.features.store import FeatureStore, Row
from engine.lifecycle import AsyncService
from engine.regime import MARKET_ENTITY, REGIME
from engine.stages.risk import RiskStage
from engine.stages.selector import ReturnHistory, ReturnsView, SelectionPolicy, StoredReturns
from engine.telemetry.logging import Logger
from engine.telemetry.observe import LatencyObserver
from engine.telemetry.tracing import ChainTracer

STAGE_NAME = "pipeline"
BLENDER_WATERMARK = topics.stage_watermark("blender")


@dataclass(slots=True)
class PipelineStats:
    steps: int = 0
    bars: int = 0
    opportunities: int = 0
    selected: int = 0
    intents: int = 0
    exits: int = 0
    denials: int = 0
    no_trades: int = 0
    orders: int = 0
    fills: int = 0
    fx_updates: int = 0
    denial_reasons: dict[str, int] = field(default_factory=dict)
    intents_by_effect: dict[str, int] = field(default_factory=dict)


class TradingPipeline(AsyncService):
    """Runs steps in order as the blender completes them; see the module docstring."""

    def __init__(
        self,
        *,
        bus: MessageBus,
        clock: Clock,
        ids: IdGenerator,
        log: Logger,
        selector: SelectionPolicy,
        history: ReturnHistory,
        risk: RiskStage,
        broker: PaperBroker,
        portfolio: Portfolio,
        journal: Journal | None,
        capacity: int = 4096,
        fx: FxConverter | None = None,
        fx_series: str | None = None,
        fx_currency: str = "USD",
        stage_latency: Mapping[str, LatencyObserver] | None = None,
        chain: ChainTracer | None = None,
        on_watermark: Callable[[datetime], None] | None = None,
        on_fault: Callable[[str, BaseException], None] | None = None,
        features: FeatureStore | None = None,
        read_regimes: bool = False,
    ) -> None:
        """`read_regimes`: also read the shared regime labels (``engine.regime``) of the
        candidates, the open positions and the market, for the risk stage's decision inputs."""
        self._bus = bus
        self._clock = clock
        self._ids = ids
        self._log = log.bind(stage=STAGE_NAME)
        self._selector = selector
        self._history = history
        self._risk = risk
        self._broker = broker
        self._portfolio = portfolio
        self._journal = journal
        self._capacity = capacity
        self._fx = fx
        self._fx_series = fx_series
        self._fx_currency = fx_currency
        self._fx_pending: list[MacroObservation] = []
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._bars: dict[datetime, list[Bar]] = defaultdict(list)
        self._opportunities: dict[datetime, list[Opportunity]] = defaultdict(list)
        self._done_through: datetime | None = None
        self._progress = asyncio.Condition()
        self._failure: BaseException | None = None
        self._latency = (
            tuple(
                stage_latency[s]
                for s in ("execution", "risk", "select", "pipeline_step", "features")
            )
            if stage_latency is not None
            else None
        )
        self._chain = chain if chain is not None and chain.recording else None
        self._on_watermark = on_watermark
        self._on_fault = on_fault
        self._features = features
        self._read_regimes = read_regimes
        self.phase = "idle"
        """The part of a step running now (execution, risk, select, journal); names a fault."""
        self.stats = PipelineStats()
        self.snapshots: list[PortfolioSnapshot] = []
        """One snapshot per step, in order: the equity curve of the run summary."""

    @property
    def done_through(self) -> datetime | None:
        return self._done_through

    async def start(self) -> None:
        patterns = [topics.ALL_BARS, topics.ALL_OPPORTUNITIES, BLENDER_WATERMARK]
        if self._fx_series is not None:
            patterns.append(topics.macro(self._fx_series))
        self._sub = self._bus.subscribe(
            patterns,
            name=f"stage.{STAGE_NAME}",
            capacity=self._capacity,
            # The trading path never drops: a lost bar or watermark would corrupt the run.
            policy=OverflowPolicy.BLOCK,
        )
        self._task = asyncio.create_task(self._run(self._sub), name=f"stage:{STAGE_NAME}")

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._task is not None:
            # A failure of the task is already recorded (`failure`) and logged; stopping must
            # not raise it again, or the components stopped after this one would be skipped.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def fail(self, exc: BaseException) -> None:
        """Another component the pipeline depends on has died: release `step_done` waiters
        with an error instead of letting the replay wait forever."""
        if self._failure is None:
            self._failure = exc
        asyncio.get_running_loop().create_task(self._notify(), name="pipeline-fail-notify")

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def step_done(self, ts: datetime) -> None:
        """Wait until every step up to `ts` went through the pipeline (lock-step replay)."""
        async with self._progress:
            await self._progress.wait_for(
                lambda: (
                    self._failure is not None
                    or (self._done_through is not None and self._done_through >= ts)
                )
            )
        if self._failure is not None:
            raise RuntimeError(f"the run failed: {self._failure!r}") from self._failure

    async def _run(self, sub: Subscription) -> None:
        try:
            while True:
                try:
                    batch = await sub.get_batch(1024)
                except SubscriptionClosed:
                    return
                for _topic, message in batch:
                    if isinstance(message, Bar):
                        self._bars[message.ts_event].append(message)
                    elif isinstance(message, Opportunity):
                        self._opportunities[message.ts_event].append(message)
                    elif isinstance(message, Watermark):
                        await self._complete_through(message.ts_event)
                    elif (
                        isinstance(message, MacroObservation) and message.series == self._fx_series
                    ):
                        self._fx_pending.append(message)
        except BaseException as exc:
            # A fault here is a bug in a stage; fail the run loudly rather than hang the replay.
            self._failure = exc
            self._log.error("trading pipeline failed", phase=self.phase, exc_info=exc)
            if self._on_fault is not None and not isinstance(exc, asyncio.CancelledError):
                self._on_fault(self.phase, exc)
            async with self._progress:
                self._progress.notify_all()
            raise

    async def _complete_through(self, ts: datetime) -> None:
        pending = sorted(t for t in set(self._bars) | set(self._opportunities) if t <= ts)
        for step in pending:
            await self._run_step(step)
        self._done_through = ts
        await self._bus.publish(
            topics.stage_watermark(STAGE_NAME),
            Watermark(
                trace_id=self._ids.trace_id(),
                ts_event=ts,
                ts_init=self._clock.now(),
                origin=STAGE_NAME,
            ),
        )
        if self._on_watermark is not None:
            self._on_watermark(ts)
        async with self._progress:
            self._progress.notify_all()

    async def _exchange_market_features(
        self, step: datetime, ranked: Sequence[Opportunity]
    ) -> dict[str, Row]:
        """Write this step's market features for every symbol seen, then read back, in one
        batched read, those of the candidates and the open positions (see features.market)."""
        store = self._features
        assert store is not None
        history = self._history
        symbols = history.symbols()
        trailing, _ = history.matrix(symbols)
        vols = realized_vols(trailing)
        rows: dict[str, dict[str, object]] = {
            symbol: {
                "close": history.last_close(symbol),
                "returns": trailing[i],
                "vol_20d": float(vols[i]),
            }
            for i, symbol in enumerate(symbols)
        }
        if rows:
            # No flush: reads see this process' own queued writes, so the step never waits
            # for the server, and an outage cannot stall it (the writes stay buffered).
            await store.put_many(MARKET, rows, ts=step)
        wanted = sorted({o.symbol for o in ranked} | set(self._portfolio.positions))
        if not wanted:
            return {}
        market = await store.get_many(MARKET, wanted, ("returns", "vol_20d"))
        if self._read_regimes:
            labels = await store.get_many(REGIME, [*wanted, MARKET_ENTITY], ("label",))
            for entity, row in labels.items():
                label = row.get("label")
                if label is not None and label.ts == step:  # not an older step's label
                    market.setdefault(entity, {})["regime"] = label
        return market

    def _apply_fx(self, step: datetime) -> None:
        """Move the shared FX converter to the latest rate known at `step` (before fills)."""
        assert self._fx is not None
        due = [o for o in self._fx_pending if o.ts_event <= step]
        if not due:
            return
        self._fx_pending = [o for o in self._fx_pending if o.ts_event > step]
        self._fx.set_rate(self._fx_currency, due[-1].value)
        self.stats.fx_updates += len(due)

    async def _run_step(self, step: datetime) -> None:
        bars = sorted(self._bars.pop(step, ()), key=lambda b: b.symbol)
        opportunities = self._opportunities.pop(step, [])
        stats = self.stats
        now = self._clock.now()
        chain = self._chain
        latency = self._latency
        mono = self._clock.monotonic
        t_start = mono() if latency is not None else 0.0
        stats.steps += 1
        stats.bars += len(bars)
        if self._fx_pending:
            self._apply_fx(step)
        stats.opportunities += len(opportunities)

        self.phase = "execution"
        events: list[Order | Fill] = list(self._broker.on_bars(bars))
        self._portfolio.mark(bars)
        if bars:
            self._history.update({b.symbol: b.close for b in bars})

        t_exec = mono() if latency is not None else 0.0
        ranked = sorted(opportunities, key=lambda o: o.symbol)
        returns: ReturnsView = self._history
        market: Mapping[str, Row] | None = None
        if self._features is not None:
            self.phase = "features"
            market = await self._exchange_market_features(step, ranked)
            returns = StoredReturns(
                {
                    s: row["returns"].value
                    for s, row in market.items()
                    if "returns" in row and isinstance(row["returns"].value, np.ndarray)
                },
                lookback=self._history.lookback,
                min_overlap=self._history.min_overlap,
            )
        t_features = mono() if latency is not None else 0.0
        self.phase = "risk"
        decisions: list[DecisionLog] = list(self._risk.exits(step, now, self._portfolio))
        stats.exits += len(decisions)
        t_exits = mono() if latency is not None else 0.0
        self.phase = "select"
        slate = self._selector.select(ranked, returns)
        stats.selected += len(slate)
        if chain is not None:
            rank = {id(o): i for i, o in enumerate(slate)}
            for opp in ranked:
                chain.selection(opp, selected=id(opp) in rank, rank=rank.get(id(opp)), score=None)
        t_select = mono() if latency is not None else 0.0
        self.phase = "risk"
        decisions.extend(self._risk.decide(step, now, slate, self._portfolio, market=market))
        t_decide = mono() if latency is not None else 0.0
        self.phase = "execution"
        for decision in decisions:
            if chain is not None:
                chain.decision(decision)
            if decision.kind is DecisionKind.INTENT:
                assert decision.intent is not None
                events.append(self._broker.submit(decision.intent))
                stats.intents += 1
                effect = decision.intent.effect.value
                stats.intents_by_effect[effect] = stats.intents_by_effect.get(effect, 0) + 1
            elif decision.kind is DecisionKind.DENIAL:
                stats.denials += 1
                reason = decision.reason.value if decision.reason else "unknown"
                stats.denial_reasons[reason] = stats.denial_reasons.get(reason, 0) + 1
            else:
                stats.no_trades += 1
        snapshot = self._portfolio.snapshot(step)
        self.snapshots.append(snapshot)

        out: list[tuple[str, object]] = []
        for event in events:
            if isinstance(event, Fill):
                stats.fills += 1
                out.append((topics.fill(event.symbol), event))
                if chain is not None:
                    chain.fill(event)
            else:
                stats.orders += 1
                out.append((topics.order(event.symbol), event))
                if chain is not None:
                    chain.order(event)
        for decision in decisions:
            out.append((topics.decision(decision.symbol), decision))
            if decision.intent is not None:
                out.append((topics.intent(decision.intent.symbol), decision.intent))
        t_done = mono() if latency is not None else 0.0
        self.phase = "journal"
        if self._journal is not None:
            for item in (*decisions, *events):
                await self._journal.put(item)
            await self._journal.put(snapshot)
        self.phase = "publish"
        if out:
            await self._bus.publish_batch(out)
        self.phase = "idle"
        if latency is not None:
            execution, risk, select, whole, features = latency
            execution.observe((t_exec - t_start) + (t_done - t_decide))
            features.observe(t_features - t_exec)
            risk.observe((t_exits - t_features) + (t_decide - t_select))
            select.observe(t_select - t_exits)
            whole.observe(mono() - t_start)
