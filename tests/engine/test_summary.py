"""Run-summary figures against values computed by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from engine.summary import baseline_from_prices, performance

T0 = datetime(2020, 1, 1, 21, tzinfo=UTC)


def test_performance_when_equity_doubles_over_two_years_then_cagr_and_drawdown() -> None:
    # Arrange: 100 -> 120 -> 90 -> 200 over exactly two calendar years
    equity = [120.0, 90.0, 200.0]
    last = T0 + timedelta(days=int(2 * 365.25))
    # Act
    p = performance(equity, T0, last, 100.0)
    # Assert
    assert p.total_return == pytest.approx(1.0)
    assert p.annualized_return == pytest.approx(math.sqrt(2.0) - 1.0, rel=1e-3)
    assert p.max_drawdown == pytest.approx(0.25)  # 120 -> 90


def test_performance_when_daily_steps_then_vol_annualised_with_observed_steps_per_year() -> None:
    # Arrange: alternating +1 % / -1 % for 504 steps over two years
    equity, value = [], 100.0
    for i in range(504):
        value *= 1.01 if i % 2 == 0 else 0.99
        equity.append(value)
    last = T0 + timedelta(days=int(2 * 365.25))
    returns = [0.01 if i % 2 == 0 else -0.01 for i in range(504)]
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    # Act
    p = performance(equity, T0, last, 100.0)
    # Assert
    assert p.volatility == pytest.approx(std * math.sqrt(504 / 2.0), rel=1e-3)


def test_performance_when_no_steps_then_all_zero() -> None:
    # Arrange / Act
    p = performance([], None, None, 500.0)
    # Assert
    assert (p.final_equity, p.total_return, p.sharpe, p.max_drawdown) == (500.0, 0.0, 0.0, 0.0)


def test_baseline_when_prices_cover_period_then_buy_and_hold_return() -> None:
    # Arrange
    prices = {T0 + timedelta(days=i): 100.0 + i for i in range(400)}
    first, last = T0 + timedelta(days=10), T0 + timedelta(days=375)
    # Act
    b = baseline_from_prices(prices, first, last)
    # Assert
    assert b is not None
    assert b["total_return"] == pytest.approx(475.0 / 110.0 - 1.0)
