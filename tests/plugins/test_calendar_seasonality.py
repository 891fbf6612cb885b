"""CalendarSeasonalityAgent on real daily closes (20 US large caps), through the real harness."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from contracts import Horizon
from engine.testing import AgentHarness, make_bar
from plugins.calendar_seasonality import (
    CALENDAR_FEATURES,
    CalendarSeasonalityAgent,
    CalendarSeasonalityParams,
    calendar_features,
)
from tests.calibration import stock_bars
from tests.kit.signal_checks import assert_valid_signals, assert_warm_up, steps_of

# These tests study the calibrated output itself, so they ask for every signal, including
# the zero-confidence ones the agents leave out by default.
ALL_SIGNALS = {"emit_zero_confidence": True}


def _reference(day: date) -> tuple[float, float]:
    """(turn-of-month, Monday) of the weekday after `day`, from the list of its month's
    weekdays: the last one and the first three are the turn-of-month window."""
    d = day + timedelta(days=1)
    while d.weekday() >= 5:
        d += timedelta(days=1)
    month = [
        date(d.year, d.month, 1) + timedelta(days=k)
        for k in range(31)
        if (date(d.year, d.month, 1) + timedelta(days=k)).month == d.month
    ]
    weekdays = [m for m in month if m.weekday() < 5]
    tom = d in weekdays[:3] or d in weekdays[-1:]
    return (float(tom), float(d.weekday() == 0))


async def test_feed_when_warming_up_then_silent_until_vol_and_samples_then_valid_signals() -> None:
    # Arrange: 5 symbols; vol needs 20 returns, the first 1d sample 1 bar more, then
    # min_samples / 5 steps
    symbols = ["AAPL", "KO", "XOM", "JPM", "PG"]
    bars = stock_bars(date(1995, 1, 1), date(1995, 12, 31), symbols=symbols)
    # Act
    async with AgentHarness(
        CalendarSeasonalityAgent, name="calendar", params={**ALL_SIGNALS, "min_samples": 100}
    ) as harness:
        signals = await harness.feed(bars)
    # Assert
    assert_warm_up(signals, bars, symbols, min_first_step=20 + 1 + 100 // len(symbols) - 1)
    assert_valid_signals(signals, Horizon.D1)
    assert harness.stats.failed == 0


async def test_feed_when_real_data_then_published_features_equal_brute_force() -> None:
    # Arrange: two years of two symbols, fed one step at a time, the store read after each
    symbols = ["AAPL", "KO"]
    steps = steps_of(stock_bars(date(1995, 1, 1), date(1996, 12, 31), symbols=symbols))
    checked = 0
    async with AgentHarness(CalendarSeasonalityAgent, name="calendar") as harness:
        for step in steps:
            ts = step[0].ts_event
            # Act
            await harness.feed(step)
            rows = await harness.features.get_many(CALENDAR_FEATURES, symbols)
            # Assert: from the 21st bar on (vol trusted) the row is this bar's
            row = rows["AAPL"]
            if "turn_of_month" not in row or row["turn_of_month"].ts != ts:
                continue
            tom, monday = _reference(ts.date())
            assert row["turn_of_month"].value == tom
            assert row["monday"].value == monday
            assert rows["KO"]["turn_of_month"].value == tom
            checked += 1
    assert checked >= len(steps) - 21


def test_calendar_features_when_dates_known_then_turn_of_month_and_monday() -> None:
    # Arrange: Thu 2021-07-29 -> Fri 07-30 (last weekday of July), Fri 07-30 -> Mon 08-02
    # (first weekday of August), Tue 08-03 -> Wed 08-04 (third), Wed 08-04 -> Thu 08-05
    # (fourth), Fri 2021-10-29 -> Mon 11-01; Fri 2020-05-29 -> Mon 06-01; Thu 2020-12-31 ->
    # Fri 2021-01-01 (a holiday, still the first weekday)
    cases = {
        date(2021, 7, 29): (1.0, 0.0),
        date(2021, 7, 30): (1.0, 1.0),
        date(2021, 8, 3): (1.0, 0.0),
        date(2021, 8, 4): (0.0, 0.0),
        date(2021, 8, 6): (0.0, 1.0),
        date(2021, 10, 29): (1.0, 1.0),
        date(2020, 12, 31): (1.0, 0.0),
        date(2021, 8, 28): (0.0, 1.0),  # a Saturday: the next weekday is Monday 08-30
    }
    # Act
    got = {day: calendar_features(day, 1, 3) for day in cases}
    # Assert
    assert got == cases
    assert calendar_features(date(2021, 7, 28), 2, 3) == (1.0, 0.0)  # 07-29: second to last


async def test_feed_when_turn_of_month_days_rise_then_higher_mu_before_them() -> None:
    # Arrange: three synthetic symbols on weekdays of 2019-2020 that rise 1 % on the
    # turn-of-month days and wiggle +-0.5 % otherwise
    t0 = date(2019, 1, 1)
    days = [t0 + timedelta(days=k) for k in range(730) if (t0 + timedelta(days=k)).weekday() < 5]
    bars = []
    closes = {"A": 100.0, "B": 50.0, "C": 20.0}
    for i, day in enumerate(days):
        tom_today = _reference(days[i - 1])[0] if i else 0.0
        for symbol in closes:
            closes[symbol] *= 1.01 if tom_today else (1.005 if i % 2 else 0.995)
            ts = datetime(day.year, day.month, day.day, 21, tzinfo=UTC)
            bars.append(make_bar(symbol, ts, closes[symbol]))
    # Act
    async with AgentHarness(
        CalendarSeasonalityAgent,
        name="calendar",
        params={**ALL_SIGNALS, "min_samples": 300, "regime_grouping": "none"},
    ) as harness:
        signals = await harness.feed(bars)
    # Assert: the bar before a turn-of-month day forecasts more than the others
    late = [
        (s.mu, s.features["turn_of_month"])
        for s in signals
        if s.ts_event.year == 2020 and s.features is not None
    ]
    before_tom = [mu for mu, tom in late if tom == 1.0]
    others = [mu for mu, tom in late if tom == 0.0]
    assert before_tom
    assert others
    assert min(before_tom) > max(others)


def test_params_when_turn_of_month_window_empty_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="window"):
        CalendarSeasonalityParams(tom_before=0, tom_after=0)
