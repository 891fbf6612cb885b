"""Replay speed: loading must be far below a second, event construction a few microseconds.

The bounds are ~10x the figures measured on the 2-core development machine (load ~70 ms for
the 20-stock file, ~8 us per published event including pydantic validation and the trace id),
so they catch an accidental O(n^2) or a per-event re-parse without flaking on a noisy machine.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from contracts.ids import IdGenerator
from engine.bus import MessageBus
from engine.clock import ReplayClock
from engine.sources.replay import LoadedSource, ReplayFeed, load_source
from tests.sources import source_cfg

BUNDLED = [
    ("stocks", "bundled:us_stocks_20_daily_close.csv.gz", "bars"),
    ("index", "bundled:sp500_index_daily_close.csv.gz", "bars"),
    ("ust", "bundled:us_treasury_yield_curves_daily.csv.gz", "macro"),
]


def _load_all(tmp_path: Path) -> tuple[list[LoadedSource], float]:
    started = time.perf_counter()
    sources = [
        load_source(source_cfg(path, name=name, data=data), base_dir=tmp_path)
        for name, path, data in BUNDLED
    ]
    return sources, time.perf_counter() - started


def test_load_when_all_bundled_files_then_well_under_a_second(tmp_path: Path) -> None:
    # Arrange
    _load_all(tmp_path)  # warm imports and caches
    # Act
    best = min(_load_all(tmp_path)[1] for _ in range(3))
    # Assert
    assert best < 1.0, f"loading the bundled files took {best:.3f} s"


async def test_run_when_bundled_1990_to_2022_then_events_cost_microseconds(
    tmp_path: Path,
) -> None:
    # Arrange
    sources, _ = _load_all(tmp_path)
    feed = ReplayFeed(
        sources,
        bus=MessageBus(),
        clock=ReplayClock(datetime(1990, 1, 1, tzinfo=UTC)),
        ids=IdGenerator(0),
    )
    # Act
    started = time.perf_counter()
    stats = await feed.run()
    elapsed = time.perf_counter() - started
    # Assert
    published = stats.bars + stats.macro + stats.steps * len(sources)
    per_event_us = elapsed / published * 1e6
    assert (stats.steps, stats.bars, stats.macro) == (8_323, 8_313 * 21, 70_144)
    assert per_event_us < 80, f"{per_event_us:.1f} us per event ({elapsed:.2f} s)"
    assert elapsed < 15, f"replaying the bundled data took {elapsed:.2f} s"
