"""Drift monitor: PSI and KS of feature values against their reference distribution."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from structlog.testing import capture_logs

from engine.features import drift
from engine.features.drift import DriftMonitor, DriftResult, ks_statistic, psi
from engine.features.schema import FeatureField, FeatureSet, FieldType
from engine.telemetry.logging import get_logger

SEED = 20240611

PRICES = FeatureSet(
    name="prices",
    version=1,
    fields=(
        FeatureField("ret", FieldType.FLOAT, allow_nan=True),
        FeatureField("volume", FieldType.INT),
        FeatureField("history", FieldType.FLOAT_ARRAY, allow_nan=True),
        FeatureField("regime", FieldType.STR),
    ),
)


def _monitor(
    *,
    window: int = 500,
    reference_size: int | None = None,
    min_samples: int = 50,
    on_result: Callable[[DriftResult], None] | None = None,
) -> DriftMonitor:
    return DriftMonitor(
        window=window,
        psi_threshold=0.2,
        ks_threshold=0.1,
        log=get_logger("features"),
        reference_size=reference_size,
        min_samples=min_samples,
        on_result=on_result,
    )


def _feed(monitor: DriftMonitor, name: str, values: np.ndarray) -> None:
    for value in values:
        monitor.observe(PRICES, {name: float(value)})


def _brute_force_ks(a: list[float], b: list[float]) -> float:
    best = 0.0
    for t in a + b:
        cdf_a = sum(1 for x in a if x <= t) / len(a)
        cdf_b = sum(1 for x in b if x <= t) / len(b)
        best = max(best, abs(cdf_a - cdf_b))
    return best


# ---------------------------------------------------------------- statistics


def test_evaluate_when_same_distribution_then_not_drifted_and_small_statistics() -> None:
    # Arrange
    rng = np.random.default_rng(SEED)
    monitor = _monitor()
    _feed(monitor, "ret", rng.normal(0.0, 1.0, 500))
    _feed(monitor, "ret", rng.normal(0.0, 1.0, 500))
    # Act
    results = monitor.evaluate()
    # Assert
    assert len(results) == 1
    result = results[0]
    assert (result.feature_set, result.feature) == ("prices:v1", "ret")
    assert (result.reference_n, result.recent_n) == (500, 500)
    assert result.psi < 0.1
    assert result.ks < 0.1
    assert result.drifted is False


def test_evaluate_when_mean_shifts_one_sd_then_drifted_and_warning_logged() -> None:
    # Arrange
    rng = np.random.default_rng(SEED)
    with capture_logs() as logs:
        monitor = _monitor()
        _feed(monitor, "ret", rng.normal(0.0, 1.0, 500))
        _feed(monitor, "ret", rng.normal(1.0, 1.0, 500))
        # Act
        results = monitor.evaluate()
    # Assert
    (result,) = results
    assert result.psi > 0.2
    assert result.ks > 0.1
    assert result.drifted is True
    warnings = [e for e in logs if e["event"] == "feature drift detected"]
    assert len(warnings) == 1
    warning = warnings[0]
    assert warning["log_level"] == "warning"
    assert (warning["feature_set"], warning["feature"]) == ("prices:v1", "ret")
    assert warning["psi"] > 0.2
    assert warning["ks"] > 0.1
    assert (warning["psi_threshold"], warning["ks_threshold"]) == (0.2, 0.1)


def test_ks_statistic_when_small_samples_then_equals_brute_force_ecdf() -> None:
    # Arrange
    rng = np.random.default_rng(SEED)
    cases = [
        (rng.normal(0.0, 1.0, 7), rng.normal(0.5, 1.0, 11)),
        (rng.integers(0, 4, 9).astype(float), rng.integers(1, 5, 6).astype(float)),  # ties
        (np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])),
        (np.array([0.0, 0.0]), np.array([5.0])),
    ]
    for a, b in cases:
        # Act
        d = ks_statistic(a, b)
        # Assert
        assert abs(d - _brute_force_ks(a.tolist(), b.tolist())) <= 1e-12


def test_evaluate_when_small_windows_then_ks_equals_brute_force_on_buffers() -> None:
    # Arrange
    rng = np.random.default_rng(SEED)
    monitor = _monitor(window=8, min_samples=5)
    reference = rng.normal(0.0, 1.0, 8)
    older = rng.normal(3.0, 1.0, 4)  # pushed out of the recent ring buffer
    recent = rng.normal(0.7, 1.0, 8)
    for values in (reference, older, recent):
        _feed(monitor, "ret", values)
    # Act
    (result,) = monitor.evaluate()
    # Assert
    assert abs(result.ks - _brute_force_ks(reference.tolist(), recent.tolist())) <= 1e-12
    assert result.psi == pytest.approx(psi(reference, recent, bins=10), abs=1e-12)


def test_psi_when_samples_identical_then_zero() -> None:
    # Arrange
    sample = np.random.default_rng(SEED).normal(0.0, 1.0, 1000)
    # Act
    value = psi(sample, sample.copy())
    # Assert
    assert value == pytest.approx(0.0, abs=1e-12)


def test_psi_when_feature_discrete_then_edges_deduplicated_and_finite() -> None:
    # Arrange
    reference = np.array([0.0] * 80 + [1.0] * 20)
    recent = np.array([0.0] * 20 + [1.0] * 80)
    # Act
    same = psi(reference, reference.copy())
    moved = psi(reference, recent)
    # Assert
    assert same == pytest.approx(0.0, abs=1e-12)
    expected = (0.2 - 0.8) * math.log(0.2 / 0.8) + (0.8 - 0.2) * math.log(0.8 / 0.2)
    assert moved == pytest.approx(expected, rel=1e-12)


def test_psi_when_recent_outside_reference_range_then_counted_in_open_end_bins() -> None:
    # Arrange
    reference = np.random.default_rng(SEED).uniform(0.0, 1.0, 1000)
    recent = np.full(100, 50.0)  # all above the reference's maximum
    # Act
    value = psi(reference, recent)
    # Assert: everything lands in the last bin, every other bin at the epsilon floor
    assert math.isfinite(value)
    assert value > 5.0


# ---------------------------------------------------------------- monitor behaviour


def test_evaluate_when_too_few_samples_then_no_result() -> None:
    # Arrange
    published: list[DriftResult] = []
    monitor = _monitor(min_samples=50, on_result=published.append)
    _feed(monitor, "ret", np.random.default_rng(SEED).normal(0.0, 1.0, 49))
    # Act
    results = monitor.evaluate()
    # Assert
    assert results == []
    assert monitor.results() == {}
    assert published == []


def test_observe_when_values_nan_then_ignored() -> None:
    # Arrange
    rng = np.random.default_rng(SEED)
    monitor = _monitor(window=100, min_samples=50)
    for value in rng.normal(0.0, 1.0, 100):
        monitor.observe(PRICES, {"ret": float(value)})
        monitor.observe(PRICES, {"ret": math.nan})
        monitor.observe(PRICES, {"history": np.array([1.0, math.nan])})
    # Act
    results = {r.feature: r for r in monitor.evaluate()}
    # Assert
    assert set(results) == {"ret"}  # history only ever ended in NaN
    result = results["ret"]
    assert (result.reference_n, result.recent_n) == (100, 100)
    assert result.psi == pytest.approx(0.0, abs=1e-12)
    assert result.ks == 0.0


def test_observe_when_array_field_then_tracks_last_element() -> None:
    # Arrange: the first elements move by 200, the last elements do not
    rng = np.random.default_rng(SEED)
    monitor = _monitor(window=200, min_samples=50)
    for shift in (100.0, -100.0):
        for value in rng.normal(0.0, 1.0, 200):
            monitor.observe(
                PRICES, {"history": np.array([value + shift, value]), "ret": float(value)}
            )
    monitor.observe(PRICES, {"history": np.array([], dtype=np.float64)})  # nothing to track
    # Act
    results = {r.feature: r for r in monitor.evaluate()}
    # Assert
    history, ret = results["history"], results["ret"]
    assert (history.psi, history.ks) == (ret.psi, ret.ks)
    assert (history.reference_n, history.recent_n) == (200, 200)
    assert history.drifted is False


def test_observe_when_int_and_str_fields_then_ints_tracked_and_strings_skipped() -> None:
    # Arrange
    rng = np.random.default_rng(SEED)
    monitor = _monitor(window=100, min_samples=50)
    for value in rng.integers(0, 1000, 100):
        monitor.observe(PRICES, {"volume": int(value), "regime": "calm"})
    # Act
    results = monitor.evaluate()
    # Assert
    assert [(r.feature_set, r.feature) for r in results] == [("prices:v1", "volume")]


def test_observe_when_called_then_no_statistics_until_evaluate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange
    calls: list[str] = []

    def counting(name: str) -> Callable[..., object]:
        original = getattr(drift, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            calls.append(name)
            return original(*args, **kwargs)

        return wrapper

    for name in ("_ks_sorted", "_bin_edges", "_bin_proportions", "_psi_from_proportions"):
        monkeypatch.setattr(drift, name, counting(name))
    monitor = _monitor()
    values = np.random.default_rng(SEED).normal(0.0, 1.0, 1000)
    # Act
    _feed(monitor, "ret", values)
    # Assert
    assert calls == []
    assert monitor.results() == {}
    # Act
    (result,) = monitor.evaluate()
    # Assert
    assert set(calls) == {"_ks_sorted", "_bin_edges", "_bin_proportions", "_psi_from_proportions"}
    assert monitor.results() == {("prices:v1", "ret"): result}


def test_evaluate_when_callback_raises_then_logged_and_other_features_still_published() -> None:
    # Arrange
    rng = np.random.default_rng(SEED)
    published: list[str] = []

    def on_result(result: DriftResult) -> None:
        published.append(result.feature)
        if result.feature == "ret":
            raise RuntimeError("subscriber bug")

    with capture_logs() as logs:
        monitor = _monitor(window=100, min_samples=50, on_result=on_result)
        for value in rng.normal(0.0, 1.0, 100):
            monitor.observe(PRICES, {"ret": float(value), "volume": int(value * 100)})
        # Act
        results = monitor.evaluate()
    # Assert
    assert sorted(published) == ["ret", "volume"]
    assert len(results) == 2
    failures = [e for e in logs if e["event"] == "feature drift result callback failed"]
    assert [e["feature"] for e in failures] == ["ret"]


def test_init_when_min_samples_exceed_window_then_value_error() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValueError, match="min_samples"):
        _monitor(window=20, min_samples=50)


# ---------------------------------------------------------------- run loop


async def test_run_when_cancelled_after_an_evaluation_then_stops_without_leaking() -> None:
    # Arrange
    evaluated = asyncio.Event()
    monitor = _monitor(window=100, min_samples=50, on_result=lambda _: evaluated.set())
    _feed(monitor, "ret", np.random.default_rng(SEED).normal(0.0, 1.0, 100))
    task = asyncio.create_task(monitor.run(0.001))
    await asyncio.wait_for(evaluated.wait(), timeout=5.0)
    # Act
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5.0)
    # Assert
    assert done == {task}
    assert task.cancelled()
    assert ("prices:v1", "ret") in monitor.results()


async def test_run_when_many_features_then_yields_to_the_loop_between_them() -> None:
    # Arrange
    fields = tuple(FeatureField(f"f{i}", FieldType.FLOAT) for i in range(5))
    wide = FeatureSet(name="wide", version=2, fields=fields)
    ticks = 0
    seen_at: list[int] = []
    pass_done = asyncio.Event()

    def on_result(_: DriftResult) -> None:
        seen_at.append(ticks)
        if len(seen_at) == len(fields):
            pass_done.set()

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    monitor = _monitor(window=60, min_samples=50, on_result=on_result)
    rng = np.random.default_rng(SEED)
    for _ in range(60):
        monitor.observe(wide, {f.name: float(rng.normal()) for f in fields})
    ticking = asyncio.create_task(ticker())
    running = asyncio.create_task(monitor.run(0.001))
    # Act
    await asyncio.wait_for(pass_done.wait(), timeout=5.0)
    # Assert
    first_pass = seen_at[: len(fields)]
    assert all(later > earlier for earlier, later in itertools.pairwise(first_pass))
    assert {key[0] for key in monitor.results()} == {"wide:v2"}
    for task in (running, ticking):
        task.cancel()
    await asyncio.wait({running, ticking}, timeout=5.0)
    assert running.cancelled()
