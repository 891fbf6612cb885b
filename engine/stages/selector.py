"""Selector: a step's opportunities become a diversified, ordered slate.

Two parts, tested apart:

- :class:`ReturnHistory` keeps trailing per-symbol daily returns (numpy ring buffers) and
  estimates pairwise correlations;
- a :class:`SelectionPolicy` orders and cuts the candidates (:class:`PenaltySelector`,
  :class:`AllSelector`).

Decisions documented here (and tested in tests/stages):

- Alignment: a return is recorded for step t only when the symbol also had a close at step t-1
  (a return across a gap spans several steps and would be paired with other symbols' one-step
  returns). Each symbol's ring buffer slot remembers the step it belongs to, so the history is a
  step-aligned matrix with holes, and a correlation uses the pairwise-complete observations:
  the steps where both symbols have a return.
- Unknown correlation: with fewer than `min_overlap` common observations, or a constant series,
  the correlation is reported as 1.0. For a diversification penalty the conservative guess is
  "as correlated as possible": a name we know nothing about cannot buy its way into the slate
  as a diversifier. The matrix is always NaN-free with a unit diagonal.
- Penalty: only positive co-movement of the *positions* is penalised. With shorts allowed the
  position correlation is sign_i * sign_j * rho_ij (a long and a short in two names moving
  together is a hedge, not a concentration); diversifying (negative) correlation earns no bonus.
  The default form is multiplicative, ``score * (1 - lambda * max_chosen rho+)``, because
  score = mu/sigma grows with the square root of the horizon: a subtractive ``score - lambda *
  rho`` would mean a different trade-off at each common horizon, and with lambda = 0.5 and
  typical daily scores (0.05-0.2) it would exclude any name correlated more than ~0.3 with a
  pick, i.e. nearly every second stock. The subtractive form is available (`form="subtractive"`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from config.models import RiskConfig, SelectorConfig
from contracts import Opportunity

__all__ = [
    "AllSelector",
    "PenaltySelector",
    "ReturnHistory",
    "SelectionPolicy",
    "opportunity_score",
    "selection_policy_from_config",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class _Series:
    row: int
    """This symbol's row in the history's returns/steps matrices."""
    last_close: float
    last_step: int


class ReturnHistory:
    """Trailing simple returns per symbol over the last `lookback` steps, step-aligned."""

    def __init__(self, lookback: int, *, min_overlap: int | None = None) -> None:
        if lookback < 2:
            raise ValueError(f"lookback must be >= 2, got {lookback}")
        overlap = min(20, lookback) if min_overlap is None else min_overlap
        if not 2 <= overlap <= lookback:
            raise ValueError(f"min_overlap must be in [2, lookback={lookback}], got {overlap}")
        self.lookback = lookback
        self.min_overlap = overlap
        self._step = -1
        self._series: dict[str, _Series] = {}
        # One row per symbol: every symbol's window is read in one vectorised pass per step
        # (the market features), so the buffers live in two matrices rather than per symbol.
        self._returns = np.zeros((16, lookback), dtype=np.float64)
        self._steps = np.full((16, lookback), -1, dtype=np.int64)
        """Step index of each slot (-1 = never written); a slot is valid iff its step is in
        the window."""

    @property
    def steps(self) -> int:
        """Number of `update` calls so far."""
        return self._step + 1

    def symbols(self) -> list[str]:
        return sorted(self._series)

    def update(self, closes: Mapping[str, float]) -> None:
        """Record one step's closes. Call once per step, including steps with no closes.

        A non-finite or non-positive close is treated as missing.
        """
        self._step += 1
        t = self._step
        slot = t % self.lookback
        for symbol, close in closes.items():
            close = float(close)
            if not (math.isfinite(close) and close > 0.0):
                continue
            series = self._series.get(symbol)
            if series is None:
                row = len(self._series)
                if row == self._returns.shape[0]:
                    self._grow()
                self._series[symbol] = _Series(row=row, last_close=close, last_step=t)
                continue
            if series.last_step == t - 1:
                self._returns[series.row, slot] = close / series.last_close - 1.0
                self._steps[series.row, slot] = t
            series.last_close = close
            series.last_step = t

    def _grow(self) -> None:
        rows = self._returns.shape[0]
        self._returns = np.vstack([self._returns, np.zeros_like(self._returns)])
        self._steps = np.vstack([self._steps, np.full((rows, self.lookback), -1, np.int64)])

    def last_close(self, symbol: str) -> float:
        """The symbol's latest valid close (KeyError if it never had one)."""
        return self._series[symbol].last_close

    def returns(self, symbol: str) -> FloatArray:
        """The symbol's returns in the window, oldest first, NaN where it has none."""
        values, _ = self.matrix([symbol])
        row: FloatArray = values[0]
        return row

    def matrix(self, symbols: Sequence[str]) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """K x lookback returns (columns oldest -> newest, NaN where none) and validity."""
        k, n = len(symbols), self.lookback
        values = np.full((k, n), np.nan, dtype=np.float64)
        mask = np.zeros((k, n), dtype=np.bool_)
        t = self._step
        if t < 0:
            return values, mask
        # Column c holds step t - n + 1 + c, whose slot is (t - n + 1 + c) % n.
        column_steps = np.arange(t - n + 1, t + 1, dtype=np.int64)
        order = column_steps % n
        known = self._series
        rows = [i for i, symbol in enumerate(symbols) if symbol in known]
        if not rows:
            return values, mask
        index = np.fromiter((known[symbols[i]].row for i in rows), dtype=np.intp, count=len(rows))
        steps = self._steps[index[:, None], order]
        returns = self._returns[index[:, None], order]
        # Valid iff the slot was written at that very step (-1 marks never written).
        valid = (steps == column_steps) & (column_steps >= 0)
        mask[rows] = valid
        values[rows] = np.where(valid, returns, np.nan)
        return values, mask

    def correlation(self, symbols: Sequence[str]) -> FloatArray:
        """K x K pairwise-complete correlations; unknown pairs are 1.0 (see module doc)."""
        values, mask = self.matrix(symbols)
        return pairwise_correlation(values, mask, self.min_overlap)


