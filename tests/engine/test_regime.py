"""The shared regime model: labels, the service that writes them, the reader agents use."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from config import RegimeConfig
from contracts import Bar, Regime
from engine.agent import Agent, NoParams
from engine.features.store import MemoryFeatureStore
from engine.regime import (
    MARKET_ENTITY,
    REGIME,
    RegimeModel,
    RegimeReader,
    RegimeService,
    classify,
)
from engine.testing import AgentHarness, daily_bars, make_bar
from tests.calibration import stock_bars

CFG = RegimeConfig()


@pytest.mark.parametrize(
    ("trend_z", "ratio", "expected"),
    [
        (1.0, 1.0, Regime.CALM_UPTREND),
        (1.0, 1.3, Regime.VOLATILE_UPTREND),
        (1.0, 3.0, Regime.VOLATILE_UPTREND),  # a crisis needs a downtrend
        (0.0, 1.0, Regime.CALM_RANGE),
        (0.0, 1.3, Regime.VOLATILE_RANGE),
        (-1.0, 1.0, Regime.CALM_DOWNTREND),
        (-1.0, 1.3, Regime.VOLATILE_DOWNTREND),
        (-1.0, 2.0, Regime.CRISIS),
    ],
)
def test_classify_when_trend_and_vol_ratio_given_then_documented_label(
    trend_z: float, ratio: float, expected: Regime
) -> None:
    # Arrange / Act / Assert
    assert classify(trend_z, ratio, CFG) is expected


def test_config_when_crisis_below_volatile_ratio_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="crisis_ratio"):
        RegimeConfig(volatile_ratio=2.0, crisis_ratio=1.5)


def test_update_when_warming_up_then_unknown_until_min_obs_and_full_window() -> None:
    # Arrange
    cfg = RegimeConfig(min_obs=10, trend_window=20)
    model = RegimeModel(cfg)
    closes = [100.0 * 1.01**i * (1.003 if i % 2 else 0.997) for i in range(40)]
    # Act
    labels = [model.update(c).regime for c in closes]
    # Assert: the SMA needs 20 closes (index 19), the vol 10 returns
    assert all(label is Regime.UNKNOWN for label in labels[:19])
    assert all(label is not Regime.UNKNOWN for label in labels[19:])
    assert labels[-1] in (Regime.CALM_UPTREND, Regime.VOLATILE_UPTREND)


def test_update_when_values_computed_then_equal_brute_force_definition() -> None:
    # Arrange: real closes of one symbol
    closes = [b.close for b in stock_bars(date(2007, 1, 1), date(2009, 12, 31), symbols=["JPM"])]
    cfg = RegimeConfig()
    model = RegimeModel(cfg)
    # Act
    readings = [model.update(c) for c in closes]
    # Assert: recompute the last reading from the definition in the module docstring
    rets = [math.log(b / a) for a, b in itertools.pairwise(closes)]

    def ewma_vol(halflife: float) -> float:
        lam = 0.5 ** (1 / halflife)
        weights = [lam**k for k in range(len(rets))][::-1]
        return math.sqrt(sum(w * r * r for w, r in zip(weights, rets, strict=True)) / sum(weights))

    vol_s, vol_l = ewma_vol(cfg.vol_halflife), ewma_vol(cfg.vol_long_halflife)
    sma = sum(closes[-cfg.trend_window :]) / cfg.trend_window
    trend = math.log(closes[-1] / sma) / (vol_l * math.sqrt(cfg.trend_window / 2))
    last = readings[-1]
    assert last.vol_daily == pytest.approx(vol_s, rel=1e-9)
    assert last.vol_ratio == pytest.approx(vol_s / vol_l, rel=1e-9)
    assert last.trend_z == pytest.approx(trend, rel=1e-9)
    assert last.regime is classify(trend, vol_s / vol_l, cfg)


def test_update_when_real_2008_then_crisis_seen_and_2005_calm() -> None:
    # Arrange: JPM through the financial crisis
    bars = stock_bars(date(2004, 1, 1), date(2009, 6, 30), symbols=["JPM"])
    model = RegimeModel(CFG)
    # Act
    labels = {b.ts_event.date(): model.update(b.close).regime for b in bars}
    # Assert
    autumn_2008 = [r for d, r in labels.items() if date(2008, 9, 15) <= d <= date(2008, 12, 31)]
    year_2005 = [r for d, r in labels.items() if d.year == 2005]
    assert Regime.CRISIS in autumn_2008
    assert sum(r.value.startswith("calm") for r in year_2005) > 0.5 * len(year_2005)


def test_update_when_price_not_positive_then_value_error() -> None:
    # Arrange
    model = RegimeModel(CFG)
    # Act / Assert
    with pytest.raises(ValueError, match="price"):
        model.update(0.0)
    with pytest.raises(ValueError, match="price"):
        model.update(math.nan)


async def test_observe_step_when_bars_given_then_labels_written_for_symbols_and_market() -> None:
    # Arrange
    store = MemoryFeatureStore(namespace="t")
    service = RegimeService(RegimeConfig(min_obs=5, trend_window=10), store)
    await service.start()
    bars = stock_bars(date(2000, 1, 1), date(2000, 3, 31), symbols=["AAPL", "KO"])
    steps = sorted({b.ts_event for b in bars})
    # Act
    for ts in steps:
        await service.observe_step(ts, [b for b in bars if b.ts_event == ts])
    rows = await store.get_many(REGIME, ["AAPL", "KO", MARKET_ENTITY])
    # Assert: every entity carries the last step's label, stamped with that step
    for entity in ("AAPL", "KO", MARKET_ENTITY):
        assert rows[entity]["label"].ts == steps[-1]
        assert rows[entity]["label"].value == service.latest[entity].regime.value
        assert rows[entity]["label"].value != Regime.UNKNOWN.value
    assert service.stats.steps == len(steps)


async def test_observe_step_when_close_invalid_then_skipped_and_counted() -> None:
    # Arrange: a bar that bypassed validation (as a faulty custom source could send)
    store = MemoryFeatureStore(namespace="t")
    service = RegimeService(CFG, store)
    await service.start()
    ts = datetime(2000, 1, 3, 21, tzinfo=UTC)
    bad = Bar.model_construct(**{**make_bar("AAPL", ts, 10.0).model_dump(), "close": -1.0})
    # Act
    await service.observe_step(ts, [bad, make_bar("KO", ts, 40.0)])
    # Assert
    assert service.stats.skipped_bars == 1
    assert "AAPL" not in service.latest
    assert "KO" in service.latest


async def test_reader_when_label_newer_than_asked_then_unknown() -> None:
    # Arrange
    store = MemoryFeatureStore(namespace="t")
    await store.register(REGIME)
    ts = datetime(2000, 1, 3, 21, tzinfo=UTC)
    await store.put(
        REGIME,
        "AAPL",
        {"label": "crisis", "vol_daily": 0.01, "vol_ratio": 2.5, "trend_z": -2.0},
        ts=ts,
    )
    reader = RegimeReader(store)
    # Act / Assert: the label exists from ts on, never before
    assert await reader.get("AAPL", ts - timedelta(days=1)) is Regime.UNKNOWN
    assert await reader.get("AAPL", ts) is Regime.CRISIS
    assert await reader.get("MSFT", ts) is Regime.UNKNOWN


async def test_reader_when_many_symbols_in_a_step_then_one_batched_read_per_step() -> None:
    # Arrange
    store = MemoryFeatureStore(namespace="t")
    service = RegimeService(RegimeConfig(min_obs=2, trend_window=2), store)
    await service.start()
    symbols = ["AAPL", "KO", "XOM", "JPM"]
    reader = RegimeReader(store)
    t0 = datetime(2000, 1, 3, 21, tzinfo=UTC)
    steps = [t0 + timedelta(days=i) for i in range(10)]
    for i, ts in enumerate(steps):
        await service.observe_step(
            ts, [make_bar(s, ts, 100.0 + i + k) for k, s in enumerate(symbols)]
        )
    # Act: ask about every symbol at each of two steps, after the reader knows them all
    for s in symbols:
        await reader.get(s, steps[-2])
    before = store.stats.reads
    for ts in steps[-2:]:
        for s in symbols:
            await reader.get(s, ts)
    # Assert: one read for the already-cached step, one for the new step
    assert store.stats.reads - before == 1


class _RegimeEcho(Agent[NoParams]):
    """Emits one signal per bar whose `regime` is what `self.regime()` returned."""

    async def on_bar(self, bar: Bar) -> None:
        regime = await self.regime(bar.symbol)
        market = await self.regime()
        self.signal(
            bar.symbol,
            mu=0.0,
            sigma=0.01,
            horizon="1d",
            confidence=0.5,
            regime=regime,
            features={"market_known": float(market is not Regime.UNKNOWN)},
        )


async def test_agent_regime_when_step_published_then_sees_the_same_steps_label() -> None:
    # Arrange: a steady uptrend with a wiggle, long enough for the model to warm up
    closes = [100.0 * 1.002**i * (1.004 if i % 2 else 0.996) for i in range(300)]
    bars = daily_bars("AAPL", closes)
    # Act
    async with AgentHarness(_RegimeEcho, name="echo") as harness:
        signals = await harness.feed(bars)
        expected = harness.regimes.latest["AAPL"].regime
    # Assert: the agent read the label of the very step it handled
    assert signals[-1].regime is expected
    assert signals[-1].regime is not Regime.UNKNOWN
    assert signals[0].regime is Regime.UNKNOWN
    assert signals[-1].features == {"market_known": 1.0}


async def test_reader_when_two_agents_read_concurrently_then_both_see_the_stored_labels() -> None:
    # Arrange: a backend whose reads really wait (like Redis), so reads interleave
    import asyncio

    class SlowStore(MemoryFeatureStore):
        async def _read(self, fs, entities, names):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0)
            return await super()._read(fs, entities, names)

    store = SlowStore(namespace="t")
    await store.register(REGIME)
    ts = datetime(2000, 1, 3, 21, tzinfo=UTC)
    for symbol, label in (("X", "calm_range"), ("Y", "crisis")):
        row = {"label": label, "vol_daily": 0.01, "vol_ratio": 1.0, "trend_z": 0.0}
        await store.put(REGIME, symbol, row, ts=ts)
    reader = RegimeReader(store)
    # Act: two consumers of the shared reader ask about different symbols at once
    x, y = await asyncio.gather(reader.get("X", ts), reader.get("Y", ts))
    # Assert: neither read's result is spoiled by the other, and the cache agrees
    assert (x, y) == (Regime.CALM_RANGE, Regime.CRISIS)
    assert reader.peek("X", ts) is Regime.CALM_RANGE
    assert reader.peek("Y", ts) is Regime.CRISIS


async def test_observe_step_when_symbol_returns_after_gap_then_move_not_a_daily_return() -> None:
    # Arrange: A and B trade every day at flat prices; C trades on day 0, then again on day 5
    # at twice the price (a gap in its data, not a one-day doubling)
    store = MemoryFeatureStore(namespace="t")
    service = RegimeService(RegimeConfig(min_obs=2, trend_window=2), store)
    await service.start()
    t0 = datetime(2000, 1, 3, 21, tzinfo=UTC)
    for day in range(6):
        ts = t0 + timedelta(days=day)
        bars = [make_bar("A", ts, 10.0), make_bar("B", ts, 20.0)]
        if day == 0:
            bars.append(make_bar("C", ts, 50.0))
        if day == 5:
            bars.append(make_bar("C", ts, 100.0))
        # Act
        await service.observe_step(ts, bars)
    # Assert: the market saw no move at all, and C's volatility has no return yet
    assert service.latest[MARKET_ENTITY].vol_daily == 0.0
    assert math.isnan(service.latest["C"].vol_daily)


async def test_observe_step_when_a_step_has_no_bars_then_no_gap_for_anyone() -> None:
    # Arrange: a macro-only date (e.g. Good Friday: bonds trade, stocks do not) between two
    # stock days must not make the next day's moves "after a gap"
    store = MemoryFeatureStore(namespace="t")
    service = RegimeService(RegimeConfig(min_obs=2, trend_window=2), store)
    await service.start()
    t0 = datetime(2000, 1, 3, 21, tzinfo=UTC)
    await service.observe_step(t0, [make_bar("A", t0, 10.0)])
    await service.observe_step(t0 + timedelta(days=1), [])
    # Act
    await service.observe_step(
        t0 + timedelta(days=2), [make_bar("A", t0 + timedelta(days=2), 11.0)]
    )
    # Assert: the 10 % move is A's (and the market's) return
    assert service.latest["A"].vol_daily == pytest.approx(math.log(1.1))
    assert service.latest[MARKET_ENTITY].vol_daily == pytest.approx(math.log(1.1))
