"""Loads agent plugins named in engine.toml: by import path or by entry point.

Everything that can be wrong with a plugin is found at start-up, before any data flows, and
reported together, one line per problem naming the `[[agents]]` entry: a module that does not
import, a class that is missing or is not an `Agent`, params that fail the plugin's own model,
duplicate names. A broken plugin must never surface half-way through a run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from config import AgentConfig
from engine.agent import Agent, AgentContext

ENTRY_POINT_GROUP = "tradeengine.agents"


class AgentLoadError(Exception):
    """One or more agents could not be loaded; `problems` has one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True)
class LoadedAgent:
    config: AgentConfig
    agent_cls: type[Agent[Any]]
    params: BaseModel


def resolve_agent_class(cfg: AgentConfig) -> type[Agent[Any]]:
    """Import the class an `[[agents]]` entry names. Raises ImportError/TypeError with a reason."""
    if cfg.path is not None:
        module_name, _, attr = cfg.path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ImportError(
                f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        obj: object = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None
        origin = cfg.path
    else:
        assert cfg.entry_point is not None
        matches = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=cfg.entry_point)
        if not matches:
            raise ImportError(f"no entry point {cfg.entry_point!r} in group {ENTRY_POINT_GROUP!r}")
        ep = next(iter(matches))
        try:
            obj = ep.load()
        except Exception as exc:
            raise ImportError(
                f"entry point {cfg.entry_point!r} ({ep.value}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        origin = ep.value
    if not (isinstance(obj, type) and issubclass(obj, Agent)):
        raise TypeError(f"{origin!r} is not a subclass of engine.agent.Agent")
    return obj


def _param_problems(prefix: str, exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}.params.{loc}" if loc else f"{prefix}.params"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown parameter"
        elif "input" in err and err["type"] != "missing":
            message += f" (got {err['input']!r})"
        lines.append(f"{where}: {message}")
    return lines


def load_agents(configs: Sequence[AgentConfig]) -> list[LoadedAgent]:
    """Resolve classes and validate params of every enabled agent; all problems at once."""
    problems: list[str] = []
    loaded: list[LoadedAgent] = []
    seen: dict[str, int] = {}
    for index, cfg in enumerate(configs):
        prefix = f"agents[{index}] ({cfg.name})"
        if cfg.name in seen:
            problems.append(
                f"{prefix}: duplicate agent name {cfg.name!r} (also agents[{seen[cfg.name]}])"
            )
            continue
        seen[cfg.name] = index
        if not cfg.enabled:
            continue
        try:
            agent_cls = resolve_agent_class(cfg)
        except (ImportError, TypeError) as exc:
            problems.append(f"{prefix}: {exc}")
            continue
        try:
            params = agent_cls.params_model.model_validate(cfg.params)
        except ValidationError as exc:
            problems.extend(_param_problems(prefix, exc))
            continue
        loaded.append(LoadedAgent(config=cfg, agent_cls=agent_cls, params=params))
    if problems:
        raise AgentLoadError(problems)
    return loaded


def instantiate(
    loaded: Sequence[LoadedAgent], context_for: Callable[[str], AgentContext]
) -> list[Agent[Any]]:
    """Construct the agents (no I/O happens in constructors)."""
    return [la.agent_cls(la.config.name, la.params, context_for(la.config.name)) for la in loaded]
