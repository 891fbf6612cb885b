"""ForwardReturnCalibrator: recovers a known relation, never looks ahead, never emits garbage."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.calibration import Estimate, ForwardReturnCalibrator


def _linear_path(
    n: int, *, alpha: float, beta: float, noise: float, seed: int, scale: float = 1.0
) -> tuple[list[float], list[float]]:
    """x(t) ~ N(0, 1) and prices with P(t+1)/P(t) - 1 = scale * (alpha + beta x(t) + noise e)."""
    rng = random.Random(seed)
    xs = [rng.gauss(0.0, 1.0) for _ in range(n)]
    prices = [100.0]
    for x in xs[:-1]:
        prices.append(prices[-1] * (1.0 + scale * (alpha + beta * x + rng.gauss(0.0, noise))))
    return xs, prices


def _run(
    cal: ForwardReturnCalibrator, xs: list[float], prices: list[float], key: str = "A"
) -> list[Estimate | None]:
    return [cal.update(key, x, p) for x, p in zip(xs, prices, strict=True)]


def test_update_when_linear_relation_with_noise_then_recovers_beta_and_sigma() -> None:
    # Arrange: r(t -> t+1) = 0.001 + 0.01 x(t) + N(0, 0.02)
    xs, prices = _linear_path(20_000, alpha=0.001, beta=0.01, noise=0.02, seed=1)
    cal = ForwardReturnCalibrator(1, halflife_bars=1e9, min_samples=60, shrinkage=0.0)
    # Act
    est = _run(cal, xs, prices)[-1]
    # Assert
    assert est is not None
    assert est.beta == pytest.approx(0.01, abs=0.0005)
    assert est.alpha == pytest.approx(0.001, abs=0.0005)
    assert est.sigma == pytest.approx(0.02, rel=0.03)
    assert est.mu == pytest.approx(est.alpha + est.beta * xs[-1])
    assert est.t_stat > 10


def test_update_when_relation_in_risk_units_then_beta_in_scale_units_and_sigma_scales() -> None:
    # Arrange: returns whose size follows a known scale s(t): R/s = 0.5 x + N(0, 1)
    rng = random.Random(2)
    cal = ForwardReturnCalibrator(1, halflife_bars=1e9, min_samples=60, shrinkage=0.0)
    price, est, scale = 50.0, None, 0.01
    # Act
    for t in range(20_000):
        x = rng.gauss(0.0, 1.0)
        scale = 0.005 if (t // 500) % 2 else 0.02  # volatility regimes
        est = cal.update("A", x, price, scale=scale)
        price *= 1.0 + scale * (0.5 * x + rng.gauss(0.0, 1.0))
    # Assert: the slope is in risk units, sigma = scale * RMS error in risk units
    assert est is not None
    assert est.beta == pytest.approx(0.5, abs=0.03)
    assert est.sigma == pytest.approx(scale * 1.0, rel=0.1)


def test_update_when_two_features_then_recovers_both_slopes() -> None:
    # Arrange: r = 0.002 + 0.01 x1 - 0.02 x2 + N(0, 0.01), x2 correlated with x1
    rng = random.Random(3)
    cal = ForwardReturnCalibrator(1, n_features=2, halflife_bars=1e9, min_samples=60, shrinkage=0.0)
    price, est = 100.0, None
    # Act
    for _ in range(20_000):
        x1 = rng.gauss(0.0, 1.0)
        x2 = 0.6 * x1 + 0.8 * rng.gauss(0.0, 1.0)
        est = cal.update("A", (x1, x2), price)
        price *= 1.0 + 0.002 + 0.01 * x1 - 0.02 * x2 + rng.gauss(0.0, 0.01)
    # Assert
    assert est is not None
    assert est.betas[0] == pytest.approx(0.01, abs=0.0005)
    assert est.betas[1] == pytest.approx(-0.02, abs=0.0005)
    assert est.sigma == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("cut", [80, 150, 333, 999])
def test_update_when_prices_after_t_changed_then_estimates_up_to_t_identical(cut: int) -> None:
    # Arrange: two keys, pooled, horizon 5; the second run sees different prices (and x)
    # after step `cut`
    xs, prices = _linear_path(1_200, alpha=0.0, beta=0.02, noise=0.01, seed=4)
    rng = random.Random(5)
    alt_prices = prices[: cut + 1] + [p * rng.uniform(0.5, 2.0) for p in prices[cut + 1 :]]
    alt_xs = xs[: cut + 1] + [rng.gauss(0.0, 3.0) for _ in xs[cut + 1 :]]

    def run(xs_: list[float], prices_: list[float]) -> list[Estimate | None]:
        cal = ForwardReturnCalibrator(5, halflife_bars=200, min_samples=40)
        out = []
        for x, p in zip(xs_, prices_, strict=True):
            out.append(cal.update("A", x, p))
            out.append(cal.update("B", -x, p * 1.5))
        return out

    # Act
    base = run(xs, prices)
    altered = run(alt_xs, alt_prices)
    # Assert: identical (equal dataclasses, bit for bit) up to and including step `cut`...
    upto = 2 * (cut + 1)
    assert any(e is not None for e in base[:upto])
    assert base[:upto] == altered[:upto]
    # ...and the alteration did change what came after (the test can see a leak)
    assert base[upto:] != altered[upto:]


def test_update_when_fewer_than_min_samples_then_none() -> None:
    # Arrange: horizon 3, so the first sample is realized at the 4th update
    xs, prices = _linear_path(40, alpha=0.0, beta=0.01, noise=0.01, seed=6)
    cal = ForwardReturnCalibrator(3, min_samples=10)
    # Act
    out = _run(cal, xs, prices)
    # Assert: the 10th sample arrives at update index 3 + 9 = 12
    assert all(e is None for e in out[:12])
    assert all(e is not None for e in out[12:])
    first = out[12]
    assert first is not None
    assert first.n_samples == 10


def test_update_when_x_missing_then_none_and_no_sample_from_it() -> None:
    # Arrange
    cal = ForwardReturnCalibrator(1, min_samples=1)
    # Act
    first = cal.update("A", None, 100.0)
    second = cal.update("A", math.inf, 101.0)  # non-finite counts as missing
    third = cal.update("A", 0.5, 102.0)
    # Assert: neither missing x produced a sample, so still nothing calibrated
    assert first is None
    assert second is None
    assert third is None
    assert cal.n_samples() == 0


def test_confidence_when_more_samples_then_higher() -> None:
    # Arrange: a modest real relation
    xs, prices = _linear_path(30_000, alpha=0.0, beta=0.003, noise=0.02, seed=7)
    cal = ForwardReturnCalibrator(1, halflife_bars=1e9, min_samples=20)
    # Act
    out = _run(cal, xs, prices)
    # Assert
    picks = [out[i] for i in (30, 3_000, 10_000, 29_999)]
    confidences = [e.confidence for e in picks if e is not None]
    assert len(confidences) == 4
    assert confidences == sorted(confidences)
    assert confidences[0] < 0.5 < confidences[-1]
    assert all(0.0 <= c <= 1.0 for c in confidences)


def test_confidence_when_no_relation_then_low() -> None:
    # Arrange: x carries no information
    xs, prices = _linear_path(10_000, alpha=0.0, beta=0.0, noise=0.02, seed=8)
    cal = ForwardReturnCalibrator(1, halflife_bars=1e9, min_samples=20)
    # Act
    est = _run(cal, xs, prices)[-1]
    # Assert
    assert est is not None
    assert abs(est.t_stat) < 3.5
    assert est.confidence < 0.99


def test_n_eff_when_horizon_overlaps_or_keys_correlated_then_divided() -> None:
    # Arrange: the same number of samples at horizon 1 and horizon 5, and pooled keys
    xs, prices = _linear_path(505, alpha=0.0, beta=0.01, noise=0.01, seed=9)
    h1 = ForwardReturnCalibrator(1, halflife_bars=1e9, min_samples=1)
    h5 = ForwardReturnCalibrator(5, halflife_bars=1e9, min_samples=1)
    rho = ForwardReturnCalibrator(1, halflife_bars=1e9, min_samples=1, cross_correlation=0.5)
    # Act
    e1 = _run(h1, xs[4:], prices[4:])[-1]
    e5 = _run(h5, xs, prices)[-1]
    for x, p in zip(xs[4:], prices[4:], strict=True):
        rho.update("A", x, p)
        e_rho = rho.update("B", x, p)
    # Assert: 500 samples each; overlapping 5-bar returns are worth a fifth
    assert e1 is not None
    assert e5 is not None
    assert e_rho is not None
    assert e1.n_samples == e5.n_samples == 500
    assert e5.n_eff == pytest.approx(e1.n_eff / 5)
    assert e_rho.n_eff == pytest.approx(1000 / 1.5)


def test_sigma_when_constant_prices_then_positive_floor() -> None:
    # Arrange
    cal = ForwardReturnCalibrator(2, min_samples=5, sigma_floor=1e-4)
    rng = random.Random(10)
    # Act
    out = [cal.update("A", rng.gauss(0.0, 1.0), 42.0) for _ in range(100)]
    # Assert
    ests = [e for e in out if e is not None]
    assert ests
    assert all(e.sigma == 1e-4 for e in ests)
    assert all(e.mu == 0.0 for e in ests)


def test_update_when_not_pooled_then_keys_do_not_share_a_model() -> None:
    # Arrange: key B's path is the same whatever key A sees
    xs, prices = _linear_path(300, alpha=0.0, beta=0.01, noise=0.01, seed=11)
    alone = ForwardReturnCalibrator(1, pooled=False, min_samples=10)
    shared = ForwardReturnCalibrator(1, pooled=False, min_samples=10)
    rng = random.Random(12)
    # Act
    only_b = [alone.update("B", x, p) for x, p in zip(xs, prices, strict=True)]
    with_a = []
    for x, p in zip(xs, prices, strict=True):
        shared.update("A", rng.gauss(0.0, 1.0), p * rng.uniform(0.9, 1.1))
        with_a.append(shared.update("B", x, p))
    # Assert
    assert only_b == with_a
    assert shared.n_samples("A") == shared.n_samples("B") == 299


def test_update_when_refit_every_n_then_coefficients_lag_at_most_n_samples() -> None:
    # Arrange
    xs, prices = _linear_path(400, alpha=0.0, beta=0.01, noise=0.01, seed=13)
    cal = ForwardReturnCalibrator(1, min_samples=10, refit_every=7)
    # Act
    out = [e for e in _run(cal, xs, prices) if e is not None]
    # Assert: the coefficients change only every 7 samples
    fits = [e.fit for e in out]
    changes = [b.n_samples - a.n_samples for a, b in itertools.pairwise(fits) if a != b]
    assert changes
    assert all(c == 7 for c in changes)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"horizon_bars": 0}, "horizon_bars"),
        ({"horizon_bars": 1, "n_features": 0}, "n_features"),
        ({"horizon_bars": 1, "halflife_bars": 0.0}, "halflife_bars"),
        ({"horizon_bars": 1, "min_samples": 0}, "min_samples"),
        ({"horizon_bars": 1, "cross_correlation": 1.5}, "cross_correlation"),
        ({"horizon_bars": 1, "sigma_floor": 0.0}, "sigma_floor"),
        ({"horizon_bars": 1, "refit_every": 0}, "refit_every"),
    ],
)
def test_init_when_bad_argument_then_value_error_names_it(
    kwargs: dict[str, float], match: str
) -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValueError, match=match):
        ForwardReturnCalibrator(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("x", "price", "scale", "match"),
    [
        (1.0, 0.0, 1.0, "price"),
        (1.0, math.nan, 1.0, "price"),
        (1.0, 10.0, 0.0, "scale"),
        (1.0, 10.0, math.inf, "scale"),
        ((1.0, 2.0), 10.0, 1.0, "feature"),
    ],
)
def test_update_when_bad_input_then_value_error(
    x: float | tuple[float, float], price: float, scale: float, match: str
) -> None:
    # Arrange
    cal = ForwardReturnCalibrator(1)
    # Act / Assert
    with pytest.raises(ValueError, match=match):
        cal.update("A", x, price, scale=scale)


_prices = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)
_features = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    path=st.lists(st.tuples(_prices, _features, _features), min_size=1, max_size=120),
    horizon=st.integers(min_value=1, max_value=4),
    pooled=st.booleans(),
)
def test_update_when_any_finite_positive_path_then_never_nan_or_inf(
    path: list[tuple[float, float, float]], horizon: int, pooled: bool
) -> None:
    # Arrange: one- and two-feature calibrators, arbitrary finite x, two keys
    one = ForwardReturnCalibrator(horizon, min_samples=1, pooled=pooled)
    two = ForwardReturnCalibrator(horizon, n_features=2, min_samples=1, pooled=pooled)
    outputs: list[Estimate] = []
    # Act
    for i, (price, x1, x2) in enumerate(path):
        key = "A" if i % 3 else "B"
        for est in (one.update(key, x1, price), two.update(key, (x1, x2), price, scale=0.1)):
            if est is not None:
                outputs.append(est)
    # Assert
    for est in outputs:
        assert math.isfinite(est.mu)
        assert math.isfinite(est.sigma)
        assert est.sigma > 0.0
        assert 0.0 <= est.confidence <= 1.0
        assert math.isfinite(est.n_eff)
        assert all(math.isfinite(b) for b in (est.alpha, *est.betas, *est.t_stats))


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.floats(min_value=-0.5, max_value=0.5, allow_nan=False), min_size=30, max_size=200
    )
)
def test_update_when_realistic_returns_then_finite_and_sigma_positive(steps: list[float]) -> None:
    # Arrange: a price path from bounded returns and a momentum-like indicator
    cal = ForwardReturnCalibrator(3, min_samples=5)
    prices = [100.0]
    for r in steps:
        prices.append(max(prices[-1] * (1.0 + r), 1e-6))
    # Act
    out = [
        cal.update("A", prices[i] / prices[i - 5] - 1.0 if i >= 5 else None, p)
        for i, p in enumerate(prices)
    ]
    # Assert
    for est in out:
        if est is not None:
            assert math.isfinite(est.mu)
            assert est.sigma > 0.0
            assert 0.0 <= est.confidence <= 1.0


# -- regimes (partial pooling) ---------------------------------------------------------------


def _regime_path(n: int, seed: int) -> tuple[list[float], list[float], list[str]]:
    """Two regimes alternating every 250 bars: in "calm" r = +0.01 x + N(0, 0.01), in
    "volatile" r = -0.01 x + N(0, 0.03) (the relation flips and the noise triples)."""
    rng = random.Random(seed)
    xs, prices, groups = [], [100.0], []
    for t in range(n):
        group = "calm" if (t // 250) % 2 == 0 else "volatile"
        x = rng.gauss(0.0, 1.0)
        beta, noise = (0.01, 0.01) if group == "calm" else (-0.01, 0.03)
        xs.append(x)
        groups.append(group)
        prices.append(prices[-1] * (1.0 + beta * x + rng.gauss(0.0, noise)))
    return xs, prices[:-1], groups


def test_update_when_relation_differs_by_regime_then_each_regime_model_recovers_its_own() -> None:
    # Arrange
    xs, prices, groups = _regime_path(40_000, seed=11)
    cal = ForwardReturnCalibrator(1, halflife_bars=1e9, min_samples=60, shrinkage=0.0)
    # Act
    last: dict[str, Estimate] = {}
    for x, p, g in zip(xs, prices, groups, strict=True):
        est = cal.update("A", x, p, regime=g)
        if est is not None:
            last[g] = est
    fits = cal.regime_fits()
    # Assert: opposite slopes, and sigma follows each regime's own error size
    assert fits["calm"].fit.betas[0] == pytest.approx(0.01, abs=0.001)
    assert fits["volatile"].fit.betas[0] == pytest.approx(-0.01, abs=0.002)
    assert fits["calm"].rmse == pytest.approx(0.01, rel=0.1)
    assert fits["volatile"].rmse == pytest.approx(0.03, rel=0.1)
    assert last["calm"].sigma == pytest.approx(0.01, rel=0.15)
    assert last["volatile"].sigma == pytest.approx(0.03, rel=0.15)
    # the pooled slope averages the two to about zero; the regime weight is near 1 by now
    assert abs(last["calm"].beta) < 0.002
    assert last["calm"].regime_weight > 0.9
    assert last["calm"].regime_fit is not None


def test_update_when_regime_has_few_samples_then_leans_on_pooled_model() -> None:
    # Arrange: 2,000 bars of "calm"
    xs, prices = _linear_path(2_001, alpha=0.0, beta=0.01, noise=0.01, seed=12)
    cal = ForwardReturnCalibrator(1, min_samples=60, shrinkage=0.0, regime_prior=50.0)
    for x, p in zip(xs[:2_000], prices[:2_000], strict=True):
        cal.update("A", x, p, regime="calm")
    # Act: the first bar of a regime never seen before
    first_crisis = cal.update("A", xs[2_000], prices[2_000], regime="crisis")
    # Assert: no own evidence yet: weight 0, the pooled forecast and the pooled sigma
    assert first_crisis is not None
    assert first_crisis.regime_weight == 0.0
    assert first_crisis.mu == pytest.approx(first_crisis.alpha + first_crisis.beta * xs[2_000])
    assert first_crisis.sigma == pytest.approx(math.sqrt(cal._pool.err_mse), rel=1e-12)
    assert first_crisis.confidence == first_crisis.fit.confidence


def test_update_when_regime_given_then_no_look_ahead() -> None:
    # Arrange
    xs, prices, groups = _regime_path(3_000, seed=13)
    altered = prices[:2_000] + [p * 1.3 for p in prices[2_000:]]
    cal_a = ForwardReturnCalibrator(5, min_samples=60, refit_every=3)
    cal_b = ForwardReturnCalibrator(5, min_samples=60, refit_every=3)
    # Act
    a = [cal_a.update("A", x, p, regime=g) for x, p, g in zip(xs, prices, groups, strict=True)]
    b = [cal_b.update("A", x, p, regime=g) for x, p, g in zip(xs, altered, groups, strict=True)]
    # Assert
    assert a[:2_000] == b[:2_000]
    assert a[2_010:] != b[2_010:]


def test_reset_when_key_reset_then_no_sample_spans_the_break() -> None:
    # Arrange
    cal = ForwardReturnCalibrator(3, min_samples=1)
    for t in range(10):
        cal.update("A", 0.1 * t, 100.0 + t)
    n_before = cal.n_samples()
    # Act: forget the pending forecasts, then feed two more bars (fewer than the horizon)
    cal.reset("A")
    cal.update("A", 0.5, 200.0)
    cal.update("A", 0.5, 201.0)
    # Assert
    assert cal.n_samples() == n_before


def test_regime_group_when_grouping_given_then_documented_groups() -> None:
    # Arrange
    from contracts import Regime
    from engine.calibration import regime_group

    # Act / Assert
    assert regime_group(Regime.CALM_DOWNTREND, "volatility") == "calm"
    assert regime_group(Regime.CRISIS, "volatility") == "crisis"
    assert regime_group(Regime.CRISIS, "trend") == "down"
    assert regime_group(Regime.VOLATILE_RANGE, "full") == "volatile_range"
    assert regime_group(Regime.VOLATILE_RANGE, "none") is None
    assert regime_group(Regime.UNKNOWN, "volatility") is None
    with pytest.raises(ValueError, match="grouping"):
        regime_group(Regime.CALM_RANGE, "weather")


@pytest.mark.parametrize("k", [1, 2, 3])
def test_model_when_samples_added_then_co_moments_equal_brute_force(k: int) -> None:
    # Arrange: the unrolled paths (k = 1, 2) and the general one must agree with the definition
    from engine.calibration import _Model

    rng = random.Random(5 + k)
    lam = 0.97
    samples = [
        (tuple(rng.gauss(1.0, 2.0) for _ in range(k)), rng.gauss(0.0, 1.0)) for _ in range(300)
    ]
    model = _Model(k)
    # Act
    for xs, y in samples:
        assert model.add(xs, y, lam)
    # Assert: weighted means and centred co-moments with weights lam^(n-1-i)
    n = len(samples)
    w = [lam ** (n - 1 - i) for i in range(n)]
    total = sum(w)
    mx = [sum(wi * xs[j] for wi, (xs, _) in zip(w, samples, strict=True)) / total for j in range(k)]
    my = sum(wi * y for wi, (_, y) in zip(w, samples, strict=True)) / total
    for i in range(k):
        assert model.mx[i] == pytest.approx(mx[i], rel=1e-9)
        cxy = sum(wi * (xs[i] - mx[i]) * (y - my) for wi, (xs, y) in zip(w, samples, strict=True))
        assert model.cxy[i] == pytest.approx(cxy, rel=1e-8, abs=1e-9)
        for j in range(k):
            cxx = sum(
                wi * (xs[i] - mx[i]) * (xs[j] - mx[j])
                for wi, (xs, _) in zip(w, samples, strict=True)
            )
            assert model.cxx[i][j] == pytest.approx(cxx, rel=1e-8, abs=1e-9)


def test_regime_fits_when_called_mid_run_then_later_estimates_unchanged() -> None:
    # Arrange: two identical calibrators; one is inspected half-way
    xs, prices, groups = _regime_path(3_000, seed=17)
    a = ForwardReturnCalibrator(5, min_samples=60, refit_every=7)
    b = ForwardReturnCalibrator(5, min_samples=60, refit_every=7)
    out_a, out_b = [], []
    # Act
    for t, (x, p, g) in enumerate(zip(xs, prices, groups, strict=True)):
        out_a.append(a.update("A", x, p, regime=g))
        out_b.append(b.update("A", x, p, regime=g))
        if t == 1_500:
            assert b.regime_fits()
    # Assert: looking is not touching
    assert out_a == out_b


def test_learn_when_sample_would_overflow_then_false_and_model_unchanged() -> None:
    # Arrange
    from engine.calibration import _Model

    model = _Model(1)
    for i in range(10):
        assert model.learn("A", (float(i),), 0.01 * i, 0.0, 100.0, 100.0)
    before = (model.n, model.n_errors, model.err_mse, model.w, model.my, model.cyy)
    # Act
    ok = model.learn("A", (1e200,), 1.0, 0.0, 100.0, 100.0)  # the error alone is finite
    # Assert
    assert not ok
    assert (model.n, model.n_errors, model.err_mse, model.w, model.my, model.cyy) == before
