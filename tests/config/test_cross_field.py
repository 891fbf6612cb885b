"""Checks that relate two fields report at the field to change, with both values."""

from __future__ import annotations

import pytest

from config import ConfigError, ConfigProblem, load_config_text


def _problems(text: str, env: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, source="engine.toml", env=env or {})
    return caught.value.problems


def test_load_when_backoff_max_below_initial_then_problem_at_backoff_max() -> None:
    # Arrange
    text = "[supervisor]\nbackoff_initial_s = 2.0\nbackoff_max_s = 1.0\n"

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("supervisor.backoff_max_s", 3)]
    assert "2.0" in problems[0].message
    assert "1.0" in problems[0].message


def test_load_when_backoff_max_equals_initial_then_valid() -> None:
    # Arrange
    text = "[supervisor]\nbackoff_initial_s = 1.0\nbackoff_max_s = 1.0\n"

    # Act
    config = load_config_text(text, env={})

    # Assert
    assert config.supervisor.backoff_max_s == 1.0


def test_load_when_failure_window_below_max_failures_then_problem() -> None:
    # Arrange
    text = "[supervisor]\nmax_failures = 10\nfailure_window = 5\n"

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("supervisor.failure_window", 3)]


@pytest.mark.parametrize("halt", [0.10, 0.05])
def test_load_when_halt_drawdown_not_above_reduce_then_problem_at_halt(halt: float) -> None:
    # Arrange
    text = f"[risk]\nreduce_at_drawdown = 0.10\nhalt_at_drawdown = {halt}\n"

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("risk.halt_at_drawdown", 3)]
    assert f"(got {halt})" in problems[0].message


def test_load_when_replay_end_before_start_then_problem_at_end() -> None:
    # Arrange
    text = """[[sources]]
kind = "replay"
name = "r"
paths = ["a.csv"]
start = 2024-02-01
end = 2024-01-31
"""

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("sources[0].end", 6)]
    assert "2024-02-01" in problems[0].message


def test_load_when_quantiles_not_increasing_then_problem_names_the_pair() -> None:
    # Arrange
    text = "[blender.lightgbm]\nquantiles = [0.1, 0.5, 0.5]\n"

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("blender.lightgbm.quantiles", 2)]
    assert "strictly increasing" in problems[0].message


def test_load_when_quantile_outside_unit_interval_then_problem_at_that_element() -> None:
    # Arrange
    text = "[blender.lightgbm]\nquantiles = [\n  0.1,\n  1.0,\n]\n"

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("blender.lightgbm.quantiles[1]", 4)]


def test_load_when_live_mode_with_replay_clock_then_problem_at_clock() -> None:
    # Arrange
    text = '[engine]\nmode = "live"\n'

    # Act
    problems = _problems(text)

    # Assert
    assert [p.path for p in problems] == ["engine.clock"]


def test_load_when_usd_account_keeps_eur_fx_rate_then_problem_at_fx_rate() -> None:
    # Arrange
    text = '[execution]\naccount_currency = "USD"\n'

    # Act
    problems = _problems(text)

    # Assert
    assert [p.path for p in problems] == ["execution.fx.rate"]


def test_load_when_kafka_disabled_with_sasl_but_no_password_then_valid() -> None:
    # Arrange: developers must not need a password for a bridge they do not run.
    text = '[kafka]\nenabled = false\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\n'

    # Act
    config = load_config_text(text, env={})

    # Assert
    assert config.kafka.sasl_password is None


def test_load_when_kafka_enabled_with_sasl_but_no_password_then_problem_names_env_var() -> None:
    # Arrange
    text = """[kafka]
enabled = true
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "engine"
"""

    # Act
    problems = _problems(text)

    # Assert
    assert [p.path for p in problems] == ["kafka.sasl_password"]
    assert "TRADEENGINE__KAFKA__SASL_PASSWORD" in problems[0].message


def test_load_when_kafka_enabled_with_sasl_and_env_password_then_valid() -> None:
    # Arrange
    text = """[kafka]
enabled = true
security_protocol = "SASL_SSL"
sasl_mechanism = "PLAIN"
sasl_username = "engine"
"""
    env = {"TRADEENGINE__KAFKA__SASL_PASSWORD": "pw"}

    # Act
    config = load_config_text(text, env=env)

    # Assert
    assert config.kafka.sasl_password is not None
    assert config.kafka.sasl_password.get_secret_value() == "pw"


def test_load_when_kafka_topic_declared_twice_then_problem_at_second() -> None:
    # Arrange
    text = """[kafka]
enabled = true

[[kafka.topics]]
name = "t"

[[kafka.topics]]
name = "t"
partitions = 3
"""

    # Act
    problems = _problems(text)

    # Assert
    assert [(p.path, p.line) for p in problems] == [("kafka.topics[1].name", 8)]


def test_load_when_otlp_endpoint_embeds_credentials_then_rejected_without_echoing_them() -> None:
    # Arrange
    text = '[telemetry.tracing]\notlp_endpoint = "http://user:s3cr3t-token@collector:4317"\n'
    # Act
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env={})
    # Assert
    message = str(caught.value)
    assert "telemetry.tracing.otlp_endpoint" in message
    assert "must not embed credentials" in message
    assert "s3cr3t-token" not in message


