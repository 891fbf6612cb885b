"""Agent and source tables: origin of an agent, names, duplicates, discriminated sources."""

from __future__ import annotations

import pytest

from config import (
    AgentConfig,
    ConfigError,
    ConfigProblem,
    ReplaySourceConfig,
    load_config_text,
)


def _problems(text: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, source="engine.toml", env={})
    return caught.value.problems


def test_load_when_agent_by_path_and_entry_point_then_agents_typed_with_opaque_params() -> None:
    # Arrange
    text = """
[[agents]]
name = "momentum"
path = "plugins.momentum:MomentumAgent"
params = { lookback = 20, universe = ["AAPL"], nested = { k = 1.5 } }

[[agents]]
name = "sma_cross"
entry_point = "sma"
enabled = false
mailbox_policy = "conflate"
"""

    # Act
    config = load_config_text(text, env={})

    # Assert
    first, second = config.agents
    assert isinstance(first, AgentConfig)
    assert first.params == {"lookback": 20, "universe": ["AAPL"], "nested": {"k": 1.5}}
    assert first.entry_point is None
    assert second.entry_point == "sma"
    assert second.enabled is False
    assert second.mailbox_policy == "conflate"


def test_load_when_two_agents_share_a_name_then_problem_at_later_name_naming_first_index() -> None:
    # Arrange
    text = """
[[agents]]
name = "alpha"
path = "plugins.a:A"

[[agents]]
name = "beta"
path = "plugins.b:B"

[[agents]]
name = "alpha"
path = "plugins.c:C"
"""

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("agents[2].name", 11)]
    assert "'alpha'" in problems[0].message
    assert "agents[0]" in problems[0].message


def test_load_when_duplicate_names_and_another_agent_invalid_then_both_reported() -> None:
    # Arrange: the duplicate must not hide behind (or be hidden by) an unrelated problem.
    text = """
[[agents]]
name = "alpha"
path = "plugins.a:A"

[[agents]]
name = "alpha"
path = "plugins.b:B"
mailbox_capacity = 0
"""

    # Act
    problems = _problems(text)

    # Assert
    assert {p.path for p in problems} == {"agents[1].name", "agents[1].mailbox_capacity"}


def test_load_when_agent_has_both_path_and_entry_point_then_problem() -> None:
    # Arrange
    text = '[[agents]]\nname = "a"\npath = "m:C"\nentry_point = "c"\n'

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("agents[0].entry_point", 4)]
    assert "not both" in problems[0].message


def test_load_when_agent_has_neither_path_nor_entry_point_then_problem_at_agent() -> None:
    # Arrange
    text = '[engine]\nseed = 1\n[[agents]]\nname = "a"\n'

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("agents[0]", 3)]
    assert "path" in problems[0].message
    assert "entry_point" in problems[0].message


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Momentum"), ("name", "1abc"), ("name", "a" * 65), ("path", "plugins.momentum")],
)
def test_load_when_agent_name_or_path_malformed_then_problem_names_the_value(
    field: str, value: str
) -> None:
    # Arrange
    values = {"name": "ok", "path": "m:C", field: value}
    text = "[[agents]]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items())

    # Act
    problems = _problems(text)

    # Assert
    assert [p.path for p in problems] == [f"agents[0].{field}"]
    assert f'"{value}"' in problems[0].message


def test_load_when_subscription_pattern_has_inner_rest_wildcard_then_problem() -> None:
    # Arrange
    text = '[[agents]]\nname = "a"\npath = "m:C"\nsubscriptions = ["bar.*", "a.>.b"]\n'

    # Act
    problems = _problems(text)

    # Assert
    assert [p.path for p in problems] == ["agents[0].subscriptions"]
    assert '"a.>.b"' in problems[0].message


def test_load_when_replay_source_then_typed_by_kind() -> None:
    # Arrange
    text = """
[[sources]]
kind = "replay"
name = "bars"
paths = ["data/a.csv", "data/b.csv"]
start = 2020-01-01
end = 2020-12-31
speed = 10.0
"""

    # Act
    config = load_config_text(text, env={})

    # Assert
    (source,) = config.sources
    assert isinstance(source, ReplaySourceConfig)
    assert source.start is not None
    assert source.start.year == 2020
    assert source.layout == "auto"
    assert source.speed == 10.0


def test_load_when_two_sources_share_a_name_then_problem() -> None:
    # Arrange
    text = """
[[sources]]
kind = "replay"
name = "bars"
paths = ["a.csv"]

[[sources]]
kind = "replay"
name = "bars"
paths = ["b.csv"]
"""

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("sources[1].name", 9)]
    assert "sources[0]" in problems[0].message


def test_load_when_replay_speed_not_positive_then_problem_without_union_tag_in_path() -> None:
    # Arrange
    text = '[[sources]]\nkind = "replay"\nname = "r"\npaths = ["a.csv"]\nspeed = 0\n'

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("sources[0].speed", 5)]


def test_load_when_duplicate_name_and_agent_level_problems_then_all_reported() -> None:
    # Arrange
    text = """
[[agents]]
name = "a"
path = "m:C"
entry_point = "x"

[[agents]]
name = "a"
"""

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [
        ("agents[0].entry_point", 5),
        ("agents[1]", 7),
        ("agents[1].name", 8),
    ]
