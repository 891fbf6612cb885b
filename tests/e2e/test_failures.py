"""A component that fails mid-run fails the run loudly and promptly: no hang, journal kept."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from config import load_config_text
from engine.app import Engine, RunOptions
from engine.stages.blender import BlenderStage
from engine.stages.risk import RiskStage
from tests.kit.config import on_free_port

from .conftest import ROOT, RunResult, default_config


async def _run_expecting_failure(engine: Engine) -> None:
    engine.prepare()
    try:
        async with asyncio.timeout(120):  # a hang fails the test instead of blocking CI
            async with engine:
                await engine.run()
    except TimeoutError:
        pytest.fail("the replay hung after a component failure")


async def test_run_when_risk_stage_raises_then_run_fails_and_journal_is_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: risk.decide raises on its 200th call
    calls = {"n": 0}
    original = RiskStage.decide

    def flaky_decide(self: RiskStage, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 200:
            raise ZeroDivisionError("injected fault in the risk stage")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RiskStage, "decide", flaky_decide)
    engine = Engine(
        default_config(),
        options=RunOptions(
            start=date(2005, 1, 1),
            end=date(2005, 12, 31),
            run_dir=tmp_path / "run",
            base_dir=ROOT,
        ),
    )
    # Act
    with pytest.raises(RuntimeError, match="injected fault"):
        await _run_expecting_failure(engine)
    # Assert: the 199 completed steps are in the journal (stop() flushed it despite the fault)
    result = RunResult(engine=engine, run_dir=tmp_path / "run", completed=False)
    assert result.rows("SELECT count(*) AS n FROM snapshots")[0]["n"] == 199


async def test_run_when_blender_task_crashes_then_run_fails_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: the blender's step-closing code raises on the 50th step
    calls = {"n": 0}
    original = BlenderStage._watermark

    def broken_watermark(self: BlenderStage, step: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 50:
            raise RuntimeError("injected fault in the blender")
        return original(self, step)

    monkeypatch.setattr(BlenderStage, "_watermark", broken_watermark)
    engine = Engine(
        default_config(),
        options=RunOptions(
            start=date(2005, 1, 1),
            end=date(2005, 12, 31),
            run_dir=tmp_path / "run",
            base_dir=ROOT,
        ),
    )
    # Act / Assert
    with pytest.raises(RuntimeError, match="injected fault in the blender"):
        await _run_expecting_failure(engine)


async def test_run_when_prices_in_account_currency_then_no_fx_needed(tmp_path: Path) -> None:
    # Arrange: a EUR-quoted series in a EUR account (the converter has no USD leg to use)
    data = tmp_path / "prices.csv"
    data.write_text("Date,SAP\n" + "".join(f"2020-01-{d:02d},{100 + d}.0\n" for d in range(2, 31)))
    cfg = load_config_text(
        '[[sources]]\nkind = "replay"\nname = "eu"\npaths = ["prices.csv"]\ncurrency = "EUR"\n'
        '\n[[agents]]\nname = "sma"\npath = "plugins.sma_cross:SmaCrossAgent"\n'
        "params = { fast = 2, slow = 5 }\n",
        env={},
    )
    engine = Engine(
        on_free_port(cfg), options=RunOptions(run_dir=tmp_path / "run", base_dir=tmp_path)
    )
    engine.prepare()
    # Act
    async with engine:
        completed = await engine.run()
    # Assert
    assert completed
    assert engine.pipeline is not None
    assert engine.pipeline.stats.steps == 29  # every row of the file


def test_run_when_run_dir_cannot_be_created_then_exit_2_without_traceback(
    tmp_path: Path,
) -> None:
    # Arrange: a path below a regular file can never be a directory
    blocker = tmp_path / "file"
    blocker.write_text("")
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
            "2010-01-01",
            "--end",
            "2010-01-31",
            "--run-dir",
            str(blocker / "run"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
        timeout=300,
    )
    # Assert
    assert result.returncode == 2
    assert "cannot create run directory" in result.stderr
    assert "Traceback" not in result.stderr