class StoredReturns:
    """Trailing returns read back from the feature store (one row per symbol, NaN = none);
    the view the selection policies correlate over."""

    def __init__(self, returns: Mapping[str, FloatArray], *, lookback: int, min_overlap: int):
        self._returns = returns
        self.lookback = lookback
        self.min_overlap = min_overlap

    def correlation(self, symbols: Sequence[str]) -> FloatArray:
        n = self.lookback
        # Stored rows are (almost always) full windows: stacked in one copy instead of written
        # row by row into a NaN matrix; a missing symbol is a NaN row, a short row NaN-padded
        # on the left (oldest side), as before.
        rows: list[FloatArray] = []
        missing: FloatArray | None = None
        for symbol in symbols:
            row = self._returns.get(symbol)
            if row is not None and row.size >= n:
                rows.append(row[-n:])
                continue
            if missing is None:
                missing = np.full(n, np.nan, dtype=np.float64)
            if row is None or row.size == 0:
                rows.append(missing)
            else:
                rows.append(np.concatenate((missing[: n - row.size], row)))
        values = (
            np.array(rows, dtype=np.float64) if rows else np.full((0, n), np.nan, dtype=np.float64)
        )
        return pairwise_correlation(values, ~np.isnan(values), self.min_overlap)


class ReturnsView(Protocol):
    def correlation(self, symbols: Sequence[str]) -> FloatArray: ...


def pairwise_correlation(
    values: FloatArray, mask: npt.NDArray[np.bool_], min_overlap: int
) -> FloatArray:
    """K x K pairwise-complete correlations of the rows of `values` where `mask` holds; pairs
    with fewer than `min_overlap` common observations (or a constant series) are 1.0."""
    k = values.shape[0]
    if k == 0:
        return np.zeros((0, 0), dtype=np.float64)
    m = mask.astype(np.float64)
    x = np.where(mask, values, 0.0)
    # Sums over the common observations of each pair (i, j).
    n = m @ m.T
    sx = x @ m.T  # sum of x_i where both i and j have a value
    sxx = (x * x) @ m.T
    sxy = x @ x.T
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sxy - sx * sx.T / n
        var_i = sxx - sx * sx / n
        corr = cov / np.sqrt(var_i * var_i.T)
    # A (numerically) constant series over the overlap has no defined correlation.
    flat = (var_i <= 1e-12 * sxx) | (var_i <= 0.0)
    unknown = (n < min_overlap) | ~np.isfinite(corr) | flat | flat.T
    # np.where returns a new float64 array: the diagonal is set in place, no further copy.
    result: FloatArray = np.where(unknown, 1.0, np.clip(corr, -1.0, 1.0))
    np.fill_diagonal(result, 1.0)
    return result


def opportunity_score(opp: Opportunity, allow_short: bool) -> float:
    """mu / sigma, or |mu| / sigma when shorts are allowed (the side follows the sign of mu)."""
    mu = abs(opp.mu) if allow_short else opp.mu
    return mu / opp.sigma


