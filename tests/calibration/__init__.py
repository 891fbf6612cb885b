"""Tests of `engine.calibration`, and the real-data loaders shared with the starter-agent tests.

The loaders read the bundled files themselves (the replay source is tested elsewhere) and shape
them the way that source publishes them: close-only daily bars at 21:00 UTC, one per symbol per
date, no bar for a blank; one `MacroObservation` per non-blank yield (decimal), series named
after the file's columns, at the same timestamp and ahead of that date's bars. Bars are built
once per date and cached (pydantic validation of ~166k bars is the slow part).
"""

from __future__ import annotations

import csv
import functools
import gzip
import itertools
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from contracts import Bar, MacroObservation, Signal, SocialPost
from engine.data import bundled_path
from engine.testing import make_bar

# The copies bundled with the package (their sha256 is checked in tests/sources).
STOCKS = bundled_path("us_stocks_20_daily_close.csv.gz")
YIELDS = bundled_path("us_treasury_yield_curves_daily.csv.gz")

_macro_ids = itertools.count(1)


def _require(path: Path) -> None:
    # Bundled package data: missing means a broken install, which must fail, never skip.
    if not path.exists():
        pytest.fail(f"bundled data file missing: {path}")


def bar_ts(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 21, tzinfo=UTC)


@functools.cache
def stock_table() -> tuple[tuple[date, ...], tuple[str, ...], tuple[tuple[float | None, ...], ...]]:
    """(dates, symbols, rows of closes with None for blanks) of the 20-stock file."""
    _require(STOCKS)
    with gzip.open(STOCKS, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        dates: list[date] = []
        rows: list[tuple[float | None, ...]] = []
        for rec in reader:
            dates.append(date.fromisoformat(rec[0]))
            rows.append(tuple(float(v) if v else None for v in rec[1:]))
    return tuple(dates), tuple(header[1:]), tuple(rows)


@functools.cache
def _bars_of(index: int) -> tuple[Bar, ...]:
    dates, symbols, rows = stock_table()
    ts = bar_ts(dates[index])
    return tuple(
        make_bar(sym, ts, close)
        for sym, close in zip(symbols, rows[index], strict=True)
        if close is not None
    )


def stock_bars(
    start: date,
    end: date,
    *,
    symbols: Sequence[str] | None = None,
    alter: Callable[[Bar], float] | None = None,
) -> list[Bar]:
    """Bars with start <= date <= end; `alter(bar)` (if given) returns a replacement close."""
    dates, _, _ = stock_table()
    wanted = set(symbols) if symbols is not None else None
    out: list[Bar] = []
    for i, day in enumerate(dates):
        if not start <= day <= end:
            continue
        for bar in _bars_of(i):
            if wanted is not None and bar.symbol not in wanted:
                continue
            if alter is not None:
                bar = make_bar(bar.symbol, bar.ts_event, alter(bar))
            out.append(bar)
    return out


@functools.cache
def yield_table() -> tuple[tuple[date, dict[str, float]], ...]:
    """(date, {series: decimal yield}) with blanks left out - a missing yield is missing."""
    _require(YIELDS)
    with gzip.open(YIELDS, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        out = []
        for rec in reader:
            day = date.fromisoformat(rec[0][:10])
            out.append((day, {s: float(v) for s, v in zip(header[1:], rec[1:], strict=True) if v}))
    return tuple(out)


def macro_observations(
    start: date,
    end: date,
    *,
    alter: Callable[[date, str, float], float] | None = None,
) -> list[MacroObservation]:
    out: list[MacroObservation] = []
    for day, values in yield_table():
        if not start <= day <= end:
            continue
        ts = bar_ts(day)
        for series, value in values.items():
            v = alter(day, series, value) if alter is not None else value
            out.append(
                MacroObservation(
                    trace_id=f"{next(_macro_ids) + (1 << 100):032x}",
                    ts_event=ts,
                    ts_init=ts,
                    series=series,
                    value=v,
                    unit="decimal",
                    source="treasury",
                )
            )
    return out


E = TypeVar("E", MacroObservation, SocialPost)


def merge_first(
    bars: Iterable[Bar], others: Iterable[E], *, others_first: bool = True
) -> list[Bar | E]:
    """One stream ordered by time; at equal times the other events (macro observations, posts)
    come first (or last, as a replay whose config lists the bar source first publishes them)."""
    other_rank, bar_rank = (0, 1) if others_first else (1, 0)
    keyed: list[tuple[datetime, int, int, Bar | E]] = []
    for n, e in enumerate(others):
        keyed.append((e.ts_event, other_rank, n, e))
    for n, b in enumerate(bars):
        keyed.append((b.ts_event, bar_rank, n, b))
    keyed.sort(key=lambda k: k[:3])
    return [k[3] for k in keyed]


def merge_macro_first(
    bars: Iterable[Bar], macro: Iterable[MacroObservation], *, macro_first: bool = True
) -> list[Bar | MacroObservation]:
    """`merge_first` of bars and macro observations."""
    return merge_first(bars, macro, others_first=macro_first)


def band_coverage(
    signals: Iterable[Signal], bars: Iterable[Bar], horizon_bars: int
) -> tuple[float, int]:
    """Fraction of signals whose realized forward return (close h bars of that symbol later /
    close at the signal - 1) lies within mu +- sigma, and how many signals could be scored."""
    series: dict[str, list[float]] = {}
    position: dict[tuple[str, datetime], int] = {}
    for bar in bars:
        closes = series.setdefault(bar.symbol, [])
        position[(bar.symbol, bar.ts_event)] = len(closes)
        closes.append(bar.close)
    inside = scored = 0
    for sig in signals:
        closes = series[sig.symbol]
        i = position[(sig.symbol, sig.ts_event)]
        if i + horizon_bars >= len(closes):
            continue
        realized = closes[i + horizon_bars] / closes[i] - 1.0
        scored += 1
        inside += abs(realized - sig.mu) <= sig.sigma
    return (inside / scored if scored else float("nan")), scored
