"""BollingerReversionAgent on real daily closes (20 US large caps), through the real harness."""

from __future__ import annotations

import math
import random
import statistics
from datetime import date, datetime

import pytest
from pydantic import ValidationError

from contracts import Bar, Horizon, Regime
from engine.testing import AgentHarness, daily_bars
from plugins.bollinger import (
    BOLLINGER_FEATURES,
    BollingerReversionAgent,
    BollingerReversionParams,
    RollingBand,
)
from tests.calibration import stock_bars

# These tests study the calibrated output itself, so they ask for every signal, including
# the zero-confidence ones the agent leaves out by default.
ALL_SIGNALS = {"emit_zero_confidence": True}


def _steps(bars: list[Bar]) -> list[list[Bar]]:
    by_ts: dict[datetime, list[Bar]] = {}
    for bar in bars:
        by_ts.setdefault(bar.ts_event, []).append(bar)
    return [by_ts[ts] for ts in sorted(by_ts)]


def _brute_z(closes: list[float], window: int = 20) -> float | None:
    """(close - SMA) / population std of the last `window` closes; None for a flat window."""
    last = closes[-window:]
    std = statistics.pstdev(last)
    if std == 0.0:
        return None
    return (closes[-1] - statistics.fmean(last)) / std


async def test_feed_when_warming_up_then_silent_until_history_then_valid_signals() -> None:
    # Arrange: 5 symbols; vol needs 20 returns (the band 20 closes), the first 1w sample 5 bars
    # more, then min_samples / 5 steps
    symbols = ["AAPL", "KO", "XOM", "JPM", "PG"]
    bars = stock_bars(date(1995, 1, 1), date(1995, 12, 31), symbols=symbols)
    steps = sorted({b.ts_event for b in bars})
    # Act
    async with AgentHarness(
        BollingerReversionAgent, name="bollinger", params={**ALL_SIGNALS, "min_samples": 100}
    ) as harness:
        signals = await harness.feed(bars)
    # Assert
    assert signals
    first_step = steps.index(signals[0].ts_event)
    assert first_step >= 20 + 5 + 100 // len(symbols) - 1
    for s in signals:
        assert s.horizon is Horizon.W1
        assert s.sigma > 0.0
        assert math.isfinite(s.sigma)
        assert math.isfinite(s.mu)
        assert 0.0 <= s.confidence <= 1.0
        assert isinstance(s.regime, Regime)
        assert s.features is not None
        assert abs(s.features["score"]) <= math.sqrt(19.0)
    assert {s.symbol for s in signals if s.ts_event == steps[-1]} == set(symbols)
    assert harness.stats.failed == 0


async def test_feed_when_real_data_then_published_score_equals_brute_force() -> None:
    # Arrange: step by step, so every published score can be read back; RRC's stale 1990 quote
    # (flat windows: no band) is in the window
    symbols = ["AAPL", "KO", "RRC"]
    steps = _steps(stock_bars(date(1990, 1, 1), date(1990, 9, 30), symbols=symbols))
    closes: dict[str, list[float]] = {s: [] for s in symbols}
    checked = 0
    async with AgentHarness(BollingerReversionAgent, name="bollinger", params=ALL_SIGNALS) as h:
        for step in steps:
            # Act
            await h.feed(step)
            rows = await h.features.get_many(BOLLINGER_FEATURES, symbols)
            # Assert: nothing before 20 returns of vol or in a flat window, then -z at this bar
            for bar in step:
                closes[bar.symbol].append(bar.close)
                history = closes[bar.symbol]
                z = _brute_z(history)
                row = rows[bar.symbol]
                if len(history) <= 20 or z is None:
                    assert "score" not in row or row["score"].ts < bar.ts_event
                    continue
                assert row["score"].ts == bar.ts_event
                assert row["score"].value == pytest.approx(-z, rel=1e-9, abs=1e-9)
                checked += 1
    assert checked >= 150 * 2


async def test_feed_when_close_jumps_out_of_a_flat_band_then_score_at_its_bound() -> None:
    # Arrange: 30 equal closes (no band: nothing to say), then one jump up
    *flat_bars, jump = daily_bars("AAPL", [100.0] * 30 + [103.0])
    # Act
    async with AgentHarness(
        BollingerReversionAgent, name="bollinger", params=ALL_SIGNALS
    ) as harness:
        await harness.feed(flat_bars)
        flat = await harness.features.get(BOLLINGER_FEATURES, "AAPL")
        await harness.feed([jump])
        jumped = await harness.features.get(BOLLINGER_FEATURES, "AAPL")
    # Assert: one outlier among N closes sits exactly sqrt(N - 1) stds above their mean, and
    # reversion reads it as negative
    assert "score" not in flat
    assert jumped["score"].value == pytest.approx(-math.sqrt(19.0), rel=1e-12)


def test_band_when_price_level_is_huge_then_matches_two_pass_statistics() -> None:
    # Arrange: closes near 1e7 moving by cents - a naive sum of squares would lose every digit
    rng = random.Random(5)
    values = [1e7 + rng.uniform(-0.05, 0.05) for _ in range(1000)]
    band = RollingBand(20)
    # Act / Assert
    for i, value in enumerate(values):
        band.push(value)
        window = values[max(0, i - 19) : i + 1]
        assert band.mean == pytest.approx(statistics.fmean(window), rel=1e-15)
        assert band.std == pytest.approx(statistics.pstdev(window), rel=1e-6)


def test_params_when_window_below_two_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="window"):
        BollingerReversionParams(window=1)
