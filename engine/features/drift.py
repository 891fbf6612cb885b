"""Distribution drift of stored features: PSI and Kolmogorov-Smirnov against a reference.

Why this module exists: a model or a rule trained on features that looked one way keeps running
when they start to look another way (a data source changes units, an upstream bug zeroes a field,
the market changes regime), and nothing fails: it is just quietly wrong. The monitor watches every
numeric feature written to the store, compares what it sees now with what it saw at first, and
warns, per feature set and feature, when the two distributions differ.

What is tracked: every FLOAT and INT field, and for a FLOAT_ARRAY field (a history) the *last*
element of each written array, i.e. its newest observation. Strings are not tracked. Values are
pooled across entities: the distribution is that of the feature over everything written, not of
one symbol. NaN (a declared gap) and infinity are ignored; an empty array is ignored.

Per feature, two buffers:
- the reference: the first ``reference_size`` observations (default: ``window``), frozen once full;
- the recent window: a ring buffer of the last ``window`` observations.

Statistics (``evaluate``, never on the write path):
- PSI (population stability index). Bin edges are the reference's interior quantiles (deciles for
  ``bins=10``), de-duplicated so a discrete or constant feature gets fewer, non-empty bins; the
  first and last bins are open-ended, so recent values outside the reference's range still count.
  With ``p`` the reference and ``r`` the recent proportion of a bin, each floored at 1e-6 so an
  empty bin does not give an infinite log,
      PSI = sum over bins of (r - p) * ln(r / p).
  Rules of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 large shift.
- KS (two-sample Kolmogorov-Smirnov statistic): with ECDF_x(t) = #{x_i <= t} / n,
      D = max over t of |ECDF_ref(t) - ECDF_recent(t)|.
  Both ECDFs are right-continuous steps that jump only at sample points, so the supremum is
  attained at one of the pooled sample values; it is computed exactly with ``np.searchsorted``
  on the two sorted samples (O((n + m) log(n + m))).
- ``drifted`` = PSI > psi_threshold or KS > ks_threshold.

Trade-offs made:
- The reference is the first N values seen, not a rolling window: a rolling reference follows a
  slow drift and never reports it, while a fixed one answers "has this moved since we started?",
  which is what a model trained on the start of the run cares about. The cost: a drift that
  happens while the reference fills is partly absorbed into it, and a process restart takes a
  new reference. Until the reference is full the recent window overlaps it, so early results
  read as "no drift" rather than as noise.
- KS and PSI together: KS is distribution-free, needs no binning and is most sensitive to shifts
  near the middle of the distribution, but it is bounded by 1 and says little about how much
  mass moved into the tails; PSI is binned (coarse, sensitive to bin choice on discrete data)
  but weighs relative changes in every bin, tails included, and is the number risk teams already
  read. Either crossing its threshold is reported. Neither is a significance test here: KS noise
  on equal samples of size n is about 1.36 * sqrt(2 / n) at 5 %, about 0.086 for n = 500, so a
  small ``window`` wants a larger ``ks_threshold``.
- Pooling across entities keeps memory at O(features x window), independent of the number of
  symbols, but a change in the mix of entities (a new, differently scaled symbol) reads as drift.
- ``observe`` costs O(1) per numeric field (two array stores); sorting, quantiles and the
  statistics happen in ``evaluate``, which ``run`` calls periodically, yielding to the event loop
  between features. Once a reference is frozen its sorted values, bin edges and proportions are
  cached, so an evaluation sorts only the recent window.
- A drifted feature is logged as a warning at every evaluation while it stays drifted: the log is
  the alert, and a silent "still drifted" would look like recovery.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from engine.features.schema import FeatureSet, FieldType
from engine.telemetry.logging import Logger

FloatArray = npt.NDArray[np.float64]

EPSILON: Final = 1e-6
"""Floor of a bin proportion in PSI, so an empty bin gives a large but finite term."""

_NUMERIC: Final = (FieldType.FLOAT, FieldType.INT, FieldType.FLOAT_ARRAY)


@dataclass(frozen=True, slots=True)
class DriftResult:
    """One feature's comparison of its recent window with its reference."""

    feature_set: str
    """The set's ref, ``name:vN``."""
    feature: str
    psi: float
    ks: float
    reference_n: int
    recent_n: int
    drifted: bool


