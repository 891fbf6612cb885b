"""The engine's own market features: what the trading path reads back from the feature store.

The pipeline writes, once per step and for every symbol it has seen, the symbol's last close,
its trailing daily returns (the window the selector correlates over) and their realised
volatility; the selector and the risk stage then read them in one batched `get_many`. Going
through the store rather than passing the in-process history along is the point: the same
features are visible to other processes (dashboards, remote agents) and a Redis-backed run must
decide exactly like an in-memory one, which the e2e test checks.

Trade-offs made: the whole trailing window is rewritten each step (20 symbols x 60 floats is
~10 kB, cheap next to a round trip) instead of appending one return, because a feature value
must be a complete, self-describing state of the symbol at `ts`.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from engine.features.schema import FeatureField, FeatureSet, FieldType, FloatArray

VOL_WINDOW: Final = 20
TRADING_DAYS: Final = 252

MARKET: Final = FeatureSet(
    name="market",
    version=1,
    description="Per symbol, per step: last close, trailing daily returns, realised volatility",
    fields=(
        FeatureField("close", FieldType.FLOAT, description="Last close (instrument currency)"),
        FeatureField(
            "returns",
            FieldType.FLOAT_ARRAY,
            allow_nan=True,
            description="Trailing daily simple returns, oldest first; NaN where none",
        ),
        FeatureField(
            "vol_20d",
            FieldType.FLOAT,
            allow_nan=True,
            description="Annualised std of the last 20 daily returns (NaN: too few)",
        ),
    ),
)


def realized_vols(returns: FloatArray, window: int = VOL_WINDOW) -> FloatArray:
    """Per row of a K x N returns matrix (NaN = no return that step): the annualised sample std
    of the returns in the last `window` steps; NaN where fewer than 2. One vectorised pass for
    every symbol of a step."""
    tail = returns[:, -window:]
    valid = ~np.isnan(tail)
    n = valid.sum(axis=1)
    x = np.where(valid, tail, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = x.sum(axis=1) / n
        ss = (np.where(valid, tail - mean[:, None], 0.0) ** 2).sum(axis=1)
        vol = np.sqrt(ss / (n - 1)) * math.sqrt(TRADING_DAYS)
    result: FloatArray = np.where(n >= 2, vol, np.nan)
    return result


def realized_vol(returns: FloatArray, window: int = VOL_WINDOW) -> float:
    """`realized_vols` of one symbol's trailing returns."""
    return float(realized_vols(returns[None, :], window)[0])


__all__ = ["MARKET", "VOL_WINDOW", "realized_vol", "realized_vols"]
