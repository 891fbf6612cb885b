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
    assert [a.name for a in config.agents] == [
        "momentum",
        "reversal",
        "ma_trend",
        "donchian",
        "rsi",
        "bollinger",
        "low_vol",
        "xs_momentum",
        "yield_curve",
        "calendar",
        "volume",
        "sentiment",
    ]
    assert [s.name for s in config.sources] == ["stocks", "yields"]


def test_load_when_shipped_engine_toml_then_defaults_except_the_documented_run() -> None:
    # Arrange: the file claims every value it writes is the default apart from the default run
    # it configures (sources, agents, blender horizon, fees); keep that claim honest.
    defaults = EngineConfig()

    # Act
    config = load_config(ENGINE_TOML, env={})
    comparable = config.model_copy(
        update={
            "sources": [],
            "agents": [],
            "blender": config.blender.model_copy(
                update={"common_horizon": defaults.blender.common_horizon}
            ),
            "execution": config.execution.model_copy(update={"fees": defaults.execution.fees}),
        }
    )

    # Assert
    assert comparable == defaults
    assert config.blender.common_horizon.value == "1m"


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


def test_load_when_shipped_engine_toml_then_twelve_agents_and_data_less_ones_off() -> None:
    # Arrange / Act
    config = load_config(ENGINE_TOML, env={})

    # Assert: import paths only; tests/engine/test_cli.py imports and validates them
    assert [a.path for a in config.agents] == [
        "plugins.momentum:TimeSeriesMomentumAgent",
        "plugins.reversal:ShortTermReversalAgent",
        "plugins.ma_trend:MovingAverageTrendAgent",
        "plugins.donchian:DonchianBreakoutAgent",
        "plugins.rsi:RsiReversionAgent",
        "plugins.bollinger:BollingerReversionAgent",
        "plugins.low_volatility:LowVolatilityAgent",
        "plugins.cross_sectional_momentum:CrossSectionalMomentumAgent",
        "plugins.yield_curve:YieldCurveAgent",
        "plugins.calendar_seasonality:CalendarSeasonalityAgent",
        "plugins.volume_anomaly:VolumeAnomalyAgent",
        "plugins.social_sentiment:SocialSentimentAgent",
    ]
    # volume needs OHLCV data, sentiment a post source: neither is in the default run
    assert [a.name for a in config.agents if not a.enabled] == ["volume", "sentiment"]


def test_load_when_shipped_engine_toml_then_agent_params_written_out_are_the_defaults() -> None:
    # Arrange: engine.toml documents each agent's own parameters; it must not quietly override
    from engine.loader import load_agents

    config = load_config(ENGINE_TOML, env={})
    # Act: the switched-off agents too
    loaded = load_agents([a.model_copy(update={"enabled": True}) for a in config.agents])
    assert len(loaded) == 12
    # Assert
    for agent in loaded:
        defaults = type(agent.params)().model_dump()
        written = agent.config.params
        assert written, f"{agent.config.name}: engine.toml lists no params"
        assert {k: defaults[k] for k in written} == written, agent.config.name
