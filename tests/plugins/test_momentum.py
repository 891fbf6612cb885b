"""TimeSeriesMomentumAgent on real daily closes (20 US large caps), through the real harness."""

from __future__ import annotations

import random
from datetime import date

import pytest
from pydantic import ValidationError

from contracts import Horizon, Signal
from engine.testing import AgentHarness
from plugins.momentum import TimeSeriesMomentumAgent, TimeSeriesMomentumParams
from tests.calibration import band_coverage, bar_ts, stock_bars
from tests.kit.signal_checks import assert_valid_signals, assert_warm_up

# These tests study the calibrated output itself, so they ask for every signal, including
# the zero-confidence ones the agents leave out by default.
ALL_SIGNALS = {"emit_zero_confidence": True}


def _fingerprint(s: Signal) -> tuple[object, ...]:
    return (s.ts_event, s.symbol, s.mu, s.sigma, s.confidence, s.regime, s.features)


async def test_feed_when_warming_up_then_silent_until_history_then_valid_signals() -> None:
    # Arrange: 3 years of 5 symbols; momentum needs 253 closes, the first sample 21 bars more
    symbols = ["AAPL", "KO", "XOM", "JPM", "PG"]
    bars = stock_bars(date(1995, 1, 1), date(1997, 12, 31), symbols=symbols)
    # Act
    async with AgentHarness(
        TimeSeriesMomentumAgent, name="momentum", params={**ALL_SIGNALS, "min_samples": 200}
    ) as harness:
        signals = await harness.feed(bars)
    # Assert: once calibrated, every bar of every symbol gets a signal
    assert_warm_up(signals, bars, symbols, min_first_step=252 + 21 + 200 // len(symbols) - 1)
    assert_valid_signals(signals, Horizon.M1)
    assert harness.stats.failed == 0


async def test_feed_when_prices_after_t_altered_then_signals_up_to_t_identical() -> None:
    # Arrange: 1995-1999, all symbols; the altered run sees different closes after T
    start, end, cut = date(1995, 1, 1), date(1999, 12, 31), date(1998, 6, 30)
    rng = random.Random(42)
    original = stock_bars(start, end)
    altered = stock_bars(
        start,
        end,
        alter=lambda b: b.close * rng.uniform(0.7, 1.4) if b.ts_event > bar_ts(cut) else b.close,
    )
    # Act
    async with AgentHarness(
        TimeSeriesMomentumAgent, name="momentum", params=ALL_SIGNALS
    ) as harness:
        base = await harness.feed(original)
    async with AgentHarness(
        TimeSeriesMomentumAgent, name="momentum", params=ALL_SIGNALS
    ) as harness:
        other = await harness.feed(altered)
    # Assert
    before = [_fingerprint(s) for s in base if s.ts_event <= bar_ts(cut)]
    assert len(before) > 1000
    assert before == [_fingerprint(s) for s in other if s.ts_event <= bar_ts(cut)]
    after_base = [_fingerprint(s) for s in base if s.ts_event > bar_ts(cut)]
    assert after_base != [_fingerprint(s) for s in other if s.ts_event > bar_ts(cut)]


async def test_feed_when_real_2000_2010_then_one_sigma_band_coverage_is_honest() -> None:
    # Arrange: warm up from 1998, score every signal of 2000-2010 against its realized return
    bars = stock_bars(date(1998, 1, 1), date(2010, 12, 31))
    # Act
    async with AgentHarness(
        TimeSeriesMomentumAgent, name="momentum", params=ALL_SIGNALS
    ) as harness:
        signals = await harness.feed(bars)
    scored = [s for s in signals if s.ts_event >= bar_ts(date(2000, 1, 1))]
    coverage, n = band_coverage(scored, bars, 21)
    # Assert: about 68 % for a normal forecast; fat tails push an RMS sigma's band higher
    print(f"\nmomentum 1m: +-1 sigma coverage 2000-2010 = {coverage:.3f} over {n} signals")
    assert n > 50_000
    assert 0.55 <= coverage <= 0.85


def test_params_when_skip_not_below_lookback_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="skip"):
        TimeSeriesMomentumParams(lookback=21, skip=21)


async def test_feed_when_default_params_then_only_signals_with_positive_confidence() -> None:
    # Arrange
    bars = stock_bars(date(1995, 1, 1), date(1998, 12, 31), symbols=["AAPL", "KO", "XOM", "JPM"])
    # Act
    async with AgentHarness(
        TimeSeriesMomentumAgent, name="momentum", params={"min_samples": 200}
    ) as harness:
        default = await harness.feed(bars)
    async with AgentHarness(
        TimeSeriesMomentumAgent, name="momentum", params={**ALL_SIGNALS, "min_samples": 200}
    ) as harness:
        everything = await harness.feed(bars)
    # Assert: the default stream is exactly the positive-confidence part of the full one
    positive = [s for s in everything if s.confidence > 0.0]
    assert len(positive) < len(everything), "the period must contain zero-confidence signals"
    assert [_fingerprint(s) for s in default] == [_fingerprint(s) for s in positive]


async def test_feed_when_momentum_computed_then_indicator_written_to_the_feature_store() -> None:
    # Arrange
    from plugins.momentum import TSMOM_FEATURES

    symbols = ["AAPL", "KO"]
    bars = stock_bars(date(1995, 1, 1), date(1996, 12, 31), symbols=symbols)
    # Act
    async with AgentHarness(
        TimeSeriesMomentumAgent, name="momentum", params={**ALL_SIGNALS, "min_samples": 50}
    ) as harness:
        signals = await harness.feed(bars)
        rows = await harness.features.get_many(TSMOM_FEATURES, symbols)
        sets = await harness.features.list_sets()
    # Assert: the last score written is the one the last signal carried, with its event time
    last = max((s for s in signals if s.symbol == "AAPL"), key=lambda s: s.ts_event)
    assert last.features is not None
    assert rows["AAPL"]["score"].value == last.features["score"]
    assert rows["AAPL"]["vol_daily"].value == last.features["vol_daily"]
    assert rows["AAPL"]["score"].ts == max(b.ts_event for b in bars if b.symbol == "AAPL")
    assert ("tsmom", 1, 2) in [(i.name, i.version, i.entities) for i in sets]
