"""Broken plugins fail at start-up, one clear line per problem, before any data flows."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import AgentConfig
from engine.loader import AgentLoadError, load_agents
from tests.kit.agents import EchoAgent, EchoParams


def test_load_when_paths_and_params_valid_then_classes_and_typed_params() -> None:
    # Arrange
    cfgs = [AgentConfig(name="echo", path="tests.kit.agents:EchoAgent", params={"sigma": 0.1})]
    # Act
    (loaded,) = load_agents(cfgs)
    # Assert
    assert loaded.agent_cls is EchoAgent
    assert loaded.params == EchoParams(sigma=0.1)


def test_load_when_disabled_then_skipped() -> None:
    # Arrange
    cfgs = [AgentConfig(name="echo", path="tests.kit.agents:EchoAgent", enabled=False)]
    # Act
    loaded = load_agents(cfgs)
    # Assert
    assert loaded == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tests.kit.no_such_module:Agent", "cannot import module 'tests.kit.no_such_module'"),
        ("tests.kit.agents:Missing", "has no attribute 'Missing'"),
        ("tests.kit.agents:NotAnAgent", "is not a subclass of engine.agent.Agent"),
    ],
)
def test_load_when_import_path_bad_then_one_line_naming_agent_and_path(
    path: str, expected: str
) -> None:
    # Arrange
    cfgs = [AgentConfig(name="bad", path=path)]
    # Act
    with pytest.raises(AgentLoadError) as info:
        load_agents(cfgs)
    # Assert
    (line,) = info.value.problems
    assert line.startswith("agents[0] (bad): ")
    assert expected in line
    assert "\n" not in line


def test_load_when_params_bad_then_one_line_per_param_problem_with_value() -> None:
    # Arrange
    cfgs = [
        AgentConfig(
            name="echo",
            path="tests.kit.agents:EchoAgent",
            params={"sigma": -1.0, "lookbak": 3},
        )
    ]
    # Act
    with pytest.raises(AgentLoadError) as info:
        load_agents(cfgs)
    # Assert
    problems = sorted(info.value.problems)
    assert problems == [
        "agents[0] (echo).params.lookbak: unknown parameter",
        "agents[0] (echo).params.sigma: Input should be greater than 0 (got -1.0)",
    ]


def test_load_when_duplicate_names_then_one_line_naming_both_entries() -> None:
    # Arrange
    cfgs = [
        AgentConfig(name="echo", path="tests.kit.agents:EchoAgent"),
        AgentConfig(name="echo", path="tests.kit.agents:EchoAgent"),
    ]
    # Act
    with pytest.raises(AgentLoadError) as info:
        load_agents(cfgs)
    # Assert
    assert info.value.problems == ["agents[1] (echo): duplicate agent name 'echo' (also agents[0])"]


def test_load_when_several_agents_broken_then_all_problems_reported_together() -> None:
    # Arrange
    cfgs = [
        AgentConfig(name="a", path="nope.nope:X"),
        AgentConfig(name="b", path="tests.kit.agents:EchoAgent", params={"sigma": "x"}),
        AgentConfig(name="c", path="tests.kit.agents:EchoAgent"),
    ]
    # Act
    with pytest.raises(AgentLoadError) as info:
        load_agents(cfgs)
    # Assert
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith("agents[0] (a): cannot import module 'nope.nope'")
    assert info.value.problems[1].startswith("agents[1] (b).params.sigma:")


@pytest.fixture
def installed_plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A minimal installed distribution exposing EchoAgent in the tradeengine.agents group."""
    dist = tmp_path / "echo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[tradeengine.agents]\n"
        "echo_ep = tests.kit.agents:EchoAgent\n"
        "broken_ep = tests.kit.no_such_module:Agent\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "echo_ep"


def test_load_when_entry_point_registered_then_class_loaded(installed_plugin_dist: str) -> None:
    # Arrange
    cfgs = [AgentConfig(name="echo", entry_point=installed_plugin_dist)]
    # Act
    (loaded,) = load_agents(cfgs)
    # Assert
    assert loaded.agent_cls is EchoAgent


def test_load_when_entry_point_unknown_or_broken_then_one_line_each(
    installed_plugin_dist: str,
) -> None:
    # Arrange
    cfgs = [
        AgentConfig(name="missing", entry_point="no_such_ep"),
        AgentConfig(name="broken", entry_point="broken_ep"),
    ]
    # Act
    with pytest.raises(AgentLoadError) as info:
        load_agents(cfgs)
    # Assert
    missing, broken = info.value.problems
    assert missing == (
        "agents[0] (missing): no entry point 'no_such_ep' in group 'tradeengine.agents'"
    )
    assert broken.startswith("agents[1] (broken): entry point 'broken_ep'")
    assert "ModuleNotFoundError" in broken
