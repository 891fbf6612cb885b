"""The twelve bundled agents, described once for the cross-agent tests and the report script.

Each `AgentSpec` names the agent's class and the real data it is judged on: the 20 stocks
(1990-2022), the stocks with the Treasury yields (1990-2017, where the two files overlap), the
GOOG OHLCV file (the only bundled series with volume), or the stocks with the social-post
fixture (synthetic posts, see `tests/calibration/posts.py`). `run_agent` replays an agent on
such data through `engine.testing.AgentHarness`, exactly as the engine runs it (shared regime
model included); `full_run` caches the full-data run per agent for the whole test session
(about 10 s each), so the calibration report and the regime tests share it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from contracts import Bar, MacroObservation, Signal, SocialPost
from engine.agent import Agent
from engine.testing import AgentHarness
from tests.calibration import bar_ts, macro_observations, merge_macro_first, stock_bars
from tests.calibration.posts import merge_posts_first

DataKind = Literal["stocks", "stocks+yields", "goog", "stocks+posts"]
Event = Bar | MacroObservation | SocialPost


@dataclass(frozen=True)
class AgentSpec:
    name: str
    path: str
    """``module:Class``, as engine.toml names it."""
    data: DataKind
    lookahead_params: dict[str, Any] = field(default_factory=dict)
    """Params for the short look-ahead window (a lower `min_samples`, so signals exist early)."""

    @property
    def cls(self) -> type[Agent[Any]]:
        module, name = self.path.split(":")
        cls: type[Agent[Any]] = getattr(importlib.import_module(module), name)
        return cls


_EARLY = {"min_samples": 200, "emit_zero_confidence": True}

SPECS: tuple[AgentSpec, ...] = (
    AgentSpec("momentum", "plugins.momentum:TimeSeriesMomentumAgent", "stocks", _EARLY),
    AgentSpec("reversal", "plugins.reversal:ShortTermReversalAgent", "stocks", _EARLY),
    AgentSpec("ma_trend", "plugins.ma_trend:MovingAverageTrendAgent", "stocks", _EARLY),
    AgentSpec("donchian", "plugins.donchian:DonchianBreakoutAgent", "stocks", _EARLY),
    AgentSpec("rsi", "plugins.rsi:RsiReversionAgent", "stocks", _EARLY),
    AgentSpec("bollinger", "plugins.bollinger:BollingerReversionAgent", "stocks", _EARLY),
    AgentSpec("low_vol", "plugins.low_volatility:LowVolatilityAgent", "stocks", _EARLY),
    AgentSpec(
        "xs_momentum",
        "plugins.cross_sectional_momentum:CrossSectionalMomentumAgent",
        "stocks",
        _EARLY,
    ),
    AgentSpec("yield_curve", "plugins.yield_curve:YieldCurveAgent", "stocks+yields", _EARLY),
    AgentSpec(
        "calendar", "plugins.calendar_seasonality:CalendarSeasonalityAgent", "stocks", _EARLY
    ),
    AgentSpec("volume", "plugins.volume_anomaly:VolumeAnomalyAgent", "goog", _EARLY),
    AgentSpec("sentiment", "plugins.social_sentiment:SocialSentimentAgent", "stocks+posts", _EARLY),
)
BY_NAME = {spec.name: spec for spec in SPECS}

FULL_SPAN: dict[DataKind, tuple[date, date]] = {
    "stocks": (date(1990, 1, 1), date(2022, 12, 31)),
    "stocks+yields": (date(1990, 1, 1), date(2017, 3, 31)),
    "goog": (date(2004, 1, 1), date(2013, 12, 31)),
    "stocks+posts": (date(1990, 1, 1), date(2022, 12, 31)),  # narrowed to the fixture below
}


def _posts(start: date, end: date) -> list[SocialPost]:
    from tests.calibration.posts import social_posts

    return social_posts(start, end)


def _goog(start: date, end: date, alter: Callable[[Bar], float] | None = None) -> list[Bar]:
    from tests.calibration.ohlcv import goog_bars

    return goog_bars(start, end, alter=alter)


def data_for(
    spec: AgentSpec, start: date, end: date, *, alter_after: date | None = None, seed: int = 7
) -> tuple[list[Event], list[Bar]]:
    """(events to feed, the price bars to score against) for `spec` on [start, end]. With
    `alter_after`, every input dated after that day is changed (prices, yields, volumes, posts),
    as a different future would."""
    rng = random.Random(seed)
    cut = bar_ts(alter_after) if alter_after is not None else None

    def close(bar: Bar) -> float:
        if cut is not None and bar.ts_event > cut:
            return bar.close * rng.uniform(0.7, 1.4)
        return bar.close

    alter = close if cut is not None else None
    if spec.data == "goog":
        bars = _goog(start, end, alter)
        return list(bars), bars
    if spec.data == "stocks+yields":
        bars = stock_bars(start, end, alter=alter)

        def yield_(day: date, _series: str, value: float) -> float:
            if alter_after is not None and day > alter_after:
                return value + rng.uniform(-0.01, 0.01)
            return value

        macro = macro_observations(start, end, alter=yield_ if cut is not None else None)
        return list(merge_macro_first(bars, macro)), bars
    if spec.data == "stocks+posts":
        posts = _posts(start, end)
        if not posts:
            return [], []
        first, last = posts[0].ts_event.date(), posts[-1].ts_event.date()
        symbols = sorted({s for p in posts for s in p.symbols} or {"AAPL"})
        bars = stock_bars(max(start, first), min(end, last), symbols=symbols, alter=alter)
        if cut is not None:
            # a different future of the conversation: later posts say the opposite
            posts = [
                p
                if p.ts_event <= cut
                else p.model_copy(update={"title": p.text[:100], "text": p.title or "meh"})
                for p in posts
            ]
            posts += [
                p.model_copy(update={"post_id": p.post_id + "-dup"})
                for p in posts
                if p.ts_event > cut and rng.random() < 0.5
            ]
        return list(merge_posts_first(bars, posts)), bars
    bars = stock_bars(start, end, alter=alter)
    return list(bars), bars


async def run_agent(
    spec: AgentSpec, events: Sequence[Event], params: dict[str, Any] | None = None
) -> tuple[list[Signal], Agent[Any]]:
    async with AgentHarness(spec.cls, name=spec.name, params=params or {}) as harness:
        signals = await harness.feed(events)
        assert harness.stats.failed == 0, f"{spec.name}: {harness.stats.last_error}"
    return signals, harness.agent


@dataclass(frozen=True)
class FullRun:
    spec: AgentSpec
    signals: list[Signal]
    """Every calibrated forecast (``emit_zero_confidence = true``)."""
    bars: list[Bar]
    agent: Agent[Any]


def _in_fresh_loop(coro_factory: Callable[[], Any]) -> Any:
    # Sync tests may be called while pytest-asyncio manages loops: run in a thread of our own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result()


@functools.cache
def full_run(name: str) -> FullRun:
    """The agent on its full real data with default params, every forecast kept (cached)."""
    spec = BY_NAME[name]
    start, end = FULL_SPAN[spec.data]
    events, bars = data_for(spec, start, end)
    signals, agent = _in_fresh_loop(lambda: run_agent(spec, events, {"emit_zero_confidence": True}))
    return FullRun(spec, signals, bars, agent)


__all__ = ["BY_NAME", "SPECS", "AgentSpec", "FullRun", "data_for", "full_run", "run_agent"]
