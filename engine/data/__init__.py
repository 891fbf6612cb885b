"""Real market data shipped with the package, so `tradeengine run` has something to replay.

The files are data, not code: see README.md beside this module for their sources and licences.
A replay config names them as ``bundled:<file>`` (see `engine.sources.replay`). Their SHA-256
digests are recorded here and checked by the test suite, so a corrupted copy is caught.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Final

__all__ = ["BUNDLED_SHA256", "bundled_path"]

_HERE: Final = Path(__file__).resolve().parent

BUNDLED_SHA256: Final[dict[str, str]] = {
    "us_stocks_20_daily_close.csv.gz": (
        "ee21cac28befb1d0a739a9ceb22184f995394726aa0cfde9a21941d1ac04ac0d"
    ),
    "sp500_index_daily_close.csv.gz": (
        "894c34431c284f86aa64a467e176e2a3c9b697c857eb9ab35006c2dd55d3fdf2"
    ),
    "us_treasury_yield_curves_daily.csv.gz": (
        "c6897c44ffd64b4b2f452365798a7de8f33016bd14869a7190e11a9e93beb1e5"
    ),
    "goog_daily_ohlcv.csv": "60e961a567490b157f71888df9e6afb36190a34a40a6286aa38988e2343f1b1a",
}
"""File name -> SHA-256 (hex) of every bundled file. Treat as read-only."""


def bundled_path(name: str) -> Path:
    """Absolute path of the bundled file `name` (e.g. ``"us_stocks_20_daily_close.csv.gz"``).

    Raises FileNotFoundError naming the available files (closest matches first) for an unknown
    name; only the files listed in `BUNDLED_SHA256` are reachable, so ``bundled:../x`` cannot
    escape the package.
    """
    if name not in BUNDLED_SHA256:
        available = list(BUNDLED_SHA256)
        close = difflib.get_close_matches(name, available, n=len(available), cutoff=0.4)
        ordered = close + [n for n in available if n not in close]
        raise FileNotFoundError(f"no bundled data file {name!r}; available: {', '.join(ordered)}")
    return _HERE / name
