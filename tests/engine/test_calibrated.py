"""CalibratedAgent, the base of the bundled agents: what it does for every subclass."""

from __future__ import annotations

import math
from datetime import date

from contracts import Bar, Horizon
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, SymbolState
from engine.features import FeatureField, FeatureSet, FieldType
from engine.testing import AgentHarness
from tests.calibration import bar_ts, stock_bars

PROBE = FeatureSet(
    name="probe",
    version=1,
    fields=(
        FeatureField("score", FieldType.FLOAT),
        FeatureField("vol_daily", FieldType.FLOAT),
    ),
)
POISON_DAY = date(1996, 6, 3)


class ProbeAgent(CalibratedAgent[CalibratedAgentParams]):
    """Last week's return in risk units, except NaN for KO on one day (a subclass bug)."""

    horizon = Horizon.W1
    feature_set = PROBE

    def history_bars(self) -> int:
        return 6

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> float | None:
        if bar.symbol == "KO" and bar.ts_event == bar_ts(POISON_DAY):
            return math.nan
        past = state.closes.simple_return(5)
        return None if past is None else past / vol


async def test_feed_when_indicator_not_finite_then_bar_skipped_and_other_rows_published() -> None:
    # Arrange
    symbols = ["AAPL", "KO", "XOM"]
    bars = stock_bars(date(1996, 1, 1), POISON_DAY, symbols=symbols)
    params = {"min_samples": 50, "emit_zero_confidence": True}
    # Act
    async with AgentHarness(ProbeAgent, name="probe", params=params) as h:
        signals = await h.feed(bars)
        rows = await h.features.get_many(PROBE, symbols)
    agent = h.agent
    # Assert: no failure, one counted skip, KO silent that day, the others published and emitting
    assert h.stats.failed == 0
    assert isinstance(agent, ProbeAgent)
    assert agent.skips == {"indicator not finite": 1}
    last = bar_ts(POISON_DAY)
    assert {s.symbol for s in signals if s.ts_event == last} == {"AAPL", "XOM"}
    assert rows["AAPL"]["score"].ts == last
    assert rows["XOM"]["score"].ts == last
    assert rows["KO"]["score"].ts < last


async def test_feed_when_step_ends_then_its_rows_are_in_the_store_with_the_steps_time() -> None:
    # Arrange
    symbols = ["AAPL", "KO"]
    bars = stock_bars(date(1996, 1, 1), date(1996, 3, 29), symbols=symbols)
    steps = sorted({b.ts_event for b in bars})
    # Act / Assert: after every step (its watermark), the step's rows are readable
    async with AgentHarness(ProbeAgent, name="probe") as h:
        for step in steps[-3:]:
            await h.feed([b for b in bars if b.ts_event <= step and b.ts_event > h.clock.now()])
            rows = await h.features.get_many(PROBE, symbols)
            assert {rows[s]["score"].ts for s in symbols} == {step}