class SelectionPolicy(Protocol):
    name: str

    def select(
        self, opportunities: Sequence[Opportunity], history: ReturnsView
    ) -> list[Opportunity]:
        """The chosen opportunities, in the order chosen (most wanted first)."""
        ...


class AllSelector:
    """Every candidate with a positive score, best score first (ties: by symbol)."""

    name = "all"

    def __init__(self, allow_short: bool = False) -> None:
        self.allow_short = allow_short

    def select(
        self, opportunities: Sequence[Opportunity], history: ReturnsView
    ) -> list[Opportunity]:
        scored = [(opportunity_score(o, self.allow_short), o) for o in opportunities]
        chosen = [(s, o) for s, o in scored if s > 0.0]
        chosen.sort(key=lambda so: (-so[0], so[1].symbol))
        return [o for _, o in chosen]


class PenaltySelector:
    """Greedy diversified top-K with a correlation penalty against the names already chosen.

    Each round picks the candidate with the highest adjusted score (ties: smallest symbol), where
    the penalty uses the largest positive position-correlation with a chosen name; it stops at
    `top_k` picks or when no candidate's adjusted score is > 0.
    """

    name = "penalty"

    def __init__(
        self,
        top_k: int,
        correlation_penalty: float,
        allow_short: bool = False,
        *,
        form: Literal["multiplicative", "subtractive"] = "multiplicative",
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if not (math.isfinite(correlation_penalty) and correlation_penalty >= 0.0):
            raise ValueError(f"correlation_penalty must be >= 0, got {correlation_penalty}")
        if form not in ("multiplicative", "subtractive"):
            raise ValueError(f"form must be 'multiplicative' or 'subtractive', got {form!r}")
        self.top_k = top_k
        self.correlation_penalty = correlation_penalty
        self.allow_short = allow_short
        self.form = form

    def select(
        self, opportunities: Sequence[Opportunity], history: ReturnsView
    ) -> list[Opportunity]:
        allow_short = self.allow_short
        scored = sorted(
            (
                (o.symbol, score, o)
                for o in opportunities
                if (score := opportunity_score(o, allow_short)) > 0.0
            ),
            key=_by_symbol,
        )
        if not scored:
            return []
        cands = [o for _, _, o in scored]
        scores = [score for _, score, _ in scored]
        signs = np.array([1.0 if o.mu >= 0.0 else -1.0 for o in cands])
        corr = history.correlation([o.symbol for o in cands])
        # Only positive position-correlation is penalised: clipped once for the whole matrix.
        penalty_rows = np.maximum(corr * np.outer(signs, signs), 0.0)
        # The greedy rounds run on Python floats: a slate has ~20 candidates and <= top_k
        # rounds, where a numpy call per operation costs more than the arithmetic. The same
        # IEEE operations in the same order as the vector form (score * (1 - lam * worst), or
        # score - lam * worst; the running maximum follows np.maximum, NaN included).
        # worst[i]: largest positive position-correlation of candidate i with a chosen name.
        k = len(cands)
        worst = [0.0] * k
        available = [True] * k
        remaining = k
        lam = self.correlation_penalty
        multiplicative = self.form == "multiplicative"
        chosen: list[Opportunity] = []
        while len(chosen) < self.top_k and remaining:
            best = -1
            best_value = -math.inf
            for i in range(k):
                if not available[i]:
                    continue
                if multiplicative:
                    value = scores[i] * (1.0 - lam * worst[i])
                else:
                    value = scores[i] - lam * worst[i]
                if value != value:  # NaN (an infinite score times 0): argmax would pick it
                    best, best_value = i, value
                    break
                if best < 0 or value > best_value:  # first maximum = smallest symbol on ties
                    best, best_value = i, value
            if not best_value > 0.0:
                break
            chosen.append(cands[best])
            available[best] = False
            remaining -= 1
            row = penalty_rows[best].tolist()
            worst = [w if w >= r or w != w else r for w, r in zip(worst, row, strict=True)]
        return chosen


def _by_symbol(item: tuple[str, float, Opportunity]) -> str:
    return item[0]


def selection_policy_from_config(cfg: SelectorConfig, risk: RiskConfig) -> SelectionPolicy:
    """The configured policy; `dpp` is not implemented yet (a start-up error)."""
    if cfg.policy == "penalty":
        return PenaltySelector(cfg.top_k, cfg.correlation_penalty, risk.allow_short)
    if cfg.policy == "all":
        return AllSelector(risk.allow_short)
    if cfg.policy == "dpp":
        raise NotImplementedError(
            "selector.policy = 'dpp' arrives with the DPP issue; use 'penalty'"
        )
    raise ValueError(f"unknown selector.policy {cfg.policy!r}")  # pragma: no cover - Literal
