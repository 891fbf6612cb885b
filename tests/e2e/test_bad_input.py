"""Bad data or options: a clear error naming the cause, exit 2, nothing in the run directory."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.data import bundled_path

ROOT = Path(__file__).resolve().parents[2]


def _run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "--config", str(config), "--paper", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
        timeout=300,
    )


def _config(tmp_path: Path, data_line: str, extra: str = "") -> Path:
    path = tmp_path / "engine.toml"
    path.write_text(
        f'[engine]\nrun_dir = "{tmp_path / "runs"}"\n\n'
        '[[sources]]\nkind = "replay"\nname = "stocks"\n'
        f"{data_line}\n{extra}\n"
        '[[agents]]\nname = "momentum"\npath = "plugins.momentum:TimeSeriesMomentumAgent"\n'
    )
    return path


def _assert_nothing_written(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


def test_run_when_data_file_truncated_then_exit_2_naming_file(tmp_path: Path) -> None:
    # Arrange: the first 20 kB of the real gzip file
    broken = tmp_path / "stocks.csv.gz"
    broken.write_bytes(bundled_path("us_stocks_20_daily_close.csv.gz").read_bytes()[:20_000])
    config = _config(tmp_path, 'paths = ["stocks.csv.gz"]')
    # Act
    result = _run(config)
    # Assert
    assert result.returncode == 2, result.stderr
    assert "stocks.csv.gz" in result.stderr
    assert "Traceback" not in result.stderr
    _assert_nothing_written(tmp_path)


def test_run_when_data_row_malformed_then_exit_2_naming_line_and_column(tmp_path: Path) -> None:
    # Arrange
    data = tmp_path / "prices.csv"
    data.write_text("Date,AAPL,MSFT\n2020-01-02,300.1,160.2\n2020-01-03,abc,161.0\n")
    config = _config(tmp_path, 'paths = ["prices.csv"]')
    # Act
    result = _run(config)
    # Assert
    assert result.returncode == 2
    assert "prices.csv:3:AAPL" in result.stderr, result.stderr
    _assert_nothing_written(tmp_path)


def test_run_when_unknown_symbol_configured_then_exit_2_listing_close_matches(
    tmp_path: Path,
) -> None:
    # Arrange
    config = _config(
        tmp_path,
        'paths = ["bundled:us_stocks_20_daily_close.csv.gz"]',
        'symbols = ["AAPL", "APPL"]',
    )
    # Act
    result = _run(config)
    # Assert
    assert result.returncode == 2
    assert "APPL" in result.stderr
    assert "AAPL" in result.stderr
    _assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--start", "2030-01-01"), "no data in the requested range 2030-01-01"),
        (("--start", "2010-01-05", "--end", "2010-01-01"), "empty date range"),
        (("--start", "2010-13-01"), "not a date"),
    ],
)
def test_run_when_date_range_empty_or_invalid_then_exit_2(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    # Arrange
    config = _config(tmp_path, 'paths = ["bundled:us_stocks_20_daily_close.csv.gz"]')
    # Act
    result = _run(config, *args)
    # Assert
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    _assert_nothing_written(tmp_path)


def test_run_when_run_dir_not_empty_then_exit_2_and_its_files_untouched(tmp_path: Path) -> None:
    # Arrange
    other = tmp_path / "other_run"
    other.mkdir()
    (other / "summary.json").write_text("{}")
    config = _config(tmp_path, 'paths = ["bundled:us_stocks_20_daily_close.csv.gz"]')
    # Act
    result = _run(config, "--start", "2010-01-01", "--end", "2010-01-31", "--run-dir", str(other))
    # Assert
    assert result.returncode == 2
    assert "not empty" in result.stderr
    assert (other / "summary.json").read_text() == "{}"
    assert sorted(p.name for p in other.iterdir()) == ["summary.json"]


def test_gzip_fixture_when_truncated_then_really_unreadable(tmp_path: Path) -> None:
    # Arrange: guard the first test's premise
    broken = bundled_path("us_stocks_20_daily_close.csv.gz").read_bytes()[:20_000]
    # Act / Assert
    with pytest.raises(EOFError):
        gzip.decompress(broken)
