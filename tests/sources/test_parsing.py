"""Parsing replay files: layouts, formats, time stamps, gaps, filters (small tmp files)."""

from __future__ import annotations

import gzip
from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest

from contracts.enums import BarInterval
from contracts.market import Bar, MacroObservation
from engine.sources.replay import ReplayDataError, load_source
from tests.sources import events, replay_all, source_cfg, write


def _at(day: str, hour: int = 21) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def _bars(published: list[tuple[str, object]]) -> list[Bar]:
    found = [e for e in events(published) if isinstance(e, Bar)]
    return found


WIDE = """
    Date,AAA,BBB
    2020-01-02,10.0,20.0
    2020-01-03,11.0,
    2020-01-06,NA,22.5
    2020-01-07,null,nan
    2020-01-08,.,23
"""


async def test_load_when_wide_closes_then_close_only_bars_at_market_close(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "wide.csv", WIDE)
    cfg = source_cfg(path, currency="EUR")
    # Act
    source = load_source(cfg, base_dir=tmp_path)
    published, stats = await replay_all([source])
    bars = _bars(published)
    # Assert
    assert source.symbols == ("AAA", "BBB")
    assert [(b.symbol, b.ts_event, b.close) for b in bars] == [
        ("AAA", _at("2020-01-02"), 10.0),
        ("BBB", _at("2020-01-02"), 20.0),
        ("AAA", _at("2020-01-03"), 11.0),
        ("BBB", _at("2020-01-06"), 22.5),
        ("BBB", _at("2020-01-08"), 23.0),
    ]
    for bar in bars:
        assert (bar.open, bar.high, bar.low, bar.volume) == (None, None, None, None)
        assert bar.is_close_only
        assert bar.interval is BarInterval.D1
        assert bar.currency == "EUR"
        assert bar.ts_init == bar.ts_event
    assert stats.bars == source.n_events == 5


async def test_load_when_cells_missing_then_no_event_and_never_zero(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "wide.csv", WIDE)
    # Act
    published, _ = await replay_all([load_source(source_cfg(path), base_dir=tmp_path)])
    # Assert
    assert all(bar.close > 0 for bar in _bars(published))
    assert not any(b.symbol == "AAA" and b.ts_event == _at("2020-01-06") for b in _bars(published))


def test_load_when_row_has_only_missing_cells_then_no_step(tmp_path: Path) -> None:
    # Arrange: 2020-01-07 has "null" and "nan" only
    path = write(tmp_path / "wide.csv", WIDE)
    # Act
    source = load_source(source_cfg(path), base_dir=tmp_path)
    # Assert
    assert _at("2020-01-07") not in source.timestamps
    assert source.n_steps == 4


async def test_load_when_long_ohlcv_mixed_case_then_full_bars_in_first_seen_order(
    tmp_path: Path,
) -> None:
    # Arrange
    path = write(
        tmp_path / "long.csv",
        """
        DATE,Ticker,Open,HIGH,low,Close,Volume,Adj Close
        2020-01-02,ZZZ,10,12,9,11,1000,1
        2020-01-02,AAA,5,6,4,5.5,,1
        2020-01-03,AAA,5.5,6,5,6,200,1
        """,
    )
    # Act
    source = load_source(source_cfg(path), base_dir=tmp_path)
    published, _ = await replay_all([source])
    bars = _bars(published)
    # Assert
    assert source.symbols == ("ZZZ", "AAA")
    assert [(b.symbol, b.open, b.high, b.low, b.close, b.volume) for b in bars] == [
        ("ZZZ", 10.0, 12.0, 9.0, 11.0, 1000.0),
        ("AAA", 5.0, 6.0, 4.0, 5.5, None),
        ("AAA", 5.5, 6.0, 5.0, 6.0, 200.0),
    ]


