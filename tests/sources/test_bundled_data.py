"""The bundled real data: integrity (sha256) and what the replay source makes of it."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts import topics
from contracts.ids import IdGenerator
from contracts.market import MacroObservation
from engine.bus import MessageBus
from engine.clock import ReplayClock
from engine.data import BUNDLED_SHA256, bundled_path
from engine.sources.replay import ReplayDataError, ReplayFeed, load_source
from tests.sources import source_cfg

# Copied from /work/shared/data/README.md (the published digests), not computed from the files.
EXPECTED_SHA256 = {
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

STOCKS = [
    "AAPL",
    "AMD",
    "BAC",
    "BBY",
    "CVX",
    "GE",
    "HD",
    "JNJ",
    "JPM",
    "KO",
    "LLY",
    "MRK",
    "MSFT",
    "PEP",
    "PFE",
    "PG",
    "RRC",
    "UNH",
    "WMT",
    "XOM",
]
TENORS = [
    "1month",
    "3month",
    "6month",
    "1year",
    "2year",
    "3year",
    "5year",
    "7year",
    "10year",
    "20year",
    "30year",
]


def _close(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=21, tzinfo=UTC)


@pytest.mark.parametrize("name", sorted(EXPECTED_SHA256))
def test_sha256_when_bundled_file_hashed_then_matches_published_digest(name: str) -> None:
    # Arrange
    path = bundled_path(name)
    # Act
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    # Assert
    assert digest == EXPECTED_SHA256[name]
    assert BUNDLED_SHA256[name] == EXPECTED_SHA256[name]


def test_bundled_sha256_when_listed_then_names_exactly_the_shipped_files() -> None:
    # Arrange
    data_dir = bundled_path(next(iter(BUNDLED_SHA256))).parent
    shipped = {p.name for pattern in ("*.csv", "*.csv.gz") for p in data_dir.glob(pattern)}
    # Act
    listed = set(BUNDLED_SHA256)
    # Assert
    assert listed == shipped == set(EXPECTED_SHA256)


def test_bundled_path_when_name_unknown_then_error_lists_closest_first() -> None:
    # Arrange / Act
    with pytest.raises(FileNotFoundError) as info:
        bundled_path("us_stock_20_daily_close.csv.gz")
    # Assert
    assert str(info.value).index("us_stocks_20_daily_close.csv.gz") < str(info.value).index(
        "sp500_index_daily_close.csv.gz"
    )


def test_bundled_path_when_name_escapes_package_then_refused() -> None:
    # Arrange / Act / Assert
    with pytest.raises(FileNotFoundError, match="no bundled data file"):
        bundled_path("../__init__.py")


def test_package_data_when_pyproject_read_then_ships_data_files() -> None:
    # Arrange
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    # Act
    engine_data = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"][
        "engine"
    ]
    # Assert
    assert "data/*.csv.gz" in engine_data
    assert "data/README.md" in engine_data
    assert (bundled_path(next(iter(BUNDLED_SHA256))).parent / "README.md").is_file()


def test_load_when_bundled_stocks_then_20_symbols_8313_steps_close_only(tmp_path: Path) -> None:
    # Arrange
    cfg = source_cfg("bundled:us_stocks_20_daily_close.csv.gz", name="stocks")
    # Act
    source = load_source(cfg, base_dir=tmp_path)
    # Assert
    assert source.kind == "bars"
    assert source.symbols == tuple(STOCKS)
    assert source.n_steps == 8_313
    assert source.n_events == 8_313 * 20  # the file has no blanks
    assert source.first_ts == _close("1990-01-02")
    assert source.last_ts == _close("2022-12-28")
    assert str(source.interval) == "1d"


def test_load_when_bundled_sp500_then_one_symbol_same_dates(tmp_path: Path) -> None:
    # Arrange
    cfg = source_cfg("bundled:sp500_index_daily_close.csv.gz", name="index")
    # Act
    source = load_source(cfg, base_dir=tmp_path)
    # Assert
    assert source.symbols == ("SP500",)
    assert (source.n_steps, source.first_ts, source.last_ts) == (
        8_313,
        _close("1990-01-02"),
        _close("2022-12-28"),
    )


def _raw_yield_cells() -> dict[tuple[str, str], str]:
    """(date, tenor) -> cell text, read independently of the code under test."""
    text = gzip.decompress(
        bundled_path("us_treasury_yield_curves_daily.csv.gz").read_bytes()
    ).decode()
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    return {
        (row[0][:10], name): cell
        for row in reader
        for name, cell in zip(header[1:], row[1:], strict=True)
    }


async def test_replay_when_bundled_yields_then_blanks_skipped_never_zero(tmp_path: Path) -> None:
    # Arrange
    raw = _raw_yield_cells()
    blanks = sum(1 for cell in raw.values() if cell == "")
    cfg = source_cfg("bundled:us_treasury_yield_curves_daily.csv.gz", name="ust", data="macro")
    source = load_source(cfg, base_dir=tmp_path)
    bus = MessageBus()
    sub = bus.subscribe(topics.ALL_MACRO, name="macro", capacity=100_000)
    feed = ReplayFeed(
        [source], bus=bus, clock=ReplayClock(datetime(1990, 1, 1, tzinfo=UTC)), ids=IdGenerator(1)
    )
    # Act
    stats = await feed.run()
    published = [message for _, message in await sub.get_batch(100_000)]
    # Assert
    assert source.symbols == tuple(TENORS)
    assert source.n_steps == 6_816
    assert blanks == 4_832
    assert stats.macro == source.n_events == len(raw) - blanks == 70_144
    assert len(published) == stats.macro
    for obs in published:
        assert isinstance(obs, MacroObservation)
        cell = raw[(obs.ts_event.date().isoformat(), obs.series)]
        assert cell != ""  # never an event from an empty cell ...
        assert obs.value == float(cell)  # ... and real zeros (Dec 2008) stay real zeros
        assert obs.unit == "decimal"
        assert obs.source == "ust"
    assert any(isinstance(obs, MacroObservation) and obs.value == 0.0 for obs in published)
    # The file writes dates as midnight UTC; they are stamped at the close, like the stocks.
    assert stats.first_ts == _close("1990-01-02")
    assert stats.last_ts == _close("2017-03-29")


def test_load_when_bundled_name_misspelled_then_replay_error_lists_files(tmp_path: Path) -> None:
    # Arrange
    cfg = source_cfg("bundled:us_stocks.csv.gz")
    # Act
    with pytest.raises(ReplayDataError) as info:
        load_source(cfg, base_dir=tmp_path)
    # Assert
    assert "us_stocks_20_daily_close.csv.gz" in str(info.value)
    assert str(info.value).startswith("bundled:us_stocks.csv.gz: ")
