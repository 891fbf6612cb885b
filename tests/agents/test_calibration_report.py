"""Out-of-sample calibration of every bundled agent on the bundled real data.

For each agent, every calibrated forecast it makes on its full real data (momentum & co. on the
20 stocks 1990-2022, yield_curve on 1990-2017 where the yields exist, volume on the GOOG OHLCV
file, sentiment on the social-post fixture) is scored against the realized return over its
horizon (`engine.calibration_report`): the standardized errors must have a standard deviation in
[0.8, 1.25] and the central 90 % band must cover 85-95 % of outcomes. The same holds for the
part the agent emits by default (positive confidence) wherever that part is large enough to
judge. Information coefficients are printed, not asserted: a weak predictor is allowed, a
dishonest sigma is not. ``python benchmarks/calibration_report.py`` prints the table.
"""

from __future__ import annotations

import math

import pytest

from engine.calibration_report import CalibrationRow, PriceHistory, calibration_report
from tests.agents import SPECS, full_run

MIN_SCORED = 1_000
MIN_EMITTED_TO_JUDGE = 500


def _assert_calibrated(row: CalibrationRow) -> None:
    assert 0.8 <= row.std_z <= 1.25, f"{row.agent}: std z {row.std_z:.3f} outside [0.8, 1.25]"
    assert 0.85 <= row.coverage_90 <= 0.95, (
        f"{row.agent}: 90 % band covers {row.coverage_90:.1%}, outside [85 %, 95 %]"
    )
    assert math.isfinite(row.mean_z)


@pytest.mark.parametrize("name", [spec.name for spec in SPECS])
def test_report_when_agent_replayed_on_real_data_then_sigma_calibrated(name: str) -> None:
    # Arrange
    run = full_run(name)
    prices = PriceHistory(run.bars)
    # Act
    every = calibration_report(name, run.signals, prices)
    emitted = calibration_report(
        f"{name} (emitted)", [s for s in run.signals if s.confidence > 0.0], prices
    )
    print(f"\n{every.markdown()}\n{emitted.markdown()}")
    # Assert
    assert every.n >= MIN_SCORED, f"{name}: only {every.n} forecasts could be scored"
    assert all(s.sigma > 0.0 and math.isfinite(s.mu) for s in run.signals)
    _assert_calibrated(every)
    if emitted.n >= MIN_EMITTED_TO_JUDGE:
        _assert_calibrated(emitted)