async def test_load_when_long_close_only_then_close_only_bars(tmp_path: Path) -> None:
    # Arrange
    path = write(
        tmp_path / "long.csv",
        """
        timestamp,symbol,close
        2020-01-02,AAA,1.5
        2020-01-02,BRK.B,300
        2020-01-03,BRK.B,
        """,
    )
    # Act
    published, stats = await replay_all([load_source(source_cfg(path), base_dir=tmp_path)])
    # Assert
    assert [(b.symbol, b.close, b.is_close_only) for b in _bars(published)] == [
        ("AAA", 1.5, True),
        ("BRK.B", 300.0, True),
    ]
    assert ("bar.BRK_B", _bars(published)[1]) in published
    assert stats.steps == 1


async def test_load_when_single_instrument_ohlcv_then_symbol_from_config(tmp_path: Path) -> None:
    # Arrange
    path = write(
        tmp_path / "goog_daily.csv",
        """
        ,Open,High,Low,Close,Volume
        2004-08-19,100,104.06,95.96,100.34,22351900
        2004-08-20,101.01,109.08,100.5,108.31,11428600
        """,
    )
    cfg = source_cfg(path, symbols=["GOOG"])
    # Act
    source = load_source(cfg, base_dir=tmp_path)
    published, _ = await replay_all([source])
    bars = _bars(published)
    # Assert
    assert source.symbols == ("GOOG",)
    assert bars[0].model_dump(include={"symbol", "open", "high", "low", "close", "volume"}) == {
        "symbol": "GOOG",
        "open": 100.0,
        "high": 104.06,
        "low": 95.96,
        "close": 100.34,
        "volume": 22351900.0,
    }
    assert bars[1].ts_event == _at("2004-08-20")


def test_load_when_ohlcv_without_symbols_then_symbol_is_file_stem_upper(tmp_path: Path) -> None:
    # Arrange
    path = write(
        tmp_path / "msft.csv.gz",
        """
        Date,Open,High,Low,Close
        2020-01-02,1,2,0.5,1.5
        """,
        gz=True,
    )
    # Act
    source = load_source(source_cfg(path), base_dir=tmp_path)
    # Assert
    assert source.symbols == ("MSFT",)


async def test_load_when_hourly_datetimes_then_utc_and_interval_1h(tmp_path: Path) -> None:
    # Arrange: naive = UTC; an offset is honoured; the overnight gap does not move the median
    path = write(
        tmp_path / "eurusd.csv",
        """
        ,Open,High,Low,Close,Volume
        2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413
        2017-04-19 10:00:00,1.07214,1.07296,1.07214,1.0726,1241
        2017-04-19T13:00:00+02:00,1.0726,1.0730,1.0720,1.0725,100
        2017-04-20 09:00:00,1.0726,1.0730,1.0720,1.0725,100
        """,
    )
    cfg = source_cfg(path, symbols=["EUR/USD"])
    # Act
    source = load_source(cfg, base_dir=tmp_path)
    published, _ = await replay_all([source])
    # Assert
    assert source.interval is BarInterval.H1
    assert source.timestamps == (
        datetime(2017, 4, 19, 9, tzinfo=UTC),
        datetime(2017, 4, 19, 10, tzinfo=UTC),
        datetime(2017, 4, 19, 11, tzinfo=UTC),
        datetime(2017, 4, 20, 9, tzinfo=UTC),
    )
    assert {b.interval for b in _bars(published)} == {BarInterval.H1}
    assert ("bar.EUR/USD", _bars(published)[0]) in published


def test_load_when_interval_configured_then_not_inferred(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "p.csv", "time,X\n2020-01-01 10:00,1\n2020-01-01 10:07,2")
    # Act
    source = load_source(source_cfg(path, interval="5min"), base_dir=tmp_path)
    # Assert
    assert source.interval is BarInterval.M5


def test_load_when_weekly_dates_then_interval_1w(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "w.csv", "Date,X\n2020-01-03,1\n2020-01-10,2\n2020-01-17,3")
    # Act
    source = load_source(source_cfg(path), base_dir=tmp_path)
    # Assert
    assert source.interval is BarInterval.W1


