"""RsiReversionAgent on real daily closes (20 US large caps), through the real harness."""

from __future__ import annotations

import itertools
import math
from datetime import date, datetime

import pytest
from pydantic import ValidationError

from contracts import Bar, Horizon, Regime
from engine.testing import AgentHarness, daily_bars
from plugins.rsi import RSI_FEATURES, RsiReversionAgent, RsiReversionParams
from tests.calibration import stock_bars

# These tests study the calibrated output itself, so they ask for every signal, including
# the zero-confidence ones the agent leaves out by default.
ALL_SIGNALS = {"emit_zero_confidence": True}


def _steps(bars: list[Bar]) -> list[list[Bar]]:
    by_ts: dict[datetime, list[Bar]] = {}
    for bar in bars:
        by_ts.setdefault(bar.ts_event, []).append(bar)
    return [by_ts[ts] for ts in sorted(by_ts)]


def _brute_rsi(closes: list[float], n: int = 14) -> float | None:
    """Wilder's RSI in closed form: the seed (simple mean of the first n gains / losses) decayed
    by (1 - 1/n) per later change, plus each later change weighted 1/n (1 - 1/n)^age."""
    changes = [b - a for a, b in itertools.pairwise(closes)]
    if len(changes) < n:
        return None
    later = changes[n:]
    decay = 1.0 - 1.0 / n

    def average(part: list[float]) -> float:
        seed = sum(part[:n]) / n
        tail = sum(v * decay ** (len(later) - 1 - i) for i, v in enumerate(part[n:])) / n
        return seed * decay ** len(later) + tail

    gain = average([max(d, 0.0) for d in changes])
    loss = average([max(-d, 0.0) for d in changes])
    if gain + loss == 0.0:
        return None
    return 100.0 * gain / (gain + loss)


async def test_feed_when_warming_up_then_silent_until_history_then_valid_signals() -> None:
    # Arrange: 5 symbols; vol needs 20 returns (the RSI 14), the first 1w sample 5 bars more,
    # then min_samples / 5 steps
    symbols = ["AAPL", "KO", "XOM", "JPM", "PG"]
    bars = stock_bars(date(1995, 1, 1), date(1995, 12, 31), symbols=symbols)
    steps = sorted({b.ts_event for b in bars})
    # Act
    async with AgentHarness(
        RsiReversionAgent, name="rsi", params={**ALL_SIGNALS, "min_samples": 100}
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
        assert -1.0 <= s.features["score"] <= 1.0
    assert {s.symbol for s in signals if s.ts_event == steps[-1]} == set(symbols)
    assert harness.stats.failed == 0


async def test_feed_when_real_data_then_published_score_equals_brute_force() -> None:
    # Arrange: step by step, so every published score can be read back; RRC's stale 1990 quote
    # (weeks without a change) is in the window
    symbols = ["AAPL", "KO", "RRC"]
    steps = _steps(stock_bars(date(1990, 1, 1), date(1990, 9, 30), symbols=symbols))
    closes: dict[str, list[float]] = {s: [] for s in symbols}
    checked = 0
    async with AgentHarness(RsiReversionAgent, name="rsi", params=ALL_SIGNALS) as h:
        for step in steps:
            # Act
            await h.feed(step)
            rows = await h.features.get_many(RSI_FEATURES, symbols)
            # Assert: nothing before 20 returns of vol, then (50 - RSI) / 50 at this bar
            for bar in step:
                closes[bar.symbol].append(bar.close)
                history = closes[bar.symbol]
                rsi = _brute_rsi(history)
                row = rows[bar.symbol]
                if len(history) <= 20 or rsi is None:
                    assert "score" not in row or row["score"].ts < bar.ts_event
                    continue
                assert row["score"].ts == bar.ts_event
                assert row["score"].value == pytest.approx((50.0 - rsi) / 50.0, abs=1e-9)
                checked += 1
    assert checked >= 150 * 2


@pytest.mark.parametrize(("step", "expected"), [(0.5, -1.0), (-0.5, 1.0)])
async def test_feed_when_prices_only_rise_or_fall_then_rsi_at_its_extreme(
    step: float, expected: float
) -> None:
    # Arrange: 40 closes moving one way only (RSI 100: overbought; 0: oversold)
    closes = [100.0 + step * i for i in range(40)]
    # Act
    async with AgentHarness(RsiReversionAgent, name="rsi", params=ALL_SIGNALS) as harness:
        await harness.feed(daily_bars("AAPL", closes))
        row = await harness.features.get(RSI_FEATURES, "AAPL")
    # Assert: reversion reads an overbought market as negative, an oversold one as positive
    assert row["score"].value == expected


async def test_feed_when_price_never_changes_then_nothing_published() -> None:
    # Arrange: a stale quote: the RSI is 0 / 0
    closes = [100.0] * 40
    # Act
    async with AgentHarness(RsiReversionAgent, name="rsi", params=ALL_SIGNALS) as harness:
        signals = await harness.feed(daily_bars("AAPL", closes))
        row = await harness.features.get(RSI_FEATURES, "AAPL")
    # Assert
    assert signals == []
    assert "score" not in row


def test_params_when_period_below_two_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="period"):
        RsiReversionParams(period=1)
