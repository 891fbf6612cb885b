"""One directory per run, never reusing or overwriting another run's files.

The name is for humans (wall-clock time of the start, seed, config hash prefix); it is the only
place the engine reads the wall clock in replay, and it never influences a decision.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path


class RunDirError(ValueError):
    """The requested run directory cannot be used (it holds another run's files)."""


def create_run_dir(base: Path, *, explicit: Path | None, label: str, now: datetime) -> Path:
    try:
        return _create(base, explicit=explicit, label=label, now=now)
    except OSError as exc:
        where = explicit if explicit is not None else base
        raise RunDirError(
            f"cannot create run directory under {where}: {exc.strerror or exc}"
        ) from exc


def _create(base: Path, *, explicit: Path | None, label: str, now: datetime) -> Path:
    """Create and return a fresh run directory.

    `explicit` (the CLI's --run-dir) must not exist or be empty. Otherwise a new directory
    `<base>/<YYYYmmdd-HHMMSS>-<label>` is made, with `-2`, `-3`, ... on a collision.
    """
    if explicit is not None:
        if explicit.exists() and (not explicit.is_dir() or any(explicit.iterdir())):
            raise RunDirError(
                f"run directory {explicit} already exists and is not empty; "
                "choose another --run-dir (runs never overwrite each other)"
            )
        explicit.mkdir(parents=True, exist_ok=True)
        return explicit
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{now:%Y%m%d-%H%M%S}-{label}"
    for attempt in range(1, 10_000):
        candidate = base / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RunDirError(f"could not create a fresh run directory under {base}")