@pytest.mark.parametrize(
    ("midnight_as_date", "expected_hour"), [(True, 21), (False, 0)], ids=["date", "exact"]
)
def test_load_when_all_timestamps_midnight_then_stamped_per_setting(
    tmp_path: Path, midnight_as_date: bool, expected_hour: int
) -> None:
    # Arrange
    path = write(
        tmp_path / "m.csv",
        """
        Time Period,X
        1990-01-02 00:00:00+00:00,1
        1990-01-03 00:00:00+00:00,2
        """,
    )
    cfg = source_cfg(path, daily_midnight_as_date=midnight_as_date)
    # Act
    source = load_source(cfg, base_dir=tmp_path)
    # Assert
    assert source.first_ts == datetime(1990, 1, 2, expected_hour, tzinfo=UTC)
    assert source.interval is BarInterval.D1


def test_load_when_market_close_configured_then_dates_stamped_at_it(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "d.csv", "Date,X\n2020-07-01,1")
    cfg = source_cfg(path, market_close_utc=time(20, 0))
    # Act
    source = load_source(cfg, base_dir=tmp_path)
    # Assert
    assert source.first_ts == datetime(2020, 7, 1, 20, tzinfo=UTC)
    assert source.interval is BarInterval.D1  # one date row: daily


async def test_load_when_macro_wide_then_observations_named_by_prefix_and_column(
    tmp_path: Path,
) -> None:
    # Arrange
    path = write(
        tmp_path / "yields.csv",
        """
        Time Period,1month,10year
        1990-01-02 00:00:00+00:00,,0.0794
        1990-01-03 00:00:00+00:00,-0.001,0.0
        """,
    )
    cfg = source_cfg(path, name="ust", data="macro", series_prefix="ust_", unit="pct")
    # Act
    source = load_source(cfg, base_dir=tmp_path)
    published, stats = await replay_all([source])
    observations = [e for e in events(published) if isinstance(e, MacroObservation)]
    # Assert
    assert source.kind == "macro"
    assert source.symbols == ("ust_1month", "ust_10year")
    assert [(o.series, o.value, o.ts_event) for o in observations] == [
        ("ust_10year", 0.0794, _at("1990-01-02")),
        ("ust_1month", -0.001, _at("1990-01-03")),
        ("ust_10year", 0.0, _at("1990-01-03")),
    ]
    assert {(o.unit, o.source) for o in observations} == {("pct", "ust")}
    assert ("macro.ust_10year", observations[0]) in published
    assert stats.macro == 3
    assert stats.bars == 0


async def test_load_when_macro_long_then_observations(tmp_path: Path) -> None:
    # Arrange
    path = write(
        tmp_path / "fred.csv",
        """
        date,series,value
        2020-01-02,DGS10,1.88
        2020-01-02,DEXUSEU,.
        2020-01-03,DEXUSEU,1.1147
        """,
    )
    # Act
    source = load_source(source_cfg(path, data="macro"), base_dir=tmp_path)
    published, _ = await replay_all([source])
    # Assert
    assert source.symbols == ("DGS10", "DEXUSEU")
    observations = [e for e in events(published) if isinstance(e, MacroObservation)]
    assert [(o.series, o.value) for o in observations] == [
        ("DGS10", 1.88),
        ("DEXUSEU", 1.1147),
    ]


