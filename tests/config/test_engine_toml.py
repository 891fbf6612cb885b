"""The shipped engine.toml and the defaults it documents."""

from __future__ import annotations

from pathlib import Path

from config import EngineConfig, TradingMode, load_config, load_config_text

ENGINE_TOML = Path(__file__).resolve().parents[2] / "engine.toml"


def test_load_when_shipped_engine_toml_and_empty_env_then_valid_config() -> None:
    # Arrange
    env: dict[str, str] = {}

    # Act
    config = load_config(ENGINE_TOML, env=env)

    # Assert
    assert isinstance(config, EngineConfig)
    assert config.engine.mode is TradingMode.PAPER
    assert config.agents == []


def test_load_when_shipped_engine_toml_then_equals_builtin_defaults() -> None:
    # Arrange: the file claims every value it writes is the default; keep it honest.
    defaults = EngineConfig()

    # Act
    config = load_config(ENGINE_TOML, env={})

    # Assert
    assert config == defaults
    assert config.config_hash() == defaults.config_hash()


def test_load_when_text_is_empty_then_all_sections_have_production_defaults() -> None:
    # Arrange
    text = ""

    # Act
    config = load_config_text(text, env={})

    # Assert
    assert config.bus.default_capacity == 1024
    assert config.supervisor.failure_window == 100
    assert config.risk.max_positions == 5
    assert config.execution.account_currency == "EUR"
    assert config.telemetry.metrics.host == "127.0.0.1"
    assert config.feature_store.redis.password is None
    assert config.blender.common_horizon == "1d"


def test_load_when_shipped_engine_toml_has_commented_agent_example_then_example_is_valid() -> None:
    # Arrange: uncomment the documented [[agents]] example.
    lines = ENGINE_TOML.read_text(encoding="utf-8").splitlines()
    start = lines.index("# [[agents]]")
    example = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        example.append(line.removeprefix("# ").removeprefix("#"))

    # Act
    config = load_config_text("\n".join(example), env={})

    # Assert
    assert config.agents[0].path == "plugins.momentum:MomentumAgent"
    assert config.agents[0].params == {"lookback": 20}
