"""``TRADEENGINE__...`` environment variables override and add values."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from config import ConfigError, ConfigProblem, ReplaySourceConfig, load_config_text

AGENTS = """
[[agents]]
name = "momentum"
path = "plugins.momentum:MomentumAgent"

[agents.params]
lookback = 10
"""


def _problems(text: str, env: dict[str, str]) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, source="engine.toml", env=env)
    return caught.value.problems


def test_load_when_env_sets_scalar_then_file_value_overridden() -> None:
    # Arrange
    text = "[risk]\nmax_positions = 3\n"
    env = {"TRADEENGINE__RISK__MAX_POSITIONS": "8"}

    # Act
    config = load_config_text(text, env=env)

    # Assert
    assert config.risk.max_positions == 8


def test_load_when_env_key_segments_lower_or_mixed_case_then_still_applied() -> None:
    # Arrange
    env = {"TRADEENGINE__Risk__max_Positions": "9"}

    # Act
    config = load_config_text("", env=env)

    # Assert
    assert config.risk.max_positions == 9


def test_load_when_env_sets_nested_key_absent_from_file_then_tables_created() -> None:
    # Arrange
    env = {"TRADEENGINE__TELEMETRY__TRACING__SAMPLING_RATIO": "0.25"}

    # Act
    config = load_config_text("", env=env)

    # Assert
    assert config.telemetry.tracing.sampling_ratio == 0.25


def test_load_when_env_indexes_agent_list_then_agent_params_overridden_and_added() -> None:
    # Arrange
    env = {
        "TRADEENGINE__AGENTS__0__PARAMS__LOOKBACK": "20",
        "TRADEENGINE__AGENTS__0__PARAMS__UNIVERSE": '["AAPL", "MSFT"]',
    }

    # Act
    config = load_config_text(AGENTS, env=env)

    # Assert
    assert config.agents[0].params == {"lookback": 20, "universe": ["AAPL", "MSFT"]}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("[1, 2]", [1, 2]),
        ("2.5", 2.5),
        ('"quoted"', "quoted"),
        ("2024-01-02", date(2024, 1, 2)),
    ],
)
def test_load_when_env_value_is_toml_then_parsed_as_toml(raw: str, expected: object) -> None:
    # Arrange
    env = {"TRADEENGINE__AGENTS__0__PARAMS__X": raw}

    # Act
    config = load_config_text(AGENTS, env=env)

    # Assert
    assert config.agents[0].params["x"] == expected


@pytest.mark.parametrize("raw", ["hello world", "", "5\nother = 1", "a#b"])
def test_load_when_env_value_is_not_one_toml_value_then_raw_string(raw: str) -> None:
    # Arrange
    env = {"TRADEENGINE__AGENTS__0__PARAMS__X": raw}

    # Act
    config = load_config_text(AGENTS, env=env)

    # Assert
    assert config.agents[0].params["x"] == raw


def test_load_when_env_sets_string_field_to_digits_then_kept_as_string() -> None:
    # Arrange: "42" is a TOML integer, but group_id is a string field.
    env = {"TRADEENGINE__KAFKA__GROUP_ID": "42", "TRADEENGINE__ENGINE__RUN_DIR": "/tmp/runs"}

    # Act
    config = load_config_text("", env=env)

    # Assert
    assert config.kafka.group_id == "42"
    assert config.engine.run_dir == Path("/tmp/runs")


def test_load_when_env_replaces_a_whole_list_then_later_index_override_applies_on_top() -> None:
    # Arrange
    text = '[[sources]]\nkind = "replay"\nname = "r"\npaths = ["a.csv"]\n'
    env = {
        "TRADEENGINE__SOURCES__0__PATHS": '["x.csv", "y.csv"]',
        "TRADEENGINE__SOURCES__0__PATHS__1": '"z.csv"',
    }

    # Act
    config = load_config_text(text, env=env)

    # Assert
    source = config.sources[0]
    assert isinstance(source, ReplaySourceConfig)
    assert source.paths == [Path("x.csv"), Path("z.csv")]


def test_load_when_env_indexes_missing_list_item_then_env_problem() -> None:
    # Arrange
    env = {"TRADEENGINE__AGENTS__3__NAME": "x"}

    # Act
    problems = _problems(AGENTS, env)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("env:TRADEENGINE__AGENTS__3__NAME", None)]
    assert "no item 3" in problems[0].message


def test_load_when_env_indexes_list_absent_from_file_then_env_problem() -> None:
    # Arrange
    env = {"TRADEENGINE__AGENTS__0__NAME": "x"}

    # Act
    problems = _problems("", env)

    # Assert
    assert [p.path for p in problems] == ["env:TRADEENGINE__AGENTS__0__NAME"]


def test_load_when_env_goes_through_a_scalar_then_env_problem() -> None:
    # Arrange
    env = {"TRADEENGINE__RISK__MAX_POSITIONS__LIMIT": "3"}

    # Act
    problems = _problems("[risk]\nmax_positions = 4\n", env)

    # Assert
    assert [p.path for p in problems] == ["env:TRADEENGINE__RISK__MAX_POSITIONS__LIMIT"]
    assert "single value" in problems[0].message


def test_load_when_env_has_empty_segment_then_env_problem() -> None:
    # Arrange
    env = {"TRADEENGINE__RISK____MAX_POSITIONS": "3"}

    # Act
    problems = _problems("", env)

    # Assert
    assert [p.path for p in problems] == ["env:TRADEENGINE__RISK____MAX_POSITIONS"]


def test_load_when_env_value_invalid_then_problem_sourced_to_the_variable() -> None:
    # Arrange
    env = {"TRADEENGINE__RISK__MAX_POSITIONS": "-3"}

    # Act
    problems = _problems("[risk]\nmax_positions = 4\n", env)

    # Assert
    assert [p.format() for p in problems] == [
        "env:TRADEENGINE__RISK__MAX_POSITIONS: risk.max_positions: "
        "Input should be greater than 0 (got -3)"
    ]


def test_load_when_env_names_unknown_key_then_unknown_key_problem_with_suggestion() -> None:
    # Arrange
    env = {"TRADEENGINE__RISK__MAX_POSTIONS": "3"}

    # Act
    problems = _problems("", env)

    # Assert
    assert [(p.path, p.source, p.message) for p in problems] == [
        (
            "risk.max_postions",
            "env:TRADEENGINE__RISK__MAX_POSTIONS",
            "unknown key (did you mean 'max_positions'?)",
        )
    ]


def test_load_when_unrelated_env_vars_present_then_ignored() -> None:
    # Arrange
    env = {"PATH": "/usr/bin", "TRADEENGINE_RISK": "x", "OTHER__RISK__MAX_POSITIONS": "1"}

    # Act
    config = load_config_text("", env=env)

    # Assert
    assert config.risk.max_positions == 5