def ks_statistic(reference: FloatArray, recent: FloatArray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: max |ECDF_reference - ECDF_recent|.

    Exact: both ECDFs are evaluated at every pooled sample value, where the supremum is attained.
    Both samples must be non-empty.
    """
    ref_sorted = np.sort(np.asarray(reference, dtype=np.float64))
    recent_sorted = np.sort(np.asarray(recent, dtype=np.float64))
    return _ks_sorted(ref_sorted, recent_sorted)


def psi(
    reference: FloatArray, recent: FloatArray, bins: int = 10, epsilon: float = EPSILON
) -> float:
    """Population stability index of `recent` against `reference`, on `bins` reference-quantile
    bins (de-duplicated edges, open-ended first and last bins). Both samples must be non-empty."""
    ref = np.asarray(reference, dtype=np.float64)
    edges = _bin_edges(ref, bins)
    expected = _bin_proportions(ref, edges, epsilon)
    actual = _bin_proportions(np.asarray(recent, dtype=np.float64), edges, epsilon)
    return _psi_from_proportions(expected, actual)


def _ks_sorted(ref_sorted: FloatArray, recent_sorted: FloatArray) -> float:
    points = np.concatenate((ref_sorted, recent_sorted))
    cdf_ref = np.searchsorted(ref_sorted, points, side="right") / ref_sorted.size
    cdf_recent = np.searchsorted(recent_sorted, points, side="right") / recent_sorted.size
    return float(np.max(np.abs(cdf_ref - cdf_recent)))


def _bin_edges(reference: FloatArray, bins: int) -> FloatArray:
    """Interior bin edges: the reference's 1/bins ... (bins-1)/bins quantiles, de-duplicated."""
    quantiles = np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    edges: FloatArray = np.unique(quantiles)
    return edges


def _bin_proportions(values: FloatArray, edges: FloatArray, epsilon: float) -> FloatArray:
    """Share of `values` in each bin (-inf, e0), [e0, e1), ..., [e_last, +inf), floored."""
    index = np.searchsorted(edges, values, side="right")
    counts = np.bincount(index, minlength=edges.size + 1)
    proportions: FloatArray = np.maximum(counts / values.size, epsilon)
    return proportions


def _psi_from_proportions(expected: FloatArray, actual: FloatArray) -> float:
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class _Tracker:
    """Reference and recent buffers of one feature."""

    __slots__ = ("_ref_cache", "recent", "recent_n", "recent_pos", "ref_n", "reference")

    def __init__(self, reference_size: int, window: int) -> None:
        self.reference = np.empty(reference_size, dtype=np.float64)
        self.ref_n = 0
        self.recent = np.empty(window, dtype=np.float64)
        self.recent_pos = 0
        self.recent_n = 0
        self._ref_cache: tuple[FloatArray, FloatArray, FloatArray] | None = None

    def add(self, value: float) -> None:
        if self.ref_n < self.reference.size:
            self.reference[self.ref_n] = value
            self.ref_n += 1
        self.recent[self.recent_pos] = value
        self.recent_pos += 1
        if self.recent_pos == self.recent.size:
            self.recent_pos = 0
        if self.recent_n < self.recent.size:
            self.recent_n += 1

    def reference_stats(self, bins: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(sorted reference, bin edges, reference proportions); cached once frozen."""
        if self._ref_cache is not None:
            return self._ref_cache
        ref_sorted = np.sort(self.reference[: self.ref_n])
        edges = _bin_edges(ref_sorted, bins)
        stats = (ref_sorted, edges, _bin_proportions(ref_sorted, edges, EPSILON))
        if self.ref_n == self.reference.size:
            self._ref_cache = stats
        return stats

    def recent_values(self) -> FloatArray:
        return self.recent[: self.recent_n]


def sampled_observer(
    observe: Callable[[FeatureSet, Mapping[str, Any]], None],
    every: int,
    *,
    skip: frozenset[str] = frozenset(),
) -> Callable[[FeatureSet, str, Mapping[str, Any]], None]:
    """A store write observer calling `observe` for one write in `every` per (feature set,
    entity): every entity is sampled alike, whatever order rows are written in (deterministic,
    no RNG). Feature sets named in `skip` are not observed."""
    counts: dict[tuple[str, str], int] = {}

    def sampled(fs: FeatureSet, entity: str, values: Mapping[str, Any]) -> None:
        if fs.name in skip:
            return
        key = (fs.name, entity)
        n = counts[key] = counts.get(key, -1) + 1
        if not n % every:
            observe(fs, values)

    return sampled


class DriftMonitor:
    """Tracks numeric features written to the store and reports their drift (module docstring).

    `observe` is the write-path hook; `evaluate` (or the `run` loop) computes the statistics.
    """

    def __init__(
        self,
        *,
        window: int,
        psi_threshold: float,
        ks_threshold: float,
        log: Logger,
        reference_size: int | None = None,
        bins: int = 10,
        min_samples: int = 50,
        on_result: Callable[[DriftResult], None] | None = None,
    ) -> None:
        reference_size = window if reference_size is None else reference_size
        if window < 2:
            raise ValueError(f"drift window must be >= 2, got {window}")
        if reference_size < 2:
            raise ValueError(f"drift reference_size must be >= 2, got {reference_size}")
        if bins < 2:
            raise ValueError(f"drift bins must be >= 2, got {bins}")
        if not 1 <= min_samples <= min(window, reference_size):
            raise ValueError(
                f"drift min_samples must be between 1 and min(window, reference_size) = "
                f"{min(window, reference_size)}, got {min_samples}"
            )
        if not psi_threshold > 0:
            raise ValueError(f"drift psi_threshold must be > 0, got {psi_threshold}")
        if not 0 < ks_threshold < 1:
            raise ValueError(f"drift ks_threshold must be in (0, 1), got {ks_threshold}")
        self._window = window
        self._reference_size = reference_size
        self._psi_threshold = psi_threshold
        self._ks_threshold = ks_threshold
        self._bins = bins
        self._min_samples = min_samples
        self._log = log
        self._on_result = on_result
        self._kinds: dict[str, dict[str, FieldType]] = {}
        """Per set ref: its numeric fields and their types."""
        self._trackers: dict[tuple[str, str], _Tracker] = {}
        self._results: dict[tuple[str, str], DriftResult] = {}

    # ------------------------------------------------------------------ write path

    def observe(self, fs: FeatureSet, values: Mapping[str, object]) -> None:
        """Record one write's numeric values (validated values, as `FeatureSet.validate` returns).

        O(1) per numeric field; no statistics. Strings, unknown names, NaN, infinity and empty
        arrays are skipped.
        """
        ref = fs.ref
        kinds = self._kinds.get(ref)
        if kinds is None:
            kinds = {f.name: f.type for f in fs.fields if f.type in _NUMERIC}
            self._kinds[ref] = kinds
        for name, value in values.items():
            kind = kinds.get(name)
            if kind is None:
                continue
            number: float
            if kind is FieldType.FLOAT_ARRAY:
                if not isinstance(value, np.ndarray | list | tuple) or len(value) == 0:
                    continue
                last = value[-1]
                if not isinstance(last, float | int | np.floating | np.integer):
                    continue
                number = float(last)
            elif isinstance(value, float | int | np.floating | np.integer) and not isinstance(
                value, bool
            ):
                number = float(value)
            else:
                continue
            if not math.isfinite(number):
                continue
            key = (ref, name)
            tracker = self._trackers.get(key)
            if tracker is None:
                tracker = self._trackers[key] = _Tracker(self._reference_size, self._window)
            tracker.add(number)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> list[DriftResult]:
        """Compare every tracked feature with enough samples; log, publish and return results."""
        out: list[DriftResult] = []
        for key in list(self._trackers):
            result = self._evaluate_one(key)
            if result is not None:
                out.append(result)
        return out

    async def run(self, interval_s: float) -> None:
        """Evaluate every `interval_s` seconds until cancelled, yielding to the event loop
        between features. A failing evaluation is logged and the loop goes on."""
        if not interval_s > 0:
            raise ValueError(f"drift interval_s must be > 0, got {interval_s}")
        while True:
            await asyncio.sleep(interval_s)
            try:
                for i, key in enumerate(list(self._trackers)):
                    if i:
                        await asyncio.sleep(0)
                    self._evaluate_one(key)
            except Exception:
                self._log.exception("feature drift evaluation failed")

    def results(self) -> dict[tuple[str, str], DriftResult]:
        """The latest result per (set ref, feature)."""
        return dict(self._results)

    def _evaluate_one(self, key: tuple[str, str]) -> DriftResult | None:
        tracker = self._trackers[key]
        if tracker.ref_n < self._min_samples or tracker.recent_n < self._min_samples:
            return None
        ref_sorted, edges, expected = tracker.reference_stats(self._bins)
        recent_sorted = np.sort(tracker.recent_values())
        psi_value = _psi_from_proportions(expected, _bin_proportions(recent_sorted, edges, EPSILON))
        ks_value = _ks_sorted(ref_sorted, recent_sorted)
        drifted = psi_value > self._psi_threshold or ks_value > self._ks_threshold
        result = DriftResult(
            feature_set=key[0],
            feature=key[1],
            psi=psi_value,
            ks=ks_value,
            reference_n=int(ref_sorted.size),
            recent_n=int(recent_sorted.size),
            drifted=drifted,
        )
        self._results[key] = result
        if drifted:
            self._log.warning(
                "feature drift detected",
                feature_set=result.feature_set,
                feature=result.feature,
                psi=round(psi_value, 6),
                ks=round(ks_value, 6),
                psi_threshold=self._psi_threshold,
                ks_threshold=self._ks_threshold,
                reference_n=result.reference_n,
                recent_n=result.recent_n,
            )
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception:  # a subscriber must not stop the monitoring of other features
                self._log.exception(
                    "feature drift result callback failed",
                    feature_set=result.feature_set,
                    feature=result.feature,
                )
        return result


__all__ = [
    "EPSILON",
    "DriftMonitor",
    "DriftResult",
    "ks_statistic",
    "psi",
    "sampled_observer",
]
