"""Bad input, per agent: a zero, negative or NaN close (from a source that bypassed the
contract), a gap in the data, a stale macro value, a post with no ticker. The agent skips or
degrades with a counted, logged reason; it never crashes, never emits NaN or a zero sigma."""

from __future__ import annotations

import math
from datetime import date, timedelta

import pytest

from contracts import Bar, MacroObservation, Signal, SocialPost
from engine.calibrated import CalibratedAgent
from engine.testing import AgentHarness
from tests.agents import BY_NAME, SPECS, data_for

START, END = date(1996, 1, 1), date(1998, 12, 31)
GOOG_START, GOOG_END = date(2005, 1, 1), date(2008, 12, 31)
POSTS_START, POSTS_END = date(2006, 1, 1), date(2008, 12, 31)


def _broken(bar: Bar, close: float) -> Bar:
    # model_construct skips validation, as a faulty custom source or bridge could
    return Bar.model_construct(**{**bar.model_dump(), "close": close})


def _assert_sane(signals: list[Signal]) -> None:
    for s in signals:
        assert math.isfinite(s.mu)
        assert math.isfinite(s.sigma)
        assert s.sigma > 0.0
        assert 0.0 <= s.confidence <= 1.0


def _window(name: str) -> tuple[date, date]:
    data = BY_NAME[name].data
    if data == "goog":
        return GOOG_START, GOOG_END
    if data == "stocks+posts":
        return POSTS_START, POSTS_END
    return START, END


@pytest.mark.parametrize("name", [spec.name for spec in SPECS])
async def test_feed_when_close_zero_negative_or_nan_then_skipped_counted_never_nan(
    name: str,
) -> None:
    # Arrange: three bars in the middle of real data get impossible closes
    spec = BY_NAME[name]
    start, end = _window(name)
    events, bars = data_for(spec, start, end)
    middle = [i for i, e in enumerate(events) if isinstance(e, Bar)][len(bars) // 2 :][:3]
    for i, close in zip(middle, (0.0, -5.0, math.nan), strict=True):
        bar = events[i]
        assert isinstance(bar, Bar)
        events[i] = _broken(bar, close)
    # Act
    async with AgentHarness(spec.cls, name=name, params=spec.lookahead_params) as harness:
        signals = await harness.feed(events)
    agent = harness.agent
    # Assert
    assert harness.stats.failed == 0
    assert isinstance(agent, CalibratedAgent)
    assert agent.skips.get("close is not a finite number > 0") == 3
    assert signals, f"{name} must still emit around the bad bars"
    _assert_sane(signals)


@pytest.mark.parametrize("name", [spec.name for spec in SPECS if spec.data != "stocks+posts"])
async def test_feed_when_gap_in_a_symbols_data_then_indicators_restart_with_logged_reason(
    name: str,
) -> None:
    # Arrange: one symbol's bars vanish for two months
    spec = BY_NAME[name]
    start, end = _window(name)
    events, bars = data_for(spec, start, end)
    symbol = bars[0].symbol
    gap_from = bars[len(bars) // 2].ts_event
    gap_to = gap_from + timedelta(days=60)
    events = [
        e
        for e in events
        if not (isinstance(e, Bar) and e.symbol == symbol and gap_from <= e.ts_event < gap_to)
    ]
    # Act
    async with AgentHarness(spec.cls, name=name, params=spec.lookahead_params) as harness:
        signals = await harness.feed(events)
    agent = harness.agent
    # Assert: counted once, the symbol restarts warm-up (no signal right after the gap)
    assert harness.stats.failed == 0
    assert isinstance(agent, CalibratedAgent)
    assert agent.skips.get("gap in the data: indicators restarted") == 1
    right_after = [
        s for s in signals if s.symbol == symbol and gap_to <= s.ts_event < gap_to + timedelta(7)
    ]
    assert right_after == []
    _assert_sane(signals)


async def test_feed_when_macro_value_stale_then_yield_agent_silent_until_fresh() -> None:
    # Arrange: the 10-year yield stops being published for a quarter
    spec = BY_NAME["yield_curve"]
    events, _ = data_for(spec, START, END)
    hole_from, hole_to = date(1997, 3, 1), date(1997, 6, 1)
    events = [
        e
        for e in events
        if not (
            isinstance(e, MacroObservation)
            and e.series == "10year"
            and hole_from <= e.ts_event.date() < hole_to
        )
    ]
    # Act
    async with AgentHarness(spec.cls, name="yield_curve", params=spec.lookahead_params) as h:
        signals = await h.feed(events)
    # Assert: nothing while stale (after the 7-day grace), signals before and after
    stale = [s for s in signals if hole_from + timedelta(days=8) <= s.ts_event.date() < hole_to]
    assert stale == []
    assert any(s.ts_event.date() < hole_from for s in signals)
    assert any(s.ts_event.date() > hole_to + timedelta(days=30) for s in signals)
    _assert_sane(signals)


async def test_feed_when_post_has_no_ticker_then_skipped_and_counted() -> None:
    # Arrange: real fixture posts plus posts that name no ticker at all
    spec = BY_NAME["sentiment"]
    events, _ = data_for(spec, POSTS_START, POSTS_END)
    posts = [e for e in events if isinstance(e, SocialPost)]
    assert posts
    orphans = [
        p.model_copy(
            update={
                "post_id": f"orphan-{i}",
                "symbols": (),
                "title": "what a day",
                "text": "markets are wild, no idea what to buy",
            }
        )
        for i, p in enumerate(posts[:: max(1, len(posts) // 5)][:5])
    ]
    merged = sorted(
        [*events, *orphans], key=lambda e: (e.ts_event, 0 if isinstance(e, SocialPost) else 1)
    )
    # Act
    async with AgentHarness(spec.cls, name="sentiment", params=spec.lookahead_params) as h:
        signals = await h.feed(merged)
    agent = h.agent
    # Assert
    assert h.stats.failed == 0
    assert isinstance(agent, CalibratedAgent)
    no_ticker = {k: v for k, v in agent.skips.items() if "ticker" in k}
    assert sum(no_ticker.values()) >= len(orphans)
    _assert_sane(signals)
