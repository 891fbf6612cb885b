"""YieldCurveAgent on real closes and real Treasury yields, through the real harness."""

from __future__ import annotations

import random
from datetime import date, timedelta

from contracts import Horizon, MacroObservation, Signal
from engine.testing import AgentHarness
from plugins.yield_curve import YieldCurveAgent
from tests.calibration import (
    band_coverage,
    bar_ts,
    macro_observations,
    merge_macro_first,
    stock_bars,
    yield_table,
)
from tests.kit.signal_checks import assert_valid_signals, assert_warm_up

# These tests study the calibrated output itself, so they ask for every signal, including
# the zero-confidence ones the agents leave out by default.
ALL_SIGNALS = {"emit_zero_confidence": True}

SYMBOLS = ["AAPL", "KO", "XOM", "JPM", "PG", "MSFT"]
SERIES = ("10year", "2year", "3month")


def _fingerprint(s: Signal) -> tuple[object, ...]:
    return (s.ts_event, s.symbol, s.mu, s.sigma, s.confidence, s.regime, s.features)


def _reference_features(
    steps: list[date],
    observations: list[MacroObservation],
    *,
    max_age: timedelta = timedelta(days=7),
    window: int = 21,
    same_day: bool = True,
) -> dict[date, tuple[float, float, float, float] | None]:
    """The features the agent must use at each bar date, recomputed independently: the last
    observation of each series at or before the date (strictly before it unless `same_day`),
    if at most `max_age` old."""
    by_series: dict[str, dict[date, float]] = {s: {} for s in SERIES}
    for obs in observations:
        if obs.series in by_series:
            by_series[obs.series][obs.ts_event.date()] = obs.value
    slopes: list[tuple[float, float] | None] = []
    for day in steps:
        latest: list[float] = []
        for series in SERIES:
            known = [
                d
                for d in by_series[series]
                if (d <= day if same_day else d < day) and day - d <= max_age
            ]
            if not known:
                break
            latest.append(by_series[series][max(known)])
        if len(latest) == len(SERIES):
            y10, y2, y3m = latest
            slopes.append((100 * (y10 - y2), 100 * (y10 - y3m)))
        else:
            slopes.append(None)
    out: dict[date, tuple[float, float, float, float] | None] = {}
    for i, day in enumerate(steps):
        now, old = slopes[i], slopes[i - window] if i >= window else None
        out[day] = None if now is None or old is None else (*now, now[0] - old[0], now[1] - old[1])
    return out


