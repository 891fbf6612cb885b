"""Garbage-collector settings for a process whose main job is one engine run.

Why this module exists: a replay allocates millions of short-lived objects (bars, signals,
estimates, rows) on top of a large, long-lived heap (the loaded data, indicator histories, the
journal's buffers). With CPython's default thresholds (a young collection every 700 net
allocations) the collector ran ~5,000 young and ~40 full collections in the default replay,
~4 s of a ~90 s run, and every full collection re-walked the loaded data, which never becomes
garbage. `run_gc_policy` freezes what exists once the engine is prepared (the data and the
components: moved out of the collector's generations, so full collections no longer walk them)
and collects the young generation every `young_threshold` net allocations instead of 700 (most
objects of a step die by reference counting long before that, so far fewer collections find far
less to walk).

Trade-offs: the settings are process-wide, so they are applied by the process owner (the CLI's
`run`, the replay benchmark), not by `Engine` itself, which tests and embedding applications
construct many times in one process; the threshold is restored when the run ends, and the heap
unfrozen if this block froze it (an already frozen heap is left as it was). The figures are
CPython 3.11's three-generation collector; 3.14's incremental collector reads the thresholds
differently, so they are worth measuring again there. Garbage made of frozen objects is only
reclaimed after the block - a bounded cost here, since the frozen heap is the run's own working
set. Nothing about the decisions depends on when the collector runs.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_YOUNG_THRESHOLD = 10_000


@contextmanager
def run_gc_policy(young_threshold: int = DEFAULT_YOUNG_THRESHOLD) -> Iterator[None]:
    """Freeze the current heap and raise the young-generation threshold for the block."""
    if young_threshold < 1:
        raise ValueError(f"young_threshold must be >= 1, got {young_threshold}")
    previous = gc.get_threshold()
    # Only the freeze this block made is undone: a heap someone else froze (an enclosing use,
    # an application that embeds the engine) stays frozen, so a nested use changes nothing.
    freezes = gc.get_freeze_count() == 0
    try:
        gc.set_threshold(young_threshold, previous[1], previous[2])
        if freezes:
            gc.freeze()
        yield
    finally:
        gc.set_threshold(*previous)
        if freezes:
            gc.unfreeze()


__all__ = ["DEFAULT_YOUNG_THRESHOLD", "run_gc_policy"]
