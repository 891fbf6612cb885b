"""A user's run: `tradeengine run --config engine.toml --paper` on a slice, as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_run_when_default_config_on_a_slice_then_summary_printed_and_written(
    tmp_path: Path,
) -> None:
    # Arrange
    run_dir = tmp_path / "run"
    # Act
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "--config",
            "engine.toml",
            "--paper",
            "--start",
            "2005-01-01",
            "--end",
            "2006-12-31",
            "--seed",
            "4",
            "--run-dir",
            str(run_dir),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
        timeout=300,
    )
    # Assert
    assert result.returncode == 0, result.stderr
    for label in (
        "period",
        "steps / bars",
        "signals",
        "intents",
        "orders / fills",
        "final equity",
        "total return",
        "annualized return",
        "volatility",
        "Sharpe",
        "max drawdown",
        "turnover",
        "fees paid",
        "run directory",
        "baseline",
    ):
        assert label in result.stdout, label
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["period_start"] == "2005-01-03"
    assert summary["period_end"] == "2006-12-29"
    assert summary["seed"] == 4
    assert summary["steps"] == 503
    assert summary["signals"] > 0
    assert summary["completed"] is True
    assert (run_dir / "journal.sqlite").exists()
    assert summary["baseline"]["name"].startswith("S&P 500")


def test_run_when_interrupted_mid_replay_then_clean_stop_and_partial_summary(
    tmp_path: Path,
) -> None:
    # Arrange: the full default replay, interrupted once it has started
    import signal
    import time

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "--config",
            "engine.toml",
            "--paper",
            "--run-dir",
            str(run_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TRADEENGINE__TELEMETRY__LOG_FORMAT": "json"},
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        started = False
        while not started and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            started = json.loads(line).get("event") == "engine started"
        assert started
        time.sleep(1.0)  # let it replay a while (not a timing assertion: any point will do)
        # Act
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Assert
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "interrupted before the end of the data" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] is False
    assert 0 < summary["steps"] < 8313
