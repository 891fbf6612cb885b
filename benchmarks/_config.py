"""The config a replay benchmark runs: a config file, optionally with every agent in process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import EngineConfig, load_config  # noqa: E402


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=ROOT / "engine.toml",
        help="engine config to replay (default: the repository's engine.toml)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every agent on the engine's event loop (ignore the agents' worker settings)",
    )


def bench_config(path: Path, *, in_process: bool, env: Mapping[str, str]) -> EngineConfig:
    cfg = load_config(path, env=dict(env))
    if in_process:
        agents = [a.model_copy(update={"worker": 0}) for a in cfg.agents]
        cfg = cfg.model_copy(update={"agents": agents})
    return cfg
