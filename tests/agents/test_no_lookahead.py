"""No look-ahead, per agent: changing every input dated after day T (prices, yields, volumes,
posts) changes no signal emitted on or before T - and does change later ones, so the test can
fail."""

from __future__ import annotations

from datetime import date

import pytest

from contracts import Signal
from tests.agents import BY_NAME, SPECS, DataKind, data_for, run_agent
from tests.calibration import bar_ts

WINDOWS: dict[DataKind, tuple[date, date, date]] = {
    # (start, T, end): T late enough that every agent is warm and calibrated before it
    "stocks": (date(1995, 1, 1), date(1998, 6, 30), date(1999, 6, 30)),
    "stocks+yields": (date(1995, 1, 1), date(1998, 6, 30), date(1999, 6, 30)),
    "goog": (date(2004, 1, 1), date(2008, 6, 30), date(2009, 6, 30)),
    "stocks+posts": (date(2005, 1, 1), date(2009, 6, 30), date(2010, 6, 30)),
}


def _fingerprint(s: Signal) -> tuple[object, ...]:
    return (s.ts_event, s.symbol, s.mu, s.sigma, s.confidence, s.regime, s.horizon, s.features)


@pytest.mark.parametrize("name", [spec.name for spec in SPECS])
async def test_feed_when_inputs_after_t_altered_then_signals_up_to_t_identical(name: str) -> None:
    # Arrange
    spec = BY_NAME[name]
    start, t, end = WINDOWS[spec.data]
    real, _ = data_for(spec, start, end)
    altered, _ = data_for(spec, start, end, alter_after=t)
    cut = bar_ts(t)
    # Act
    base, _ = await run_agent(spec, real, spec.lookahead_params)
    other, _ = await run_agent(spec, altered, spec.lookahead_params)
    # Assert
    before = [_fingerprint(s) for s in base if s.ts_event <= cut]
    assert len(before) > 100, f"{name}: too few signals before T to prove anything"
    assert before == [_fingerprint(s) for s in other if s.ts_event <= cut]
    after = [_fingerprint(s) for s in base if s.ts_event > cut]
    assert after != [_fingerprint(s) for s in other if s.ts_event > cut]