@pytest.mark.parametrize(
    ("header", "row", "expected_symbols"),
    [
        ("Date,AAA,BBB", "2020-01-02,1,2", ("AAA", "BBB")),  # wide
        ("Date,Symbol,Close", "2020-01-02,AAA,1", ("AAA",)),  # long (symbol column)
        ("date,TICKER,close", "2020-01-02,AAA,1", ("AAA",)),  # long (ticker column)
        ("Date,Open,High,Low,Close", "2020-01-02,1,2,1,2", ("FILE",)),  # ohlcv (close column)
        ("Date,close", "2020-01-02,1", ("FILE",)),  # ohlcv, close only
    ],
    ids=["wide", "long-symbol", "long-ticker", "ohlcv", "ohlcv-close"],
)
def test_load_when_layout_auto_then_detected_from_header(
    tmp_path: Path, header: str, row: str, expected_symbols: tuple[str, ...]
) -> None:
    # Arrange
    path = write(tmp_path / "file.csv", f"{header}\n{row}")
    # Act
    source = load_source(source_cfg(path, layout="auto"), base_dir=tmp_path)
    # Assert
    assert source.symbols == expected_symbols


def test_load_when_layout_wide_forced_on_ohlcv_file_then_columns_are_symbols(
    tmp_path: Path,
) -> None:
    # Arrange
    path = write(tmp_path / "file.csv", "Date,Open,Close\n2020-01-02,1,2")
    # Act
    source = load_source(source_cfg(path, layout="wide"), base_dir=tmp_path)
    # Assert
    assert source.symbols == ("Open", "Close")


@pytest.mark.parametrize("name", ["data.csv", "data.bin", "data.csv.gz"])
def test_load_when_gzip_by_magic_or_suffix_then_read(tmp_path: Path, name: str) -> None:
    # Arrange
    path = write(tmp_path / name, "Date,AAA\n2020-01-02,1\n2020-01-03,2", gz=True)
    # Act
    source = load_source(source_cfg(path), base_dir=tmp_path)
    # Assert
    assert source.n_events == 2


def test_load_when_bom_quotes_and_blank_lines_then_read(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "excel.csv"
    path.write_bytes(b'\xef\xbb\xbf"Date","AAA"\r\n\r\n"2020-01-02","1.5"\r\n\r\n')
    # Act
    source = load_source(source_cfg(path), base_dir=tmp_path)
    # Assert
    assert (source.symbols, source.n_events) == (("AAA",), 1)


def test_load_when_relative_path_then_resolved_against_base_dir(tmp_path: Path) -> None:
    # Arrange
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "p.csv", "Date,AAA\n2020-01-02,1")
    # Act
    source = load_source(source_cfg("data/p.csv"), base_dir=tmp_path)
    # Assert
    assert source.paths == (tmp_path / "data" / "p.csv",)


async def test_load_when_several_files_then_merged_in_time_order(tmp_path: Path) -> None:
    # Arrange: one file per year plus a file with another symbol
    a = write(tmp_path / "a.csv", "Date,AAA\n2021-01-04,3\n2021-01-05,4")
    b = write(tmp_path / "b.csv", "Date,AAA\n2020-01-02,1\n2020-01-03,2")
    c = write(tmp_path / "c.csv", "Date,BBB\n2020-01-03,9")
    # Act
    source = load_source(source_cfg(a, b, c), base_dir=tmp_path)
    published, _ = await replay_all([source])
    # Assert
    assert source.symbols == ("AAA", "BBB")
    assert [(b.symbol, b.close) for b in _bars(published)] == [
        ("AAA", 1.0),
        ("AAA", 2.0),
        ("BBB", 9.0),
        ("AAA", 3.0),
        ("AAA", 4.0),
    ]


def test_load_when_symbols_given_then_only_those_in_file_order(tmp_path: Path) -> None:
    # Arrange
    path = write(tmp_path / "w.csv", "Date,AAA,BBB,CCC\n2020-01-02,1,2,3\n2020-01-03,1,,3")
    # Act
    source = load_source(source_cfg(path, symbols=["CCC", "BBB"]), base_dir=tmp_path)
    # Assert
    assert source.symbols == ("BBB", "CCC")
    assert source.n_events == 3


