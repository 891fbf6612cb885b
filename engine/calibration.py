"""Walk-forward calibration: turn a raw indicator into a forecast (mu, sigma) over a horizon.

Part of the public plugin API. An agent computes an indicator ``x`` from data known at a bar
(a momentum score, a yield-curve slope, ...) and asks :class:`ForwardReturnCalibrator` what that
value has historically meant for the simple return over the next ``horizon_bars`` bars:

    r(t -> t+h) / s(t) = alpha + beta . x(t) + e        (exponentially weighted least squares)

    mu(t)    = s(t) * (alpha + beta . x(t))
    sigma(t) = max(s(t) * sqrt(EW mean of e_oos^2), sigma_floor)

``s(t)`` is an optional ex-ante *scale* the agent supplies (typically its trailing volatility
over the horizon, ``sigma_daily * sqrt(h)``; 1 by default). Regressing the return in units of
``s`` lets one pooled model serve instruments of very different volatility (a utility and a
chip maker) and makes sigma follow volatility clustering; with ``s = 1`` the model is in plain
return units.

Walk-forward, no look-ahead. ``update(key, x, price)`` is called once per bar per key. It keeps
``(x, price, scale, prediction)`` of the key's last ``h`` updates in a ring buffer. When the
oldest entry's horizon has completed (this is the h-th update after it), its realized simple
return ``price_now / price_then - 1`` becomes a training sample. *Before* that sample enters the
regression, its out-of-sample error (realized minus the prediction stored when ``x`` was seen,
made with the coefficients as they were then) updates an exponentially weighted mean squared
error; that is where sigma comes from, so sigma measures how wrong the forecasts actually were,
parameter uncertainty and model misspecification included (forecasts made during warm-up, never
emitted, are scored too, so sigma is ready when the first Estimate is). Only then is the sample
added and the current ``x`` predicted. An estimate made at bar t therefore depends on prices up
to t only (tested: altering every later price leaves it bit-for-bit unchanged). "h bars" are h
updates of that key, so a key's missing days simply do not count.

Pooling. By default one model is shared by all keys (``pooled=True``): an indicator's meaning is
assumed common across instruments (a z-scored momentum means the same for KO and AMD), which
multiplies the sample size by the number of keys - the main defence against noise in return
forecasting. ``pooled=False`` keeps one independent model per key.

Memory. ``halflife_bars`` is the half-life in bars *of one key*: a pooled model over K keys gets
about K samples a bar, so its per-sample decay is ``0.5 ** (1 / (halflife_bars * K))`` with K the
number of keys that have contributed samples so far; the memory span is then a calendar-like
quantity whatever the universe size. The error variance has its own, typically shorter, memory
(``error_halflife_bars``): slopes need years of data, sigma should follow the present.

Effective sample size and confidence.
- ``n_eff = kish / (h * (1 + (K - 1) * cross_correlation))`` where ``kish = (sum w)^2 / sum w^2``
  is the effective count of the exponential weights. Consecutive samples of one key overlap by
  h - 1 bars of the same return, so they are autocorrelated: dividing by h is the standard
  (conservative) overlap correction. Samples of different keys on the same bar are correlated
  too; with an average pairwise correlation rho, K of them are worth ``K / (1 + (K-1) rho)``
  independent ones - hence the second factor (rho = 0 by default; the agents set it).
- Coefficients are ridge-shrunk toward 0 with the strength of ``shrinkage`` effective
  pseudo-observations (``A = S_xx + (shrinkage / n_eff) * diag(S_xx)``), so a young model with
  few samples predicts little beyond the mean, and the shrinkage fades as evidence accumulates.
- ``Var(beta) ~ s_res^2 A^-1 / n_eff`` (s_res^2: EW residual variance), ``t_j = beta_j /
  sqrt(Var_jj)`` and the Wald statistic ``W = beta' Var^-1 beta`` (``= t^2`` for one feature).
- ``confidence = n_eff / (n_eff + confidence_n) * max(0, 1 - k / W)``. The second factor is the
  positive-part empirical-Bayes (James-Stein) share of the estimated slopes that is signal rather
  than noise: under "no relation" W averages k, so it is 0 for |t| <= 1, 0.75 at |t| = 2, 0.89 at
  |t| = 3. The first discounts small samples, where the variance estimates themselves are noisy.
  In [0, 1]: 0 without evidence, near 1 only with many effective samples *and* a clearly
  non-zero slope. A trust score for the calibration, not a probability of profit.

Guarantees: ``None`` until ``min_samples`` realized samples exist (never a guess presented as
calibrated); sigma > 0 (floored at ``sigma_floor``, in return units over the horizon); never
NaN or inf (a non-finite ``x`` is treated as missing, and a sample that would overflow the sums
is skipped). Every update is O(k^2) for k features (O(1) in history length): exponentially
weighted sums updated West/Welford-style (centred co-moments, no catastrophic cancellation), no
refit over history; the small k x k solve (Cholesky) is redone after each sample, or after every
``refit_every`` samples.

Regimes (partial pooling). With ``update(..., regime=g)`` (a calibration group of the shared
regime model, see :func:`regime_group`) a second model per group learns from the samples whose
forecast was made in regime g, and the emitted forecast is

    pred = pred_pooled + w_g * (pred_g - pred_pooled),   w_g = n_eff_g / (n_eff_g + regime_prior)

so a rare regime (a crisis) leans on the pooled model until it has evidence of its own, and a
common one is driven by its own coefficients. Sigma is the RMS of the out-of-sample errors of
the forecasts actually emitted in regime g (once ``min_regime_errors`` exist; the pooled
model's before), so a regime where the indicator misleads gets a wider sigma. Confidence is
weighted like mu. ``regime_fits()`` exposes each group's coefficients and error RMS: the
evidence that the mapping differs by regime.

Also here: small generic O(1) helpers agents share - :class:`RingBuffer` (fixed-size history with
a running sum) and :class:`EwMoments` (exponentially weighted mean and volatility). The agent
side (params, per-symbol state, emission rules) is `engine.calibrated`.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from contracts import Regime

_MAX_ABS_T = 1e6
_INF = math.inf
_MIN_RIDGE = 1e-9


class Fit(NamedTuple):
    """The regression as it stood when an estimate was made (shared by the estimates it made).

    ``alpha`` and ``betas`` are in units of the scale passed to ``update`` per unit of feature
    (plain return units when the scale is 1); ``t_stats`` belong to ``betas``; ``n_eff`` is the
    overlap- and dependence-corrected effective sample size; ``confidence`` as in the module
    docstring.
    """

    alpha: float
    betas: tuple[float, ...]
    t_stats: tuple[float, ...]
    n_eff: float
    n_samples: int
    confidence: float


class Estimate(NamedTuple):
    """A calibrated forecast of the simple return over the calibrator's horizon.

    ``mu`` and ``sigma`` (> 0) are in return units over the horizon; ``fit`` is the model that
    made it (coefficients, t-stats, n_eff, confidence), also reachable through the properties.
    Immutable; a NamedTuple rather than a frozen dataclass because one is made per bar and per
    agent (about a million in the default replay), and a tuple is several times cheaper to build.
    """

    mu: float
    sigma: float
    fit: Fit
    regime_fit: Fit | None = None
    """The model of the regime the forecast was made in (None: made without a regime)."""
    regime_weight: float = 0.0
    """Weight of `regime_fit` in mu (partial pooling, see "Regimes" in the module docstring)."""
    blended_confidence: float | None = None

    @property
    def confidence(self) -> float:
        """In [0, 1]: sample adequacy x significance of the slopes (see the module docstring);
        with a regime, the pooled and regime models' confidences weighted like their mu's."""
        if self.blended_confidence is not None:
            return self.blended_confidence
        return self.fit.confidence

    @property
    def n_eff(self) -> float:
        return self.fit.n_eff

    @property
    def n_samples(self) -> int:
        return self.fit.n_samples

    @property
    def alpha(self) -> float:
        return self.fit.alpha

    @property
    def betas(self) -> tuple[float, ...]:
        return self.fit.betas

    @property
    def beta(self) -> float:
        """The slope of the first (for a one-feature calibrator: the only) feature."""
        return self.fit.betas[0]

    @property
    def t_stats(self) -> tuple[float, ...]:
        return self.fit.t_stats

    @property
    def t_stat(self) -> float:
        return self.fit.t_stats[0]


_new_estimate = tuple.__new__


class _Model:
    """Exponentially weighted least squares y = alpha + beta . x, plus an EW out-of-sample MSE."""

    __slots__ = (
        "cxx",
        "cxy",
        "cyy",
        "err_mse",
        "err_w",
        "fit",
        "k",
        "keys",
        "lam",
        "lam_err",
        "mx",
        "my",
        "n",
        "n_at_fit",
        "n_errors",
        "w",
        "w2",
    )

    def __init__(self, k: int) -> None:
        self.k = k
        self.n = 0
        self.n_at_fit = 0
        self.w = 0.0  # sum of weights
        self.w2 = 0.0  # sum of squared weights (for Kish's effective count)
        self.mx = [0.0] * k
        self.my = 0.0
        self.cxx = [[0.0] * k for _ in range(k)]  # centred co-moments, weighted
        self.cxy = [0.0] * k
        self.cyy = 0.0
        self.err_w = 0.0
        self.err_mse = 0.0
        self.n_errors = 0
        self.keys: set[str] = set()
        self.lam = 1.0  # per-sample decays, set when the set of contributing keys grows
        self.lam_err = 1.0
        self.fit: Fit | None = None

    def learn(
        self,
        key: str,
        xs: tuple[float, ...],
        y: float,
        pred: float | None,
        halflife: float,
        error_halflife: float,
    ) -> bool:
        """Add the sample, then score `pred` (the forecast made for it, if any) against the
        realized `y`; False, with nothing changed but the key count, when the sums would
        overflow. The decays follow the number of keys feeding the model (module docstring,
        "Memory")."""
        keys = self.keys
        if key not in keys:
            keys.add(key)
            n_keys = len(keys)
            self.lam = 0.5 ** (1.0 / (halflife * n_keys))
            self.lam_err = 0.5 ** (1.0 / (error_halflife * n_keys))
        if self.k != 1:
            if not self.add(xs, y, self.lam):
                return False
            self._score(y, pred)
            return True
        # `add` for one feature, inlined: this runs for every realized sample of every agent
        lam = self.lam
        w = lam * self.w + 1.0
        dy = y - self.my
        my = self.my + dy / w
        cyy = lam * self.cyy + dy * (y - my)
        x = xs[0]
        mx = self.mx
        dx = x - mx[0]
        mx0 = mx[0] + dx / w
        c_xx = lam * self.cxx[0][0] + dx * (x - mx0)
        c_xy = lam * self.cxy[0] + dx * (y - my)
        if not (cyy < _INF and c_xx < _INF and -_INF < c_xy < _INF):
            return False
        mx[0] = mx0
        self.cxx[0][0] = c_xx
        self.cxy[0] = c_xy
        self.w = w
        self.w2 = lam * lam * self.w2 + 1.0
        self.my = my
        self.cyy = cyy
        self.n += 1
        self._score(y, pred)
        return True

    def _score(self, y: float, pred: float | None) -> None:
        """The out-of-sample error of the forecast made for this sample (sigma's source)."""
        if pred is None:
            return
        err = y - pred
        sq = err * err
        if sq < _INF:
            self.err_w = self.lam_err * self.err_w + 1.0
            self.err_mse += (sq - self.err_mse) / self.err_w
            self.n_errors += 1

    def add(self, xs: tuple[float, ...], y: float, lam: float) -> bool:
        """Add one sample with decay `lam` on the old ones; False (state unchanged) on overflow."""
        k = self.k
        w = lam * self.w + 1.0
        dy = y - self.my
        my = self.my + dy / w
        cyy = lam * self.cyy + dy * (y - my)
        if k == 2:  # unrolled: calendar-style two-feature models are per-bar hot paths too
            x0, x1 = xs
            mx = self.mx
            cxx = self.cxx
            cxy = self.cxy
            d0 = x0 - mx[0]
            d1 = x1 - mx[1]
            f = 1.0 - 1.0 / w  # centred co-moment update: d_i * (x_j - new mean_j) = f d_i d_j
            c00 = lam * cxx[0][0] + f * d0 * d0
            c01 = lam * cxx[0][1] + f * d0 * d1
            c11 = lam * cxx[1][1] + f * d1 * d1
            ry = y - my
            cy0 = lam * cxy[0] + d0 * ry
            cy1 = lam * cxy[1] + d1 * ry
            if not math.isfinite(cyy + c00 + c01 + c11 + cy0 + cy1):
                return False
            mx[0] += d0 / w
            mx[1] += d1 / w
            cxx[0][0] = c00
            cxx[0][1] = cxx[1][0] = c01
            cxx[1][1] = c11
            cxy[0] = cy0
            cxy[1] = cy1
        elif k == 1:  # fast path: the common case
            x = xs[0]
            dx = x - self.mx[0]
            mx0 = self.mx[0] + dx / w
            c_xx = lam * self.cxx[0][0] + dx * (x - mx0)
            c_xy = lam * self.cxy[0] + dx * (y - my)
            if not (math.isfinite(cyy) and math.isfinite(c_xx) and math.isfinite(c_xy)):
                return False
            self.mx[0] = mx0
            self.cxx[0][0] = c_xx
            self.cxy[0] = c_xy
        else:
            # Lengths are k by construction (`update` checks the features), so plain zips:
            # strict ones cost a measurable share of this per-sample path.
            inv_w = 1.0 / w
            ry = y - my
            mx = self.mx
            dxs = [x - m for x, m in zip(xs, mx)]  # noqa: B905
            mxs = [m + d * inv_w for m, d in zip(mx, dxs)]  # noqa: B905
            rxs = [x - m for x, m in zip(xs, mxs)]  # noqa: B905  (deviations from the new means)
            cxx_new = [
                [lam * c + di * rj for c, rj in zip(row, rxs)]  # noqa: B905
                for row, di in zip(self.cxx, dxs)  # noqa: B905
            ]
            cxy_new = [lam * c + di * ry for c, di in zip(self.cxy, dxs)]  # noqa: B905
            # a sum is finite only if every term is (inf and NaN propagate)
            if not math.isfinite(cyy + sum(map(sum, cxx_new)) + sum(cxy_new)):
                return False
            self.mx = mxs
            self.cxx = cxx_new
            self.cxy = cxy_new
        self.w = w
        self.w2 = lam * lam * self.w2 + 1.0
        self.my = my
        self.cyy = cyy
        self.n += 1
        return True

    def kish(self) -> float:
        return self.w * self.w / self.w2 if self.w2 > 0.0 else 0.0

    def solve(self, n_eff: float, shrinkage: float, confidence_n: float) -> Fit:
        """Ridge-shrunk EW least squares on the current sums; kept in `fit` until re-solved."""
        fit = self.fit_now(n_eff, shrinkage, confidence_n)
        self.fit = fit
        self.n_at_fit = self.n
        return fit

    def fit_now(self, n_eff: float, shrinkage: float, confidence_n: float) -> Fit:
        """The regression on the current sums, without keeping it (reports and tests may look
        without changing which coefficients later forecasts use)."""
        k = self.k
        if self.n == 0:
            return Fit(0.0, (0.0,) * k, (0.0,) * k, 0.0, 0, 0.0)
        inv_w = 1.0 / self.w
        ridge = max(shrinkage / n_eff, _MIN_RIDGE) if n_eff > 0.0 else 1e12
        vy = self.cyy * inv_w
        if k == 1:  # fast path
            sxx = self.cxx[0][0] * inv_w
            if sxx <= 1e-18 * (1.0 + self.mx[0] * self.mx[0]):
                beta = 0.0
                inv_a = 1.0
                s_res2 = vy
            else:
                sxy = self.cxy[0] * inv_w
                inv_a = 1.0 / (sxx * (1.0 + ridge))
                beta = sxy * inv_a
                s_res2 = max(vy - 2.0 * beta * sxy + beta * beta * sxx, 0.0)
            alpha = self.my - beta * self.mx[0]
            t = _t_stat(beta, s_res2 * inv_a, n_eff)
            return Fit(
                alpha, (beta,), (t,), n_eff, self.n, _confidence(t * t, 1, n_eff, confidence_n)
            )
        s = [[v * inv_w for v in row] for row in self.cxx]
        b = [v * inv_w for v in self.cxy]
        a = [row[:] for row in s]
        for j in range(k):
            if s[j][j] <= 1e-18 * (1.0 + self.mx[j] * self.mx[j]):
                # A (numerically) constant feature carries no information: drop it exactly.
                for i in range(k):
                    a[i][j] = a[j][i] = 0.0
                    s[i][j] = s[j][i] = 0.0
                a[j][j] = 1.0
                b[j] = 0.0
            else:
                a[j][j] = s[j][j] * (1.0 + ridge)
        solved = _spd_solve(a, b)
        if solved is None:  # not positive definite in floating point: no slope information
            betas = [0.0] * k
            inv_diag = [0.0] * k
        else:
            betas, inv_diag = solved
        alpha = self.my - sum(bt * m for bt, m in zip(betas, self.mx, strict=True))
        explained = sum(bt * bi for bt, bi in zip(betas, b, strict=True))
        quad = 0.0
        for i in range(k):
            row = s[i]
            quad += betas[i] * sum(row[j] * betas[j] for j in range(k))
        s_res2 = max(vy - 2.0 * explained + quad, 0.0)
        t_stats = tuple(_t_stat(betas[j], s_res2 * inv_diag[j], n_eff) for j in range(k))
        # Wald statistic of all slopes: beta' Var(beta)^-1 beta with Var(beta) = s^2 A^-1 / n_eff
        quad_a = 0.0
        for i in range(k):
            row = a[i]
            quad_a += betas[i] * sum(row[j] * betas[j] for j in range(k))
        if quad_a <= 0.0:
            wald = 0.0
        elif s_res2 > 0.0:
            wald = n_eff * quad_a / s_res2
        else:
            wald = math.inf
        conf = _confidence(wald, k, n_eff, confidence_n)
        return Fit(alpha, tuple(betas), t_stats, n_eff, self.n, conf)


def _predict(fit: Fit, xs: tuple[float, ...]) -> float:
    if len(xs) == 1:
        return fit.alpha + fit.betas[0] * xs[0]
    # `sum` itself (its float summation differs between Python versions), without a generator.
    products: map[float] = map(operator.mul, fit.betas, xs)
    return fit.alpha + sum(products)


def _confidence(wald: float, k: int, n_eff: float, confidence_n: float) -> float:
    """Sample adequacy x the empirical-Bayes signal share of the slopes (module docstring)."""
    signal_share = 1.0 - k / wald if wald > k else 0.0
    adequacy = n_eff / (n_eff + confidence_n)
    return min(1.0, max(0.0, adequacy * signal_share))


def _t_stat(beta: float, var_unit: float, n_eff: float) -> float:
    """beta / sqrt(var_unit / n_eff), bounded to +-1e6; 0 when undefined."""
    if beta == 0.0 or n_eff <= 0.0:
        return 0.0
    var_b = var_unit / n_eff
    if not math.isfinite(var_b):
        return 0.0
    if var_b <= 0.0:
        return math.copysign(_MAX_ABS_T, beta)
    t = beta / math.sqrt(var_b)
    return max(-_MAX_ABS_T, min(_MAX_ABS_T, t))


def _spd_solve(a: list[list[float]], b: list[float]) -> tuple[list[float], list[float]] | None:
    """Solve ``a x = b`` for a small symmetric positive definite `a` by Cholesky; return x and
    the diagonal of ``a^-1``, or None when `a` is not positive definite in floating point."""
    k = len(a)
    low = [[0.0] * k for _ in range(k)]
    for i in range(k):
        li = low[i]
        ai = a[i]
        for j in range(i + 1):
            lj = low[j]
            acc = ai[j]
            for m in range(j):
                acc -= li[m] * lj[m]
            if i == j:
                if not acc > 0.0:
                    return None
                li[i] = math.sqrt(acc)
            else:
                li[j] = acc / lj[j]
    # forward substitution L z = b, then back substitution L^T x = z
    z = [0.0] * k
    for i in range(k):
        li = low[i]
        acc = b[i]
        for m in range(i):
            acc -= li[m] * z[m]
        z[i] = acc / li[i]
    x = [0.0] * k
    for i in range(k - 1, -1, -1):
        acc = z[i]
        for m in range(i + 1, k):
            acc -= low[m][i] * x[m]
        x[i] = acc / low[i][i]
    # diag(a^-1) = column sums of squares of L^-1 (lower triangular, inverted column by column)
    inv_diag = [0.0] * k
    for j in range(k):
        col = [0.0] * k
        col[j] = 1.0 / low[j][j]
        for i in range(j + 1, k):
            li = low[i]
            acc = 0.0
            for m in range(j, i):
                acc -= li[m] * col[m]
            col[i] = acc / li[i]
        for i in range(j, k):
            inv_diag[j] += col[i] * col[i]
    return x, inv_diag


_Entry = tuple[tuple[float, ...] | None, float, float, float | None, _Model | None, float | None]
"""(features, price, scale, pooled prediction, model of the regime the forecast was made in,
emitted prediction), the predictions in scale units, remembered for one past update."""


@dataclass(frozen=True, slots=True)
class RegimeFit:
    """One regime group's model as it stands: coefficients, and the RMS of the out-of-sample
    errors of the forecasts emitted in that regime (in scale units; NaN before any)."""

    fit: Fit
    rmse: float
    n_errors: int


REGIME_GROUPINGS: Final = ("none", "volatility", "trend", "full")

_VOL_GROUP: Final = {
    Regime.CALM_UPTREND: "calm",
    Regime.CALM_RANGE: "calm",
    Regime.CALM_DOWNTREND: "calm",
    Regime.VOLATILE_UPTREND: "volatile",
    Regime.VOLATILE_RANGE: "volatile",
    Regime.VOLATILE_DOWNTREND: "volatile",
    Regime.CRISIS: "crisis",
}
_TREND_GROUP: Final = {
    Regime.CALM_UPTREND: "up",
    Regime.VOLATILE_UPTREND: "up",
    Regime.CALM_RANGE: "range",
    Regime.VOLATILE_RANGE: "range",
    Regime.CALM_DOWNTREND: "down",
    Regime.VOLATILE_DOWNTREND: "down",
    Regime.CRISIS: "down",
}


def regime_group(regime: Regime, grouping: str) -> str | None:
    """The calibration group of `regime` under `grouping` (one of REGIME_GROUPINGS):
    ``volatility`` = calm | volatile | crisis, ``trend`` = up | range | down, ``full`` = the
    regime itself, ``none`` = no conditioning. None (the pooled model alone) for UNKNOWN."""
    if grouping == "none" or regime is Regime.UNKNOWN:
        return None
    if grouping == "volatility":
        return _VOL_GROUP[regime]
    if grouping == "trend":
        return _TREND_GROUP[regime]
    if grouping == "full":
        return regime.value
    raise ValueError(f"unknown regime grouping {grouping!r}; expected one of {REGIME_GROUPINGS}")


class ForwardReturnCalibrator:
    """Walk-forward calibration of an indicator against the forward return over `horizon_bars`.

    See the module docstring for the model, the definitions of n_eff and confidence, and the
    no-look-ahead guarantee. Not thread-safe; one instance per agent.

    Args:
        horizon_bars: h, the forecast horizon in updates (bars) of one key.
        n_features: k, the length of ``x`` (a float when k = 1, a sequence otherwise).
        halflife_bars: memory of the regression, in bars of one key.
        error_halflife_bars: memory of the out-of-sample error variance (sigma), in bars of one
            key; None = `halflife_bars`. Shorter than the regression's memory lets sigma follow
            changes in forecastability without making the slope noisy.
        min_samples: realized samples (pooled or per key, see ``pooled``) before any Estimate.
        shrinkage: ridge strength in effective pseudo-observations with zero slope.
        pooled: one model for all keys (default) or an independent model per key.
        cross_correlation: assumed average correlation of pooled samples of different keys on
            the same bar, in [0, 1]; only lowers n_eff (and so confidence).
        sigma_floor: lower bound of sigma, in return units over the horizon.
        confidence_n: effective sample size at which the sample-adequacy factor is 1/2.
        refit_every: re-solve the regression after at most this many new samples (1 = every
            sample). A pooled multi-feature model may refit once a bar instead of once a key;
            forecasts then use coefficients at most `refit_every` samples old (still no
            look-ahead, still deterministic).
    """

    def __init__(
        self,
        horizon_bars: int,
        *,
        n_features: int = 1,
        halflife_bars: float = 500.0,
        error_halflife_bars: float | None = None,
        min_samples: int = 60,
        shrinkage: float = 10.0,
        pooled: bool = True,
        cross_correlation: float = 0.0,
        sigma_floor: float = 1e-4,
        confidence_n: float = 20.0,
        refit_every: int = 1,
        regime_prior: float = 50.0,
        min_regime_errors: int = 100,
    ) -> None:
        if horizon_bars < 1:
            raise ValueError(f"horizon_bars must be >= 1, got {horizon_bars}")
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if not halflife_bars > 0.0:
            raise ValueError(f"halflife_bars must be > 0, got {halflife_bars}")
        if error_halflife_bars is not None and not error_halflife_bars > 0.0:
            raise ValueError(f"error_halflife_bars must be > 0, got {error_halflife_bars}")
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        if not shrinkage >= 0.0:
            raise ValueError(f"shrinkage must be >= 0, got {shrinkage}")
        if not 0.0 <= cross_correlation <= 1.0:
            raise ValueError(f"cross_correlation must be in [0, 1], got {cross_correlation}")
        if not (sigma_floor > 0.0 and math.isfinite(sigma_floor)):
            raise ValueError(f"sigma_floor must be finite and > 0, got {sigma_floor}")
        if not confidence_n > 0.0:
            raise ValueError(f"confidence_n must be > 0, got {confidence_n}")
        if refit_every < 1:
            raise ValueError(f"refit_every must be >= 1, got {refit_every}")
        if not regime_prior > 0.0:
            raise ValueError(f"regime_prior must be > 0, got {regime_prior}")
        if min_regime_errors < 1:
            raise ValueError(f"min_regime_errors must be >= 1, got {min_regime_errors}")
        self.horizon_bars = horizon_bars
        self.n_features = n_features
        self.halflife_bars = halflife_bars
        self.error_halflife_bars = (
            error_halflife_bars if error_halflife_bars is not None else halflife_bars
        )
        self.min_samples = min_samples
        self.shrinkage = shrinkage
        self.pooled = pooled
        self.cross_correlation = cross_correlation
        self.sigma_floor = sigma_floor
        self.confidence_n = confidence_n
        self.refit_every = refit_every
        self.regime_prior = regime_prior
        self.min_regime_errors = min_regime_errors
        self._regime_models: dict[tuple[str, str], _Model] = {}
        self._regime_pool: dict[str, _Model] = {}
        self._history: dict[str, deque[_Entry]] = {}
        self._pool = _Model(n_features)
        self._models: dict[str, _Model] = {}
        self.skipped = 0
        """Samples dropped because they were not finite or would overflow the sums."""

    # -- public API ----------------------------------------------------------------------------

    def update(
        self,
        key: str,
        x: float | Sequence[float] | None,
        price: float,
        *,
        scale: float = 1.0,
        regime: str | None = None,
    ) -> Estimate | None:
        """Record bar t of `key` and return the calibrated forecast for t -> t + h, if any.

        `x` is the indicator known at this bar (None while not computable; non-finite counts as
        None), `price` the bar's close (finite, > 0), `scale` the ex-ante scale of the forward
        return (finite, > 0; e.g. volatility over the horizon), `regime` the calibration group
        of the regime at this bar (see `regime_group`; None: pooled model only). Returns None
        while `x` is None or fewer than `min_samples` samples have been realized.
        """
        # Chained comparisons reject NaN and infinity without function calls (hot path).
        if not 0.0 < price < _INF:
            raise ValueError(f"price must be finite and > 0, got {price!r}")
        if not 0.0 < scale < _INF:
            raise ValueError(f"scale must be finite and > 0, got {scale!r}")
        xs: tuple[float, ...] | None
        if x is None:
            xs = None
        elif type(x) is float and self.n_features == 1:  # the hot path
            xs = (x,) if -_INF < x < _INF else None
        elif type(x) is tuple and len(x) == self.n_features and all(-_INF < v < _INF for v in x):
            xs = x  # already a tuple of finite numbers
        else:
            xs = self._features(x)
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = deque(maxlen=self.horizon_bars)
        model = self._pool if self.pooled else self._model(key)

        # 1. the entry made h bars ago has completed its horizon: score it, then learn from it
        if len(history) == self.horizon_bars:
            x0, price0, scale0, pred0, gmodel0, used0 = history[0]
            if x0 is not None:
                y = (price / price0 - 1.0) / scale0
                if -_INF < y < _INF:
                    halflife = self.halflife_bars
                    error_halflife = self.error_halflife_bars
                    if not model.learn(key, x0, y, pred0, halflife, error_halflife):
                        self.skipped += 1
                    if gmodel0 is not None and not gmodel0.learn(
                        # the regime model scores the forecast actually emitted in its regime
                        key,
                        x0,
                        y,
                        used0,
                        halflife,
                        error_halflife,
                    ):
                        self.skipped += 1
                else:
                    self.skipped += 1

        # 2. predict from the current x with the coefficients as they are now
        if xs is None:
            history.append((None, price, scale, None, None, None))
            return None
        fit = model.fit
        if fit is None or model.n - model.n_at_fit >= self.refit_every:
            fit = model.solve(self._n_eff(model), self.shrinkage, self.confidence_n)
        pred = fit.alpha + fit.betas[0] * xs[0] if len(xs) == 1 else _predict(fit, xs)
        if not -_INF < pred < _INF:
            history.append((xs, price, scale, None, None, None))
            return None
        if regime is None:
            history.append((xs, price, scale, pred, None, pred))
            if model.n < self.min_samples:
                return None
            mu = scale * pred
            sigma = scale * math.sqrt(model.err_mse)
            if sigma < self.sigma_floor:
                sigma = self.sigma_floor
            if not (math.isfinite(mu) and math.isfinite(sigma)):
                return None
            return Estimate(mu, sigma, fit)
        # Partial pooling: the regime model's forecast weighs in by its effective sample size
        # against `regime_prior` pseudo-samples of the pooled forecast.
        gmodel = (
            self._regime_pool.get(regime) if self.pooled else self._regime_models.get((key, regime))
        )
        if gmodel is None:
            gmodel = self._regime_model(key, regime)
        gfit = gmodel.fit
        if gfit is None or gmodel.n - gmodel.n_at_fit >= self.refit_every:
            gfit = gmodel.solve(self._n_eff(gmodel), self.shrinkage, self.confidence_n)
        gpred = gfit.alpha + gfit.betas[0] * xs[0] if len(xs) == 1 else _predict(gfit, xs)
        weight = gfit.n_eff / (gfit.n_eff + self.regime_prior) if -_INF < gpred < _INF else 0.0
        used = pred + weight * (gpred - pred) if weight > 0.0 else pred
        history.append((xs, price, scale, pred, gmodel, used))
        if model.n < self.min_samples:
            return None
        mse = gmodel.err_mse if gmodel.n_errors >= self.min_regime_errors else model.err_mse
        mu = scale * used
        sigma = scale * math.sqrt(mse)
        if sigma < self.sigma_floor:
            sigma = self.sigma_floor
        if not (-_INF < mu < _INF and sigma < _INF):
            return None
        conf = fit.confidence + weight * (gfit.confidence - fit.confidence)
        if not conf > 0.0:  # as min(1.0, max(0.0, conf)): NaN and -0.0 become 0.0
            conf = 0.0
        elif conf > 1.0:
            conf = 1.0
        # tuple.__new__ directly: the NamedTuple's generated __new__ is a Python call, and this
        # line runs for every estimate of every agent.
        return _new_estimate(Estimate, (mu, sigma, fit, gfit, weight, conf))

    def regime_fits(self, key: str | None = None) -> dict[str, RegimeFit]:
        """Every regime group's model as it stands (of the pooled model, or of `key`'s when not
        pooled): coefficients, out-of-sample RMSE (scale units) and error count."""
        owner = "" if self.pooled or key is None else key
        out: dict[str, RegimeFit] = {}
        for (k, group), model in sorted(self._regime_models.items()):
            if k != owner:
                continue
            fit = model.fit_now(self._n_eff(model), self.shrinkage, self.confidence_n)
            rmse = math.sqrt(model.err_mse) if model.n_errors else math.nan
            out[group] = RegimeFit(fit, rmse, model.n_errors)
        return out

    def reset(self, key: str) -> None:
        """Forget `key`'s pending forecasts (e.g. after a gap in its data): no sample is formed
        across the break. What the models already learned is kept."""
        self._history.pop(key, None)

    def _regime_model(self, key: str, group: str) -> _Model:
        owner = "" if self.pooled else key
        model = self._regime_models.get((owner, group))
        if model is None:
            model = self._regime_models[(owner, group)] = _Model(self.n_features)
            if self.pooled:
                self._regime_pool[group] = model
        return model

    def n_samples(self, key: str | None = None) -> int:
        """Realized samples in the pooled model, or in `key`'s model (the pool when pooled)."""
        if key is None or self.pooled:
            return self._pool.n
        model = self._models.get(key)
        return model.n if model is not None else 0

    # -- internals -----------------------------------------------------------------------------

    def _features(self, x: float | Sequence[float] | None) -> tuple[float, ...] | None:
        if x is None:
            return None
        if isinstance(x, (int, float)):
            xs: tuple[float, ...] = (float(x),)
        else:
            xs = tuple(float(v) for v in x)
        if len(xs) != self.n_features:
            raise ValueError(f"expected {self.n_features} feature(s), got {len(xs)}")
        if not all(math.isfinite(v) for v in xs):
            return None
        return xs

    def _model(self, key: str) -> _Model:
        if self.pooled:
            return self._pool
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = _Model(self.n_features)
        return model

    def _n_eff(self, model: _Model) -> float:
        n_keys = max(len(model.keys), 1)
        dependence = 1.0 + (n_keys - 1) * self.cross_correlation
        return model.kish() / (self.horizon_bars * dependence)


# -- small generic helpers ---------------------------------------------------------------------


class RingBuffer:
    """The last `capacity` floats of a stream: O(1) append, O(1) access by lag, running sum.

    ``ago(0)`` is the latest value, ``ago(n)`` the value n appends earlier. The running sum is
    recomputed exactly once per `capacity` appends, so rounding drift never accumulates.
    """

    __slots__ = ("_buf", "_capacity", "_head", "_since_resum", "_size", "_sum")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._buf = [0.0] * capacity
        self._head = -1  # index of the latest value
        self._size = 0
        self._sum = 0.0
        self._since_resum = 0

    def append(self, value: float) -> None:
        head = self._head + 1
        if head == self._capacity:
            head = 0
        if self._size == self._capacity:
            self._sum -= self._buf[head]
        else:
            self._size += 1
        self._buf[head] = value
        self._head = head
        self._sum += value
        self._since_resum += 1
        if self._since_resum >= self._capacity:
            self._sum = math.fsum(
                self._buf[: self._size] if self._size < self._capacity else self._buf
            )
            self._since_resum = 0

    def ago(self, lag: int) -> float:
        """The value appended `lag` appends before the latest (0 = the latest)."""
        if not 0 <= lag < self._size:
            raise IndexError(f"lag {lag} outside the {self._size} stored values")
        return self._buf[(self._head - lag) % self._capacity]

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def full(self) -> bool:
        return self._size == self._capacity

    @property
    def sum(self) -> float:
        return self._sum

    @property
    def mean(self) -> float:
        if self._size == 0:
            raise ValueError("mean of an empty RingBuffer")
        return self._sum / self._size

    def simple_return(self, bars: int, skip: int = 0) -> float | None:
        """``ago(skip) / ago(bars) - 1`` (a price series' return from `bars` to `skip` bars
        ago), or None while fewer than ``bars + 1`` values are stored."""
        if not 0 <= skip < bars:
            raise ValueError(f"need 0 <= skip < bars, got skip={skip}, bars={bars}")
        if bars >= self._size:
            return None
        cap = self._capacity
        return self._buf[(self._head - skip) % cap] / self._buf[(self._head - bars) % cap] - 1.0


class EwMoments:
    """Exponentially weighted mean and variance of a stream, O(1) per update.

    Weights decay by half every `halflife` updates; the update is West's weighted Welford
    recurrence with decay (centred, numerically stable). ``variance`` is bias-corrected for
    reliability weights (``C / (W - W2 / W)``), so the first samples are not under-dispersed.
    A volatility of daily returns is ``EwMoments(h).std`` over the returns.
    """

    __slots__ = ("_c", "_lam", "_mean", "_n", "_w", "_w2")

    def __init__(self, halflife: float) -> None:
        if not halflife > 0.0:
            raise ValueError(f"halflife must be > 0, got {halflife}")
        self._lam = 0.5 ** (1.0 / halflife)
        self._w = 0.0
        self._w2 = 0.0
        self._mean = 0.0
        self._c = 0.0
        self._n = 0

    def update(self, value: float) -> None:
        lam = self._lam
        w = lam * self._w + 1.0
        d = value - self._mean
        mean = self._mean + d / w
        self._c = lam * self._c + d * (value - mean)
        self._mean = mean
        self._w = w
        self._w2 = lam * lam * self._w2 + 1.0
        self._n += 1

    @property
    def count(self) -> int:
        return self._n

    @property
    def n_eff(self) -> float:
        """Kish's effective number of samples of the weights."""
        return self._w * self._w / self._w2 if self._w2 > 0.0 else 0.0

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def variance(self) -> float:
        denom = self._w - self._w2 / self._w if self._w > 0.0 else 0.0
        return max(self._c / denom, 0.0) if denom > 0.0 else 0.0

    @property
    def std(self) -> float:
        # `variance` written out: agents read a volatility every bar.
        w = self._w
        denom = w - self._w2 / w if w > 0.0 else 0.0
        return math.sqrt(max(self._c / denom, 0.0)) if denom > 0.0 else 0.0


__all__ = [
    "REGIME_GROUPINGS",
    "Estimate",
    "EwMoments",
    "Fit",
    "ForwardReturnCalibrator",
    "RegimeFit",
    "RingBuffer",
    "regime_group",
]
