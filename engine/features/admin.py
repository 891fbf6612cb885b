"""`tradeengine features ls|describe|promote`: what a deployment's feature store holds.

Separate from the CLI module so the command logic is testable without a subprocess, and from
the store so the store stays free of presentation. The memory backend lives inside one engine
process, so these commands only show something useful against Redis; they say so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from config.models import FeatureStoreConfig
from engine.features.store import FeatureStore, MemoryFeatureStore, SetInfo


def build_store(
    cfg: FeatureStoreConfig, *, on_state: Callable[[str, str], None] | None = None
) -> FeatureStore:
    """The configured backend, not started: the engine's, a remote agent host's and the admin
    commands' store (buffer bound, default TTL and near cache from the config)."""
    if cfg.backend == "redis":
        from engine.features.redis_store import RedisFeatureStore

        return RedisFeatureStore(
            namespace=cfg.namespace,
            config=cfg.redis,
            near_cache=cfg.near_cache,
            max_buffered_writes=cfg.max_buffered_writes,
            on_state=on_state,
            default_ttl_s=cfg.default_ttl_s,
        )
    return MemoryFeatureStore(
        namespace=cfg.namespace,
        max_buffered_writes=cfg.max_buffered_writes,
        on_state=on_state,
        default_ttl_s=cfg.default_ttl_s,
    )


def _age(newest: datetime | None, now: datetime) -> str:
    if newest is None:
        return "-"
    seconds = (now - newest).total_seconds()
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def format_ls(infos: list[SetInfo], now: datetime) -> str:
    """One line per (set, version): active mark, entities, bytes, newest value and its age."""
    if not infos:
        return "no feature sets registered"
    header = f"{'SET':<20} {'VER':>4} {'ACTIVE':>6} {'ENTITIES':>9} {'BYTES':>12}  NEWEST (AGE)"
    lines = [header]
    for i in infos:
        newest = i.newest_ts.isoformat() if i.newest_ts is not None else "-"
        lines.append(
            f"{i.name:<20} {i.version:>4} {'*' if i.active else '':>6} {i.entities:>9} "
            f"{i.bytes:>12}  {newest} ({_age(i.newest_ts, now)})"
        )
    return "\n".join(lines)


def describe(infos: list[SetInfo], name: str, version: int | None) -> dict[str, Any] | None:
    """The declaration and figures of `name` (its active version unless `version` is given)."""
    matching = [i for i in infos if i.name == name]
    if version is not None:
        matching = [i for i in matching if i.version == version]
    else:
        matching = [i for i in matching if i.active] or matching[-1:]
    if not matching:
        return None
    info = matching[0]
    return {
        **info.declaration,
        "active": info.active,
        "entities": info.entities,
        "bytes": info.bytes,
        "newest_ts": info.newest_ts.isoformat() if info.newest_ts else None,
    }


def dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


__all__ = ["build_store", "describe", "dumps", "format_ls"]
