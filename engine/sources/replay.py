"""Historical replay: files of bars or macro series, parsed eagerly, published step by step.

Why it exists: a replay is how the engine is tested, demonstrated and benchmarked, so it must
read the data users actually have (Yahoo-style CSVs, FRED-style macro tables, gzip, Parquet),
refuse bad data before the run starts, and drive the replay clock so every downstream
timestamp is reproducible.

Two phases:

1. `load_source` reads, parses and validates every file of one `ReplaySourceConfig`
   *eagerly* into compact numpy matrices (time x symbol, NaN = no value). Any problem raises
   `ReplayDataError` naming file, line and column, before anything is published.
2. `ReplayFeed.run` merges the loaded sources into one timeline of distinct timestamps and,
   per timestamp: advances the clock, builds the validated `Bar`/`MacroObservation` events of
   every source (source order of the config, then column/first-appearance order of the file),
   appends one `Watermark` per source (also for sources with nothing at that time or already
   exhausted: downstream takes the minimum over sources, so a finished source keeps vouching),
   publishes all of it with one `publish_batch`, then awaits `step_done` (lock-step replay).

File rules (documented for users; each is tested in tests/sources):

- Paths: ``bundled:<file>`` is a file shipped in `engine.data`; other relative paths are
  resolved against ``base_dir`` (the directory of the config file).
- Formats: CSV, gzip-compressed CSV (by magic bytes or a ``.gz`` suffix), Parquet (by ``PAR1``
  magic or a ``.parquet``/``.pq`` suffix; needs the optional ``pyarrow``). Text is UTF-8 (a BOM
  is ignored). For Parquet, "line" in error messages is the row number + 1 (header = line 1),
  and a pandas index stored in the file (e.g. a DatetimeIndex) is taken as the first column.
- Time column: ISO 8601 dates (``2020-01-31``) or datetimes (``2020-01-31 16:00:00+00:00``,
  naive = UTC). A file holds dates or datetimes, not both. Date rows are stamped at
  ``market_close_utc`` on that date (UTC); so are files whose datetimes are all midnight when
  ``daily_midnight_as_date`` is on (the bundled yield file writes dates that way).
  Rows must be strictly increasing in time (long layout: non-decreasing, one row per
  (time, symbol)).
- Layouts (column names are matched case-insensitively):
  ``wide``: first column = time, one column per symbol (closes, giving close-only bars) or per
  macro series; ``long``: a time column (date/datetime/timestamp/time), a symbol column
  (symbol/ticker; series/symbol for macro) and close [open, high, low, volume] (value for
  macro); ``ohlcv``: one instrument, first column = time plus open/high/low/close[/volume].
  Other columns of long/ohlcv files (e.g. ``Adj Close``) are ignored.
  ``auto``: long if there is a symbol/ticker column (series/symbol for macro), else ohlcv if
  a column after the first is named close (bars only), else wide.
- Missing values are gaps, never zeros: an empty cell or ``nan``, ``NA``, ``N/A``, ``null``,
  ``None``, ``.`` (FRED) produce no event. A row whose cells are all missing is no step.
  A value that is not a number, not finite, a price <= 0, a negative volume or an
  inconsistent bar (high below low/open/close, ...) is an error.
- Bars: ``interval`` from the config, else inferred from the median spacing of the source's
  timestamps: date rows give ``1w`` when that is 7 days, else ``1d``; datetime rows must
  match one of 1min/5min/15min/1h/1d/1w exactly (else an error asks for ``interval``).
  ``currency`` comes from the config.
- start/end (inclusive) filter on the UTC date of each event's timestamp.

Speed: the bundled 20-stock file (8,313 rows) plus the yield curves load in well under a
second; building one validated event costs a few microseconds (pydantic), measured in
tests/sources/test_performance.py.
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import difflib
import gzip
import io
import math
import re
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from config.models import ReplaySourceConfig
from contracts import topics
from contracts.enums import BarInterval
from contracts.ids import IdGenerator
from contracts.market import Bar, MacroObservation, Watermark
from engine.bus import MessageBus
from engine.checked_contracts import CheckedBars
from engine.clock import ReplayClock
from engine.data import bundled_path
from engine.telemetry.tracing import ChainTracer

__all__ = [
    "MAX_SLEEP_S",
    "LoadedSource",
    "ReplayDataError",
    "ReplayFeed",
    "ReplayStats",
    "load_source",
    "resolve_path",
]

BUNDLED_PREFIX: Final = "bundled:"

MAX_SLEEP_S: Final = 60.0
"""Cap of one pacing pause with ``speed`` set: a weekend gap replayed at real time would
otherwise stall for two days. Paced replays are for watching, not for timing studies."""

_MISSING: Final = frozenset({"", "nan", "na", "n/a", "null", "none", "."})
_GZIP_MAGIC: Final = b"\x1f\x8b"
_PARQUET_MAGIC: Final = b"PAR1"
_PARQUET_SUFFIXES: Final = frozenset({".parquet", ".pq"})

# Same rules as the contracts (checked here so a bad name fails at load, with its position).
_SYMBOL_RE: Final = re.compile(r"^[A-Za-z0-9^][A-Za-z0-9._/:^=-]{0,31}$")
_SERIES_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")

_TIME_NAMES: Final = ("date", "datetime", "timestamp", "time", "time period")
_SYMBOL_NAMES: Final = ("symbol", "ticker")
_SERIES_NAMES: Final = ("series", "symbol")
_PRICE_FIELDS: Final = ("open", "high", "low", "close")
_BAR_FIELDS: Final = ("open", "high", "low", "close", "volume")

_INTERVALS: Final[dict[timedelta, BarInterval]] = {
    timedelta(minutes=1): BarInterval.M1,
    timedelta(minutes=5): BarInterval.M5,
    timedelta(minutes=15): BarInterval.M15,
    timedelta(hours=1): BarInterval.H1,
    timedelta(days=1): BarInterval.D1,
    timedelta(weeks=1): BarInterval.W1,
}

FloatMatrix = npt.NDArray[np.float64]


# ------------------------------------------------------------------------------------ errors


class ReplayDataError(ValueError):
    """A replay file cannot be used; the message reads ``<path>:<line>:<column>: <what>``.

    `line` (1-based, header = 1) and `column` (the header name) are None where they do not
    apply, and are then left out of the message.
    """

    def __init__(
        self, path: Path, what: str, *, line: int | None = None, column: str | None = None
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.what = what
        where = str(path)
        if line is not None:
            where += f":{line}"
        if column is not None:
            where += f":{column}"
        super().__init__(f"{where}: {what}")


class _CellError(Exception):
    """A bad cell; the caller adds path, line and column."""


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class ReplayStats:
    """What one `ReplayFeed.run` published."""

    steps: int
    bars: int
    macro: int
    first_ts: datetime | None
    last_ts: datetime | None


class LoadedSource:
    """One `ReplaySourceConfig`, parsed and validated; ready to be replayed by `ReplayFeed`."""

    __slots__ = (
        "_close_bars",
        "_fields",
        "_ohlcv",
        "_stamps",
        "_topics",
        "_watermark_topic",
        "currency",
        "first_ts",
        "interval",
        "kind",
        "last_ts",
        "n_events",
        "name",
        "paths",
        "symbols",
        "unit",
    )

    def __init__(
        self,
        *,
        name: str,
        kind: Literal["bars", "macro"],
        paths: tuple[Path, ...],
        symbols: tuple[str, ...],
        stamps: list[datetime],
        fields: dict[str, FloatMatrix],
        interval: BarInterval | None,
        currency: str,
        unit: str,
    ) -> None:
        self.name = name
        self.kind: Literal["bars", "macro"] = kind
        self.paths = paths
        self.symbols = symbols
        """Symbols (bars) or series (macro), in publish order."""
        self.interval = interval
        self.currency = currency
        self.unit = unit
        self._stamps = stamps
        self._fields = fields
        key = "close" if kind == "bars" else "value"
        self.n_events = int(np.count_nonzero(~np.isnan(fields[key])))
        self.first_ts: datetime | None = stamps[0] if stamps else None
        self.last_ts: datetime | None = stamps[-1] if stamps else None
        make_topic = topics.bar if kind == "bars" else topics.macro
        self._topics = [make_topic(symbol) for symbol in symbols]
        self._watermark_topic = topics.source_watermark(name)
        self._ohlcv = kind == "bars" and len(fields) > 1
        self._close_bars = CheckedBars()

    @property
    def n_steps(self) -> int:
        """Distinct timestamps with at least one event."""
        return len(self._stamps)

    @property
    def timestamps(self) -> tuple[datetime, ...]:
        return tuple(self._stamps)

    def closes(self, symbol: str) -> dict[datetime, float]:
        """Known closes (bars) or values (macro) of one symbol by timestamp; gaps left out."""
        column = self.symbols.index(symbol)
        key = "close" if self.kind == "bars" else "value"
        values = self._fields[key][:, column].tolist()
        return {ts: v for ts, v in zip(self._stamps, values, strict=True) if v == v}

    def __repr__(self) -> str:
        return (
            f"LoadedSource(name={self.name!r}, kind={self.kind!r}, symbols={len(self.symbols)}, "
            f"steps={self.n_steps}, events={self.n_events}, first_ts={self.first_ts}, "
            f"last_ts={self.last_ts})"
        )

    def _emit(
        self,
        k: int,
        ts: datetime,
        now: datetime,
        trace_id: Callable[[], str],
        out: list[tuple[str, object]],
    ) -> int:
        """Append the events of step `k` (at `ts`) to `out`; return how many."""
        names = self.symbols
        topic_of = self._topics
        append = out.append
        count = 0
        if self.kind == "macro":
            unit = self.unit
            source = self.name
            for j, value in enumerate(self._fields["value"][k].tolist()):
                if value != value:  # NaN: a gap
                    continue
                observation = MacroObservation(
                    trace_id=trace_id(),
                    ts_event=ts,
                    ts_init=now,
                    series=names[j],
                    value=value,
                    unit=unit,
                    source=source,
                )
                append((topic_of[j], observation))
                count += 1
            return count
        interval = self.interval
        currency = self.currency
        closes = self._fields["close"][k].tolist()
        if not self._ohlcv:
            close_bar = self._close_bars.close_bar  # validates each symbol's first bar only
            for j, close in enumerate(closes):
                if close != close:
                    continue
                bar = close_bar(trace_id(), ts, now, names[j], interval, close, currency)
                append((topic_of[j], bar))
                count += 1
            return count
        nan_row = [math.nan] * len(closes)
        fields = self._fields
        opens, highs, lows, volumes = (
            fields[name][k].tolist() if name in fields else nan_row
            for name in ("open", "high", "low", "volume")
        )
        for j, close in enumerate(closes):
            if close != close:
                continue
            o, h, lo, v = opens[j], highs[j], lows[j], volumes[j]
            bar = Bar(
                trace_id=trace_id(),
                ts_event=ts,
                ts_init=now,
                symbol=names[j],
                interval=interval,
                open=o if o == o else None,
                high=h if h == h else None,
                low=lo if lo == lo else None,
                close=close,
                volume=v if v == v else None,
                currency=currency,
            )
            append((topic_of[j], bar))
            count += 1
        return count


# ------------------------------------------------------------------------------------ reading


def resolve_path(path: Path, base_dir: Path) -> Path:
    """``bundled:<file>`` -> the packaged file; relative -> under `base_dir`; else as is."""
    text = str(path)
    if text.startswith(BUNDLED_PREFIX):
        try:
            return bundled_path(text[len(BUNDLED_PREFIX) :])
        except FileNotFoundError as exc:
            raise ReplayDataError(path, str(exc)) from None
    path = path.expanduser()
    return path if path.is_absolute() else base_dir / path


Row = tuple[int, Sequence[object]]
"""(line number, cells) of one data row."""


def _read_table(path: Path) -> tuple[list[str], Iterator[Row]]:
    """Header and data rows of a CSV(.gz) or Parquet file; blank lines are skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ReplayDataError(path, "no such file") from None
    except OSError as exc:
        raise ReplayDataError(path, f"cannot read: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if raw[:4] == _PARQUET_MAGIC or suffix in _PARQUET_SUFFIXES:
        return _read_parquet(path)
    if raw[:2] == _GZIP_MAGIC or suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise ReplayDataError(path, f"truncated or corrupt gzip file ({exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ReplayDataError(path, f"not UTF-8 text ({exc.reason})", line=line) from None
    if not text.strip():
        raise ReplayDataError(path, "empty file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header: list[str] = []
        while not header:
            header = next(reader)
    except csv.Error as exc:
        raise ReplayDataError(path, f"malformed CSV: {exc}", line=reader.line_num) from None
    header_line = reader.line_num
    _check_header_is_not_data(path, header, header_line)

    def rows() -> Iterator[Row]:
        try:
            for cells in reader:
                if cells:
                    yield reader.line_num, cells
        except csv.Error as exc:
            raise ReplayDataError(path, f"malformed CSV: {exc}", line=reader.line_num) from None

    return [name.strip() for name in header], rows()


def _read_parquet(path: Path) -> tuple[list[str], Iterator[Row]]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ReplayDataError(
            path,
            "reading Parquet needs the optional dependency pyarrow: pip install pyarrow "
            "(or convert the file to CSV)",
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid/OSError family
        raise ReplayDataError(path, f"cannot read Parquet file: {exc}") from None
    names = [str(name) for name in table.column_names]
    # pandas writes its index (typically the dates) as the *last* column(s): move it first.
    pandas_meta = table.schema.pandas_metadata or {}
    index_names = [n for n in pandas_meta.get("index_columns", ()) if isinstance(n, str)]
    order = [names.index(n) for n in index_names if n in names]
    order += [i for i in range(len(names)) if i not in order]
    header = [names[i].strip() for i in order]
    columns: list[list[Any]] = [table.column(i).to_pylist() for i in order]

    def rows() -> Iterator[Row]:
        for index, cells in enumerate(zip(*columns, strict=True)):
            yield index + 2, cells

    return header, rows()


def _check_header_is_not_data(path: Path, header: list[str], line: int) -> None:
    # Only the time column is checked: symbol columns may well be numeric (7203 is Toyota).
    first = header[0].strip()
    if not (first and first[0].isdigit()):
        return
    try:
        _parse_time(first)
    except _CellError:
        return
    raise ReplayDataError(
        path,
        f"missing header row: the first line looks like data ({','.join(header[:3])},...); "
        "it must name the columns",
        line=line,
        column=None,
    )


# ------------------------------------------------------------------------------------ cells


def _parse_time(cell: object) -> date | datetime:
    if isinstance(cell, datetime | date):  # Parquet; datetime is a date subclass
        return cell
    if not isinstance(cell, str):
        raise _CellError(f"not a date/time: {cell!r}")
    text = cell.strip()
    if not text:
        raise _CellError("empty date/time")
    try:
        if len(text) <= 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text)
    except ValueError:
        raise _CellError(
            f"not an ISO 8601 date/time: {text!r} (expected e.g. 2020-01-31 or "
            "2020-01-31 16:00:00+00:00)"
        ) from None


def _number(cell: object) -> float | None:
    """A float, or None for a missing value; raises _CellError for anything else."""
    if isinstance(cell, str):
        try:
            value = float(cell)
        except ValueError:
            if cell.strip().lower() in _MISSING:
                return None
            raise _CellError(f"not a number: {cell!r}") from None
    elif cell is None:
        return None
    elif isinstance(cell, int | float) and not isinstance(cell, bool):
        value = float(cell)
    else:
        raise _CellError(f"not a number: {cell!r}")
    if value != value:  # "nan" text, or NaN in Parquet: missing
        return None
    return value


def _check_price(value: float) -> None:
    if not math.isfinite(value):
        raise _CellError(f"price must be finite (got {value})")
    if value <= 0:
        raise _CellError(f"price must be > 0 (got {value})")


def _check_volume(value: float) -> None:
    if not math.isfinite(value):
        raise _CellError(f"volume must be finite (got {value})")
    if value < 0:
        raise _CellError(f"volume must be >= 0 (got {value})")


def _check_finite(value: float) -> None:
    if not math.isfinite(value):
        raise _CellError(f"value must be finite (got {value})")


# ------------------------------------------------------------------------------------ parsing


@dataclass(slots=True)
class _FileData:
    """One parsed file: a time x name matrix per field, NaN = missing."""

    path: Path
    names: list[str]
    stamps: list[datetime]
    lines: list[int]
    fields: dict[str, FloatMatrix]
    dated: bool
    layout: str


def _column_label(header: Sequence[str], index: int) -> str:
    name = header[index]
    return name if name else f"column {index + 1}"


def _field_count_error(path: Path, line: int, got: int, want: int) -> ReplayDataError:
    return ReplayDataError(
        path, f"row has {got} fields, the header has {want}", line=line, column=None
    )


def _check_names(
    path: Path, header: list[str], indices: Sequence[int], kind: str, prefix: str
) -> list[str]:
    """Validated symbol/series names of header columns `indices` (header line 1)."""
    seen: dict[str, int] = {}
    names: list[str] = []
    for index in indices:
        label = _column_label(header, index)
        name = prefix + header[index]
        if not header[index]:
            raise ReplayDataError(path, "empty column name", line=1, column=label)
        if name in seen:
            raise ReplayDataError(
                path, f"duplicate column (also column {seen[name] + 1})", line=1, column=label
            )
        seen[name] = index
        if kind == "bars" and not _SYMBOL_RE.match(name):
            raise ReplayDataError(path, f"not a valid symbol: {name!r}", line=1, column=label)
        if kind == "macro" and not _SERIES_RE.match(name):
            raise ReplayDataError(
                path, f"not a valid macro series name: {name!r}", line=1, column=label
            )
        names.append(name)
    return names


def _stamp(
    path: Path,
    raw: list[date | datetime],
    lines: list[int],
    time_label: str,
    cfg: ReplaySourceConfig,
) -> tuple[list[datetime], bool]:
    """UTC timestamps of the rows; True if the rows are dates (stamped at the market close)."""
    dated = not isinstance(raw[0], datetime)
    for value, line in zip(raw, lines, strict=True):
        if isinstance(value, datetime) == dated:
            first_kind = "dates" if dated else "datetimes"
            raise ReplayDataError(
                path,
                f"{value.isoformat()} mixes dates and datetimes (the first row has {first_kind})",
                line=line,
                column=time_label,
            )
    close = cfg.market_close_utc
    close_tz = close.tzinfo or UTC
    close = close.replace(tzinfo=None)
    days: list[date]
    if dated:
        days = raw
    else:
        times = [value for value in raw if isinstance(value, datetime)]
        midnight = time(0)
        if not (cfg.daily_midnight_as_date and all(t.time() == midnight for t in times)):
            return [
                t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC) for t in times
            ], False
        days = [t.date() for t in times]
    cache: dict[date, datetime] = {}
    stamps = []
    for day in days:
        stamp = cache.get(day)
        if stamp is None:
            stamp = datetime.combine(day, close, close_tz).astimezone(UTC)
            cache[day] = stamp
        stamps.append(stamp)
    return stamps, True


def _show(stamp: datetime, dated: bool) -> str:
    return stamp.date().isoformat() if dated else stamp.isoformat()


def _check_increasing(
    path: Path, stamps: list[datetime], lines: list[int], label: str, dated: bool
) -> None:
    for i in range(1, len(stamps)):
        if stamps[i] <= stamps[i - 1]:
            shown = _show(stamps[i], dated)
            if stamps[i] == stamps[i - 1]:
                what = f"duplicate time {shown} (also on line {lines[i - 1]})"
            else:
                what = (
                    f"{shown} is before the previous row's {_show(stamps[i - 1], dated)} "
                    f"(line {lines[i - 1]}); rows must be in increasing time order"
                )
            raise ReplayDataError(path, what, line=lines[i], column=label)


def _parse_wide(
    path: Path, header: list[str], rows: Iterator[Row], cfg: ReplaySourceConfig
) -> _FileData:
    kind = cfg.data
    prefix = cfg.series_prefix if kind == "macro" else ""
    width = len(header)
    if width < 2:
        raise ReplayDataError(
            path, "a wide file needs a time column and at least one data column", line=1
        )
    names = _check_names(path, header, range(1, width), kind, prefix)
    time_label = _column_label(header, 0)
    check = _check_price if kind == "bars" else _check_finite
    # Values <= lowest (or +inf) fail `check`; tested inline, the common cell costs one float().
    lowest = 0.0 if kind == "bars" else -math.inf
    inf = math.inf
    raw_times: list[date | datetime] = []
    lines: list[int] = []
    matrix: list[list[float]] = []
    nan = math.nan
    for line, cells in rows:
        if len(cells) != width:
            raise _field_count_error(path, line, len(cells), width)
        try:
            raw_times.append(_parse_time(cells[0]))
        except _CellError as exc:
            raise ReplayDataError(path, str(exc), line=line, column=time_label) from None
        lines.append(line)
        values = [nan] * (width - 1)
        for j in range(1, width):
            cell = cells[j]
            try:
                if cell.__class__ is str and cell:
                    try:
                        value = float(cell)
                    except ValueError:
                        number = _number(cell)
                        if number is None:
                            continue
                        value = number
                else:
                    number = _number(cell)
                    if number is None:
                        continue
                    value = number
                if value != value:  # "nan": missing
                    continue
                if value <= lowest or value == inf:
                    check(value)
            except _CellError as exc:
                raise ReplayDataError(
                    path, str(exc), line=line, column=_column_label(header, j)
                ) from None
            values[j - 1] = value
        matrix.append(values)
    if not lines:
        raise ReplayDataError(path, "no data rows after the header")
    stamps, dated = _stamp(path, raw_times, lines, time_label, cfg)
    _check_increasing(path, stamps, lines, time_label, dated)
    key = "close" if kind == "bars" else "value"
    fields = {key: np.array(matrix, dtype=np.float64).reshape(len(lines), width - 1)}
    return _FileData(path, names, stamps, lines, fields, dated, "wide")


def _ohlcv_symbol(path: Path, cfg: ReplaySourceConfig) -> str:
    if cfg.symbols and len(cfg.paths) == 1:
        if len(cfg.symbols) > 1:
            raise ReplayDataError(
                path,
                f"a single-instrument OHLCV file holds one symbol, but symbols lists "
                f"{len(cfg.symbols)} ({', '.join(cfg.symbols)})",
            )
        symbol = cfg.symbols[0]
        origin = "symbols[0]"
    else:
        symbol = path.name.split(".")[0].upper()
        origin = "the file name"
    if not _SYMBOL_RE.match(symbol):
        raise ReplayDataError(
            path,
            f"symbol {symbol!r} (from {origin}) is not a valid symbol; name the instrument "
            'with symbols = ["..."] in the source config',
        )
    return symbol


def _parse_ohlcv(
    path: Path, header: list[str], rows: Iterator[Row], cfg: ReplaySourceConfig
) -> _FileData:
    symbol = _ohlcv_symbol(path, cfg)
    width = len(header)
    lowered = [name.lower() for name in header]
    present: list[tuple[str, int]] = []
    for field in _BAR_FIELDS:
        matches = [i for i in range(1, width) if lowered[i] == field]
        if len(matches) > 1:
            raise ReplayDataError(
                path,
                f"duplicate column (also column {matches[0] + 1})",
                line=1,
                column=header[matches[1]],
            )
        if matches:
            present.append((field, matches[0]))
    if "close" not in dict(present):
        raise ReplayDataError(
            path,
            f"an OHLCV file needs a Close column (columns: {', '.join(header)})",
            line=1,
        )
    time_label = _column_label(header, 0)
    raw_times: list[date | datetime] = []
    lines: list[int] = []
    matrix: list[list[float]] = []
    for line, cells in rows:
        if len(cells) != width:
            raise _field_count_error(path, line, len(cells), width)
        try:
            raw_times.append(_parse_time(cells[0]))
        except _CellError as exc:
            raise ReplayDataError(path, str(exc), line=line, column=time_label) from None
        lines.append(line)
        matrix.append(_bar_row(path, line, header, cells, present))
    if not lines:
        raise ReplayDataError(path, "no data rows after the header")
    stamps, dated = _stamp(path, raw_times, lines, time_label, cfg)
    _check_increasing(path, stamps, lines, time_label, dated)
    array = np.array(matrix, dtype=np.float64)
    fields = {field: array[:, k : k + 1].copy() for k, (field, _) in enumerate(present)}
    return _FileData(path, [symbol], stamps, lines, fields, dated, "ohlcv")


def _bar_row(
    path: Path,
    line: int,
    header: Sequence[str],
    cells: Sequence[object],
    present: Sequence[tuple[str, int]],
) -> list[float]:
    """Values of the `present` (field, column) cells of one bar row; NaN = missing."""
    values: dict[str, float] = {}
    for field, index in present:
        try:
            value = _number(cells[index])
            if value is None:
                continue
            if field == "volume":
                _check_volume(value)
            else:
                _check_price(value)
        except _CellError as exc:
            raise ReplayDataError(path, str(exc), line=line, column=header[index]) from None
        values[field] = value
    columns = dict(present)
    if "close" not in values:
        if values:
            raise ReplayDataError(
                path,
                f"close is missing but {', '.join(values)} is given (a bar needs a close)",
                line=line,
                column=header[columns["close"]],
            )
    else:
        prices = [values[f] for f in _PRICE_FIELDS if f in values]
        high = values.get("high")
        low = values.get("low")
        if high is not None and high < max(prices):
            raise ReplayDataError(
                path,
                f"high {high} is below another price of the bar ({max(prices)})",
                line=line,
                column=header[columns["high"]],
            )
        if low is not None and low > min(prices):
            raise ReplayDataError(
                path,
                f"low {low} is above another price of the bar ({min(prices)})",
                line=line,
                column=header[columns["low"]],
            )
    nan = math.nan
    return [values.get(field, nan) for field, _ in present]


def _find_column(lowered: list[str], candidates: Sequence[str]) -> int | None:
    for candidate in candidates:
        if candidate in lowered:
            return lowered.index(candidate)
    return None


def _parse_long(
    path: Path, header: list[str], rows: Iterator[Row], cfg: ReplaySourceConfig
) -> _FileData:
    kind = cfg.data
    width = len(header)
    lowered = [name.lower() for name in header]
    for i, name in enumerate(lowered):
        if name and name in lowered[:i]:
            raise ReplayDataError(
                path,
                f"duplicate column (also column {lowered.index(name) + 1})",
                line=1,
                column=header[i],
            )
    time_index = _find_column(lowered, _TIME_NAMES)
    if time_index is None:
        raise ReplayDataError(
            path,
            f"a long file needs a time column named one of {', '.join(_TIME_NAMES)} "
            f"(columns: {', '.join(header)})",
            line=1,
        )
    name_candidates = _SYMBOL_NAMES if kind == "bars" else _SERIES_NAMES
    name_index = _find_column(lowered, name_candidates)
    if name_index is None:
        raise ReplayDataError(
            path,
            f"a long file needs a column named one of {', '.join(name_candidates)} "
            f"(columns: {', '.join(header)})",
            line=1,
        )
    present: list[tuple[str, int]]
    if kind == "bars":
        present = [(f, lowered.index(f)) for f in _BAR_FIELDS if f in lowered]
        if "close" not in dict(present):
            raise ReplayDataError(
                path, f"a long bar file needs a close column (columns: {', '.join(header)})", line=1
            )
    else:
        if "value" not in lowered:
            raise ReplayDataError(
                path,
                f"a long macro file needs a value column (columns: {', '.join(header)})",
                line=1,
            )
        present = [("value", lowered.index("value"))]
    time_label = _column_label(header, time_index)
    name_label = header[name_index]
    prefix = cfg.series_prefix if kind == "macro" else ""
    raw_times: list[date | datetime] = []
    lines: list[int] = []
    names: list[str] = []
    values: list[list[float]] = []
    known: set[str] = set()
    for line, cells in rows:
        if len(cells) != width:
            raise _field_count_error(path, line, len(cells), width)
        try:
            raw_times.append(_parse_time(cells[time_index]))
        except _CellError as exc:
            raise ReplayDataError(path, str(exc), line=line, column=time_label) from None
        name_cell = cells[name_index]
        name = prefix + (name_cell.strip() if isinstance(name_cell, str) else str(name_cell))
        if name not in known:
            pattern = _SYMBOL_RE if kind == "bars" else _SERIES_RE
            if name_cell is None or not pattern.match(name):
                what = "symbol" if kind == "bars" else "macro series name"
                raise ReplayDataError(
                    path, f"not a valid {what}: {name!r}", line=line, column=name_label
                )
            known.add(name)
        lines.append(line)
        names.append(name)
        if kind == "bars":
            values.append(_bar_row(path, line, header, cells, present))
        else:
            try:
                value = _number(cells[present[0][1]])
                if value is not None:
                    _check_finite(value)
            except _CellError as exc:
                raise ReplayDataError(
                    path, str(exc), line=line, column=header[present[0][1]]
                ) from None
            values.append([math.nan if value is None else value])
    if not lines:
        raise ReplayDataError(path, "no data rows after the header")
    row_stamps, dated = _stamp(path, raw_times, lines, time_label, cfg)
    # Group rows into a time x name matrix; time must not go backwards.
    order: dict[str, int] = {}
    stamps: list[datetime] = []
    stamp_lines: list[int] = []
    cells_at: dict[tuple[int, int], int] = {}
    for i, (stamp, line, name) in enumerate(zip(row_stamps, lines, names, strict=True)):
        if not stamps or stamp != stamps[-1]:
            if stamps and stamp < stamps[-1]:
                raise ReplayDataError(
                    path,
                    f"{_show(stamp, dated)} is before the previous row's "
                    f"{_show(stamps[-1], dated)} (line {lines[i - 1]}); rows must be in "
                    "increasing time order",
                    line=line,
                    column=time_label,
                )
            stamps.append(stamp)
            stamp_lines.append(line)
        column = order.setdefault(name, len(order))
        key = (len(stamps) - 1, column)
        if key in cells_at:
            raise ReplayDataError(
                path,
                f"duplicate row for {name} at {_show(stamp, dated)} (also on line "
                f"{lines[cells_at[key]]})",
                line=line,
                column=time_label,
            )
        cells_at[key] = i
    fields: dict[str, FloatMatrix] = {}
    shape = (len(stamps), len(order))
    for k, (field, _) in enumerate(present):
        matrix = np.full(shape, np.nan)
        for (r, c), i in cells_at.items():
            matrix[r, c] = values[i][k]
        fields[field] = matrix
    return _FileData(path, list(order), stamps, stamp_lines, fields, dated, "long")


def _detect_layout(header: list[str], cfg: ReplaySourceConfig) -> str:
    if cfg.layout != "auto":
        return cfg.layout
    lowered = {name.lower() for name in header}
    names = _SYMBOL_NAMES if cfg.data == "bars" else _SERIES_NAMES
    if not lowered.isdisjoint(names):
        return "long"
    if cfg.data == "bars" and "close" in {name.lower() for name in header[1:]}:
        return "ohlcv"
    return "wide"


def _parse_file(path: Path, cfg: ReplaySourceConfig) -> _FileData:
    header, rows = _read_table(path)
    layout = _detect_layout(header, cfg)
    if layout == "long":
        return _parse_long(path, header, rows, cfg)
    if layout == "ohlcv":
        if cfg.data == "macro":
            raise ReplayDataError(path, "layout 'ohlcv' holds bars; use wide or long for macro")
        return _parse_ohlcv(path, header, rows, cfg)
    return _parse_wide(path, header, rows, cfg)


# ------------------------------------------------------------------------------------ loading


def _merge(files: list[_FileData]) -> tuple[list[str], list[datetime], dict[str, FloatMatrix]]:
    """One time x name matrix per field over all files of a source; overlaps are errors."""
    if len(files) == 1:
        only = files[0]
        return only.names, only.stamps, only.fields
    stamps = sorted(set().union(*(f.stamps for f in files)))
    names: dict[str, int] = {}
    for f in files:
        for name in f.names:
            names.setdefault(name, len(names))
    field_names = [
        field for field in (*_BAR_FIELDS, "value") if any(field in f.fields for f in files)
    ]
    shape = (len(stamps), len(names))
    merged = {field: np.full(shape, np.nan) for field in field_names}
    owner = np.full(shape, -1, dtype=np.int32)
    key = "value" if "value" in merged else "close"
    row_of = {stamp: i for i, stamp in enumerate(stamps)}
    for index, f in enumerate(files):
        rows = np.array([row_of[s] for s in f.stamps], dtype=np.intp)
        cols = np.array([names[n] for n in f.names], dtype=np.intp)
        grid = np.ix_(rows, cols)
        present = ~np.isnan(f.fields[key])
        clash = present & (owner[grid] >= 0)
        if clash.any():
            r, c = (int(x[0]) for x in np.nonzero(clash))
            other = files[int(owner[grid][r, c])]
            raise ReplayDataError(
                f.path,
                f"{f.names[c]} at {_show(f.stamps[r], f.dated)} is also in {other.path}: "
                "files of one source must not overlap",
                line=f.lines[r],
            )
        owner[grid] = np.where(present, index, owner[grid])
        for field, values in f.fields.items():
            target = merged[field]
            target[grid] = np.where(np.isnan(values), target[grid], values)
    return list(names), stamps, merged


def _infer_interval(
    cfg: ReplaySourceConfig, files: list[_FileData], stamps: list[datetime]
) -> BarInterval:
    if cfg.interval is not None:
        return BarInterval(cfg.interval)
    dated = all(f.dated for f in files)
    if len(stamps) < 2:
        if dated:
            return BarInterval.D1
        raise ReplayDataError(
            files[0].path,
            "cannot infer the bar interval from a single timestamp; set interval in the "
            "source config",
        )
    gaps = np.diff(np.array([s.timestamp() for s in stamps]))
    median = timedelta(seconds=float(np.median(gaps)))
    if dated:
        # Dates are daily closes, possibly sparse (holidays, a thin file); weekly if spaced so.
        return BarInterval.W1 if median == timedelta(weeks=1) else BarInterval.D1
    interval = _INTERVALS.get(median)
    if interval is None:
        choices = ", ".join(str(v) for v in _INTERVALS.values())
        raise ReplayDataError(
            files[0].path,
            f"cannot infer the bar interval: the median spacing of the rows is {median}, "
            f"which is none of {choices}; set interval in the source config",
        )
    return interval


def _ordered_matches(wanted: str, available: Sequence[str]) -> list[str]:
    close = difflib.get_close_matches(wanted, available, n=5, cutoff=0.5)
    upper = [a for a in available if a.lower() == wanted.lower() and a not in close]
    first = upper + close
    return first + [a for a in available if a not in first]


def load_source(
    cfg: ReplaySourceConfig,
    *,
    base_dir: Path,
    start: date | None = None,
    end: date | None = None,
) -> LoadedSource:
    """Read, parse and validate every file of `cfg`; raise ReplayDataError on any problem.

    `start`/`end` (inclusive dates, e.g. the CLI's --start/--end) override ``cfg.start`` /
    ``cfg.end``; they filter on the UTC date of each timestamp.
    """
    paths = tuple(resolve_path(path, base_dir) for path in cfg.paths)
    files = [_parse_file(path, cfg) for path in paths]
    names, stamps, fields = _merge(files)
    interval = _infer_interval(cfg, files, stamps) if cfg.data == "bars" else None

    if cfg.symbols is not None and not (cfg.data == "bars" and _single_ohlcv(cfg, files)):
        index = {name: i for i, name in enumerate(names)}
        for wanted in cfg.symbols:
            if wanted not in index:
                what = "symbol" if cfg.data == "bars" else "macro series"
                available = _ordered_matches(wanted, names)
                raise ReplayDataError(
                    paths[0],
                    f"unknown {what} {wanted!r} in symbols; available: {', '.join(available)}"
                    + (f" (in {len(paths)} files)" if len(paths) > 1 else ""),
                )
        keep = sorted({index[w] for w in cfg.symbols})
        names = [names[i] for i in keep]
        fields = {field: matrix[:, keep] for field, matrix in fields.items()}

    first_day = start if start is not None else cfg.start
    last_day = end if end is not None else cfg.end
    if first_day is not None and last_day is not None and last_day < first_day:
        raise ReplayDataError(
            paths[0], f"end {last_day.isoformat()} is before start {first_day.isoformat()}"
        )
    lo = 0
    hi = len(stamps)
    if first_day is not None:
        lo = bisect.bisect_left(stamps, first_day, key=_utc_date)
    if last_day is not None:
        hi = bisect.bisect_right(stamps, last_day, key=_utc_date)
    key = "close" if cfg.data == "bars" else "value"
    window = fields[key][lo:hi]
    has_event = ~np.isnan(window).all(axis=1) if window.size else np.zeros(hi - lo, dtype=bool)
    rows = np.flatnonzero(has_event) + lo
    if rows.size == 0:
        spans = "; ".join(
            f"{f.path.name} spans {f.stamps[0].date()} .. {f.stamps[-1].date()}" for f in files
        )
        if first_day is None and last_day is None:
            what = f"no values for {', '.join(names) or 'any symbol'} ({spans})"
        else:
            shown = f"{first_day or '(start)'} .. {last_day or '(end)'}"
            what = f"no data in the requested range {shown}: {spans}"
        raise ReplayDataError(paths[0], what)
    if rows.size != len(stamps):
        stamps = [stamps[i] for i in rows.tolist()]
        fields = {field: np.ascontiguousarray(matrix[rows]) for field, matrix in fields.items()}
    return LoadedSource(
        name=cfg.name,
        kind=cfg.data,
        paths=paths,
        symbols=tuple(names),
        stamps=stamps,
        fields=fields,
        interval=interval,
        currency=cfg.currency,
        unit=cfg.unit,
    )


def _utc_date(stamp: datetime) -> date:
    return stamp.date()


def _single_ohlcv(cfg: ReplaySourceConfig, files: list[_FileData]) -> bool:
    """True when `symbols` named the instrument of one OHLCV file instead of filtering."""
    return len(cfg.paths) == 1 and files[0].layout == "ohlcv"


# ------------------------------------------------------------------------------------ feed


def _trace_source_events(
    chain: ChainTracer, source: LoadedSource, events: list[tuple[str, object]], ts: datetime
) -> None:
    for _topic, event in events:
        if isinstance(event, Bar):
            chain.source_event(
                event.trace_id, kind="bar", source=source.name, symbol=event.symbol, ts_event=ts
            )
        elif isinstance(event, MacroObservation):
            chain.source_event(
                event.trace_id, kind="macro", source=source.name, symbol=event.series, ts_event=ts
            )


class _BuiltStep(NamedTuple):
    ts: datetime
    batch: list[tuple[str, object]]
    bars: int
    macro: int


class ReplayFeed:
    """Publishes loaded sources in event-time order on the bus, driving the replay clock."""

    def __init__(
        self,
        sources: Sequence[LoadedSource],
        *,
        bus: MessageBus,
        clock: ReplayClock,
        ids: IdGenerator,
        speed: float | None = None,
        step_done: Callable[[datetime], Awaitable[None]] | None = None,
        chain: ChainTracer | None = None,
        before_publish: (
            Callable[[datetime, Sequence[tuple[str, object]]], Awaitable[None]] | None
        ) = None,
        prefetch: Callable[[datetime, Sequence[tuple[str, object]]], Awaitable[None]] | None = None,
        lookahead: int = 0,
    ) -> None:
        """`before_publish(ts, batch)` sees each step's events before anyone on the bus does
        (the engine's regime model labels the step's bars there). `prefetch(ts, batch)` gets
        each step's batch up to `lookahead` steps before it is published (the engine's agent
        workers compute ahead with it): the steps are built in order either way, so their
        ids, and so every message, are the same."""
        if lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        if speed is not None and not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a finite number > 0 or None, got {speed}")
        seen: set[str] = set()
        for source in sources:
            if source.name in seen:
                raise ValueError(f"duplicate source name {source.name!r}")
            seen.add(source.name)
        self._sources = tuple(sources)
        self._bus = bus
        self._clock = clock
        self._ids = ids
        self._speed = speed
        self._step_done = step_done
        self._before_publish = before_publish
        self._prefetch = prefetch
        self._lookahead = lookahead
        self._chain = chain if chain is not None and chain.recording else None
        self._timeline: list[datetime] = sorted(
            set().union(*(source._stamps for source in self._sources))
        )
        self._ran = False

    @property
    def steps_total(self) -> int:
        """Distinct timestamps across all sources: the number of steps `run` will make."""
        return len(self._timeline)

    @property
    def first_ts(self) -> datetime | None:
        return self._timeline[0] if self._timeline else None

    @property
    def last_ts(self) -> datetime | None:
        return self._timeline[-1] if self._timeline else None

    def _step_builder(self) -> Callable[[datetime], _BuiltStep]:
        """Builds the steps of the timeline, called once per step in order: each step's events
        per source, then one watermark per source. ``ts_init`` is the step's time, as the
        replay clock reads once advanced to it, so a step built ahead is the same step."""
        sources = self._sources
        cursors = [0] * len(sources)
        trace_id = self._ids.trace_id
        chain = self._chain

        def build(ts: datetime) -> _BuiltStep:
            now = ts.astimezone(UTC)  # what ReplayClock.advance_to(ts) makes now() return
            batch: list[tuple[str, object]] = []
            bars = macro = 0
            for s, source in enumerate(sources):
                k = cursors[s]
                if k < len(source._stamps) and source._stamps[k] == ts:
                    first = len(batch)
                    count = source._emit(k, ts, now, trace_id, batch)
                    if chain is not None:
                        # Traced when built: a worker fed this step ahead may send its signals
                        # back before the step is published, and they hang off these spans.
                        _trace_source_events(chain, source, batch[first:], ts)
                    if source.kind == "bars":
                        bars += count
                    else:
                        macro += count
                    cursors[s] = k + 1
            for source in sources:
                watermark = Watermark(
                    trace_id=trace_id(), ts_event=ts, ts_init=now, origin=source.name
                )
                batch.append((source._watermark_topic, watermark))
            return _BuiltStep(ts, batch, bars, macro)

        return build

    async def run(self, on_step: Callable[[int, datetime], None] | None = None) -> ReplayStats:
        """Replay every step; `on_step(i, ts)` is called after step i (1-based) is done."""
        if self._ran:
            raise RuntimeError("a ReplayFeed runs once; build a new one to replay again")
        self._ran = True
        clock = self._clock
        publish_batch = self._bus.publish_batch
        step_done = self._step_done
        before_publish = self._before_publish
        prefetch = self._prefetch
        speed = self._speed
        timeline = self._timeline
        build = self._step_builder()
        ahead: deque[_BuiltStep] = deque()
        built = 0
        bars = macro = 0
        previous: datetime | None = None
        for step, ts in enumerate(timeline, 1):
            if speed is not None:
                if previous is not None:
                    delay = min((ts - previous).total_seconds() / speed, MAX_SLEEP_S)
                    if delay > 0:
                        await asyncio.sleep(delay)
            elif step_done is None:
                # Let consumers run once per step even when no mailbox is full.
                await asyncio.sleep(0)
            # Steps are built strictly in order (ids come from one stream), `lookahead` of them
            # before they are published; without a prefetch only the current one.
            horizon = min(len(timeline), step + (self._lookahead if prefetch else 0))
            while built < horizon:
                item = build(timeline[built])
                built += 1
                ahead.append(item)
                if prefetch is not None:
                    await prefetch(item.ts, item.batch)
            current = ahead.popleft()
            clock.advance_to(ts)
            batch = current.batch
            bars += current.bars
            macro += current.macro
            if before_publish is not None:
                await before_publish(ts, batch)
            await publish_batch(batch)
            if step_done is not None:
                await step_done(ts)
            if on_step is not None:
                on_step(step, ts)
            previous = ts
        return ReplayStats(
            steps=len(self._timeline),
            bars=bars,
            macro=macro,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
        )