async def test_feed_when_warming_up_then_silent_until_history_then_valid_signals() -> None:
    # Arrange: vol needs 20 returns, the slope change 21 bars, the first 1m sample 21 more
    bars = stock_bars(date(1994, 1, 1), date(1995, 6, 30), symbols=SYMBOLS)
    events = merge_macro_first(bars, macro_observations(date(1994, 1, 1), date(1995, 6, 30)))
    # Act
    async with AgentHarness(
        YieldCurveAgent, name="yield_curve", params={**ALL_SIGNALS, "min_samples": 120}
    ) as harness:
        signals = await harness.feed(events)
    # Assert
    assert_warm_up(signals, bars, SYMBOLS, min_first_step=21 + 21 + 120 // len(SYMBOLS) - 1)
    assert_valid_signals(signals, Horizon.M1)
    assert harness.stats.failed == 0


async def test_feed_when_yields_blank_then_never_zero_and_stale_gap_emits_nothing() -> None:
    # Arrange: blank out the 2-year yield for 3 days (short gap: the last value is still fresh)
    # and for 3 weeks (long gap: stale after 7 days)
    short_gap = (date(1995, 3, 6), date(1995, 3, 8))
    long_gap = (date(1995, 8, 1), date(1995, 8, 21))

    def blank(obs: MacroObservation) -> bool:
        day = obs.ts_event.date()
        return obs.series == "2year" and any(a <= day <= b for a, b in (short_gap, long_gap))

    bars = stock_bars(date(1994, 1, 1), date(1995, 12, 31), symbols=SYMBOLS)
    macro = [m for m in macro_observations(date(1994, 1, 1), date(1995, 12, 31)) if not blank(m)]
    steps = sorted({b.ts_event.date() for b in bars})
    expected = _reference_features(steps, macro)
    # Act
    async with AgentHarness(
        YieldCurveAgent, name="yield_curve", params={**ALL_SIGNALS, "min_samples": 120}
    ) as harness:
        signals = await harness.feed(merge_macro_first(bars, macro))
    # Assert: every signal used exactly the last fresh observations (a blank is never a 0)
    assert signals
    for s in signals:
        ref = expected[s.ts_event.date()]
        assert ref is not None, f"signal on {s.ts_event.date()} without fresh yields"
        assert s.features is not None
        got = tuple(s.features[k] for k in ("slope_10y_2y", "slope_10y_3m"))
        got += tuple(s.features[k] for k in ("d21_slope_10y_2y", "d21_slope_10y_3m"))
        assert got == tuple(ref)
    days = {s.ts_event.date() for s in signals}
    assert {d for d in steps if short_gap[0] <= d <= short_gap[1]} <= days  # still fresh
    stale = {d for d in steps if long_gap[0] + timedelta(days=8) <= d <= long_gap[1]}
    assert stale
    assert not stale & days
    assert any(d > long_gap[1] + timedelta(days=22) for d in days)  # recovers once fresh


async def test_feed_when_yields_arrive_after_the_bars_of_a_date_then_used_from_the_next() -> None:
    # Arrange: the same timestamps, but each date's yields published after its bars
    bars = stock_bars(date(1994, 1, 1), date(1994, 12, 31), symbols=SYMBOLS)
    macro = macro_observations(date(1994, 1, 1), date(1994, 12, 31))
    steps = sorted({b.ts_event.date() for b in bars})
    expected = _reference_features(steps, macro, same_day=False)
    # Act
    async with AgentHarness(
        YieldCurveAgent, name="yield_curve", params={**ALL_SIGNALS, "min_samples": 120}
    ) as harness:
        signals = await harness.feed(merge_macro_first(bars, macro, macro_first=False))
    # Assert: never a yield the agent had not seen when the bar arrived
    assert signals
    for s in signals:
        ref = expected[s.ts_event.date()]
        assert ref is not None
        assert s.features is not None
        assert (s.features["slope_10y_2y"], s.features["d21_slope_10y_3m"]) == (ref[0], ref[3])


async def test_feed_when_yield_data_ends_then_no_signals_after_it_goes_stale() -> None:
    # Arrange: the Treasury file ends on 2017-03-29, the stock file continues
    last_yield = yield_table()[-1][0]
    bars = stock_bars(date(2016, 1, 1), date(2017, 9, 30), symbols=SYMBOLS)
    events = merge_macro_first(bars, macro_observations(date(2016, 1, 1), date(2017, 12, 31)))
    # Act
    async with AgentHarness(
        YieldCurveAgent, name="yield_curve", params={**ALL_SIGNALS, "min_samples": 120}
    ) as harness:
        signals = await harness.feed(events)
    # Assert
    assert last_yield == date(2017, 3, 29)
    assert any(s.ts_event.date() == last_yield for s in signals)
    assert max(s.ts_event.date() for s in signals) <= last_yield + timedelta(days=7)
    assert harness.stats.handled == len(events)


async def test_feed_when_data_after_t_altered_then_signals_up_to_t_identical() -> None:
    # Arrange: 1995-1999; the altered run sees different closes and yields after T
    start, end, cut = date(1995, 1, 1), date(1999, 12, 31), date(1998, 6, 30)
    rng = random.Random(3)

    def late(day: date) -> bool:
        return day > cut

    original = merge_macro_first(stock_bars(start, end), macro_observations(start, end))
    altered = merge_macro_first(
        stock_bars(
            start,
            end,
            alter=lambda b: b.close * rng.uniform(0.7, 1.4) if late(b.ts_event.date()) else b.close,
        ),
        macro_observations(
            start, end, alter=lambda d, _s, v: v + rng.uniform(-0.01, 0.01) if late(d) else v
        ),
    )
    # Act
    async with AgentHarness(YieldCurveAgent, name="yield_curve", params=ALL_SIGNALS) as harness:
        base = await harness.feed(original)
    async with AgentHarness(YieldCurveAgent, name="yield_curve", params=ALL_SIGNALS) as harness:
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
    events = merge_macro_first(bars, macro_observations(date(1998, 1, 1), date(2010, 12, 31)))
    # Act
    async with AgentHarness(YieldCurveAgent, name="yield_curve", params=ALL_SIGNALS) as harness:
        signals = await harness.feed(events)
    scored = [s for s in signals if s.ts_event >= bar_ts(date(2000, 1, 1))]
    coverage, n = band_coverage(scored, bars, 21)
    # Assert: about 68 % for a normal forecast; fat tails push an RMS sigma's band higher
    print(f"\nyield curve 1m: +-1 sigma coverage 2000-2010 = {coverage:.3f} over {n} signals")
    assert n > 50_000
    assert 0.55 <= coverage <= 0.85