@pytest.mark.parametrize("endpoint", ["localhost:4317", "grpc://collector:4317", "http://host"])
def test_load_when_otlp_endpoint_malformed_then_error_names_key_and_value(endpoint: str) -> None:
    # Act
    with pytest.raises(ConfigError) as caught:
        load_config_text(f'[telemetry.tracing]\notlp_endpoint = "{endpoint}"\n', env={})
    # Assert
    assert "telemetry.tracing.otlp_endpoint: must look like http://host:port" in str(caught.value)
    assert endpoint in str(caught.value)


def test_load_when_log_component_unknown_then_did_you_mean_with_key_path() -> None:
    # Act
    with pytest.raises(ConfigError) as caught:
        load_config_text('[telemetry]\ncomponent_levels = { pipelin = "debug" }\n', env={})
    # Assert
    assert "telemetry.component_levels.pipelin: unknown log component 'pipelin' (did you mean " in (
        str(caught.value)
    )


def test_load_when_remote_agent_topic_declared_with_partitions_then_problem_names_key() -> None:
    # Arrange
    text = """[kafka]
enabled = true
[[kafka.topics]]
name = "tradeengine.feed"
partitions = 3
"""
    # Act
    problems = _problems(text)
    # Assert
    assert [p.path for p in problems] == ["kafka.topics[0].partitions"]
    assert "must be 1" in problems[0].message


def test_load_when_agent_remote_but_kafka_disabled_then_problem_at_agent() -> None:
    # Arrange
    text = """[[agents]]
name = "momentum"
path = "plugins.momentum:TimeSeriesMomentumAgent"
remote = true
"""
    # Act
    problems = _problems(text)
    # Assert
    assert [p.path for p in problems] == ["agents[0].remote"]


def test_load_when_agent_both_remote_and_in_a_worker_then_problem_at_worker() -> None:
    # Arrange
    text = """[kafka]
enabled = true
[[agents]]
name = "momentum"
path = "plugins.momentum:TimeSeriesMomentumAgent"
remote = true
worker = 1
"""
    # Act
    problems = _problems(text)
    # Assert
    assert [p.path for p in problems] == ["agents[0].worker"]
    assert "runs in its own process already" in problems[0].message


@pytest.mark.parametrize("value", ["-1", "65", "1.5", '"one"'])
def test_load_when_agent_worker_out_of_range_or_not_an_integer_then_problem_at_worker(
    value: str,
) -> None:
    text = f"""[[agents]]
name = "momentum"
path = "plugins.momentum:TimeSeriesMomentumAgent"
worker = {value}
"""
    problems = _problems(text)
    assert [p.path for p in problems] == ["agents[0].worker"]


WORKER_AGENT = """[[agents]]
name = "momentum"
path = "plugins.momentum:TimeSeriesMomentumAgent"
worker = 1
"""

REPLAY_SOURCE = """[[sources]]
kind = "replay"
name = "stocks"
paths = ["bundled:us_stocks_20_daily_close.csv.gz"]
layout = "wide"
"""


def test_load_when_worker_agent_but_no_replay_source_then_problem_at_worker() -> None:
    # Arrange: worker processes are fed by the engine's replay
    # Act
    problems = _problems(WORKER_AGENT)
    # Assert
    assert [p.path for p in problems] == ["agents[0].worker"]
    assert "no replay source" in problems[0].message


def test_load_when_worker_agent_and_ingress_may_carry_bars_then_problem_names_the_route() -> None:
    # Arrange: an ingress route with every type allowed could put bars on the engine's bus,
    # which agents in worker processes would never see
    text = f"""[kafka]
enabled = true
ingress = [{{ topic = "market.bars" }}, {{ topic = "ext.signals", types = ["Signal"] }}]
{WORKER_AGENT}
{REPLAY_SOURCE}"""
    # Act
    problems = _problems(text)
    # Assert
    assert [p.path for p in problems] == ["agents[0].worker"]
    assert "kafka.ingress[0] (market.bars)" in problems[0].message


def test_load_when_worker_agent_with_replay_and_signal_only_ingress_then_valid() -> None:
    text = f"""[kafka]
enabled = true
ingress = [{{ topic = "ext.signals", types = ["Signal"] }}, {{ topic = "x", bus_prefix = "ext" }}]
{WORKER_AGENT}
{REPLAY_SOURCE}"""
    cfg = load_config_text(text, source="engine.toml", env={})
    assert cfg.agents[0].worker == 1


def test_load_when_worker_agent_and_ingress_types_empty_then_problem_as_for_every_type() -> None:
    # an empty `types` list admits every contract type, as an unset one does
    text = f"""[kafka]
enabled = true
ingress = [{{ topic = "everything", types = [] }}]
{WORKER_AGENT}
{REPLAY_SOURCE}"""
    problems = _problems(text)
    assert [p.path for p in problems] == ["agents[0].worker"]
    assert "kafka.ingress[0] (everything)" in problems[0].message
