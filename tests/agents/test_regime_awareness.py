"""Regime awareness on real data: the calibrated mapping of momentum and reversal differs by
regime (the shared regime model's volatility groups, `engine.calibration` "Regimes")."""

from __future__ import annotations

import math

import pytest

from contracts import Regime
from engine.calibrated import CalibratedAgent
from tests.agents import full_run


@pytest.mark.parametrize("name", ["momentum", "reversal"])
def test_calibration_when_real_data_then_error_scale_differs_by_volatility_regime(
    name: str,
) -> None:
    # Arrange
    run = full_run(name)
    agent = run.agent
    assert isinstance(agent, CalibratedAgent)
    horizon = agent.calibrator.horizon_bars
    # Act
    fits = agent.calibrator.regime_fits()
    calm, volatile = fits["calm"], fits["volatile"]
    print(
        f"\n{name}: "
        + ", ".join(
            f"{g}: beta {f.fit.betas[0]:+.4f} (t {f.fit.t_stats[0]:+.2f}), "
            f"rmse {f.rmse:.3f}, errors {f.n_errors}"
            for g, f in fits.items()
        )
    )
    # Assert: both groups are well populated, and their out-of-sample error RMS (in units of
    # the vol-scaled horizon) differs by far more than its sampling error. The standard error
    # of an RMS over n errors is ~ rmse / sqrt(2 n); overlapping horizons make only about
    # n / h of them independent.
    assert calm.n_errors > 10_000
    assert volatile.n_errors > 5_000
    se = math.hypot(
        calm.rmse / math.sqrt(2 * calm.n_errors / horizon),
        volatile.rmse / math.sqrt(2 * volatile.n_errors / horizon),
    )
    assert abs(calm.rmse - volatile.rmse) > 4 * se
    assert abs(calm.rmse / volatile.rmse - 1.0) > 0.1
    # ... and the signals it emits say which regime they were made in
    regimes = {s.regime for s in run.signals}
    assert {Regime.CALM_UPTREND, Regime.VOLATILE_DOWNTREND} <= regimes


def test_calibration_when_real_data_then_reversal_slope_stronger_in_volatile_regime() -> None:
    # Arrange: liquidity provision pays most when markets are volatile (Nagel 2012)
    agent = full_run("reversal").agent
    assert isinstance(agent, CalibratedAgent)
    # Act
    fits = agent.calibrator.regime_fits()
    # Assert: both slopes negative (reversal), the volatile one clearly steeper
    calm, volatile = fits["calm"].fit, fits["volatile"].fit
    assert volatile.betas[0] < calm.betas[0] < 0.0
    assert volatile.betas[0] < 2.0 * calm.betas[0]
