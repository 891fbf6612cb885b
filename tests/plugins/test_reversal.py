"""ShortTermReversalAgent on real daily closes (20 US large caps), through the real harness."""

from __future__ import annotations

import random
from datetime import date

import pytest
from pydantic import ValidationError

from contracts import Horizon, Signal
from engine.testing import AgentHarness
from plugins.reversal import ShortTermReversalAgent, ShortTermReversalParams
from tests.calibration import band_coverage, bar_ts, stock_bars
from tests.kit.signal_checks import assert_valid_signals, assert_warm_up

# These tests study the calibrated output itself, so they ask for every signal, including
# the zero-confidence ones the agents leave out by default.
ALL_SIGNALS = {"emit_zero_confidence": True}


def _fingerprint(s: Signal) -> tuple[object, ...]:
    return (s.ts_event, s.symbol, s.mu, s.sigma, s.confidence, s.regime, s.features)


async def test_feed_when_warming_up_then_silent_until_history_then_valid_signals() -> None:
    # Arrange: 5 symbols; vol needs 20 returns, the first 1w sample 5 bars more
    symbols = ["AAPL", "KO", "XOM", "JPM", "PG"]
    bars = stock_bars(date(1995, 1, 1), date(1995, 12, 31), symbols=symbols)
    # Act
    async with AgentHarness(
        ShortTermReversalAgent, name="reversal", params={**ALL_SIGNALS, "min_samples": 100}
    ) as harness:
        signals = await harness.feed(bars)
    # Assert
    assert_warm_up(signals, bars, symbols, min_first_step=20 + 5 + 100 // len(symbols) - 1)
    assert_valid_signals(signals, Horizon.W1)
    assert harness.stats.failed == 0


async def test_feed_when_prices_after_t_altered_then_signals_up_to_t_identical() -> None:
    # Arrange: 1995-1999, all symbols; the altered run sees different closes after T
    start, end, cut = date(1995, 1, 1), date(1999, 12, 31), date(1997, 3, 14)
    rng = random.Random(7)
    original = stock_bars(start, end)
    altered = stock_bars(
        start,
        end,
        alter=lambda b: b.close * rng.uniform(0.7, 1.4) if b.ts_event > bar_ts(cut) else b.close,
    )
    # Act
    async with AgentHarness(ShortTermReversalAgent, name="reversal", params=ALL_SIGNALS) as harness:
        base = await harness.feed(original)
    async with AgentHarness(ShortTermReversalAgent, name="reversal", params=ALL_SIGNALS) as harness:
        other = await harness.feed(altered)
    # Assert
    before = [_fingerprint(s) for s in base if s.ts_event <= bar_ts(cut)]
    assert len(before) > 1000
    assert before == [_fingerprint(s) for s in other if s.ts_event <= bar_ts(cut)]
    after_base = [_fingerprint(s) for s in base if s.ts_event > bar_ts(cut)]
    assert after_base != [_fingerprint(s) for s in other if s.ts_event > bar_ts(cut)]


async def test_feed_when_real_2000_2010_then_one_sigma_band_coverage_is_honest() -> None:
    # Arrange: warm up from 1999, score every signal of 2000-2010 against its realized return
    bars = stock_bars(date(1999, 1, 1), date(2010, 12, 31))
    # Act
    async with AgentHarness(ShortTermReversalAgent, name="reversal", params=ALL_SIGNALS) as harness:
        signals = await harness.feed(bars)
    scored = [s for s in signals if s.ts_event >= bar_ts(date(2000, 1, 1))]
    coverage, n = band_coverage(scored, bars, 5)
    # Assert: about 68 % for a normal forecast; fat tails push an RMS sigma's band higher
    print(f"\nreversal 1w: +-1 sigma coverage 2000-2010 = {coverage:.3f} over {n} signals")
    assert n > 50_000
    assert 0.55 <= coverage <= 0.85


def test_params_when_lookback_zero_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="lookback"):
        ShortTermReversalParams(lookback=0)
