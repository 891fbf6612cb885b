"""Real-data loader of the bundled GOOG daily OHLCV file, for tests of volume-aware agents.

The 20-stock file is close-only, so it cannot exercise an agent that needs volume; the GOOG
file (2004-08-19 .. 2013-03-01, 2,148 rows, Yahoo Finance via backtesting.py's test data, see
`engine/data/README.md`) is the bundled series with open, high, low, close and volume. Bars are
shaped as the replay source publishes an OHLCV file: symbol ``GOOG``, one full bar per date at
21:00 UTC (`tests.calibration.bar_ts`). The file is parsed once and cached; bars are built per
call (~2k bars, cheap).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable
from datetime import date

from contracts import Bar
from engine.data import bundled_path
from engine.testing import make_bar
from tests.calibration import _require, bar_ts

GOOG = bundled_path("goog_daily_ohlcv.csv")
GOOG_SYMBOL = "GOOG"

OhlcvRow = tuple[date, float, float, float, float, float]
"""(date, open, high, low, close, volume) of one row of the file."""


@functools.cache
def goog_table() -> tuple[OhlcvRow, ...]:
    """Every row of the GOOG file, in file (date) order."""
    _require(GOOG)
    rows: list[OhlcvRow] = []
    with GOOG.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if [h.lower() for h in header[1:]] != ["open", "high", "low", "close", "volume"]:
            raise ValueError(f"unexpected GOOG header: {header}")
        for rec in reader:
            o, h, lo, c, v = (float(cell) for cell in rec[1:6])
            rows.append((date.fromisoformat(rec[0]), o, h, lo, c, v))
    return tuple(rows)


def goog_bars(
    start: date | None = None,
    end: date | None = None,
    alter: Callable[[Bar], Bar | float] | None = None,
) -> list[Bar]:
    """Full OHLCV bars of GOOG with start <= date <= end (both optional, inclusive).

    `alter(bar)`, if given, returns either a replacement close (a float, as in
    `tests.calibration.stock_bars`; open, high and low are scaled by the same factor so the bar
    stays consistent, volume is kept) or a whole replacement Bar (e.g. with ``volume=None``).
    """
    out: list[Bar] = []
    for day, o, h, lo, c, v in goog_table():
        if (start is not None and day < start) or (end is not None and day > end):
            continue
        bar = make_bar(GOOG_SYMBOL, bar_ts(day), c, open=o, high=h, low=lo, volume=v)
        if alter is not None:
            new = alter(bar)
            if isinstance(new, Bar):
                bar = new
            else:
                f = new / c
                # max/min: h * f can fall an ulp below `new` when the close was the high
                high, low = max(h * f, new), min(lo * f, new)
                bar = make_bar(
                    GOOG_SYMBOL,
                    bar.ts_event,
                    new,
                    open=min(max(o * f, low), high),
                    high=high,
                    low=low,
                    volume=v,
                )
        out.append(bar)
    return out
