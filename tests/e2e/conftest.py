"""Helpers for end-to-end replays: short real-data slices so CI stays fast."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from config import EngineConfig, load_config
from engine.app import Engine, RunOptions
from tests.kit.config import on_free_port
from tests.kit.redis_server import redis_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunResult:
    engine: Engine
    run_dir: Path
    completed: bool

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        with closing(sqlite3.connect(self.run_dir / "journal.sqlite")) as db:
            db.row_factory = sqlite3.Row
            return list(db.execute(sql, params))


def default_config(**engine_overrides: Any) -> EngineConfig:
    cfg = on_free_port(load_config(ROOT / "engine.toml", env={}))
    if engine_overrides:
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update=engine_overrides)})
    return cfg


async def replay(
    cfg: EngineConfig, run_dir: Path, start: date, end: date, base_dir: Path = ROOT
) -> RunResult:
    engine = Engine(
        on_free_port(cfg),
        options=RunOptions(start=start, end=end, run_dir=run_dir, base_dir=base_dir),
    )
    engine.prepare()
    async with engine:
        completed = await engine.run()
    return RunResult(engine=engine, run_dir=run_dir, completed=completed)


@pytest.fixture
def slice_dates() -> Iterator[tuple[date, date]]:
    return date(2005, 1, 1), date(2007, 12, 31)
