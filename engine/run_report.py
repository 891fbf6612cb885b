"""What a user sees of a replay: a progress bar while it runs, a summary when it ends.

The progress bar (rich) is drawn only on a terminal; piped or in CI the run stays quiet apart
from structured logs. The summary goes to stdout and, with the same figures, to
`summary.json` in the run directory.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from engine.summary import RunSummary, render

if TYPE_CHECKING:
    from engine.app import Engine


class Progress:
    """A context manager that shows replay progress on stderr when it is a terminal."""

    def __init__(self, *, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: RichProgress | None = None
        self._task: int | None = None

    def __enter__(self) -> Self:
        if self._enabled:
            from rich.console import Console

            self._bar = RichProgress(
                TextColumn("replay"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[day]}"),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
                transient=True,
            )
            self._bar.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)

    def callback(self, engine: Engine) -> Callable[[int, datetime], None] | None:
        bar = self._bar
        if bar is None:
            return None
        task = bar.add_task("replay", total=None, day="")

        def on_step(index: int, ts: datetime) -> None:
            # Redrawing every step would cost more than the step; rich throttles the refresh,
            # and we only push an update every 64 steps.
            if index % 64 == 0:
                bar.update(
                    task,
                    completed=index + 1,
                    total=engine.steps_total,
                    day=ts.date().isoformat(),
                )

        return on_step


BASELINE_FILE = "sp500_index_daily_close.csv.gz"


def load_baseline() -> dict[datetime, float] | None:
    """The bundled S&P 500 closes, the baseline a US-equity run is compared with."""
    from config.models import ReplaySourceConfig
    from engine.sources.replay import ReplayDataError, load_source

    cfg = ReplaySourceConfig(
        kind="replay", name="baseline", paths=[Path(f"bundled:{BASELINE_FILE}")]
    )
    try:
        source = load_source(cfg, base_dir=Path("."))
    except (ReplayDataError, OSError, ValueError):
        return None  # a damaged install: report without a baseline rather than fail the run
    if not source.symbols:
        return None
    return source.closes(source.symbols[0])


def write_summary(engine: Engine, *, completed: bool) -> RunSummary:
    """Compute the summary, write summary.json to the run directory and print it."""
    summary = engine.summary(completed=completed, baseline=load_baseline())
    assert engine.run_dir is not None
    path = engine.run_dir / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    sys.stdout.write(render(summary))
    if not completed:
        sys.stdout.write("  (interrupted before the end of the data)\n")
    sys.stdout.flush()
    return summary
