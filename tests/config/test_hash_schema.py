"""config_hash identifies a config's behaviour; the JSON Schema documents the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from config import EngineConfig, config_json_schema, load_config_text

REPO = Path(__file__).resolve().parents[2]

TEXT = """
[risk]
max_positions = 4

[[agents]]
name = "momentum"
path = "plugins.momentum:MomentumAgent"
params = { b = 2, a = 1 }

[telemetry]
component_levels = { "pipeline" = "debug", "agent.momentum" = "warning" }
"""


def test_hash_when_configs_equal_but_keys_written_in_other_order_then_equal() -> None:
    # Arrange
    reordered = TEXT.replace("{ b = 2, a = 1 }", "{ a = 1, b = 2 }").replace(
        '{ "pipeline" = "debug", "agent.momentum" = "warning" }',
        '{ "agent.momentum" = "warning", "pipeline" = "debug" }',
    )

    # Act
    first = load_config_text(TEXT, env={}).config_hash()
    second = load_config_text(reordered, env={}).config_hash()

    # Assert
    assert first == second
    assert len(first) == 64
    int(first, 16)  # hex digest


@pytest.mark.parametrize(
    "env",
    [
        {"TRADEENGINE__RISK__MAX_POSITIONS": "5"},
        {"TRADEENGINE__AGENTS__0__PARAMS__A": "2"},
        {"TRADEENGINE__AGENTS__0__ENABLED": "false"},
    ],
)
def test_hash_when_one_value_changes_then_hash_changes(env: dict[str, str]) -> None:
    # Arrange
    base = load_config_text(TEXT, env={})

    # Act
    changed = load_config_text(TEXT, env=env)

    # Assert
    assert changed != base
    assert changed.config_hash() != base.config_hash()


@pytest.mark.parametrize(
    "env",
    [
        {"TRADEENGINE__TELEMETRY__LOG_LEVEL": "debug"},
        {"TRADEENGINE__TELEMETRY__METRICS__PORT": "0"},
        {"TRADEENGINE__TELEMETRY__TRACING__OTLP_ENDPOINT": "http://127.0.0.1:4317"},
    ],
)
def test_hash_when_only_telemetry_changes_then_hash_unchanged(env: dict[str, str]) -> None:
    # Arrange: telemetry cannot change a decision, so it must not change the decisions' hash
    base = load_config_text(TEXT, env={})

    # Act
    changed = load_config_text(TEXT, env=env)

    # Assert
    assert changed != base
    assert changed.config_hash() == base.config_hash()


def test_hash_when_computed_in_fresh_processes_with_other_hash_seeds_then_identical() -> None:
    # Arrange: str hashing is randomised per process; the config hash must not depend on it.
    code = (
        "import sys; from config import load_config_text; "
        "print(load_config_text(sys.stdin.read(), env={}).config_hash())"
    )
    results = set()

    # Act
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=TEXT,
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        results.add(done.stdout.strip())

    # Assert
    assert results == {load_config_text(TEXT, env={}).config_hash()}


def test_canonical_json_when_dumped_then_sorted_compact_and_parseable() -> None:
    # Arrange
    config = load_config_text(TEXT, env={})

    # Act
    text = config.canonical_json()

    # Assert
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert data["risk"]["max_positions"] == 4
    assert "password" not in data["feature_store"]["redis"]


def test_schema_when_generated_then_describes_every_section_and_is_json() -> None:
    # Arrange
    sections = set(EngineConfig.model_fields)

    # Act
    schema = config_json_schema()

    # Assert
    assert set(schema["properties"]) == sections
    assert schema["additionalProperties"] is False
    json.dumps(schema)  # serialisable for editors
    failure_window = schema["$defs"]["SupervisorConfig"]["properties"]["failure_window"]
    assert "messages" in failure_window["description"]


def test_model_when_assigned_after_load_then_frozen() -> None:
    # Arrange
    config = load_config_text("", env={})

    # Act / Assert
    with pytest.raises(ValidationError):
        config.risk.max_positions = 9  # type: ignore[misc]


def test_hash_when_only_agent_worker_placement_changes_then_hash_unchanged() -> None:
    # Arrange: where an agent runs (the engine's loop or a worker process) changes no decision
    text = TEXT + '[[sources]]\nkind = "replay"\nname = "s"\npaths = ["prices.csv"]\n'
    base = load_config_text(text, env={})

    # Act
    moved = load_config_text(text, env={"TRADEENGINE__AGENTS__0__WORKER": "2"})

    # Assert
    assert moved.agents[0].worker == 2
    assert moved.config_hash() == base.config_hash()
    assert "worker" not in base.canonical_json()