def test_load_when_symbols_exclude_all_values_of_a_row_then_row_is_no_step(
    tmp_path: Path,
) -> None:
    # Arrange
    path = write(tmp_path / "w.csv", "Date,AAA,BBB\n2020-01-02,1,2\n2020-01-03,1,")
    # Act
    source = load_source(source_cfg(path, symbols=["BBB"]), base_dir=tmp_path)
    # Assert
    assert source.timestamps == (_at("2020-01-02"),)


@pytest.mark.parametrize(
    ("cfg_range", "arg_range", "expected"),
    [
        ((None, None), (None, None), ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]),
        (("2020-01-03", "2020-01-06"), (None, None), ["2020-01-03", "2020-01-06"]),
        ((None, None), ("2020-01-04", None), ["2020-01-06", "2020-01-07"]),
        (("2020-01-02", "2020-01-03"), ("2020-01-06", "2020-01-07"), ["2020-01-06", "2020-01-07"]),
    ],
    ids=["all", "config-inclusive", "argument-start", "argument-overrides-config"],
)
def test_load_when_start_end_given_then_inclusive_filter_arguments_win(
    tmp_path: Path,
    cfg_range: tuple[str | None, str | None],
    arg_range: tuple[str | None, str | None],
    expected: list[str],
) -> None:
    # Arrange
    path = write(
        tmp_path / "w.csv", "Date,AAA\n2020-01-02,1\n2020-01-03,2\n2020-01-06,3\n2020-01-07,4"
    )
    cfg = source_cfg(path, start=cfg_range[0], end=cfg_range[1])
    start, end = (date.fromisoformat(d) if d else None for d in arg_range)
    # Act
    source = load_source(cfg, base_dir=tmp_path, start=start, end=end)
    # Assert
    assert source.timestamps == tuple(_at(d) for d in expected)
    assert (source.first_ts, source.last_ts) == (_at(expected[0]), _at(expected[-1]))


def test_load_when_parquet_then_same_as_csv(tmp_path: Path) -> None:
    # Arrange
    # pyarrow is in the test extra: a missing one must fail here, never skip.
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "Date": [date(2020, 1, 2), date(2020, 1, 3)],
            "AAA": [1.5, None],
            "BBB": [2.0, float("nan")],
        }
    )
    pq.write_table(table, tmp_path / "w.parquet")
    # Act
    source = load_source(source_cfg(tmp_path / "w.parquet"), base_dir=tmp_path)
    # Assert
    assert source.symbols == ("AAA", "BBB")
    assert source.timestamps == (_at("2020-01-02"),)
    assert source.n_events == 2


def test_load_when_parquet_written_by_pandas_then_index_is_time_column(tmp_path: Path) -> None:
    # Arrange: pandas stores a DatetimeIndex as the last column and names it in its metadata
    # pyarrow is in the test extra: a missing one must fail here, never skip.
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"AAA": [1.5, 2.5], "Date": [date(2020, 1, 2), date(2020, 1, 3)]})
    table = table.replace_schema_metadata({b"pandas": b'{"index_columns": ["Date"]}'})
    pq.write_table(table, tmp_path / "pandas.parquet")
    # Act
    source = load_source(source_cfg(tmp_path / "pandas.parquet"), base_dir=tmp_path)
    # Assert
    assert source.symbols == ("AAA",)
    assert source.timestamps == (_at("2020-01-02"), _at("2020-01-03"))


def test_load_when_parquet_without_pyarrow_then_error_says_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    import sys

    path = tmp_path / "w.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 16 + b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    # Act
    with pytest.raises(ReplayDataError) as info:
        load_source(source_cfg(path), base_dir=tmp_path)
    # Assert
    assert str(info.value).startswith(f"{path}: ")
    assert "pip install pyarrow" in str(info.value)


def test_gzip_helper_when_used_then_really_compressed(tmp_path: Path) -> None:
    # Arrange / Act
    path = write(tmp_path / "x.csv", "Date,A\n2020-01-02,1", gz=True)
    # Assert: guards the tests above against a helper that silently wrote plain text
    assert gzip.decompress(path.read_bytes()).startswith(b"Date,A")
