"""Every way a replay file can be unusable fails at load, naming file, line and column."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from engine.sources.replay import ReplayDataError, load_source
from tests.sources import source_cfg, write

# (id, file text, config overrides, line, column, text the message must contain)
CELL_ERRORS: list[tuple[str, str, dict[str, Any], int | None, str | None, str]] = [
    ("malformed-number", "Date,AAA\n2020-01-02,1\n2020-01-03,1.2.3", {}, 3, "AAA", "'1.2.3'"),
    ("comma-number", 'Date,AAA\n2020-01-02,"1,5"', {}, 2, "AAA", "not a number: '1,5'"),
    ("infinite-price", "Date,AAA\n2020-01-02,inf", {}, 2, "AAA", "finite"),
    ("zero-price", "Date,AAA,BBB\n2020-01-02,1,0", {}, 2, "BBB", "> 0"),
    ("negative-price", "Date,AAA\n2020-01-02,-3", {}, 2, "AAA", "> 0"),
    (
        "negative-volume",
        "Date,Open,High,Low,Close,Volume\n2020-01-02,1,2,1,2,-5",
        {},
        2,
        "Volume",
        "volume must be >= 0",
    ),
    (
        "high-below-low",
        "Date,Open,High,Low,Close\n2020-01-02,1,2,1,2\n2020-01-03,2,1.5,1.8,1.9",
        {},
        3,
        "High",
        "high 1.5 is below",
    ),
    (
        "low-above-close",
        "Date,Open,High,Low,Close\n2020-01-02,2,3,2.5,2.2",
        {},
        2,
        "Low",
        "low 2.5 is above",
    ),
    (
        "close-missing-open-given",
        "Date,Open,Close\n2020-01-02,2,",
        {},
        2,
        "Close",
        "close is missing but open",
    ),
    (
        "long-high-below-close",
        "date,symbol,high,close\n2020-01-02,AAA,1,2",
        {},
        2,
        "high",
        "high 1.0 is below",
    ),
    ("macro-infinite", "Date,S1\n2020-01-02,-inf", {"data": "macro"}, 2, "S1", "finite"),
    ("macro-text", "Date,S1\n2020-01-02,n.a.", {"data": "macro"}, 2, "S1", "'n.a.'"),
    ("bad-date", "Date,AAA\n2020-01-02,1\n2020-13-01,2", {}, 3, "Date", "'2020-13-01'"),
    ("us-date", "Date,AAA\n01/02/2020,1", {}, 2, "Date", "ISO 8601"),
    ("empty-date", "Date,AAA\n2020-01-02,1\n,2", {}, 3, "Date", "empty date"),
    (
        "unsorted",
        "Date,AAA\n2020-01-02,1\n2020-01-06,1\n2020-01-03,1",
        {},
        4,
        "Date",
        "2020-01-03 is before the previous row's 2020-01-06 (line 3)",
    ),
    (
        "duplicate-date",
        "Date,AAA\n2020-01-02,1\n2020-01-02,2",
        {},
        3,
        "Date",
        "duplicate time 2020-01-02 (also on line 2)",
    ),
    (
        "duplicate-datetime-after-utc",
        "time,AAA\n2020-01-02T10:00:00+00:00,1\n2020-01-02T12:00:00+02:00,2",
        {"interval": "1h"},
        3,
        "time",
        "duplicate time 2020-01-02T10:00:00+00:00 (also on line 2)",
    ),
    (
        "long-backwards",
        "date,symbol,close\n2020-01-03,AAA,1\n2020-01-02,BBB,1",
        {},
        3,
        "date",
        "2020-01-02 is before the previous row's 2020-01-03 (line 2)",
    ),
    (
        "long-duplicate-row",
        "date,symbol,close\n2020-01-02,AAA,1\n2020-01-02,BBB,1\n2020-01-02,AAA,2",
        {},
        4,
        "date",
        "duplicate row for AAA at 2020-01-02 (also on line 2)",
    ),
    (
        "long-bad-symbol",
        "date,symbol,close\n2020-01-02,A A,1",
        {},
        2,
        "symbol",
        "not a valid symbol: 'A A'",
    ),
    (
        "mixed-date-datetime",
        "Date,AAA\n2020-01-02,1\n2020-01-03 10:00:00,2",
        {},
        3,
        "Date",
        "mixes dates and datetimes",
    ),
    (
        "too-many-fields",
        "Date,AAA\n2020-01-02,1,2",
        {},
        2,
        None,
        "row has 3 fields, the header has 2",
    ),
    (
        "too-few-fields",
        "Date,AAA,BBB\n2020-01-02,1",
        {},
        2,
        None,
        "row has 2 fields, the header has 3",
    ),
    ("missing-header", "2020-01-02,1\n2020-01-03,2", {}, 1, None, "missing header row"),
    ("header-only", "Date,AAA", {}, None, None, "no data rows"),
    ("empty-column-name", "Date,AAA,\n2020-01-02,1,2", {}, 1, "column 3", "empty column name"),
    ("duplicate-column", "Date,AAA,AAA\n2020-01-02,1,2", {}, 1, "AAA", "duplicate column"),
    (
        "invalid-symbol-column",
        "Date,Adj Close\n2020-01-02,1",
        {"layout": "wide"},
        1,
        "Adj Close",
        "not a valid symbol",
    ),
    (
        "long-without-symbol",
        "date,close\n2020-01-02,1",
        {"layout": "long"},
        1,
        None,
        "symbol, ticker",
    ),
    ("long-without-time", "day,symbol,close\n2020-01-02,A,1", {}, 1, None, "time column"),
    (
        "ohlcv-without-close",
        "Date,Open\n2020-01-02,1",
        {"layout": "ohlcv"},
        1,
        None,
        "Close column",
    ),
    (
        "macro-ohlcv",
        "Date,S1\n2020-01-02,1",
        {"data": "macro", "layout": "ohlcv"},
        None,
        None,
        "use wide or long",
    ),
    (
        "interval-not-inferable",
        "time,AAA\n2020-01-02 10:00,1\n2020-01-02 10:03,2",
        {},
        None,
        None,
        "median spacing of the rows is 0:03:00",
    ),
    (
        "ohlcv-two-symbols",
        "Date,Close\n2020-01-02,1",
        {"symbols": ["AAA", "BBB"]},
        None,
        None,
        "holds one symbol, but symbols lists 2",
    ),
]


@pytest.mark.parametrize(
    ("text", "overrides", "line", "column", "needle"),
    [case[1:] for case in CELL_ERRORS],
    ids=[case[0] for case in CELL_ERRORS],
)
def test_load_when_file_invalid_then_error_names_file_line_column(
    tmp_path: Path,
    text: str,
    overrides: dict[str, Any],
    line: int | None,
    column: str | None,
    needle: str,
) -> None:
    # Arrange
    path = write(tmp_path / "data.csv", text)
    cfg = source_cfg(path, **overrides)
    # Act
    with pytest.raises(ReplayDataError) as info:
        load_source(cfg, base_dir=tmp_path)
    # Assert
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.path, error.line, error.column) == (path, line, column)
    where = ":".join(str(part) for part in (path, line, column) if part is not None)
    assert str(error).startswith(f"{where}: ")
    assert needle in str(error)


@pytest.mark.parametrize("keep", [0.5, -4, 5], ids=["half", "trailer-cut", "header-cut"])
def test_load_when_gzip_truncated_then_error_names_file(tmp_path: Path, keep: float) -> None:
    # Arrange
    first = date(2000, 1, 1).toordinal()
    rows = (f"{date.fromordinal(first + d).isoformat()},{d + 1}\n" for d in range(2000))
    body = "Date,AAA\n" + "".join(rows)
    data = gzip.compress(body.encode(), mtime=0)
    path = tmp_path / "prices.csv.gz"
    path.write_bytes(data[: int(len(data) * keep)] if isinstance(keep, float) else data[:keep])
    # Act
    with pytest.raises(ReplayDataError) as info:
        load_source(source_cfg(path), base_dir=tmp_path)
    # Assert
    assert str(info.value).startswith(f"{path}: truncated or corrupt gzip file")


def test_load_when_gz_suffix_but_not_gzip_then_error_names_file(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "plain.csv.gz", "Date,AAA\n2020-01-02,1")
    # Act / Assert
    with pytest.raises(ReplayDataError, match=r"plain\.csv\.gz: truncated or corrupt gzip"):
        load_source(source_cfg(path), base_dir=tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n \n"], ids=["zero-bytes", "whitespace"])
def test_load_when_file_empty_then_error(tmp_path: Path, content: bytes) -> None:
    # Arrange
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    # Act / Assert
    with pytest.raises(ReplayDataError) as info:
        load_source(source_cfg(path), base_dir=tmp_path)
    assert str(info.value) == f"{path}: empty file"


def test_load_when_file_missing_then_error_names_resolved_path(tmp_path: Path) -> None:
    # Arrange
    cfg = source_cfg("nope/prices.csv")
    # Act / Assert
    with pytest.raises(ReplayDataError) as info:
        load_source(cfg, base_dir=tmp_path)
    assert str(info.value) == f"{tmp_path / 'nope' / 'prices.csv'}: no such file"


def test_load_when_not_utf8_then_error_names_line(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "latin1.csv"
    path.write_bytes("Date,AAA\n2020-01-02,1\n2020-01-03,\xe9\n".encode("latin-1"))
    # Act / Assert
    with pytest.raises(ReplayDataError, match=r"latin1.csv:3: not UTF-8"):
        load_source(source_cfg(path), base_dir=tmp_path)


def test_load_when_symbol_unknown_then_lists_available_close_matches_first(
    tmp_path: Path,
) -> None:
    # Arrange
    path = write(tmp_path / "w.csv", "Date,MSFT,AAPL,AMD,XOM\n2020-01-02,1,2,3,4")
    # Act
    with pytest.raises(ReplayDataError) as info:
        load_source(source_cfg(path, symbols=["AAPL", "APPL"]), base_dir=tmp_path)
    # Assert
    message = str(info.value)
    assert message.startswith(f"{path}: unknown symbol 'APPL' in symbols; available: AAPL, ")
    assert all(symbol in message for symbol in ("MSFT", "AMD", "XOM"))


def test_load_when_macro_series_unknown_then_lists_series(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "y.csv", "Date,1month,10year\n2020-01-02,1,2")
    cfg = source_cfg(path, data="macro", symbols=["10yr"])
    # Act / Assert
    with pytest.raises(ReplayDataError, match=r"unknown macro series '10yr'.*available: 10year"):
        load_source(cfg, base_dir=tmp_path)


def test_load_when_date_range_empty_then_names_range_and_file_span(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "w.csv", "Date,AAA\n2020-01-02,1\n2020-03-31,2")
    # Act
    with pytest.raises(ReplayDataError) as info:
        load_source(
            source_cfg(path), base_dir=tmp_path, start=date(2021, 1, 1), end=date(2021, 12, 31)
        )
    # Assert
    assert str(info.value) == (
        f"{path}: no data in the requested range 2021-01-01 .. 2021-12-31: "
        "w.csv spans 2020-01-02 .. 2020-03-31"
    )


def test_load_when_only_start_after_data_then_open_range_named(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "w.csv", "Date,AAA\n2020-01-02,1")
    cfg = source_cfg(path, start="2020-06-01")
    # Act / Assert
    with pytest.raises(ReplayDataError, match=r"range 2020-06-01 \.\. \(end\)"):
        load_source(cfg, base_dir=tmp_path)


def test_load_when_argument_end_before_start_then_error(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "w.csv", "Date,AAA\n2020-01-02,1")
    cfg = source_cfg(path, start="2020-06-01")
    # Act / Assert
    with pytest.raises(ReplayDataError, match="end 2020-01-01 is before start 2020-06-01"):
        load_source(cfg, base_dir=tmp_path, end=date(2020, 1, 1))


def test_load_when_all_cells_missing_then_error(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "w.csv", "Date,AAA\n2020-01-02,\n2020-01-03,NA")
    # Act / Assert
    with pytest.raises(ReplayDataError, match="no values for AAA"):
        load_source(source_cfg(path), base_dir=tmp_path)


def test_load_when_files_of_one_source_overlap_then_error_names_both(tmp_path: Path) -> None:
    # Arrange
    a = write(tmp_path / "a.csv", "Date,AAA\n2020-01-02,1\n2020-01-03,2")
    b = write(tmp_path / "b.csv", "Date,BBB,AAA\n2020-01-02,5,\n2020-01-03,6,2")
    # Act
    with pytest.raises(ReplayDataError) as info:
        load_source(source_cfg(a, b), base_dir=tmp_path)
    # Assert
    assert (info.value.path, info.value.line) == (b, 3)
    assert f"AAA at 2020-01-03 is also in {a}" in str(info.value)


def test_load_when_ohlcv_stem_not_a_symbol_then_error_suggests_symbols(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "goog daily.csv", "Date,Close\n2020-01-02,1")
    # Act / Assert
    with pytest.raises(ReplayDataError, match=r"'GOOG DAILY' .* symbols = \["):
        load_source(source_cfg(path), base_dir=tmp_path)
